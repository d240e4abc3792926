"""What the PaymentDesk does, without Thespian: the ledger first, then credits to the shards.

Every payment batch is recorded in the ledger in one transaction (duplicates reported, never
applied twice) before anyone is told it was accepted. Accepted payments wait per shard group for a
credit window (at most ``window`` unacknowledged `CreditBatch` per group) and leave in batches; a
shard's `CreditAckBatch` marks them applied (or moves them to suspense for an unknown account).
A payment is re-sent until acknowledged: after a desk restart (from the ledger), after a shard
restart (its unacknowledged batches), and after ``resend_after`` seconds without an answer. Shards
deduplicate, so a re-send never credits twice.

When more than ``max_queued`` payments are waiting, new batches are refused whole (`saturated`) and
nothing of them is stored: the front door answers 503 with Retry-After and the gateway retries.

Cluster mode (``cluster=True``): every node's desk records into the one shared ledger (its unique
keys make deduplication cluster-wide), but credits only the groups its node owns (`set_owned`, from
the node's keeper). A payment for a group owned elsewhere stays pending in the ledger, with its
logical shard, and the owner's desk finds it there (`poll`, every tick; `set_owned` on a
take-over loads every pending payment of the new groups). The database is the bus between nodes.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.commands import ClearPayment
from domain.effects import AckPayment
from domain.enums import PaymentOutcome
from domain.sharding import group_of, logical_shard
from protocols import codec
from protocols.payments import CreditBatch, PaymentItemResult, PaymentReceived, PaymentResultCode
from storage.api import DeskStore
from storage.records import CreditAck, CreditOutcome, NewPayment, PaymentRecord, RecordOutcome

__all__ = ["DeskService", "Intake"]


@dataclass(frozen=True, slots=True)
class _Waiting:
    credit: ClearPayment
    received_wall: float
    gateway: str = "other"


@dataclass(slots=True)
class _InFlight:
    payments: list[_Waiting]
    sent_wall: float


@dataclass(frozen=True, slots=True)
class Intake:
    """The desk's answer to one payment batch: per-item results, or ``saturated`` (nothing stored)."""

    results: tuple[PaymentItemResult, ...]
    saturated: bool = False
    accepted: tuple[PaymentReceived, ...] = ()


def _credit_of(record: PaymentRecord) -> ClearPayment:
    """The credit for a ledger record (its current account: it may have been re-assigned)."""
    try:
        received = codec.decode(record.body, expect=PaymentReceived, trusted=True)
    except codec.CodecError:
        return ClearPayment(
            account=record.account, payment_id=record.payment_id, amount_paise=record.amount_paise,
            channel=record.channel, cashless=True, paid_at=record.paid_at,
        )
    credit = _credit(received)
    if credit.account != record.account:  # re-assigned from suspense
        credit = ClearPayment(
            account=record.account, payment_id=credit.payment_id, amount_paise=credit.amount_paise,
            channel=credit.channel, cashless=credit.cashless, paid_at=credit.paid_at,
        )
    return credit


def _credit(p: PaymentReceived) -> ClearPayment:
    return ClearPayment(
        account=p.account, payment_id=p.payment_id, amount_paise=p.amount_paise, channel=p.channel,
        cashless=p.cashless, paid_at=p.paid_at,
    )


