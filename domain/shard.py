"""Many meter entities in one place: what a MeterShard actor hosts, with no I/O of its own.

Each meter keeps the actor guarantees (DESIGN §2): its commands are handled one at a time, in the
order they arrive, against its own state. A batch is computed first (`MeterHost.step`, no mutation),
journaled by the caller, then assigned (`MeterHost.assign`): a handler that raises and is re-run by
Thespian computes the same step again, and nothing half-applied is left behind.

Timers: one time-bucketed index for the whole host (not a timer per meter). Every assignment files
the meter under its `next_check_at` second; when a bucket comes due each meter in it is checked
again against its *current* state, so a stale entry costs one look-up and is dropped.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from domain.commands import CheckMeter, MeterCommand
from domain.effects import Effect, MeterCommandRejected
from domain.enums import RelayState, WorkOrderAction
from domain.events import MeterEvent
from domain.meter import evolve, handle, next_check_at
from domain.policy import Policy
from domain.sharding import DEFAULT_LOGICAL_SHARDS, logical_shard
from domain.state import Meter

__all__ = ["HostStep", "MeterHost", "meter_status"]

#: The relay states in which a consumer is without supply because of jodo (or waiting on it).
_OFF = frozenset({RelayState.DISCONNECTED, RelayState.DISCONNECTING, RelayState.CONNECTING})


def meter_status(m: Meter, policy: Policy) -> tuple[RelayState, bool]:
    """A meter's relay state, and whether it is paid up yet still off (the broken promise)."""
    return m.relay, m.relay in _OFF and m.dues_paise <= policy.reconnection_threshold_paise


@dataclass(frozen=True, slots=True)
class HostStep:
    """What a batch of commands decided, before anything is assigned.

    ``events``: (logical shard, event) in order, to journal. ``effects``: to carry out after the
    journal commit. ``states``: the new state of every meter that changed. ``failures``: commands
    that raised (each rejected on its own; the rest of the batch stands) with the reason.
    """

    events: tuple[tuple[int, MeterEvent], ...]
    effects: tuple[Effect, ...]
    states: dict[str, Meter]
    failures: tuple[tuple[MeterCommand, str], ...]
    refused: tuple[tuple[MeterCommand, str], ...] = ()  # business refusals (MeterCommandRejected)


