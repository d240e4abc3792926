"""A writer for the SQLite crash and concurrency tests: commits numbered batches until killed.

    python storage_crash_writer.py journal  DATA_DIR --start N [--tag T] [--batches B] [--per-batch P]
    python storage_crash_writer.py payments DATA_DIR --start N [--tag T] [--batches B] [--per-batch P]

After each commit returns it prints "committed <batch>" (flushed): a batch printed is a batch the
store acknowledged. Journal batches spread `per-batch` events over 8 logical shards of group 0,
each event ref'd "<tag>-batch-<n>" with body "<n>:<per-batch>:<i>" padded to ~80 bytes, plus
10 outbox entries; payment batches hold `per-batch` payments "<tag>-b<n>-<i>".
"""

from __future__ import annotations

import argparse

from storage import NewEvent, NewOutboxEntry, NewPayment, open_desk_store, open_shard_store

SHARDS = 8
OUTBOX_PER_BATCH = 10


def journal_batch(tag: str, n: int, per_batch: int) -> tuple[list[NewEvent], list[NewOutboxEntry]]:
    events = [
        NewEvent(
            shard=i % SHARDS,
            account=f"acct-{i:07d}",
            kind="Tagged",
            ref=f"{tag}-batch-{n}",
            at=n,
            body=f"{n}:{per_batch}:{i}:".encode().ljust(80, b"."),
        )
        for i in range(per_batch)
    ]
    outbox = [
        NewOutboxEntry(
            id=f"{tag}-b{n}-o{i}", shard=i % SHARDS, kind="relay", account=f"acct-{i:07d}", at=n, body=b"cmd"
        )
        for i in range(OUTBOX_PER_BATCH)
    ]
    return events, outbox


def payment_batch(tag: str, n: int, per_batch: int) -> list[NewPayment]:
    return [
        NewPayment(
            payment_id=f"{tag}-b{n}-{i}",
            gateway="gw",
            event_id=f"{tag}-e{n}-{i}",
            account=f"acct-{i:07d}",
            amount_paise=100 + i,
            channel="upi",
            paid_at=n,
            received_at=n,
            body=f"{n}:{per_batch}".encode(),
        )
        for i in range(per_batch)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["journal", "payments"])
    parser.add_argument("data_dir")
    parser.add_argument("--start", type=int, default=1)
    parser.add_argument("--tag", default="w")
    parser.add_argument("--batches", type=int, default=0, help="0: until killed")
    parser.add_argument("--per-batch", type=int, default=1_000)
    args = parser.parse_args()
    n = args.start
    if args.what == "journal":
        with open_shard_store(args.data_dir, 0) as store:
            while args.batches == 0 or n < args.start + args.batches:
                events, outbox = journal_batch(args.tag, n, args.per_batch)
                store.commit(events, outbox=outbox)
                print(f"committed {n}", flush=True)
                n += 1
    else:
        with open_desk_store(args.data_dir) as desk:
            while args.batches == 0 or n < args.start + args.batches:
                desk.record_payments(payment_batch(args.tag, n, args.per_batch), at=n)
                print(f"committed {n}", flush=True)
                n += 1


if __name__ == "__main__":
    main()
