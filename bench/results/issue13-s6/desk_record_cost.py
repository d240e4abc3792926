"""CPU per payment of SqliteDeskStore.record_payments at a batch size (all new, synchronous=full,
300 commits).

Measured and not kept (session 6). Run from a tree: PYTHONPATH=<tree> python desk_record_cost.py [batch]"""
import sys
import tempfile
import time
from pathlib import Path

from storage import NewPayment, StoreOptions
from storage.sqlite_desk import SqliteDeskStore

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
rounds = 300
with tempfile.TemporaryDirectory() as d:
    desk = SqliteDeskStore(Path(d) / "desk.db", StoreOptions())
    t0 = time.process_time()
    for r in range(rounds):
        desk.record_payments([NewPayment(shard=i % 2, payment_id=f"pay_{r}_{i}", gateway="razorpay",
                                         event_id=f"evt_{r}_{i}", account=f"ACC{i:06d}", amount_paise=150_000,
                                         channel="upi", paid_at=10, received_at=20, body=b"x" * 300)
                              for i in range(batch)], at=r)
    print(f"{(time.process_time() - t0) / (rounds * batch) * 1e6:.2f}")
