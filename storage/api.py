"""The storage ports: what actors may ask of durable state, whatever the backend.

Every write method is one transaction: it returns only after the transaction committed (durably,
per `StoreOptions.synchronous`), and if it raises, nothing of it was applied (except
`StorageUnavailable` from a failing COMMIT, whose outcome is unknown; see errors.py).

Several handles may be open on the same store, in one process or several: writes serialise in
the backend, and seqs are assigned inside the write transaction, so nothing relies on a single
writer. A logical shard must still have one owner at a time; `commit(expect_heads=...)` lets the
owner detect that another process wrote to its shard.

Iterators page through the store (a bounded number of rows per query, no transaction held
between pages), so a caller may commit while it iterates.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from storage.errors import InvalidRecord
from storage.records import (
    AckResult,
    CommitResult,
    CreditAck,
    DeadLetter,
    JournalEvent,
    NewEvent,
    NewOutboxEntry,
    NewPayment,
    OutboxEntry,
    OutboxStatus,
    OutboxUpdate,
    PaymentCounts,
    PaymentRecord,
    RecordResult,
    ResolveResult,
    Snapshot,
    StoredDeadLetter,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "DeskStore",
    "ShardStore",
    "StorageBackend",
    "StoreOptions",
    "Synchronous",
]

Synchronous = Literal["full", "normal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreOptions:
    """How a store is opened.

    synchronous: "full" makes every commit durable against power loss (fsync per commit);
        "normal" survives a process crash but may lose the last commits on power loss.
    keep_snapshots: snapshots kept per logical shard (older ones are deleted on save).
    prune_on_snapshot: after a snapshot save, delete journal events covered by the oldest kept
        snapshot. Off by default: audit queries read the journal, pruning shortens history.
    busy_timeout_ms: how long a write waits for another writer before StorageUnavailable.
    """

    synchronous: Synchronous = "full"
    keep_snapshots: int = 2
    prune_on_snapshot: bool = False
    busy_timeout_ms: int = 10_000

    def __post_init__(self) -> None:
        if self.synchronous not in ("full", "normal"):
            raise InvalidRecord(f"synchronous must be 'full' or 'normal', not {self.synchronous!r}")
        if type(self.keep_snapshots) is not int or self.keep_snapshots < 1:
            raise InvalidRecord(f"keep_snapshots must be an int >= 1, not {self.keep_snapshots!r}")
        if type(self.busy_timeout_ms) is not int or self.busy_timeout_ms < 0:
            raise InvalidRecord(f"busy_timeout_ms must be an int >= 0, not {self.busy_timeout_ms!r}")


DEFAULT_OPTIONS = StoreOptions()


class ShardStore(Protocol):
    """One shard group's journal, snapshots and outbox. A group hosts many logical shards."""

    @property
    def group(self) -> int: ...

    def commit(
        self,
        events: Sequence[NewEvent] = (),
        *,
        outbox: Sequence[NewOutboxEntry] = (),
        outbox_updates: Sequence[OutboxUpdate] = (),
        expect_heads: Mapping[int, int] | None = None,
    ) -> CommitResult:
        """Journal `events` (any mix of shards), insert `outbox` entries, then apply
        `outbox_updates`, in ONE transaction. Seqs are assigned per shard in input order.

        Inserting an existing outbox id is a no-op (listed in `outbox_existing`). An update moves
        pending/sent to sent/done/failed; on an entry already done or failed it is a no-op (listed
        in `outbox_ignored`). An update may name an entry inserted by the same commit.
        `expect_heads` maps shard → the head the caller believes current.

        Raises UnknownOutboxEntry, HeadMismatch (nothing applied), StorageUnavailable.
        """
        ...

    def head(self, shard: int) -> int:
        """The shard's last journaled seq; 0 if it has none."""
        ...

    def heads(self) -> dict[int, int]:
        """Last seq of every shard that has journaled an event or saved a snapshot."""
        ...

    def journal(self, shard: int, *, after_seq: int = 0) -> Iterator[JournalEvent]:
        """The shard's stored events with seq > after_seq, in seq order, streamed."""
        ...

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        """Save snapshots (any mix of shards) in one transaction; keeps the newest
        `keep_snapshots` per shard. Saving the same (shard, upto_seq) again replaces it.

        Raises SnapshotAheadOfJournal if an upto_seq is beyond its shard's head (none saved).
        """
        ...

    def latest_snapshot(self, shard: int) -> Snapshot | None:
        """The snapshot with the highest upto_seq, or None."""
        ...

    def recover(self, shards: Iterable[int] | None = None) -> Iterator[Snapshot | JournalEvent]:
        """What a restarted owner folds to rebuild `shards` (default: every shard in `heads()`):
        first the latest snapshot of each shard that has one (ascending shard), then every event
        after its shard's snapshot (after seq 0 without one). Each shard's events come in seq
        order; events of different shards may interleave (the SQLite backend yields commit
        order). Streamed: fold as you go. Call it before writing, not while another writer is
        active on those shards.
        """
        ...

    def prune_journal(self, shard: int, upto_seq: int) -> int:
        """Delete the shard's events with seq <= upto_seq, never beyond its latest snapshot
        (the bound is lowered to it). Returns how many events were deleted; a backend may keep
        some covered events (it prunes whole storage units), which `journal`/`recover` skip."""
        ...

    def open_outbox(self, *, kind: str | None = None, shard: int | None = None) -> Iterator[OutboxEntry]:
        """Pending and sent entries (to re-send after a restart), oldest first
        (created_at, then id), optionally of one kind and/or one shard. Streamed."""
        ...

    def outbox_entry(self, entry_id: str) -> OutboxEntry | None: ...

    def count_open_outbox(self) -> dict[tuple[str, OutboxStatus], int]:
        """(kind, status) → count, for pending and sent entries only."""
        ...

    def events_for_account(
        self, shard: int, account: str, *, limit: int = 100, since: int | None = None
    ) -> list[JournalEvent]:
        """The account's events in `shard`, newest first, at most `limit`, with at >= since.
        An audit query: it scans the shard's journal (see the backend for its cost)."""
        ...

    def events_for_ref(self, shard: int, ref: str, *, since: int | None = None) -> list[JournalEvent]:
        """Events in `shard` caused by `ref` (payment/command/bill id), oldest first, at >= since.
        An audit query: it scans the shard's journal; pass `since` to bound it."""
        ...

    def close(self) -> None:
        """Release the store; idempotent. Later calls raise StoreClosed."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class DeskStore(Protocol):
    """The payment desk's ledger, suspense and dead letters."""

    def record_payments(self, payments: Sequence[NewPayment], *, at: int) -> tuple[RecordResult, ...]:
        """Record a batch in one transaction; `at` becomes each new payment's committed_at.
        One result per payment, in order: NEW, or DUPLICATE (then nothing of it is stored; a
        duplicate of an earlier payment of the same batch is a DUPLICATE too)."""
        ...

    def mark_credited(self, acks: Sequence[CreditAck]) -> tuple[AckResult, ...]:
        """Apply shards' acknowledgements in one transaction: APPLIED → applied, UNKNOWN_ACCOUNT
        → suspense. Raises UnknownPayment (nothing applied) for a payment never recorded."""
        ...

    def unacknowledged(
        self, *, after_receipt_seq: int = 0, shards: Collection[int] | None = None
    ) -> Iterator[PaymentRecord]:
        """Pending payments by receipt order (to re-send after a restart). Streamed. With
        `shards`, only those recorded with one of these logical shards (a cluster node's groups)."""
        ...

    def payment(self, payment_id: str) -> PaymentRecord | None:
        """The trace of one payment: received, committed, applied/suspended, resolved."""
        ...

    def payments_for_account(self, account: str, *, limit: int = 100) -> list[PaymentRecord]:
        """The account's payments, newest receipt first (by current account)."""
        ...

    def payment_counts(self) -> PaymentCounts: ...

    def suspense(self, *, limit: int = 100, after_receipt_seq: int = 0) -> list[PaymentRecord]:
        """Payments in suspense (no such account), by receipt order."""
        ...

    def count_suspense(self) -> int: ...

    def resolve_suspense(
        self, payment_id: str, account: str, *, at: int, by: str, shard: int | None = None
    ) -> ResolveResult:
        """Re-assign a suspense payment to `account` (of logical `shard`) and make it pending again
        (to be credited). `by` names who resolved it (engineer id)."""
        ...

    def put_dead_letters(self, letters: Sequence[DeadLetter]) -> tuple[int, ...]:
        """Store dead letters in one transaction; returns their ids (1, 2, 3 … in order)."""
        ...

    def dead_letters(self, *, limit: int = 100, before_id: int | None = None) -> list[StoredDeadLetter]:
        """Newest first; page with before_id = the last id seen."""
        ...

    def count_dead_letters(self) -> int: ...

    def close(self) -> None:
        """Release the store; idempotent. Later calls raise StoreClosed."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def payments_paid_between(self, gateway: str, start: int, end: int) -> Iterator[PaymentRecord]:
        """The ledger's payments of `gateway` with start <= paid_at <= end (unix seconds), by
        (paid_at, payment_id), every status, by the gateway recorded at intake. For reconciliation
        against the gateway's own list: one query that scans the ledger (there is no paid_at
        index), the window's rows read at once (a day of payments, not the ledger)."""
        ...


class StorageBackend(Protocol):
    """Opens stores. `location` is the data dir for embedded backends."""

    name: str

    def open_shard_store(
        self, location: str | os.PathLike[str], group: int, options: StoreOptions = ...
    ) -> ShardStore: ...

    def open_desk_store(self, location: str | os.PathLike[str], options: StoreOptions = ...) -> DeskStore: ...
