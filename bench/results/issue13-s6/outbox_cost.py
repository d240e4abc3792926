"""CPU per outbox row: commits of `batch` notices inserted, then the same marked done, as the shard does.

Run from a tree: PYTHONPATH=<tree> python outbox_cost.py [batch]"""

import sys
import tempfile
import time
from pathlib import Path

from storage import NewOutboxEntry, OutboxStatus, OutboxUpdate, StoreOptions
from storage.sqlite_shard import SqliteShardStore

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
rounds = 400
with tempfile.TemporaryDirectory() as d:
    store = SqliteShardStore(Path(d) / "s.db", 0, StoreOptions())
    t0 = time.process_time()
    for r in range(rounds):
        ids = [f"n-{r}-{i}" for i in range(batch)]
        store.commit(outbox=[NewOutboxEntry(id=i, shard=1, kind="notice", account="a" + i, at=r,
                                            body=b"x" * 60) for i in ids])
        store.commit(outbox_updates=[OutboxUpdate(id=i, status=OutboxStatus.DONE, at=r) for i in ids])
    cpu = time.process_time() - t0
    print(f"{cpu / (rounds * batch) * 1e6:.2f}")
