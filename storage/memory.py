"""An in-memory backend that passes the same contract suite as SQLite: for actor-tier tests.

State lives in a process-wide registry keyed by (location, group), so closing a store and opening
it again at the same location sees what was committed, as a restarted actor would. Nothing
survives the process, and nothing is shared between processes: use it with Thespian's
simpleSystemBase (every actor in one process), not multiprocTCPBase. `forget(location)` drops a
location's state.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

from storage.api import DEFAULT_OPTIONS, StoreOptions
from storage.errors import (
    HeadMismatch,
    SnapshotAheadOfJournal,
    StoreClosed,
    UnknownOutboxEntry,
    UnknownPayment,
)
from storage.records import (
    AckResult,
    CommitResult,
    CreditAck,
    CreditOutcome,
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
    PaymentStatus,
    RecordOutcome,
    RecordResult,
    ResolveResult,
    Snapshot,
    StoredDeadLetter,
    check_payment,
)

__all__ = ["MemoryBackend", "MemoryDeskStore", "MemoryShardStore", "forget"]

_lock = threading.RLock()  # one lock for every memory store: a transaction is a critical section


@dataclass
class _ShardState:
    events: dict[int, list[JournalEvent]] = field(default_factory=dict)  # kept after pruning
    heads: dict[int, int] = field(default_factory=dict)
    snapshots: dict[int, list[Snapshot]] = field(default_factory=dict)  # ascending upto_seq
    outbox: dict[str, OutboxEntry] = field(default_factory=dict)


@dataclass
class _DeskState:
    payments: dict[str, PaymentRecord] = field(default_factory=dict)
    by_event: dict[tuple[str, str], str] = field(default_factory=dict)
    receipt_seq: int = 0
    duplicates: int = 0
    dead_letters: list[StoredDeadLetter] = field(default_factory=list)


_shards: dict[tuple[str, int], _ShardState] = {}
_desks: dict[str, _DeskState] = {}


def _key(location: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(location))


def forget(location: str | os.PathLike[str]) -> None:
    """Drop every memory store at `location` (the equivalent of deleting the data dir)."""
    key = _key(location)
    with _lock:
        for shard_key in [k for k in _shards if k[0] == key]:
            del _shards[shard_key]
        _desks.pop(key, None)


class _Handle:
    def __init__(self, name: str) -> None:
        self._name = name
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed(f"{self._name} is closed")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        self._check()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemoryShardStore(_Handle):
    """`ShardStore` in memory; see the module docstring."""

    def __init__(self, location: str | os.PathLike[str], group: int, options: StoreOptions) -> None:
        super().__init__(f"memory shard group {group} at {location}")
        with _lock:
            self._s = _shards.setdefault((_key(location), group), _ShardState())
        self._group = group
        self._options = options

    @property
    def group(self) -> int:
        return self._group

    def commit(
        self,
        events: Sequence[NewEvent] = (),
        *,
        outbox: Sequence[NewOutboxEntry] = (),
        outbox_updates: Sequence[OutboxUpdate] = (),
        expect_heads: Mapping[int, int] | None = None,
    ) -> CommitResult:
        with _lock:
            self._check()
            s = self._s
            for shard, expected in (expect_heads or {}).items():
                if s.heads.get(shard, 0) != expected:
                    raise HeadMismatch(shard, expected, s.heads.get(shard, 0))
            # stage every change, then apply: a raise leaves the state untouched
            staged: dict[str, OutboxEntry] = {}
            existing = []
            for e in outbox:
                if e.id in s.outbox or e.id in staged:
                    existing.append(e.id)
                else:
                    staged[e.id] = OutboxEntry(
                        id=e.id,
                        shard=e.shard,
                        kind=e.kind,
                        account=e.account,
                        status=OutboxStatus.PENDING,
                        attempts=0,
                        created_at=e.at,
                        updated_at=e.at,
                        body=e.body,
                    )
            ignored = []
            for u in outbox_updates:
                current = staged.get(u.id) or s.outbox.get(u.id)
                if current is None:
                    raise UnknownOutboxEntry(u.id)
                if not current.status.is_open:
                    ignored.append(u.id)
                    continue
                staged[u.id] = replace(
                    current,
                    status=u.status,
                    updated_at=u.at,
                    attempts=current.attempts + (u.status is OutboxStatus.SENT),
                )
            heads = dict(s.heads)
            seqs = []
            journaled: list[JournalEvent] = []
            for new in events:
                seq = heads.get(new.shard, 0) + 1
                heads[new.shard] = seq
                seqs.append(seq)
                journaled.append(
                    JournalEvent(
                        shard=new.shard,
                        seq=seq,
                        account=new.account,
                        kind=new.kind,
                        ref=new.ref,
                        at=new.at,
                        body=new.body,
                    )
                )
            for event in journaled:
                s.events.setdefault(event.shard, []).append(event)
            s.heads = heads
            s.outbox.update(staged)
        touched = {new.shard for new in events}
        return CommitResult(
            seqs=tuple(seqs),
            heads={shard: heads[shard] for shard in touched},
            outbox_existing=tuple(existing),
            outbox_ignored=tuple(ignored),
        )

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        with _lock:
            self._check()
            s = self._s
            for snap in snapshots:
                head = s.heads.get(snap.shard, 0)
                if snap.upto_seq > head:
                    raise SnapshotAheadOfJournal(snap.shard, snap.upto_seq, head)
            for snap in snapshots:
                kept = [k for k in s.snapshots.get(snap.shard, []) if k.upto_seq != snap.upto_seq]
                bisect.insort(kept, snap, key=lambda k: k.upto_seq)
                s.snapshots[snap.shard] = kept[-self._options.keep_snapshots :]
                s.heads.setdefault(snap.shard, 0)
            if self._options.prune_on_snapshot:
                for shard in {snap.shard for snap in snapshots}:
                    self._prune(shard, s.snapshots[shard][0].upto_seq)

    def prune_journal(self, shard: int, upto_seq: int) -> int:
        with _lock:
            self._check()
            kept = self._s.snapshots.get(shard)
            return self._prune(shard, min(upto_seq, kept[-1].upto_seq)) if kept else 0

    def _prune(self, shard: int, upto_seq: int) -> int:
        events = self._s.events.get(shard, [])
        remaining = [e for e in events if e.seq > upto_seq]
        self._s.events[shard] = remaining
        return len(events) - len(remaining)

    def head(self, shard: int) -> int:
        with _lock:
            self._check()
            return self._s.heads.get(shard, 0)

    def heads(self) -> dict[int, int]:
        with _lock:
            self._check()
            return dict(sorted(self._s.heads.items()))

    def journal(self, shard: int, *, after_seq: int = 0) -> Iterator[JournalEvent]:
        with _lock:
            self._check()
            events = list(self._s.events.get(shard, []))
        return (e for e in events if e.seq > after_seq)

    def latest_snapshot(self, shard: int) -> Snapshot | None:
        with _lock:
            self._check()
            kept = self._s.snapshots.get(shard)
            return kept[-1] if kept else None

    def recover(self, shards: Iterable[int] | None = None) -> Iterator[Snapshot | JournalEvent]:
        after: dict[int, int] = {}
        for shard in sorted(self.heads() if shards is None else set(shards)):
            snapshot = self.latest_snapshot(shard)
            if snapshot is not None:
                yield snapshot
            after[shard] = snapshot.upto_seq if snapshot is not None else 0
        for shard, seq in after.items():
            yield from self.journal(shard, after_seq=seq)

    def events_for_account(
        self, shard: int, account: str, *, limit: int = 100, since: int | None = None
    ) -> list[JournalEvent]:
        found = [
            e for e in reversed(list(self.journal(shard))) if e.account == account and e.at >= (since or 0)
        ]
        return found[:limit]

    def events_for_ref(self, shard: int, ref: str, *, since: int | None = None) -> list[JournalEvent]:
        return [e for e in self.journal(shard) if e.ref == ref and e.at >= (since or 0)]

    def open_outbox(self, *, kind: str | None = None, shard: int | None = None) -> Iterator[OutboxEntry]:
        with _lock:
            self._check()
            entries = sorted(
                (e for e in self._s.outbox.values() if e.status.is_open),
                key=lambda e: (e.created_at, e.id),
            )
        return (
            e for e in entries if (kind is None or e.kind == kind) and (shard is None or e.shard == shard)
        )

    def outbox_entry(self, entry_id: str) -> OutboxEntry | None:
        with _lock:
            self._check()
            return self._s.outbox.get(entry_id)

    def count_open_outbox(self) -> dict[tuple[str, OutboxStatus], int]:
        counts: dict[tuple[str, OutboxStatus], int] = {}
        for e in self.open_outbox():
            counts[(e.kind, e.status)] = counts.get((e.kind, e.status), 0) + 1
        return counts


class MemoryDeskStore(_Handle):
    """`DeskStore` in memory; see the module docstring."""

    def __init__(self, location: str | os.PathLike[str], options: StoreOptions) -> None:
        super().__init__(f"memory desk at {location}")
        with _lock:
            self._s = _desks.setdefault(_key(location), _DeskState())

    def record_payments(self, payments: Sequence[NewPayment], *, at: int) -> tuple[RecordResult, ...]:
        with _lock:
            self._check()
            for p in payments:
                check_payment(p)  # SQLite re-checks with its constraints; so does the fake
            s = self._s
            staged: dict[str, PaymentRecord] = {}
            staged_events: dict[tuple[str, str], str] = {}
            results = []
            receipt = s.receipt_seq
            for p in payments:
                event_key = (p.gateway, p.event_id) if p.event_id is not None else None
                stored_id = p.payment_id if p.payment_id in s.payments or p.payment_id in staged else None
                if stored_id is None and event_key is not None:
                    stored_id = staged_events.get(event_key) or s.by_event.get(event_key)
                if stored_id is not None:
                    stored = staged.get(stored_id) or s.payments[stored_id]
                    results.append(
                        RecordResult(
                            payment_id=p.payment_id,
                            outcome=RecordOutcome.DUPLICATE,
                            stored_payment_id=stored_id,
                            receipt_seq=stored.receipt_seq,
                        )
                    )
                    continue
                receipt += 1
                staged[p.payment_id] = PaymentRecord(
                    payment_id=p.payment_id,
                    gateway=p.gateway,
                    event_id=p.event_id,
                    account=p.account,
                    original_account=None,
                    amount_paise=p.amount_paise,
                    channel=p.channel,
                    paid_at=p.paid_at,
                    received_at=p.received_at,
                    committed_at=at,
                    receipt_seq=receipt,
                    status=PaymentStatus.PENDING,
                    applied_at=None,
                    suspended_at=None,
                    resolved_at=None,
                    resolved_by=None,
                    body=p.body,
                    shard=p.shard,
                )
                if event_key is not None:
                    staged_events[event_key] = p.payment_id
                results.append(
                    RecordResult(
                        payment_id=p.payment_id,
                        outcome=RecordOutcome.NEW,
                        stored_payment_id=p.payment_id,
                        receipt_seq=receipt,
                    )
                )
            s.payments.update(staged)
            s.by_event.update(staged_events)
            s.receipt_seq = receipt
            s.duplicates += len(payments) - len(staged)
        return tuple(results)

    def mark_credited(self, acks: Sequence[CreditAck]) -> tuple[AckResult, ...]:
        with _lock:
            self._check()
            s = self._s
            staged: dict[str, PaymentRecord] = {}
            results = []
            for ack in acks:
                current = staged.get(ack.payment_id) or s.payments.get(ack.payment_id)
                if current is None:
                    raise UnknownPayment(ack.payment_id)
                applied = ack.outcome is CreditOutcome.APPLIED
                target = PaymentStatus.APPLIED if applied else PaymentStatus.SUSPENSE
                if current.account != ack.account:
                    results.append(AckResult.STALE)
                elif current.status is target:
                    results.append(AckResult.DUPLICATE)
                elif current.status is not PaymentStatus.PENDING:
                    results.append(AckResult.STALE)
                else:
                    staged[ack.payment_id] = (
                        replace(current, status=target, applied_at=ack.at)
                        if applied
                        else replace(current, status=target, suspended_at=ack.at)
                    )
                    results.append(AckResult.RECORDED)
            s.payments.update(staged)
        return tuple(results)

    def _where(self, status: PaymentStatus, after_receipt_seq: int) -> list[PaymentRecord]:
        with _lock:
            self._check()
            return sorted(
                (
                    p
                    for p in self._s.payments.values()
                    if p.status is status and p.receipt_seq > after_receipt_seq
                ),
                key=lambda p: p.receipt_seq,
            )

    def unacknowledged(
        self, *, after_receipt_seq: int = 0, shards: Collection[int] | None = None
    ) -> Iterator[PaymentRecord]:
        pending = self._where(PaymentStatus.PENDING, after_receipt_seq)
        if shards is not None:
            wanted = set(shards)
            pending = [p for p in pending if p.shard in wanted]
        return iter(pending)

    def payment(self, payment_id: str) -> PaymentRecord | None:
        with _lock:
            self._check()
            return self._s.payments.get(payment_id)

    def payments_for_account(self, account: str, *, limit: int = 100) -> list[PaymentRecord]:
        with _lock:
            self._check()
            mine = [p for p in self._s.payments.values() if p.account == account]
        return sorted(mine, key=lambda p: p.receipt_seq, reverse=True)[:limit]

    def payment_counts(self) -> PaymentCounts:
        with _lock:
            self._check()
            statuses = [p.status for p in self._s.payments.values()]
            return PaymentCounts(
                pending=statuses.count(PaymentStatus.PENDING),
                applied=statuses.count(PaymentStatus.APPLIED),
                suspense=statuses.count(PaymentStatus.SUSPENSE),
                duplicates=self._s.duplicates,
            )

    def suspense(self, *, limit: int = 100, after_receipt_seq: int = 0) -> list[PaymentRecord]:
        return self._where(PaymentStatus.SUSPENSE, after_receipt_seq)[:limit]

    def count_suspense(self) -> int:
        return self.payment_counts().suspense

    def resolve_suspense(
        self, payment_id: str, account: str, *, at: int, by: str, shard: int | None = None
    ) -> ResolveResult:
        with _lock:
            self._check()
            current = self._s.payments.get(payment_id)
            if current is None:
                return ResolveResult.UNKNOWN_PAYMENT
            if current.status is not PaymentStatus.SUSPENSE:
                return ResolveResult.NOT_IN_SUSPENSE
            self._s.payments[payment_id] = replace(
                current,
                status=PaymentStatus.PENDING,
                account=account,
                original_account=current.original_account or current.account,
                resolved_at=at,
                resolved_by=by,
                shard=shard if shard is not None else current.shard,
            )
        return ResolveResult.RESOLVED

    def put_dead_letters(self, letters: Sequence[DeadLetter]) -> tuple[int, ...]:
        with _lock:
            self._check()
            first = len(self._s.dead_letters) + 1
            self._s.dead_letters.extend(
                StoredDeadLetter(
                    id=first + i,
                    source=d.source,
                    message_type=d.message_type,
                    reason=d.reason,
                    at=d.at,
                    body=d.body,
                )
                for i, d in enumerate(letters)
            )
            return tuple(range(first, first + len(letters)))

    def dead_letters(self, *, limit: int = 100, before_id: int | None = None) -> list[StoredDeadLetter]:
        with _lock:
            self._check()
            newest_first = reversed(self._s.dead_letters)
            return [d for d in newest_first if before_id is None or d.id < before_id][:limit]

    def count_dead_letters(self) -> int:
        with _lock:
            self._check()
            return len(self._s.dead_letters)

    def payments_paid_between(self, gateway: str, start: int, end: int) -> Iterator[PaymentRecord]:
        with _lock:
            self._check()
            found = [
                p for p in self._s.payments.values() if p.gateway == gateway and start <= p.paid_at <= end
            ]
        return iter(sorted(found, key=lambda p: (p.paid_at, p.payment_id)))


class MemoryBackend:
    """`StorageBackend` in memory; `location` is only a key."""

    name = "memory"

    def open_shard_store(
        self, location: str | os.PathLike[str], group: int, options: StoreOptions = DEFAULT_OPTIONS
    ) -> MemoryShardStore:
        return MemoryShardStore(location, group, options)

    def open_desk_store(
        self, location: str | os.PathLike[str], options: StoreOptions = DEFAULT_OPTIONS
    ) -> MemoryDeskStore:
        return MemoryDeskStore(location, options)