class MeterHost:
    """The meter entities of some logical shards, with one timer index and running counts."""

    def __init__(self, policy: Policy, shards: int = DEFAULT_LOGICAL_SHARDS) -> None:
        self.policy = policy
        self.shards = shards
        self._by_shard: dict[int, dict[str, Meter]] = {}
        self._buckets: dict[int, list[str]] = {}
        self._keys: list[int] = []  # heap of bucket keys (epoch seconds)
        self.relay_counts: Counter[RelayState] = Counter()
        self.paid_off: set[str] = set()  # paid up yet without supply: should be brief
        self.work_orders: Counter[WorkOrderAction] = Counter()  # open field work orders by action

    # ------------------------------------------------------------ looking up

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_shard.values())

    def get(self, account: str) -> Meter | None:
        shard = self._by_shard.get(logical_shard(account, self.shards))
        return None if shard is None else shard.get(account)

    def shard_meters(self, shard: int) -> Iterator[Meter]:
        """Every meter of one logical shard (for its snapshot)."""
        return iter(list(self._by_shard.get(shard, {}).values()))

    def meters(self) -> Iterator[Meter]:
        for shard in list(self._by_shard.values()):
            yield from list(shard.values())

    # ------------------------------------------------------------ compute, then assign

    def step(
        self, commands: Iterable[MeterCommand], now: int, staged: Mapping[str, Meter] | None = None
    ) -> HostStep:
        """Decide a batch of commands, in order, without changing the host.

        ``staged``: states decided by earlier steps not yet assigned (group commit): they stand in
        front of the host's own.
        """
        overlay: dict[str, Meter] = {}
        behind = staged or {}
        events: list[tuple[int, MeterEvent]] = []
        effects: list[Effect] = []
        failures: list[tuple[MeterCommand, str]] = []
        refused: list[tuple[MeterCommand, str]] = []
        for command in commands:
            account = command.account
            state = overlay.get(account) or behind.get(account) or self.get(account)
            try:
                new, evs, effs = handle(state, command, now, self.policy)
            except Exception as exc:  # one bad record must not poison the other 9 999
                failures.append((command, f"{type(exc).__name__}: {exc}"))
                continue
            if evs and new is not None:
                overlay[account] = new
                shard = logical_shard(account, self.shards)
                events.extend((shard, e) for e in evs)
            effects.extend(effs)
            refused += [(command, e.reason) for e in effs if isinstance(e, MeterCommandRejected)]
        return HostStep(tuple(events), tuple(effects), overlay, tuple(failures), tuple(refused))

    def assign(self, step: HostStep, now: int) -> None:
        """Make a journaled step's states current and file their next checks."""
        for account, meter in step.states.items():
            self._put(account, meter)
            self._schedule(account, meter, now)

    def _put(self, account: str, meter: Meter) -> None:
        shard = self._by_shard.setdefault(logical_shard(account, self.shards), {})
        old = shard.get(account)
        if old is not None:
            self._count(old, -1)
        shard[account] = meter
        self._count(meter, +1)

    def _count(self, m: Meter, sign: int) -> None:
        relay, paid_off = meter_status(m, self.policy)
        self.relay_counts[relay] += sign
        if m.work_order is not None:
            self.work_orders[m.work_order.action] += sign
        if paid_off:
            if sign > 0:
                self.paid_off.add(m.account)
            else:
                self.paid_off.discard(m.account)

    @property
    def paid_but_disconnected(self) -> int:
        return len(self.paid_off)

    def paid_but_disconnected_since(self, now: int, grace: int) -> tuple[int, int]:
        """Paid-up meters still without supply ``grace`` seconds after their command went out, or with
        none in flight: (remote path, field path: a work order is open). The promise is broken for these.
        """
        auto = field = 0
        for account in self.paid_off:
            m = self.get(account)
            if m is None:
                continue
            if m.work_order is not None:
                field += 1
            elif m.pending is None or now - m.pending.issued_at >= grace:
                auto += 1
        return auto, field

    # ------------------------------------------------------------ recovery

    def restore(self, meters: Iterable[Meter], shard: int | None = None) -> None:
        """Load meters from a snapshot (no events, no timers yet: call `rebuild_timers` after replay).

        With ``shard`` (a logical shard's snapshot) the meters go straight into that shard's table.
        """
        if shard is None:
            for m in meters:
                self._put(m.account, m)
            return
        table = self._by_shard.setdefault(shard, {})
        for m in meters:
            old = table.get(m.account)
            if old is not None:
                self._count(old, -1)
            table[m.account] = m
            self._count(m, +1)

    def replay(self, event: MeterEvent) -> None:
        """Apply one journaled event (recovery: snapshot + tail)."""
        self._put(event.account, evolve(self.get(event.account), event))

    def rebuild_timers(self, now: int) -> None:
        """File every meter's next check (after a restore and replay)."""
        self._buckets.clear()
        self._keys.clear()
        for m in self.meters():
            self._schedule(m.account, m, now)

    # ------------------------------------------------------------ timers

    def _schedule(self, account: str, meter: Meter, now: int) -> None:
        at = next_check_at(meter, self.policy)
        if at is None:
            return
        key = max(at, now + 1)  # a check due now runs on the next tick, never in a tight loop
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = bucket = []
            heapq.heappush(self._keys, key)
        bucket.append(account)

    def next_due(self) -> int | None:
        """The earliest second at which some meter may need a check."""
        return self._keys[0] if self._keys else None

    def due(self, now: int, limit: int) -> list[CheckMeter]:
        """Take up to ``limit`` checks that are due at ``now``, earliest first.

        The entries taken are gone from the index: the caller keeps the checks staged until they are
        journaled (a restart rebuilds the index from the states anyway).
        """
        out: list[CheckMeter] = []
        seen: set[str] = set()
        while self._keys and self._keys[0] <= now and len(out) < limit:
            key = self._keys[0]
            bucket = self._buckets[key]
            while bucket and len(out) < limit:
                account = bucket.pop()
                if account in seen:
                    continue
                m = self.get(account)
                at = None if m is None else next_check_at(m, self.policy)
                if at is not None and at <= now:
                    seen.add(account)
                    out.append(CheckMeter(account=account))
            if not bucket:
                heapq.heappop(self._keys)
                del self._buckets[key]
        return out
