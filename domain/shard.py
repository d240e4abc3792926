"""Many meter entities in one place: what a MeterShard actor hosts, with no I/O of its own.

Each meter keeps the actor guarantees (DESIGN §2): its commands are handled one at a time, in the
order they arrive, against its own state. A batch is computed first (`MeterHost.step`, no mutation),
journaled by the caller, then assigned (`MeterHost.assign`): a handler that raises and is re-run by
Thespian computes the same step again, and nothing half-applied is left behind.

Resident form: a host keeps each meter *packed* (`Packing`: a shard group packs it into ~50-130 bytes
with protocols.registry; the default keeps the `Meter` objects), per logical shard, and unpacks a meter
only to decide a command for it. Whatever must be known of all meters without unpacking them is kept
as it changes: relay-state and work-order counts (per logical shard too), the accounts paid up yet
off, the accounts with a relay command pending, and each meter's next check. A logical shard's
`ShardImage` (its snapshot) carries all of it, so loading one unpacks no meter.

Timers: one time-bucketed index for the whole host (not a timer per meter). Every assignment files
the meter under its `next_check_at` second; when a bucket comes due each meter in it is checked
again against its *current* next check, so a stale entry costs one look-up and is dropped.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from domain.commands import CheckMeter, MeterCommand, ReportConsumption
from domain.effects import Effect, MeterCommandRejected
from domain.enums import RelayState, WorkOrderAction
from domain.events import MeterEvent
from domain.meter import evolve, next_check_at
from domain.packed import PackedTable
from domain.payment_path import handle_batched
from domain.policy import Policy
from domain.prepaid import balance_band
from domain.serials import SerialIndex, serial_hash
from domain.sharding import DEFAULT_LOGICAL_SHARDS, logical_shard
from domain.state import Meter

__all__ = [
    "OBJECTS",
    "OFF_FIELD",
    "OFF_UNSENT",
    "SCHEDULE_RULES",
    "HostStep",
    "MeterHost",
    "Packing",
    "ShardImage",
    "meter_status",
]

#: The relay states in which a consumer is without supply because of jodo (or waiting on it).
_OFF = frozenset({RelayState.DISCONNECTED, RelayState.DISCONNECTING, RelayState.CONNECTING})
#: Bump when `next_check_at` or `meter_status` change what they compute: a `ShardImage` holds timers
#: and counts computed by the rules of its day, and one made under other rules must be recounted.
SCHEDULE_RULES = 1
#: `MeterHost.paid_off` values other than the issue time of the command in flight: a field work order
#: is open; no command is in flight.
OFF_FIELD = -1
OFF_UNSENT = -2
_LOADED_KEPT = 250_000  # unpacked meters remembered between step and assign, at most
_SECONDS_KEPT = 65_536  # distinct next-check seconds shared (many meters share a due date)
#: fresh serials (registered or re-assigned since the index was built) that make a snapshot fold them
_FOLD_AT = 1_024


def meter_status(m: Meter, policy: Policy) -> tuple[RelayState, bool]:
    """A meter's relay state, and whether it is paid up (prepaid: a balance above zero) yet still off
    (the broken promise)."""
    if m.relay not in _OFF:
        return m.relay, False
    return m.relay, (m.dues_paise <= policy.reconnection_threshold_paise if m.prepaid is None
                     else m.dues_paise < 0)


def _off_since(m: Meter) -> int:
    if m.work_order is not None:
        return OFF_FIELD
    return OFF_UNSENT if m.pending is None else m.pending.issued_at


def _itself(meter: Meter) -> object:
    return meter


def _as_meter(account: str, value: object) -> Meter:
    return value  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Packing:
    """How a host keeps a meter resident: ``pack(meter)`` → value, ``unpack(account, value)`` → meter.

    ``unpack(a, pack(m)) == m`` for every meter ``m`` of account ``a``; the value need not hold the
    account (the host keeps it as the key)."""

    pack: Callable[[Meter], object]
    unpack: Callable[[str, object], Meter]


#: Keep the `Meter` objects themselves (tests, tools); a shard group packs them (protocols.registry).
OBJECTS = Packing(_itself, _as_meter)


@dataclass(frozen=True, slots=True)
class ShardImage:
    """One logical shard as a host holds it, what a snapshot saves: the packed meters and what is
    known of them without unpacking. Counts hold no zeros; ``paid_off`` maps each account paid up yet
    off to the issue time of its command in flight, or `OFF_FIELD` / `OFF_UNSENT`; ``timers`` maps
    each meter with a next check to its second."""

    shard: int
    meters: Mapping[str, object]  # a `PackedTable` (a host's), or a dict (a v2 snapshot's, tests)
    relay_counts: dict[RelayState, int]
    work_orders: dict[WorkOrderAction, int]
    paid_off: dict[str, int]
    pending: frozenset[str]
    timers: dict[str, int]
    prepaid_bands: dict[str, int] = field(default_factory=dict)  # prepaid meters by balance band


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
    duplicate_reads: int = 0  # prepaid reads that changed nothing (that read was debited before)



_K = TypeVar("_K")


def _moved(
    node: MutableMapping[_K, int], shard: MutableMapping[_K, int], old: _K | None, new: _K | None,
) -> None:
    """One meter's count moved from ``old`` to ``new`` (either None: not counted) in the host's counter
    and its logical shard's."""
    if old is not None:
        node[old] -= 1
        shard[old] -= 1
    if new is not None:
        node[new] += 1
        shard[new] += 1


