"""SQLite stores survive SIGKILL mid-stream, and several writer processes share one file.

A writer subprocess (storage_crash_writer.py) commits numbered batches and prints each one after
commit returns. We read until it has acknowledged a few, SIGKILL it (most likely inside the next
transaction), reopen the file and check: every acknowledged batch is there, every batch present
is whole, seqs are gap-free, and the store accepts new writes. Then again, a few rounds.
"""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from storage_crash_writer import payment_batch

from storage import (
    NewEvent,
    NewOutboxEntry,
    PaymentCounts,
    RecordOutcome,
    open_desk_store,
    open_shard_store,
)

WRITER = Path(__file__).with_name("storage_crash_writer.py")
ROUNDS = 3
ACKED_BEFORE_KILL = 3
DEADLINE_S = 60.0
OUTBOX_PER_BATCH = 10


def _start(what: str, data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), what, str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _kill_after_acks(writer: subprocess.Popen[bytes], acks: int) -> int:
    """Read acknowledgements until `acks` arrived (deadline-bounded), SIGKILL, return the last."""
    assert writer.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(writer.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + DEADLINE_S
    seen: list[int] = []
    try:
        while len(seen) < acks:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"writer acknowledged only {seen} in {DEADLINE_S}s"
            if selector.select(timeout=remaining):
                line = writer.stdout.readline()
                assert line, f"writer exited: {writer.wait()} {writer.stderr.read()!r}"  # type: ignore[union-attr]
                seen.append(int(line.split()[1]))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=DEADLINE_S)
        selector.close()
        writer.stdout.close()
        writer.stderr.close()  # type: ignore[union-attr]
    return seen[-1]


def _batches_in_journal(data_dir: Path) -> tuple[dict[int, int], int]:
    """Batch number → events present; and the next free batch number. Checks gap-free seqs."""
    per_batch: Counter[int] = Counter()
    declared: dict[int, int] = {}
    with open_shard_store(data_dir, 0) as store:
        for shard, head in store.heads().items():
            events = list(store.journal(shard))
            assert [e.seq for e in events] == list(range(1, head + 1)), f"gap in shard {shard}"
            for e in events:
                if e.ref is not None and e.ref.startswith("w-batch-"):
                    tag, size, _ = e.body.split(b":", 2)
                    per_batch[int(tag)] += 1
                    declared[int(tag)] = int(size)
        for batch, count in per_batch.items():
            assert count == declared[batch], f"batch {batch} has {count}/{declared[batch]} events"
            outbox = [store.outbox_entry(f"w-b{batch}-o{i}") for i in range(OUTBOX_PER_BATCH)]
            assert all(e is not None for e in outbox), f"batch {batch} lost outbox entries"
        last = max(per_batch, default=0)
        assert store.outbox_entry(f"w-b{last + 1}-o0") is None, "outbox of an absent batch"
        assert sorted(per_batch) == list(range(1, last + 1)), "a batch in the middle is missing"
        head = store.head(0)
        probe = store.commit(
            [NewEvent(shard=0, account="probe", kind="Probe", ref=None, at=0, body=b"")],
            outbox=[NewOutboxEntry(id=f"probe-{head}", shard=0, kind="k", account="a", at=0, body=b"")],
        )
        assert probe.seqs == (head + 1,)
    return dict(per_batch), last + 1


def test_a_killed_journal_writer_leaves_only_whole_acknowledged_batches(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    start = 1
    for _ in range(ROUNDS):
        acknowledged = _kill_after_acks(_start("journal", data_dir, "--start", str(start)), ACKED_BEFORE_KILL)
        batches, start = _batches_in_journal(data_dir)
        assert acknowledged < start, f"batch {acknowledged} was acknowledged but is not durable"
        assert set(batches.values()) == {1_000}


def _payments_in_ledger(data_dir: Path) -> int:
    """Check the ledger; return the next free batch number."""
    with open_desk_store(data_dir) as desk:
        records = list(desk.unacknowledged())
        assert [p.receipt_seq for p in records] == list(range(1, len(records) + 1))
        per_batch = Counter(int(p.payment_id.split("-")[1][1:]) for p in records)
        for p in records:
            batch, count = p.body.split(b":")
            assert per_batch[int(batch)] == int(count), f"batch {int(batch)} is partial"
        last = max(per_batch, default=0)
        assert sorted(per_batch) == list(range(1, last + 1))
        before = desk.payment_counts()
        assert (before.pending, before.applied, before.suspense) == (len(records), 0, 0)
        # a re-sent batch is all duplicates: the ledger is whole, not merely readable
        again = desk.record_payments(payment_batch("w", last, 500), at=0) if last else ()
        assert all(r.outcome is RecordOutcome.DUPLICATE for r in again)
        assert desk.payment_counts() == PaymentCounts(
            pending=len(records), applied=0, suspense=0, duplicates=before.duplicates + len(again)
        )
    return last + 1


def test_a_killed_payment_writer_leaves_only_whole_acknowledged_batches(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    start = 1
    for _ in range(ROUNDS):
        writer = _start("payments", data_dir, "--start", str(start), "--per-batch", "500")
        acknowledged = _kill_after_acks(writer, ACKED_BEFORE_KILL)
        start = _payments_in_ledger(data_dir)
        assert acknowledged < start, f"batch {acknowledged} was acknowledged but is not durable"


def test_writer_processes_sharing_a_group_file_get_one_gap_free_sequence(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    writers = [
        _start("journal", data_dir, "--tag", tag, "--batches", "20", "--per-batch", "200")
        for tag in ("a", "b", "c")
    ]
    deadline = time.monotonic() + DEADLINE_S
    for writer in writers:
        out, err = writer.communicate(timeout=max(0.1, deadline - time.monotonic()))
        assert writer.returncode == 0, err.decode()
        assert out.decode().split("\n")[-2] == "committed 20"
    with open_shard_store(data_dir, 0) as store:
        refs: Counter[str] = Counter()
        for shard, head in store.heads().items():
            events = list(store.journal(shard))
            assert [e.seq for e in events] == list(range(1, head + 1))
            refs.update(e.ref for e in events if e.ref is not None)
    assert refs == Counter({f"{t}-batch-{n}": 200 for t in "abc" for n in range(1, 21)})
