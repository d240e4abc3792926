"""A hypothesis state machine over a few meters in two hosts: one keeping `Meter` objects (the
reference) and one keeping them packed as a shard group does, snapshotted and restarted from its
snapshot bodies and journal tail at random. After every step:

* both hosts hold the same meters and the same counts (relay states, work orders, paid up yet off,
  pending commands, the paid-but-disconnected split) and decide every command alike;
* a restarted packed host (snapshot images, unpacking no meter, + the tail replayed) holds exactly
  what recovery by unpacking, recounting and rescheduling every meter would (the reference
  restored from its states): same meters, counts and timers.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors import shard_snapshot
from domain.commands import (
    ClearPayment,
    EngineerOverride,
    MeterCommand,
    PostBill,
    RegisterMeter,
    ReportRelayResult,
)
from domain.enums import ControlState, OverrideAction, RelayAction, RelayResultStatus, RelayState
from domain.events import MeterEvent
from domain.meter import next_check_at
from domain.policy import load_policy
from domain.shard import MeterHost, meter_status
from domain.sharding import logical_shard
from protocols.registry import METER_PACKING

IST = ZoneInfo("Asia/Kolkata")
START = int(datetime(2025, 3, 3, 10, tzinfo=IST).timestamp())
POLICY = load_policy("[disconnection]\nnotice_clear_days = 0\n")
RULES = shard_snapshot.rules_fingerprint(POLICY)
SHARDS = 4
ACCOUNTS = [f"N{i:03d}" for i in range(6)]
GRACE = 60


def counts(host: MeterHost) -> tuple[object, ...]:
    return (
        len(host),
        {k: v for k, v in host.relay_counts.items() if v},
        {k: v for k, v in host.work_orders.items() if v},
        set(host.paid_off),
        set(host.pending),
        host.paid_but_disconnected,
    )


class PackedHostMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.ref = MeterHost(POLICY, SHARDS)
        self.host = MeterHost(POLICY, SHARDS, METER_PACKING)
        self.snapshots: dict[int, bytes] = {}
        self.tail: list[MeterEvent] = []
        self.n = 0

    def apply(self, commands: list[MeterCommand]) -> None:
        a = self.ref.step(commands, self.now)
        b = self.host.step(commands, self.now)
        assert (a.events, a.effects, a.states, a.refused) == (b.events, b.effects, b.states, b.refused)
        self.ref.assign(a, self.now)
        self.host.assign(b, self.now)
        self.tail += [e for _, e in b.events]

    def uid(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    @initialize(
        setups=st.lists(
            st.tuples(
                st.sampled_from([RelayState.CONNECTED, RelayState.DISCONNECTED]),
                st.integers(-10_000, 200_000),
                st.sampled_from([0, 1, 2, 4]),  # control modes: none, remote, button, remote
                st.booleans(),
            ),
            min_size=len(ACCOUNTS), max_size=len(ACCOUNTS),
        )
    )
    def register(self, setups: list[tuple[RelayState, int, int, bool]]) -> None:
        self.apply([
            RegisterMeter(account=a, serial=f"S{a}", head_end="hes-a", install_year=2022,
                          relay_capable=True, control_mode=mode, protected=protected, relay=relay,
                          opening_dues_paise=dues)
            for a, (relay, dues, mode, protected) in zip(ACCOUNTS, setups, strict=True)
        ])

    @rule(i=st.integers(0, len(ACCOUNTS) - 1), amount=st.integers(0, 300_000), days=st.integers(0, 10))
    def bill(self, i: int, amount: int, days: int) -> None:
        due = datetime.fromtimestamp(self.now + days * 86_400, IST).date().isoformat()
        self.apply([PostBill(account=ACCOUNTS[i], bill_id=self.uid("B"), amount_paise=amount,
                             due_date=due, issued_at=self.now)])

    @rule(i=st.integers(0, len(ACCOUNTS) - 1), everything=st.booleans(), amount=st.integers(1, 100_000))
    def pay(self, i: int, everything: bool, amount: int) -> None:
        m = self.ref.get(ACCOUNTS[i])
        if everything and m is not None and m.dues_paise > 0:
            amount = m.dues_paise
        self.apply([ClearPayment(account=ACCOUNTS[i], payment_id=self.uid("P"), amount_paise=amount,
                                 channel="upi", cashless=True, paid_at=self.now)])

    @rule(delta=st.one_of(st.integers(1, 600), st.integers(3_600, 5 * 86_400)))
    def time_passes(self, delta: int) -> None:
        self.now += delta
        for _ in range(5):
            a = self.ref.due(self.now, 100)
            b = self.host.due(self.now, 100)
            assert sorted(c.account for c in a) == sorted(c.account for c in b)
            if not a:
                break
            self.apply(list(a))

    @rule(i=st.integers(0, len(ACCOUNTS) - 1), kind=st.sampled_from(["ok", "ok", "failed", "expired"]))
    def relay_result(self, i: int, kind: str) -> None:
        m = self.ref.get(ACCOUNTS[i])
        if m is None or m.pending is None or m.pending.retry_at is not None:
            return
        connect = m.pending.action is RelayAction.CONNECT
        button = m.profile.control_mode == 2
        if kind == "ok":
            cs = ControlState.DISCONNECTED if not connect else (
                ControlState.READY_FOR_RECONNECTION if button else ControlState.CONNECTED)
            result = ReportRelayResult(account=m.account, command_id=m.pending.command_id,
                                       status=RelayResultStatus.PROCESSED, control_state=cs,
                                       output_state=cs is ControlState.CONNECTED)
        else:
            status = RelayResultStatus.FAILED if kind == "failed" else RelayResultStatus.EXPIRED
            result = ReportRelayResult(account=m.account, command_id=m.pending.command_id, status=status,
                                       error_code="TEMPORARY_FAILURE", retryable=True)
        self.apply([result])

    @rule(i=st.integers(0, len(ACCOUNTS) - 1), action=st.sampled_from(list(OverrideAction)))
    def engineer(self, i: int, action: OverrideAction) -> None:
        self.apply([EngineerOverride(account=ACCOUNTS[i], action=action, engineer_id="E1", reason="test")])

    @rule()
    def snapshot(self) -> None:
        """Every logical shard saved as the shard group saves it; the tail starts again."""
        self.snapshots = {
            s: shard_snapshot.dump(self.host.image(s), RULES)
            for s in sorted({logical_shard(a, SHARDS) for a in ACCOUNTS})
        }
        self.tail = []

    @rule()
    def restart(self) -> None:
        """Recovery: the snapshot bodies and the tail, timers rebuilt; against recovery the old way."""
        host = MeterHost(POLICY, SHARDS, METER_PACKING)
        for shard, body in self.snapshots.items():
            image = shard_snapshot.load(body, shard, RULES)
            assert not isinstance(image, list)
            host.load(image)
        for event in self.tail:
            host.replay(event)
        host.rebuild_timers(self.now)
        old_way = MeterHost(POLICY, SHARDS)
        old_way.restore(self.ref.meters())
        old_way.rebuild_timers(self.now)
        assert counts(host) == counts(old_way)
        assert {a: host.get(a) for a in ACCOUNTS} == {a: old_way.get(a) for a in ACCOUNTS}
        assert host.next_due() == old_way.next_due()
        if host.next_due() is not None:
            at = host.next_due()
            assert at is not None
            due = sorted(c.account for c in host.due(at, 100))
            assert due == sorted(c.account for c in old_way.due(at, 100))
            host.rebuild_timers(self.now)
            old_way.rebuild_timers(self.now)
        self.host, self.ref = host, old_way

    @invariant()
    def counts_are_those_of_the_meters(self) -> None:
        meters = [m for m in map(self.ref.get, ACCOUNTS) if m is not None]
        relay = Counter(m.relay for m in meters)
        off = [m for m in meters if meter_status(m, POLICY)[1]]
        field = sum(1 for m in off if m.work_order is not None)
        auto = sum(
            1 for m in off
            if m.work_order is None and (m.pending is None or self.now - m.pending.issued_at >= GRACE)
        )
        assert {k: v for k, v in self.host.relay_counts.items() if v} == relay
        assert set(self.host.paid_off) == {m.account for m in off}
        assert self.host.pending == {m.account for m in meters if m.pending is not None}
        assert self.host.paid_but_disconnected_since(self.now, GRACE) == (auto, field)
        for m in meters:
            assert next_check_at(m, POLICY) == self.host._next.get(m.account)

    @invariant()
    def hosts_agree(self) -> None:
        assert counts(self.host) == counts(self.ref)
        assert self.host.paid_but_disconnected_since(self.now, GRACE) == self.ref.paid_but_disconnected_since(
            self.now, GRACE)
        assert {a: self.host.get(a) for a in ACCOUNTS} == {a: self.ref.get(a) for a in ACCOUNTS}


TestPackedHost = PackedHostMachine.TestCase
TestPackedHost.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