class MeterHost:
    """The meter entities of some logical shards, with one timer index and running counts."""

    def __init__(
        self, policy: Policy, shards: int = DEFAULT_LOGICAL_SHARDS, packing: Packing = OBJECTS
    ) -> None:
        self.policy = policy
        self.shards = shards
        self._pack = packing.pack
        self._unpack = packing.unpack
        self._by_shard: dict[int, PackedTable] = {}  # per logical shard (domain/packed.py)
        self._buckets: dict[int, list[str]] = {}
        self._keys: list[int] = []  # heap of bucket keys (epoch seconds)
        self._next: dict[str, int] = {}  # account → next check, of every meter that has one
        self._seconds: dict[int, int] = {}  # one int object per next-check second (32 B a meter less)
        self._next_peak = 0  # most entries `_next` has had since it was last compacted
        self.relay_counts: Counter[RelayState] = Counter()
        self.work_orders: Counter[WorkOrderAction] = Counter()  # open field work orders by action
        self.pending: set[str] = set()  # accounts with a relay command pending (in flight or to retry)
        self._paid_off: dict[str, int] = {}  # paid up yet without supply (should be brief) → see OFF_*
        self._shard_relay: defaultdict[int, Counter[RelayState]] = defaultdict(Counter)
        self._shard_work: defaultdict[int, Counter[WorkOrderAction]] = defaultdict(Counter)
        self.prepaid_bands: Counter[str] = Counter()  # prepaid meters by balance band (metrics)
        self._shard_prepaid: defaultdict[int, Counter[str]] = defaultdict(Counter)
        # meters unpacked by `step`, with the value they came from and their logical shard, so
        # `assign` need not unpack them again to take back what they counted
        self._loaded: dict[str, tuple[object, Meter, int]] = {}
        self._replayed: dict[str, Meter] = {}  # recovery: states of the journal tail, packed at the end
        self.changes = 0  # meters made current so far: equal counts, same meters
        self._serials: SerialIndex | None = None  # built on the first serial question (domain/serials.py)
        self.serial_hash: Callable[[str], int] = serial_hash  # tests force collisions
        self._fold_at = _FOLD_AT

    # ------------------------------------------------------------ looking up

    def __len__(self) -> int:
        self.settle()
        return sum(len(d) for d in self._by_shard.values())

    def shard_sizes(self) -> dict[int, int]:
        """Meters per logical shard (what each one's snapshot costs to write)."""
        return {shard: len(table) for shard, table in self._by_shard.items()}

    @property
    def paid_off(self) -> Collection[str]:
        """Accounts paid up yet without supply (should be brief)."""
        return self._paid_off.keys()

    def get(self, account: str) -> Meter | None:
        if self._replayed:
            m = self._replayed.get(account)
            if m is not None:
                return m
        table = self._by_shard.get(logical_shard(account, self.shards))
        value = None if table is None else table.get(account)
        return None if value is None else self._unpack(account, value)

    def _fetch(self, account: str, shard: int | None = None) -> Meter | None:
        """`get`, remembering what was unpacked for `_put` (see ``_loaded``); ``shard``: the
        account's logical shard, if the caller knows it."""
        if self._replayed:
            m = self._replayed.get(account)
            if m is not None:
                return m
        if shard is None:
            shard = logical_shard(account, self.shards)
        table = self._by_shard.get(shard)
        value = None if table is None else table.get(account)
        if value is None:
            return None
        m = self._unpack(account, value)
        if len(self._loaded) >= _LOADED_KEPT:
            self._loaded.clear()
        self._loaded[account] = (value, m, shard)
        return m

    def shard_meters(self, shard: int) -> Iterator[Meter]:
        """Every meter of one logical shard, unpacked (tools and tests: it unpacks them all)."""
        self.settle()
        unpack = self._unpack
        table = self._by_shard.get(shard)
        return iter([] if table is None else [unpack(a, v) for a, v in list(table.items())])

    def meters(self) -> Iterator[Meter]:
        """Every meter, unpacked (tools and tests: it unpacks them all)."""
        self.settle()
        for shard in list(self._by_shard):
            yield from self.shard_meters(shard)

    def with_serials(self, head_end: str, serials: Collection[str]) -> list[tuple[str, str, bool]]:
        """(serial, account, prepaid) of the meters on ``head_end`` whose serial is in ``serials``, in
        one call (tools, tests; builds the serial index first if there is none). The shard actor asks
        in slices: `build_serial_index`, then `serials_from`."""
        while not self.build_serial_index(1.0):
            pass
        asked = list(dict.fromkeys(serials))
        return self.serials_from(head_end, asked, 0, None)[0]

    @property
    def serial_index_ready(self) -> bool:
        return self._serials is not None and self._serials.ready

    @property
    def serial_index(self) -> SerialIndex | None:
        """The serial index (None: not built yet, or dropped with a logical shard)."""
        return self._serials

    def build_serial_index(self, budget_s: float) -> bool:
        """Build the serial index for about ``budget_s`` seconds (it scans every meter once, then
        sorts); True once it is complete. Meters assigned meanwhile are noted as they come."""
        index = self._serials
        if index is None:
            self.settle()
            index = self._serials = SerialIndex(self._serial_scan(), self.serial_hash)
        return index.build(budget_s)

    def _serial_scan(self) -> Iterator[tuple[str, str, bool]]:
        """(account, serial, in its table's base) of every meter, each table as it was when the scan
        reached it (what is assigned after is noted in the index by `_put`)."""
        unpack = self._unpack
        for shard in list(self._by_shard):
            held = self._by_shard.get(shard)
            if held is None:
                continue
            table = held.copy()  # what it holds now: a later assignment is noted, not scanned
            hot = table.hot
            for account, value in table.items():
                yield account, unpack(account, value).serial, not hot or table.in_base(account)

    def _base_accounts(self, account_hash: int) -> list[str]:
        # the logical shard is the account's CRC-32 modulo the shard count (domain/sharding.py)
        table = self._by_shard.get(account_hash % self.shards)
        return [] if table is None else table.base_accounts(account_hash)

    def fold_serials(self) -> int:
        """Fold the serial index's fresh entries whose meters are in a table's base into its array
        (a snapshot compacts the tables); returns how many stay fresh."""
        index = self._serials
        if index is None:
            return 0
        by_shard, shards = self._by_shard, self.shards

        def in_base(account: str) -> bool:
            table = by_shard.get(logical_shard(account, shards))
            return table is not None and table.in_base(account)

        return index.fold(in_base)

    def serials_from(
        self, head_end: str, serials: Sequence[str], start: int, budget_s: float | None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> tuple[list[tuple[str, str, bool]], int]:
        """`with_serials` for ``serials[start:]`` (distinct serials) until about ``budget_s`` seconds
        have passed (None: all); returns what was found and where to go on (``len(serials)``: done).
        Needs a complete serial index (`build_serial_index`)."""
        index = self._serials
        if index is None or not index.ready:
            raise RuntimeError("serials_from before the serial index is built")
        self.settle()
        found: list[tuple[str, str, bool]] = []
        resolve, get = self._base_accounts, self.get
        deadline = None if budget_s is None else clock() + budget_s
        i, n = start, len(serials)
        while i < n:
            serial = serials[i]
            i += 1
            for account in index.candidates(serial, resolve):
                m = get(account)
                if m is not None and m.serial == serial and m.profile.head_end == head_end:
                    found.append((serial, account, m.prepaid is not None))
            if deadline is not None and not i & 63 and clock() >= deadline:
                break
        return found, i

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
        duplicates = 0
        shards, policy = self.shards, self.policy
        for command in commands:
            account = command.account
            shard = logical_shard(account, shards)
            state = overlay.get(account) or behind.get(account) or self._fetch(account, shard)
            try:
                new, evs, effs = handle_batched(state, command, now, policy)  # a common payment: 1 event
            except Exception as exc:  # one bad record must not poison the other 9 999
                failures.append((command, f"{type(exc).__name__}: {exc}"))
                continue
            if evs and new is not None:
                overlay[account] = new
                if len(evs) == 1:
                    events.append((shard, evs[0]))
                else:
                    events.extend((shard, e) for e in evs)
            elif (not effs and state is not None and state.prepaid is not None
                  and type(command) is ReportConsumption):
                duplicates += 1
            effects.extend(effs)
            for e in effs:
                if type(e) is MeterCommandRejected:
                    refused.append((command, e.reason))
        return HostStep(tuple(events), tuple(effects), overlay, tuple(failures), tuple(refused), duplicates)

    def assign(self, step: HostStep, now: int) -> None:
        """Make a journaled step's states current and file their next checks."""
        for account, meter in step.states.items():
            at = self._put(account, meter)
            if at is not None:
                self._file(account, at, now)
        self._loaded.clear()
        self._compact_next()

    def _compact_next(self) -> None:
        """A dict keeps the room of its largest size: once most meters with a check have dropped it
        (a bill cycle paid), copy `_next` into one of its present size."""
        n = len(self._next)
        if n > self._next_peak:
            self._next_peak = n
        elif self._next_peak > 4 * n + 4096:
            self._next = dict(self._next)
            self._next_peak = n

    def _put(self, account: str, meter: Meter, shard: int | None = None) -> int | None:
        """Make ``meter`` the account's state, keep the counts; returns its next check."""
        loaded = self._loaded.pop(account, None) if self._loaded else None
        if shard is None:
            shard = logical_shard(account, self.shards) if loaded is None else loaded[2]
        table = self._by_shard.get(shard)
        if table is None:
            table = self._by_shard[shard] = PackedTable()
        old = table.swap(account, self._pack(meter))
        if old is None:
            self._count(shard, account, meter, +1)
            if self._serials is not None:
                self._serials.note(account, meter.serial)
        else:  # unpacked again unless `step` just did (a value from the base is a new slice: ==)
            known = (loaded[1] if loaded is not None and (loaded[0] is old or loaded[0] == old)
                     else self._unpack(account, old))
            self._recount(shard, account, known, meter)
            if self._serials is not None and known.serial != meter.serial:
                self._serials.note(account, meter.serial)  # re-assigned (UpdateMeter)
        self.changes += 1
        if self._replayed:
            self._replayed.pop(account, None)
        at = next_check_at(meter, self.policy)
        if at is None:
            self._next.pop(account, None)
        else:
            self._next[account] = self._second(at)
        return at

    def _second(self, at: int) -> int:
        seconds = self._seconds
        if len(seconds) >= _SECONDS_KEPT:
            seconds.clear()
        return seconds.setdefault(at, at)

    def _count(self, shard: int, account: str, m: Meter, sign: int) -> None:
        relay, paid_off = meter_status(m, self.policy)
        self.relay_counts[relay] += sign
        self._shard_relay[shard][relay] += sign
        if m.work_order is not None:
            self.work_orders[m.work_order.action] += sign
            self._shard_work[shard][m.work_order.action] += sign
        if m.pending is not None:
            if sign > 0:
                self.pending.add(account)
            else:
                self.pending.discard(account)
        if paid_off:
            if sign > 0:
                self._paid_off[account] = _off_since(m)
            else:
                self._paid_off.pop(account, None)
        if m.prepaid is not None:
            band = balance_band(-m.dues_paise)
            self.prepaid_bands[band] += sign
            self._shard_prepaid[shard][band] += sign

    def _recount(self, shard: int, account: str, old: Meter, new: Meter) -> None:
        """`_count` of ``old`` taken back and of ``new`` added, doing only what differs (most
        commands change none of it)."""
        relay, paid_off = meter_status(old, self.policy)
        new_relay, new_paid_off = meter_status(new, self.policy)
        if relay is not new_relay:
            _moved(self.relay_counts, self._shard_relay[shard], relay, new_relay)
        order, new_order = old.work_order, new.work_order
        if order is not new_order:
            action = None if order is None else order.action
            new_action = None if new_order is None else new_order.action
            if action is not new_action:
                _moved(self.work_orders, self._shard_work[shard], action, new_action)
        pending = new.pending is not None
        if (old.pending is not None) is not pending:
            if pending:
                self.pending.add(account)
            else:
                self.pending.discard(account)
        if new_paid_off:
            self._paid_off[account] = _off_since(new)
        elif paid_off:
            self._paid_off.pop(account, None)
        if old.prepaid is not None or new.prepaid is not None:
            self._rebanded(shard, old, new)

    def _rebanded(self, shard: int, old: Meter, new: Meter) -> None:
        band = None if old.prepaid is None else balance_band(-old.dues_paise)
        new_band = None if new.prepaid is None else balance_band(-new.dues_paise)
        if band != new_band:
            _moved(self.prepaid_bands, self._shard_prepaid[shard], band, new_band)

    @property
    def paid_but_disconnected(self) -> int:
        return len(self._paid_off)

    def paid_but_disconnected_since(self, now: int, grace: int) -> tuple[int, int]:
        """Paid-up meters still without supply ``grace`` seconds after their command went out, or with
        none in flight: (remote path, field path: a work order is open). The promise is broken for these.
        """
        auto = field = 0
        for since in self._paid_off.values():
            if since == OFF_FIELD:
                field += 1
            elif since == OFF_UNSENT or now - since >= grace:
                auto += 1
        return auto, field

    # ------------------------------------------------------------ snapshots and recovery

    def image(self, shard: int) -> ShardImage:
        """One logical shard as it is now, for its snapshot (unpacks nothing). Its meters assigned
        since the last image are folded into the table's compact base first (`PackedTable.compact`)."""
        self.settle()
        held = self._by_shard.get(shard)
        if held is not None:
            held.compact()
            if self._serials is not None and self._serials.fresh >= self._fold_at:
                self._fold_at = max(_FOLD_AT, 2 * self.fold_serials())  # hot-only meters stay fresh
        table = PackedTable() if held is None else held.copy()
        nxt = self._next
        accounts: list[str] = []  # the table's accounts, decoded only if a scan needs them
        return ShardImage(
            shard=shard,
            meters=table,
            relay_counts={k: v for k, v in self._shard_relay.get(shard, {}).items() if v},
            work_orders={k: v for k, v in self._shard_work.get(shard, {}).items() if v},
            paid_off={a: self._paid_off[a] for a in self._of(self._paid_off.keys(), table, accounts)},
            pending=frozenset(self._of(self.pending, table, accounts)),
            timers={a: nxt[a] for a in self._of(nxt.keys(), table, accounts)},
            prepaid_bands={k: v for k, v in self._shard_prepaid.get(shard, {}).items() if v},
        )

    @staticmethod
    def _of(accounts: Collection[str], table: Mapping[str, object], keys: list[str]) -> list[str]:
        """The accounts of one logical shard (its ``table``) in a host-wide collection: whichever is
        smaller is scanned (a look-up in a table costs ~1 µs, decoding its accounts ~0.2 µs each,
        kept in ``keys`` for the next scan)."""
        if 8 * len(accounts) < len(table):
            return [a for a in accounts if a in table]
        if not keys:
            keys += table.accounts() if isinstance(table, PackedTable) else list(table)
        return [a for a in keys if a in accounts]

    def load(self, image: ShardImage) -> None:
        """Load a logical shard from its image (a snapshot), replacing whatever the host had of it.

        No timers yet: call `rebuild_timers` after the journal tail is replayed. ``image.meters``
        becomes the host's own table: the caller hands it over (a dict becomes the table's hot part,
        compacted at the shard's next image).
        """
        if self._by_shard.get(image.shard):
            self._drop(image.shard)
        self._serials = None  # the image's serials are not in it: built again when next asked
        shard = image.shard
        self.changes += 1
        meters = image.meters
        held = (meters if isinstance(meters, PackedTable)
                else PackedTable(meters if isinstance(meters, dict) else dict(meters)))
        self._by_shard[shard] = held
        table: Mapping[str, object] = meters if isinstance(meters, dict) else {}
        self.relay_counts.update(image.relay_counts)
        self._shard_relay[shard].update(image.relay_counts)
        self.work_orders.update(image.work_orders)
        self._shard_work[shard].update(image.work_orders)
        self.prepaid_bands.update(image.prepaid_bands)
        self._shard_prepaid[shard].update(image.prepaid_bands)
        self._paid_off.update(image.paid_off)
        self.pending.update(image.pending)
        timers, nxt, second = image.timers, self._next, self._second
        if len(timers) * 4 < len(table) or not table:
            for account, at in timers.items():
                nxt[account] = second(at)
        else:  # keyed by the table's own account objects: a timer costs no second copy of the account
            for account in table:
                when = timers.get(account)
                if when is not None:
                    nxt[account] = second(when)

    def _drop(self, shard: int) -> None:
        self.settle()
        self.changes += 1
        table = self._by_shard.pop(shard, None) or PackedTable()
        self._serials = None
        for account in table:
            self._paid_off.pop(account, None)
            self.pending.discard(account)
            self._next.pop(account, None)
        self.relay_counts.subtract(self._shard_relay.pop(shard, Counter()))
        self.work_orders.subtract(self._shard_work.pop(shard, Counter()))
        self.prepaid_bands.subtract(self._shard_prepaid.pop(shard, Counter()))

    def restore(self, meters: Iterable[Meter], shard: int | None = None) -> None:
        """Load meters from a snapshot (no events, no timers yet: call `rebuild_timers` after replay).

        With ``shard`` (a logical shard's snapshot) the meters go straight into that shard's table.
        """
        for m in meters:
            self._put(m.account, m, shard)

    def replay(self, event: MeterEvent) -> None:
        """Apply one journaled event (recovery: snapshot + tail).

        The states are packed once, after the tail (`settle`), not once per event."""
        account = event.account
        state = self._replayed.get(account) or self._fetch(account)
        self._replayed[account] = evolve(state, event)
        self.changes += 1

    def settle(self) -> None:
        """Pack the states the replayed tail left (`rebuild_timers` and every look-up of all meters do
        it first; recovery calls it to time the tail apart from the timers)."""
        if not self._replayed:
            return
        replayed, self._replayed = self._replayed, {}
        for account, meter in replayed.items():
            self._put(account, meter)
        self._loaded.clear()

    def rebuild_timers(self, now: int) -> None:
        """File every meter's next check (after a load, restore and replay): unpacks nothing but the
        meters the replay touched."""
        self.settle()
        soon = now + 1  # a check due now runs on the next tick, never in a tight loop
        buckets: dict[int, list[str]] = {}
        for account, at in self._next.items():
            key = at if at > now else soon
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = [account]
            else:
                bucket.append(account)
        self._buckets = buckets
        self._keys = list(buckets)
        heapq.heapify(self._keys)

    # ------------------------------------------------------------ timers

    def _file(self, account: str, at: int, now: int) -> None:
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
        journaled (a restart files every meter's next check again anyway).
        """
        out: list[CheckMeter] = []
        seen: set[str] = set()
        nxt = self._next
        while self._keys and self._keys[0] <= now and len(out) < limit:
            key = self._keys[0]
            bucket = self._buckets[key]
            while bucket and len(out) < limit:
                account = bucket.pop()
                if account in seen:
                    continue
                at = nxt.get(account)
                if at is not None and at <= now:
                    seen.add(account)
                    out.append(CheckMeter(account=account))
            if not bucket:
                heapq.heappop(self._keys)
                del self._buckets[key]
        return out
