"""Hash cost inside ShardStore.commit: the same commits with the real link hash and with a constant."""
import random
import statistics
import tempfile
import time
from pathlib import Path

from storage import NewEvent, StoreOptions, open_shard_store, sqlite_journal

real = sqlite_journal.journal_link_hash
def fake(prev, shard, first, last, events):
    return b"\x01" * 32
rng = random.Random(1)
accounts = [f"N{i:010d}" for i in range(50_000)]
def batch(n):
    return [NewEvent(shard=rng.randrange(256), account=rng.choice(accounts), kind="PaymentApplied",
                     ref=f"pay_{rng.randrange(10**9)}", at=1_700_000_000, body=bytes(80)) for _ in range(n)]
for size in (100, 1000):
    batches = [batch(size) for _ in range(200_000 // size)]
    out = {"real": [], "constant": []}
    for _rnd in range(3):
        for name, fn in (("real", real), ("constant", fake)):
            sqlite_journal.journal_link_hash = fn
            options = StoreOptions(synchronous="normal")
            with tempfile.TemporaryDirectory() as d, open_shard_store(Path(d), 0, options) as s:
                t = time.process_time()
                for b in batches:
                    s.commit(b)
                out[name].append((time.process_time() - t) / (len(batches) * size) * 1e6)
    r, c = statistics.median(out["real"]), statistics.median(out["constant"])
    print(f"batch {size}: {r:.2f} us CPU/event with SHA-256 links, {c:.2f} with a constant; "
          f"hashing {r - c:.2f} us/event  runs={out}")
