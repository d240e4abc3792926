"""What a MeterShard does, without Thespian: decide a batch, journal it, then say what to send.

`ShardService` owns one shard group's `MeterHost` and `ShardStore`. Every batch goes the same way
(DESIGN §4, write-ahead): compute the step (nothing changes), commit its events and outbox entries in
one transaction, assign the step, and only then hand back what must leave the shard (`Outgoing`): the
payment acknowledgements, the relay commands per head-end, the notices. If the commit raises, nothing
was assigned and nothing leaves; Thespian re-runs the handler and the same step is computed again.

The actor around it (actors/shard.py) only delivers `Outgoing` and feeds messages in.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors import shard_snapshot
from domain.commands import MeterCommand
from domain.credit import credit_command_of
from domain.effects import (
    AckPayment,
    CancelRelayCommand,
    CancelWorkOrder,
    Effect,
    MeterCommandRejected,
    NotifyConsumer,
    OpenWorkOrder,
    SendRelayCommand,
)
from domain.enums import RelayAction, RelayResultStatus, RelayState
from domain.events import (
    AwaitingButtonPress,
    MeterEvent,
    PaymentReconnect,
    RelayCommandCancelled,
    RelayCommandFailed,
    RelayCommandIssued,
    RelayCommandRetryScheduled,
    RelayStateConfirmed,
    WorkOrderClosed,
)
from domain.fused import fuse_shard_events
from domain.packed import PackedTable
from domain.policy import Policy
from domain.prepaid_rules import recharges_off_rule, tally
from domain.shard import HostStep, MeterHost, ShardImage
from domain.sharding import logical_shard, shards_of_group
from domain.state import HELD_RETRY_AT, Meter
from protocols import codec
from protocols.registry import METER_PACKING
from storage.api import ShardStore
from storage.records import NewEvent, NewOutboxEntry, OutboxStatus, OutboxUpdate, Snapshot
from telemetry import metrics

__all__ = ["NOTICES_KIND", "Outgoing", "ShardService", "relay_command_of"]

log = logging.getLogger("jodo.shard")

RelayEffect = SendRelayCommand | CancelRelayCommand


@dataclass(slots=True)
class Outgoing:
    """What must leave the shard after a commit, grouped by destination."""

    acks: list[AckPayment] = field(default_factory=list)
    relay: dict[str, list[RelayEffect]] = field(default_factory=lambda: defaultdict(list))
    notices: list[NotifyConsumer] = field(default_factory=list)
    work_orders: list[OpenWorkOrder | CancelWorkOrder] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index in the batch, reason)
    reconnected: list[tuple[str, float]] = field(default_factory=list)  # (head-end, payment→connected s)
    finished: list[tuple[str, str]] = field(default_factory=list)  # (action, outcome) of relay commands
    prepaid: dict[tuple[str, str], int] = field(default_factory=dict)  # domain.prepaid_rules.tally
    off_rule: list[tuple[str, str, str, str]] = field(default_factory=list)  # recharges_off_rule

    def extend(self, other: Outgoing) -> None:
        self.acks += other.acks
        for head_end, commands in other.relay.items():
            self.relay[head_end] += commands
        self.notices += other.notices
        self.work_orders += other.work_orders
        self.rejected += other.rejected
        self.reconnected += other.reconnected
        self.finished += other.finished
        for key, n in other.prepaid.items():
            self.prepaid[key] = self.prepaid.get(key, 0) + n
        self.off_rule += other.off_rule


def relay_command_of(m: Meter) -> SendRelayCommand | None:
    """The command a meter has in flight (to re-send after a restart), or None. A disconnect the
    gateway's guard holds counts: a restarted gateway learns its held waves' commands again."""
    p = m.pending
    if p is None or (p.retry_at is not None and p.retry_at != HELD_RETRY_AT):
        return None
    return SendRelayCommand(
        command_id=p.command_id,
        account=m.account,
        meter_serial=m.serial,
        head_end=m.profile.head_end,
        action=p.action,
        expires_at=p.expires_at,
        reason=p.reason,
        correlation_id=p.correlation_id,
        attempt=p.attempt,
        origin=p.origin,
        engineer_id=p.engineer_id,
    )


def journal_records(events: Iterable[tuple[int, MeterEvent]]) -> list[NewEvent]:
    """A host step's (logical shard, event) pairs as journal records: a payment's common run of events
    fused into one `PaymentReconnect` (domain/fused.py), each body encoded by the codec."""
    encode = codec.encode
    return [
        NewEvent.unchecked(shard, e.account, type(e).__name__, _ref(e), e.at, encode(e))
        for shard, e in fuse_shard_events(list(events))
    ]


def _ref(event: MeterEvent) -> str | None:
    if type(event) is PaymentReconnect:
        return event.command_id  # the journal is the command's audit trail (events_for_ref)
    for name in ("payment_id", "command_id", "bill_id", "work_order_id", "notice_id", "correlation_id"):
        value = getattr(event, name, None)
        if isinstance(value, str):
            return value
    return None


def _finished(step: HostStep, cancelled: dict[str, RelayAction]) -> list[tuple[str, str]]:
    """(action, outcome) of every relay command this step ended, for jodo_relay_commands_total."""
    out: list[tuple[str, str]] = []
    for _, e in step.events:
        if isinstance(e, RelayStateConfirmed):
            action = RelayAction.CONNECT if e.relay is RelayState.CONNECTED else RelayAction.DISCONNECT
            out.append((str(action), "confirmed"))
        elif isinstance(e, AwaitingButtonPress) and e.command_id is not None:
            out.append((str(RelayAction.CONNECT), "awaiting_button"))
        elif isinstance(e, RelayCommandFailed):
            outcome = {RelayResultStatus.REJECTED: "rejected", RelayResultStatus.EXPIRED: "expired"}.get(
                e.status, "failed"
            )
            out.append((str(e.action), outcome))
        elif isinstance(e, RelayCommandCancelled) and e.command_id in cancelled:
            out.append((str(cancelled[e.command_id]), "cancelled"))
    return out


class _Stopwatch:
    """Wall and CPU seconds by stage; the clocks are read only when the stage changes."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {"snapshots": 0.0, "tail": 0.0, "timers": 0.0, "follow": 0.0}
        self.cpu = dict(self.wall)
        self._stage: str | None = None
        self._wall = self._cpu = 0.0

    def stage(self, name: str | None) -> None:
        if name == self._stage:
            return
        wall, cpu = time.perf_counter(), time.process_time()
        if self._stage is not None:
            self.wall[self._stage] += wall - self._wall
            self.cpu[self._stage] += cpu - self._cpu
        self._stage, self._wall, self._cpu = name, wall, cpu