class DeskService:
    """The payments ledger and the credit flow towards the shard groups."""

    def __init__(
        self,
        *,
        store: DeskStore,
        groups: int,
        shards: int = 256,
        window: int = 8,
        max_batch: int = 5_000,
        max_queued: int = 200_000,
        wall: Callable[[], float] = time.time,
        cluster: bool = False,
    ) -> None:
        self.store = store
        self.groups = groups
        self.shards = shards
        self.window = window
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.wall = wall
        self.queues: dict[int, deque[_Waiting]] = {g: deque() for g in range(groups)}
        self.suspended: list[str] = []  # gateways of payments just moved to suspense (for metrics)
        # settled, not yet marked in the ledger, each with when the desk saw it (its `applied_at`)
        self.acks_to_record: list[tuple[AckPayment, int]] = []
        self.in_flight: dict[int, dict[str, _InFlight]] = {g: {} for g in range(groups)}
        # cluster mode: the groups this node serves (None: a single node serves them all)
        self.owned: frozenset[int] | None = frozenset() if cluster else None
        self.polled = 0  # payments found in the ledger for our groups, recorded by another node

    def owns(self, group: int) -> bool:
        return self.owned is None or group in self.owned

    def group_of(self, account: str) -> int:
        return group_of(logical_shard(account, self.shards), self.groups)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    @property
    def unacknowledged(self) -> int:
        return self.queued + sum(len(b.payments) for f in self.in_flight.values() for b in f.values())

    # ------------------------------------------------------------ intake

    def recover(self) -> int:
        """Queue every payment the ledger has not seen acknowledged (after a desk restart). In
        cluster mode nothing yet: the keeper's `set_owned` says which groups are ours."""
        if self.owned is not None:
            return 0
        wall = self.wall()
        n = 0
        for record in self.store.unacknowledged():
            credit = _credit_of(record)
            self.queues[self.group_of(credit.account)].append(_Waiting(credit, wall, record.gateway))
            n += 1
        return n

    # ------------------------------------------------------------ cluster ownership

    def set_owned(self, groups: frozenset[int]) -> set[int]:
        """Cluster: serve exactly `groups` from now on; returns the groups with credits to send.

        A group given up is forgotten here (its payments stay pending in the ledger for its next
        owner); a group taken on gets every pending payment the ledger holds for it."""
        if self.owned is None:
            return set()
        lost, gained = self.owned - groups, groups - self.owned
        for group in lost:
            self.queues[group].clear()
            self.in_flight[group].clear()
        self.owned = groups
        return self._load_pending(gained) if gained else set()

    def poll(self) -> set[int]:
        """Cluster: queue the pending payments of our groups that another node recorded; returns
        the groups that got work. Cheap: pending rows are few (a partial index keeps them)."""
        if not self.owned:
            return set()
        return self._load_pending(self.owned)

    def _load_pending(self, groups: frozenset[int] | set[int]) -> set[int]:
        known = {w.credit.payment_id for q in self.queues.values() for w in q}
        known.update(w.credit.payment_id for f in self.in_flight.values() for b in f.values()
                     for w in b.payments)
        known.update(a.payment_id for a, _ in self.acks_to_record)
        shards = [s for s in range(self.shards) if group_of(s, self.groups) in groups]
        found: set[int] = set()
        for record in self.store.unacknowledged(shards=shards):
            if record.payment_id in known:
                continue
            credit = _credit_of(record)
            group = self.group_of(credit.account)
            if group not in groups:
                continue  # re-assigned from suspense to an account of another group
            self.queues[group].append(_Waiting(credit, float(record.received_at), record.gateway))
            found.add(group)
            self.polled += 1
        return found

    def receive_many(
        self,
        batches: Sequence[Sequence[PaymentReceived | codec.CodecError]],
        now: int,
        received_wall: Sequence[float] | None = None,
    ) -> list[Intake]:
        """Record several batches in ONE ledger transaction (group commit); one `Intake` each.

        A batch that would push a non-empty queue past ``max_queued`` is refused whole (saturated); the
        ledger decides duplicates across all of them, in order. ``received_wall`` (per batch, wall
        time it reached the desk) starts the payment→command and payment→connected clocks; without
        it they start after the commit.
        """
        intakes: list[Intake | None] = [None] * len(batches)
        rows: list[tuple[int, int, PaymentReceived]] = []  # (batch, index in batch, payment)
        queued = self.queued
        for b, items in enumerate(batches):
            good = [(i, p) for i, p in enumerate(items) if isinstance(p, PaymentReceived)]
            # an empty queue takes any batch: one larger than the limit would be refused forever
            if queued > 0 and queued + len(good) > self.max_queued:
                intakes[b] = Intake(results=(), saturated=True)
                continue
            queued += len(good)
            rows += [(b, i, p) for i, p in good]
        recorded = self.store.record_payments(
            [
                NewPayment(
                    payment_id=p.payment_id, gateway=p.gateway, event_id=p.event_id, account=p.account,
                    amount_paise=p.amount_paise, channel=p.channel, paid_at=p.paid_at,
                    received_at=p.received_at, body=codec.encode(p),
                    shard=logical_shard(p.account, self.shards),
                )
                for _, _, p in rows
            ],
            at=now,
        ) if rows else ()
        wall = self.wall()
        walls = list(received_wall) if received_wall is not None else [wall] * len(batches)
        results: dict[int, list[PaymentItemResult]] = {b: [] for b in range(len(batches))}
        accepted: dict[int, list[PaymentReceived]] = {b: [] for b in range(len(batches))}
        for b, items in enumerate(batches):
            if intakes[b] is None:
                results[b] += [
                    PaymentItemResult(index=i, payment_id="", code=PaymentResultCode.REJECTED, reason=str(x))
                    for i, x in enumerate(items) if isinstance(x, codec.CodecError)
                ]
        for (b, i, p), r in zip(rows, recorded, strict=True):
            if r.outcome is RecordOutcome.NEW:
                results[b].append(PaymentItemResult(index=i, payment_id=p.payment_id,
                                                    code=PaymentResultCode.ACCEPTED))
                group = self.group_of(p.account)
                if self.owns(group):  # else its owner's desk finds it in the ledger
                    self.queues[group].append(_Waiting(_credit(p), walls[b], p.gateway))
                accepted[b].append(p)
            else:
                results[b].append(PaymentItemResult(
                    index=i, payment_id=p.payment_id, code=PaymentResultCode.DUPLICATE,
                    reason=f"already received as {r.stored_payment_id}",
                ))
        return [
            intake if intake is not None else Intake(
                results=tuple(sorted(results[b], key=lambda r: r.index)), accepted=tuple(accepted[b])
            )
            for b, intake in enumerate(intakes)
        ]

    # ------------------------------------------------------------ credits

    def batches(self, group: int) -> list[CreditBatch]:
        """Fill the group's credit window from its queue."""
        queue = self.queues[group]
        flying = self.in_flight[group]
        out = []
        wall = self.wall()
        while queue and len(flying) < self.window:
            taken = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
            batch_id = uuid.uuid4().hex
            flying[batch_id] = _InFlight(taken, wall)
            out.append(
                CreditBatch(
                    batch_id=batch_id,
                    payload=codec.encode_many(w.credit for w in taken),
                    received_wall=tuple(w.received_wall for w in taken),
                )
            )
        return out

    def settle(self, batches: Sequence[tuple[int, str, Sequence[AckPayment]]], at: int = 0) -> None:
        """Free the credit window for acknowledged batches (memory only).

        Payments of a batch the shard did not acknowledge (a command it could not decide) go back
        to the queue. The acknowledgements themselves wait in `acks_to_record` for `record_acks`:
        they are the ledger's bookkeeping, not what makes a credit safe (the shard journaled it), so
        they need not hold up the next payments. If the desk dies first, the ledger still says
        pending and the restarted desk sends those payments again; the shards answer "applied" again.
        """
        for group, batch_id, acks in batches:
            self.acks_to_record.extend((a, at) for a in acks)
            batch = self.in_flight[group].pop(batch_id, None)
            if batch is not None:
                unknown = {a.payment_id for a in acks if a.outcome is PaymentOutcome.UNKNOWN_ACCOUNT}
                self.suspended += [w.gateway for w in batch.payments if w.credit.payment_id in unknown]
                settled = {a.payment_id for a in acks}
                self.queues[group].extend(w for w in batch.payments if w.credit.payment_id not in settled)

    def record_acks(self, now: int) -> int:
        """Mark every settled acknowledgement in the ledger, in one transaction."""
        every = self.acks_to_record
        if every:
            self.store.mark_credited(
                [
                    CreditAck(
                        payment_id=a.payment_id, account=a.account,
                        outcome=CreditOutcome.APPLIED
                        if a.outcome is PaymentOutcome.APPLIED
                        else CreditOutcome.UNKNOWN_ACCOUNT,
                        # when the desk saw it, not when the tick marks it: a trace's "applied" hop
                        # would otherwise land after the relay's result when a tick crosses a second
                        at=seen or now,
                    )
                    for a, seen in every
                ]
            )
            self.acks_to_record = []
        return len(every)

    def shard_restarted(self, group: int) -> None:
        """The group's shard is new: whatever it had from us may be lost. Send it all again."""
        flying = self.in_flight[group]
        again = [w for b in flying.values() for w in b.payments]
        flying.clear()
        self.queues[group].extendleft(reversed(again))

    def stale(self, resend_after: float) -> list[int]:
        """Groups with a batch unanswered for ``resend_after`` seconds: their batches go again."""
        cutoff = self.wall() - resend_after
        groups = []
        for group, flying in self.in_flight.items():
            old = [bid for bid, b in flying.items() if b.sent_wall < cutoff]
            if old:
                again = [w for bid in old for w in flying.pop(bid).payments]
                self.queues[group].extendleft(reversed(again))
                groups.append(group)
        return groups