#: Replay CPU per journal event until a recovery measures it (bench_recovery, 725 000 meters in one
#: group, tails of 50 000 and 100 000 payments: 11.8-12.6 µs)
REPLAY_S_PER_EVENT = 12e-6
#: Recovery CPU per relay command in flight (unpack the meter, the command to send again; same runs:
#: 11.6-12.4 µs)
FOLLOW_S_PER_COMMAND = 12e-6
_MEASURED_TAIL = 2_000  # events a recovery must replay to measure their cost (fewer: noise)
_TRACKED = 1_000_000  # payments/commands followed for latency; the oldest are forgotten past this
_SAMPLES = 200_000  # latency samples kept for `ShardLatencyQuery` (bench, status)


def _trim_heap() -> None:
    """Return the C heap's free pages to the OS (glibc keeps them otherwise: a recovery frees tens of
    MB of snapshot bodies and SQLite pages that would stay in the shard's RSS). No-op elsewhere."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None  # glibc's malloc_trim once looked up; False where there is none


def _trim(d: dict[str, object] | dict[str, float] | dict[str, str]) -> None:
    while len(d) > _TRACKED:
        del d[next(iter(d))]




class ShardService:
    """One shard group: its meters, its journal, its timers and what it has in flight."""

    def __init__(
        self,
        *,
        group: int,
        groups: int,
        shards: int,
        store: ShardStore,
        policy: Policy,
        snapshot_every: int = 200_000,
        wall: Callable[[], float] = time.time,
        recovery_budget_s: float = shard_snapshot.RECOVERY_BUDGET_S,
    ) -> None:
        self.group = group
        self.shards = tuple(shards_of_group(group, groups, shards))
        self._owned = frozenset(self.shards)
        self.store = store
        self.host = MeterHost(policy, shards, METER_PACKING)  # meters resident packed: ~200 B each
        self._rules = shard_snapshot.rules_fingerprint(policy)
        self.snapshot_every = snapshot_every
        self.snapshot_rule = shard_snapshot.SnapshotRule(budget_s=recovery_budget_s, every=snapshot_every)
        #: CPU seconds a journal event costs to replay, and a command in flight to follow: measured by
        #: the last recovery with enough of them, else these estimates
        self.replay_s_per_event = REPLAY_S_PER_EVENT
        self.follow_s_per_command = FOLLOW_S_PER_COMMAND
        self.wall = wall
        self.heads: dict[int, int] = {}
        self._since_snapshot: dict[int, int] = defaultdict(int)  # events in each shard's journal tail
        self._rewrite: set[int] = set()  # shards whose snapshot is in an older form: write it again
        self._catching_up = False  # over the recovery budget: snapshotting down to its low water
        self.sent_at: dict[str, float] = {}  # command id → wall time last sent to its gateway
        self.notices_delivered: list[str] = []  # outbox rows whose notices are all out: done next commit
        # the notices of one commit share one outbox row (`_notice_row`): row id → its notice ids not
        # yet delivered, and notice id → its row
        self._notice_rows: dict[str, set[str]] = {}
        self._row_of_notice: dict[str, str] = {}
        # payment id → wall time the desk received it; command id → payment id: payment→connected
        self.paid_wall: dict[str, float] = {}
        self.command_payment: dict[str, str] = {}
        # recent samples (seconds) of payment received → connect sent, and → connected confirmed
        self.to_command: deque[float] = deque(maxlen=_SAMPLES)
        self.to_connected: deque[float] = deque(maxlen=_SAMPLES)
        self.recovery_seconds = 0.0
        #: the last recovery by stage (snapshots, tail: journal replay, timers, follow: commands in
        #: flight): wall seconds, and CPU seconds of this process (what a busy machine does not inflate)
        self.recovery_stages: dict[str, float] = {}
        self.recovery_cpu: dict[str, float] = {}
        # group commit: steps decided but not yet journaled, and the states they lead to
        self._steps: list[HostStep] = []
        self._overlay: dict[str, Meter] = {}
        self._cancelled: dict[str, RelayAction] = {}
        self._in_flight: tuple[int, list[SendRelayCommand]] | None = None  # see `_follow_recovered`

    # ------------------------------------------------------------ recovery

    def recover(self, now: int, receipt_of: Callable[[str], float | None] | None = None) -> float:
        """Load snapshot + journal tail for every logical shard of the group; rebuild the timers.

        ``receipt_of`` (payment id → when it was received, from the ledger) lets the latency of a
        reconnect that was in flight across the restart still be measured.
        """
        started = time.perf_counter()
        watch = _Stopwatch()
        # A v1 snapshot, a long tail or many commands in flight make many objects: the cyclic GC would
        # rescan the growing heap again and again (measured: 25 µs per meter with it, 9 µs without;
        # a third of the time to follow 50 000 commands in flight). Meters hold no cycles.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._load(watch)
            self.heads = {s: h for s, h in self.store.heads().items() if s in self.shards}
            watch.stage("timers")
            replayed = self.tail_events
            if replayed >= _MEASURED_TAIL and watch.cpu["tail"] > 0:
                self.replay_s_per_event = watch.cpu["tail"] / replayed
            self.host.rebuild_timers(now)
            watch.stage("follow")
            self._follow_recovered(receipt_of)
            watch.stage("timers")  # (closes the follow stage's count)
            if len(self.host.pending) >= _MEASURED_TAIL and watch.cpu["follow"] > 0:
                self.follow_s_per_command = watch.cpu["follow"] / len(self.host.pending)
        finally:
            if was_enabled:
                gc.enable()
        _trim_heap()  # what the read freed (snapshot bodies, the decoded tail) back to the OS
        watch.stage(None)
        self.recovery_stages, self.recovery_cpu = watch.wall, watch.cpu
        self.recovery_seconds = time.perf_counter() - started
        return self.recovery_seconds

    def _load(self, watch: _Stopwatch) -> None:
        """Snapshots (unpacking no meter unless v1 or other rules) and the tail, timed by ``watch``."""
        tails = self._since_snapshot
        replay, decode = self.host.replay, codec.decode
        for item in self.store.recover(self.shards):
            if isinstance(item, Snapshot):
                watch.stage("snapshots")
                loaded = shard_snapshot.load(item.body, item.shard, self._rules)
                if isinstance(loaded, ShardImage):
                    self.host.load(loaded)
                    if not isinstance(loaded.meters, PackedTable):  # v2: saved again compact soon
                        self._rewrite.add(item.shard)
                else:  # a v1 body, or counts and timers of other rules: recounted, and saved again soon
                    self.host.restore(loaded, item.shard)
                    self._rewrite.add(item.shard)
            else:
                watch.stage("tail")
                replay(decode(item.body, trusted=True))
                tails[item.shard] += 1  # still a tail: the next restart replays it again unless snapshotted
        watch.stage("tail")
        self.host.settle()  # the replayed states, packed

    def _pending(self) -> list[Meter]:
        """The meters with a relay command pending, by account (unpacked: only these)."""
        return [m for m in map(self.host.get, sorted(self.host.pending)) if m is not None and m.pending]

    def _follow_recovered(self, receipt_of: Callable[[str], float | None] | None) -> None:
        """One pass over the pending meters: the commands to send again (kept for `in_flight` while
        the meters stay as they are: a restarted shard is asked for them as soon as it learns its
        gateways) and, with ``receipt_of``, the payments whose reconnection latency is still to be
        measured."""
        pending = self._pending()
        commands = (relay_command_of(m) for m in pending)
        self._in_flight = (self.host.changes, [c for c in commands if c is not None])
        if receipt_of is None:
            return
        for m in pending:
            p = m.pending
            if p is None or p.action is not RelayAction.CONNECT:
                continue
            received = receipt_of(p.correlation_id)
            if received is not None:
                self.paid_wall[p.correlation_id] = received
                self.command_payment[p.command_id] = p.correlation_id

    def in_flight(self) -> list[SendRelayCommand]:
        """Every command some meter is waiting on (to send again after a restart)."""
        if self._in_flight is None or self._in_flight[0] != self.host.changes:
            commands = (relay_command_of(m) for m in self._pending())
            self._in_flight = (self.host.changes, [c for c in commands if c is not None])
        return list(self._in_flight[1])

    def open_notices(self) -> list[NotifyConsumer]:
        """Notices journaled but not yet delivered (at-least-once: delivered again after a crash): the
        rows of one commit's notices (kind "notices"), and the one-notice rows written before them."""
        out: list[NotifyConsumer] = []
        for entry in self.store.open_outbox():
            if entry.kind == NOTICES_KIND:
                notices = codec.decode_many(entry.body, expect=NotifyConsumer)
                self._track_row(entry.id, notices)
                out += notices
            elif entry.kind == "notice":  # a row of one notice (its id is the notice's)
                notice = codec.decode(entry.body, expect=NotifyConsumer)
                self._track_row(entry.id, [notice])
                out.append(notice)
        return out

    def notices_sent(self, notice_ids: Iterable[str]) -> None:
        """These notices were delivered: a row whose notices are all delivered is marked done by the
        next commit. A notice of no open row (delivered before) marks nothing."""
        rows, row_of = self._notice_rows, self._row_of_notice
        for nid in notice_ids:
            row = row_of.pop(nid, None)
            left = rows.get(row) if row is not None else None
            if row is not None and left is not None:
                left.discard(nid)
                if not left:
                    del rows[row]
                    self.notices_delivered.append(row)

    def _track_row(self, row: str, notices: Sequence[NotifyConsumer]) -> None:
        ids = {n.notice_id for n in notices}
        if not ids:
            self.notices_delivered.append(row)
            return
        self._notice_rows[row] = ids
        for nid in ids:
            self._row_of_notice[nid] = row

    # ------------------------------------------------------------ batches

    def apply(self, commands: Sequence[MeterCommand], now: int) -> Outgoing:
        """Decide, journal, assign; return what must be sent. Raises only if the journal fails."""
        rejected = self.stage(commands, now)
        out = self.flush(now)
        out.rejected += rejected
        return out

    def stage(self, commands: Sequence[MeterCommand], now: int) -> list[tuple[int, str]]:
        """Decide a batch on top of what is already staged; nothing is journaled or sent yet.

        Returns the batch's refused commands as (index, reason). A command for a meter this group
        does not host is refused (a misrouted command would be journaled under a logical shard this
        group never recovers). Many staged batches are journaled in one transaction by `flush`.
        """
        hosted = [c for c in commands if logical_shard(c.account, self.host.shards) in self._owned]
        step = self.host.step(hosted, now, staged=self._overlay)
        for _, e in step.events:
            if isinstance(e, RelayCommandCancelled):
                m = self._overlay.get(e.account) or self.host.get(e.account)
                if m is not None and m.pending is not None:
                    self._cancelled[e.command_id] = m.pending.action
        self._overlay.update(step.states)
        self._steps.append(step)
        rejected: list[tuple[int, str]] = []
        if len(hosted) < len(commands):
            kept = {id(c) for c in hosted}
            rejected += [
                (i, f"{c.account}: not hosted by shard group {self.group}")
                for i, c in enumerate(commands) if id(c) not in kept
            ]
        index = {id(c): i for i, c in enumerate(commands)}
        rejected += [(index.get(id(c), -1), reason) for c, reason in step.failures]
        rejected += [(index.get(id(c), -1), f"{c.account}: {reason}") for c, reason in step.refused]
        for c, reason in step.failures:
            log.warning("meter command rejected", extra={"account": c.account, "reason": reason})
        return rejected

    @property
    def staged(self) -> int:
        """Events staged and not yet journaled."""
        return sum(len(s.events) for s in self._steps) + sum(len(s.effects) for s in self._steps)

    def flush(self, now: int) -> Outgoing:
        """Journal everything staged in ONE transaction, assign it, and return what must be sent.

        If the journal raises, everything stays staged (and nothing leaves): the next flush tries again.
        """
        if not self._steps:
            return Outgoing()
        steps = self._steps
        step = HostStep(
            events=tuple(e for s in steps for e in s.events),
            effects=tuple(e for s in steps for e in s.effects),
            states=dict(self._overlay),
            failures=tuple(f for s in steps for f in s.failures),
            refused=tuple(r for s in steps for r in s.refused),
            duplicate_reads=sum(s.duplicate_reads for s in steps),
        )
        self._commit(step, now)
        self.host.assign(step, now)
        cancelled = self._cancelled
        self._steps, self._overlay, self._cancelled = [], {}, {}
        out = self._route(step.effects)
        self._follow(step, out)
        out.finished += _finished(step, cancelled)
        out.prepaid = tally(step.events, step.states, step.refused + step.failures, step.duplicate_reads)
        if out.prepaid or self.host.prepaid_bands.total():  # only a host with prepaid meters looks
            out.off_rule = recharges_off_rule(step.events, step.states, self.host.policy)
        return out

    def note_payments(self, received: Iterable[tuple[str, float]]) -> None:
        """Remember when the desk received these payments (for payment→connected seconds)."""
        for payment_id, wall in received:
            self.paid_wall[payment_id] = wall
        _trim(self.paid_wall)

    def _follow(self, step: HostStep, out: Outgoing) -> None:
        wall = self.wall()
        for _, event in step.events:
            issued: tuple[str, str] | None = None  # (command id, correlation id) of a command issued
            if isinstance(event, PaymentReconnect):  # a fused payment: its RelayCommandIssued
                issued = event.command_id, event.payment_id
            elif isinstance(event, RelayCommandIssued):
                issued = event.command_id, event.correlation_id
            if issued is not None:
                command_id, correlation = issued
                if correlation in self.paid_wall:
                    if command_id not in self.command_payment:
                        self.to_command.append(max(0.0, wall - self.paid_wall[correlation]))
                    self.command_payment[command_id] = correlation
                    _trim(self.command_payment)
            elif isinstance(event, RelayStateConfirmed | RelayCommandFailed | RelayCommandCancelled):
                self.sent_at.pop(event.command_id, None)
                payment_id = self.command_payment.pop(event.command_id, None)
                if (
                    payment_id is not None
                    and isinstance(event, RelayStateConfirmed)
                    and event.relay is RelayState.CONNECTED
                ):
                    paid = self.paid_wall.pop(payment_id, None)
                    m = step.states.get(event.account) or self.host.get(event.account)
                    if paid is not None and m is not None:
                        out.reconnected.append((m.profile.head_end, max(0.0, wall - paid)))
                        self.to_connected.append(max(0.0, wall - paid))
            elif isinstance(event, RelayCommandRetryScheduled):
                self.sent_at.pop(event.command_id, None)

    def tick(self, now: int, *, limit: int, resend_after: float) -> Outgoing:
        """Stage the checks that are due (call `flush` next), and return the commands to send again
        because they had no answer for ``resend_after`` seconds."""
        out = Outgoing()
        checks = self.host.due(now, limit)
        if checks:
            self.stage(checks, now)  # journaled by the caller's next flush
        stale_before = self.wall() - resend_after
        stale = [cid for cid, t in self.sent_at.items() if t < stale_before]
        for cid in stale[:limit]:
            account = cid.rsplit(":", 1)[0]
            m = self.host.get(account)
            command = None if m is None else relay_command_of(m)
            held = m is not None and m.pending is not None and m.pending.retry_at == HELD_RETRY_AT
            if m is not None and (command is None or command.command_id != cid):
                command, held = credit_command_of(m), False  # a credit update with no answer yet
            if command is None or command.command_id != cid or held:
                self.sent_at.pop(cid, None)  # (a held one waits for its release: no re-send storm)
            else:
                out.relay[command.head_end].append(command)
        return out

    def mark_sent(self, commands: Iterable[RelayEffect]) -> None:
        wall = self.wall()
        for c in commands:
            if isinstance(c, SendRelayCommand):
                self.sent_at[c.command_id] = wall

    @property
    def tail_events(self) -> int:
        """Events journaled since their logical shard's last snapshot: what a restart would replay."""
        return sum(self._since_snapshot.values())

    def tail_estimate_s(self) -> float:
        """Estimated CPU seconds a restart now would spend replaying the journal tail."""
        return self.tail_events * self.replay_s_per_event

    def tail_rule(self) -> shard_snapshot.SnapshotRule:
        """The snapshot rule with the tail's share of the recovery budget: what following the
        commands in flight leaves of it, at least `shard_snapshot.TAIL_FLOOR_S`."""
        rule = self.snapshot_rule
        follow = len(self.host.pending) * self.follow_s_per_command
        tail = max(min(rule.budget_s, shard_snapshot.TAIL_FLOOR_S), rule.budget_s - follow)
        return rule if tail == rule.budget_s else dataclasses.replace(rule, budget_s=tail)

    def snapshot_due(self) -> list[int]:
        """Logical shards to snapshot now, in order (`shard_snapshot.plan`): those in an older form,
        those at ``snapshot_every`` events, then, while the tail's estimated replay is over the
        recovery budget, the shards with the most tail events per meter."""
        rule, estimate = self.tail_rule(), self.tail_estimate_s()
        if estimate > rule.budget_s:
            self._catching_up = True
        elif estimate <= rule.budget_s * rule.low_water:
            self._catching_up = False
        return shard_snapshot.plan(
            self._since_snapshot, self.host.shard_sizes(), seconds_per_event=self.replay_s_per_event,
            rule=rule, rewrite=self._rewrite, catching_up=self._catching_up,
        )

    def snapshot_some(self, now: int, budget_s: float) -> int:
        """Snapshot what `snapshot_due` names, one logical shard at a time, for about ``budget_s``
        seconds at most (an actor's tick must not hold its mailbox); returns the shards saved. The
        next call goes on where this one stopped."""
        deadline = time.perf_counter() + budget_s
        done = 0
        for shard in self.snapshot_due():
            self.snapshot([shard], now)
            done += 1
            if time.perf_counter() > deadline:
                break
        return done

    def snapshot(self, shards: Iterable[int], now: int) -> int:
        """Save snapshots of these logical shards at their current heads; returns meters saved.

        Each is the shard's `ShardImage` as the host holds it (actors/shard_snapshot.py, v2): no meter
        is unpacked or packed again."""
        snaps = []
        saved = 0
        for shard in shards:
            head = self.heads.get(shard, 0)
            if head == 0:  # nothing journaled: nothing to replay, nothing to save
                self._rewrite.discard(shard)
                continue
            image = self.host.image(shard)
            body = shard_snapshot.dump(image, self._rules)
            snaps.append(Snapshot(shard=shard, upto_seq=head, at=now, body=body))
            saved += len(image.meters)
        if snaps:
            self.store.save_snapshots(snaps)
            for s in snaps:
                self._since_snapshot[s.shard] = 0
                self._rewrite.discard(s.shard)
        return saved

    # ------------------------------------------------------------ internals

    def _commit(self, step: HostStep, now: int) -> None:
        events = journal_records(step.events)
        outbox: list[NewOutboxEntry] = []
        updates: list[OutboxUpdate] = [
            OutboxUpdate(id=nid, status=OutboxStatus.DONE, at=now) for nid in self.notices_delivered
        ]
        shard_of = {e.account: shard for shard, e in step.events}
        notices: list[NotifyConsumer] = []
        for effect in step.effects:
            if type(effect) is NotifyConsumer:
                notices.append(effect)
                continue
            kind = _OUTBOX_KIND.get(type(effect))
            if kind is None:
                continue
            entry_id = _outbox_id(effect)
            shard = shard_of.get(effect.account, self.shards[0])
            outbox.append(
                NewOutboxEntry(
                    id=entry_id, shard=shard, kind=kind, account=effect.account, at=now,
                    body=codec.encode(effect),
                )
            )
        row = None
        if notices:  # one row for all of them (two rows a payment cost a quarter of a small batch)
            row = _notice_row(now)
            first = notices[0]
            outbox.append(NewOutboxEntry(id=row, shard=shard_of.get(first.account, self.shards[0]),
                                         kind=NOTICES_KIND, account=first.account, at=now,
                                         body=codec.encode_many(notices)))
        for _, e in step.events:
            if isinstance(e, WorkOrderClosed):
                updates.append(OutboxUpdate(id=e.work_order_id, status=OutboxStatus.DONE, at=now))
        if not events and not outbox and not updates:
            return
        started = time.perf_counter()
        result = self.store.commit(events, outbox=outbox, outbox_updates=updates)
        self._observe_commit(time.perf_counter() - started)
        self.notices_delivered = []
        if row is not None:
            self._track_row(row, notices)
        for shard, head in result.heads.items():
            self.heads[shard] = head
        for record in events:  # journal records (a fused payment is one), as the tail holds them
            self._since_snapshot[record.shard] += 1

    def _observe_commit(self, seconds: float) -> None:
        try:
            metrics.journal_commit("shard", seconds)
        except Exception:  # metrics must never take the journal down
            log.debug("journal commit metric failed", exc_info=True)

    def _route(self, effects: Iterable[Effect]) -> Outgoing:
        out = Outgoing()
        for e in effects:
            if isinstance(e, AckPayment):
                out.acks.append(e)
            elif isinstance(e, SendRelayCommand | CancelRelayCommand):
                out.relay[e.head_end].append(e)
            elif isinstance(e, NotifyConsumer):
                out.notices.append(e)
            elif isinstance(e, OpenWorkOrder | CancelWorkOrder):
                out.work_orders.append(e)
            elif isinstance(e, MeterCommandRejected):
                log.warning(
                    "meter command refused",
                    extra={"account": e.account, "command": e.command, "ref": e.ref, "reason": e.reason},
                )
        return out


# Relay commands have no outbox rows: the meter's pending command is their durable outbox (re-sent
# from it after any restart) and the journal holds their audit trail (ref = command id). Measured: the
# per-command insert + update cost a third of a shard's time in the first end-to-end bench.
# Consumer notices: the notices of one commit are one outbox row of kind NOTICES_KIND (their
# `codec.encode_many`), marked done once every one of them is delivered (`notices_sent`). Rows of
# kind "notice" (one notice each) are what data directories written before hold; still delivered.
_OUTBOX_KIND: dict[type, str] = {
    OpenWorkOrder: "work_order",
}
NOTICES_KIND = "notices"


def _notice_row(now: int) -> str:
    """A fresh id for a commit's notice row: never one an earlier row had (a repeated id would make the
    insert a no-op and leave the new notices without a row), ordered by time so rows append."""
    return f"notices:{now:012d}:{uuid.uuid4().hex}"


def _outbox_id(effect: Effect) -> str:
    if isinstance(effect, NotifyConsumer):
        return effect.notice_id
    if isinstance(effect, OpenWorkOrder):
        return effect.work_order_id
    raise TypeError(type(effect).__name__)

