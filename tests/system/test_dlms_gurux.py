"""The DLMS adapter (dlms-cosem) against meters on Gurux's DLMS server stack, over 127.0.0.1.

Two implementations written by different people: every class-70 transition (a-h) in every control
mode (0-6), the DLMS faults (refused association, unreachable meter, lost answers, stuck relay), the
association pool and its reuse. Each command must end exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from headend.adapter import AdapterConfig
from headend.dlms import DlmsSettings, DlmsSocketDriver, dlms_adapter_config
from headend.dlms_sim.server import DlmsSimulatorThread
from headend.outcome import HeadEndOutcome, OutcomeKind
from headend.threaded import ThreadedHeadEndClient
from protocols.headend import HesAction, HesCommand, HesControlState

pytestmark = pytest.mark.system

PASSWORD = b"lls-pw-1"
D, C, R = HesControlState.DISCONNECTED, HesControlState.CONNECTED, HesControlState.READY_FOR_RECONNECTION
WAIT = 20.0


class Rig:
    def __init__(self, *, pool_size: int = 8, password: str | None = "lls-pw-1", max_attempts: int = 3
                 ) -> None:  # fmt: skip
        self.sim_thread = DlmsSimulatorThread(500, password=PASSWORD).start()
        self.sim = self.sim_thread.sim
        self.settings = DlmsSettings(port=self.sim_thread.port, password=password, pool_size=pool_size,
                                     connect_timeout=1.0, response_timeout=0.4, queue_timeout=2.0,
                                     idle_release=1.0)
        config = AdapterConfig(command_timeout=1.0, read_timeout=1.0, retry_base=0.05, retry_max=0.1,
                               max_attempts=max_attempts, max_reads=3)
        self.driver = DlmsSocketDriver(self.settings, dlms_adapter_config(self.settings, config))
        self.client = ThreadedHeadEndClient("", 0, driver=self.driver).start()
        self.n = 0

    def close(self) -> None:
        self.client.stop()
        self.sim_thread.stop()

    def run(self, commands: list[HesCommand], timeout: float = WAIT) -> dict[str, HeadEndOutcome]:
        wanted = {c.command_id for c in commands}
        self.client.submit(commands)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = {o.command_id: o for o in self.client.outcomes() if o.command_id in wanted}
            if len(seen) == len(wanted):
                return seen
            self.client.wait_for_outcomes(len(self.client.outcomes()) + 1, 0.05)
        raise AssertionError(f"no outcome for {sorted(wanted - set(seen))} within {timeout} s")

    def one(self, serial: str, action: HesAction) -> HeadEndOutcome:
        self.n += 1
        c = HesCommand(f"c{self.n}", serial, action, time.time() + 30)
        return self.run([c])[c.command_id]

    def ended_once(self) -> None:
        counts = Counter(o.command_id for o in self.client.outcomes())
        assert [cid for cid, n in counts.items() if n != 1] == []


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.ended_once()
        r.close()


def serial(i: int) -> str:
    return f"MPW{i:08d}"


# --- remote transitions a-d and the control modes ----------------------------------------------

# (mode, state before, action) → (outcome, state after). IEC 62056-6-2 §4.5.8 (research/domain.md §1.1)
REMOTE = [
    *[(m, C, HesAction.DISCONNECT, OutcomeKind.DISCONNECTED, D) for m in range(1, 7)],  # b
    *[(m, R, HesAction.DISCONNECT, OutcomeKind.DISCONNECTED, D) for m in range(1, 7)],  # c
    *[(m, D, HesAction.CONNECT, OutcomeKind.CONNECTED, C) for m in (2, 4)],  # a
    *[(m, D, HesAction.CONNECT, OutcomeKind.READY_FOR_RECONNECTION, R) for m in (1, 3, 5, 6)],  # d
    *[(m, C, HesAction.CONNECT, OutcomeKind.CONNECTED, C) for m in range(0, 7)],  # already on
    (0, C, HesAction.DISCONNECT, OutcomeKind.FAILED, C),  # mode 0: no remote disconnect
]


@pytest.mark.parametrize(("mode", "before", "action", "kind", "after"), REMOTE)
def test_remote_transitions_in_every_control_mode_match_the_blue_book(
    rig: Rig, mode: int, before: HesControlState, action: HesAction, kind: OutcomeKind,
    after: HesControlState,
) -> None:
    m = serial(10 + mode)
    rig.sim.set_meter(m, mode, before)
    o = rig.one(m, action)
    assert o.kind is kind
    if kind is OutcomeKind.FAILED:
        assert (o.error, o.retryable) == ("not_permitted", False)
    else:
        assert (o.control_state, o.control_mode, o.output_state) == (after, mode, after is C)
    assert rig.sim.relay_state(m).control_state is after


def test_a_mode_1_reconnect_awaits_the_button_and_the_button_closes_the_relay_e(rig: Rig) -> None:
    m = serial(30)
    rig.sim.set_meter(m, 1, D)
    assert rig.one(m, HesAction.CONNECT).awaiting_button
    rig.sim.press_button(m)  # e
    o = rig.one(m, HesAction.READ)
    assert (o.kind, o.output_state) == (OutcomeKind.CONNECTED, True)


@pytest.mark.parametrize(("mode", "after"), [(1, R), (2, R), (5, R), (3, C), (4, C), (6, C)])
def test_manual_disconnect_f_only_in_modes_1_2_5(rig: Rig, mode: int, after: HesControlState) -> None:
    m = serial(40 + mode)
    rig.sim.set_meter(m, mode, C)
    rig.sim.press_button(m)  # f where the mode allows it
    assert rig.one(m, HesAction.READ).control_state is after


@pytest.mark.parametrize("mode", range(1, 7))
def test_local_disconnect_g_then_local_reconnect_h_only_in_modes_5_and_6(rig: Rig, mode: int) -> None:
    m = serial(50 + mode)
    rig.sim.set_meter(m, mode, C)
    rig.sim.local_disconnect(m)  # g
    assert rig.one(m, HesAction.READ).kind is OutcomeKind.READY_FOR_RECONNECTION
    rig.sim.local_reconnect(m)  # h
    expected = C if mode in (5, 6) else R
    assert rig.one(m, HesAction.READ).control_state is expected


def test_a_mode_0_meter_is_always_connected_and_ignores_the_button_and_local_triggers(rig: Rig) -> None:
    m = serial(60)
    rig.sim.set_meter(m, 0, C)
    rig.sim.press_button(m)
    rig.sim.local_disconnect(m)
    o = rig.one(m, HesAction.READ)
    assert (o.kind, o.control_mode) == (OutcomeKind.CONNECTED, 0)


# --- faults ------------------------------------------------------------------------------------


def test_a_refused_association_fails_once_and_is_not_retried(rig: Rig) -> None:
    m = serial(70)
    rig.sim.refuse(m)
    o = rig.one(m, HesAction.DISCONNECT)
    assert (o.kind, o.error, o.retryable, o.attempts) == (OutcomeKind.FAILED, "association_refused", False, 1)
    assert rig.sim.relay_state(m).control_state is C
    events = dict(rig.client.inspect(lambda _: rig.driver.take_events()))
    assert events["refused"] == 1  # what the gateway turns into jodo_dlms_events_total


def test_a_wrong_password_is_a_refused_association() -> None:
    r = Rig(password="wrong-pw")
    try:
        o = r.one(serial(71), HesAction.READ)
        assert (o.kind, o.error) == (OutcomeKind.FAILED, "association_refused")
        assert r.sim.stats.refused >= 1
        r.ended_once()
    finally:
        r.close()


def test_an_unreachable_meter_fails_retryable_after_the_attempts(rig: Rig) -> None:
    m = serial(72)
    rig.sim.make_unreachable(m)
    o = rig.one(m, HesAction.DISCONNECT)
    assert (o.kind, o.error, o.retryable, o.attempts) == (OutcomeKind.FAILED, "no_communication", True, 3)
    assert rig.sim.relay_state(m).control_state is C


def test_a_lost_answer_to_a_switch_that_ran_is_found_by_the_read_back(rig: Rig) -> None:
    m = serial(73)
    rig.sim.set_meter(m, 2, C)
    rig.sim.mute(m, execute=True, count=1)  # the ACTION runs; its answer never comes
    o = rig.one(m, HesAction.DISCONNECT)
    assert (o.kind, o.attempts) == (OutcomeKind.DISCONNECTED, 1)  # not sent twice: the read showed it ran
    assert rig.driver.bridge.stats.response_timeouts >= 1


def test_a_lost_request_is_sent_again_after_the_read_back_shows_it_did_not_run(rig: Rig) -> None:
    m = serial(74)
    rig.sim.set_meter(m, 2, C)
    rig.sim.mute(m, execute=False, count=1)
    o = rig.one(m, HesAction.DISCONNECT)
    assert (o.kind, o.attempts) == (OutcomeKind.DISCONNECTED, 2)


def test_a_meter_that_never_answers_ends_failed_once(rig: Rig) -> None:
    m = serial(75)
    rig.sim.mute(m)
    o = rig.one(m, HesAction.DISCONNECT)
    assert o.kind is OutcomeKind.FAILED and o.error in ("timeout", "no_communication")


def test_a_stuck_relay_that_reports_success_fails_on_the_read_back(rig: Rig) -> None:
    m = serial(76)
    rig.sim.stick(m)
    o = rig.one(m, HesAction.DISCONNECT)
    assert (o.kind, o.error, o.retryable, o.attempts) == (OutcomeKind.FAILED, "readback_mismatch", False, 3)
    assert rig.sim.relay_state(m).control_state is C


def test_a_stuck_relay_that_reports_a_hardware_fault_fails_at_once(rig: Rig) -> None:
    m = serial(77)
    rig.sim.stick(m, report=True)
    o = rig.one(m, HesAction.CONNECT)
    assert (o.kind, o.error, o.retryable, o.attempts) == (OutcomeKind.FAILED, "relay_stuck", False, 1)


def test_mixed_faults_in_one_batch_each_command_ends_exactly_once_in_the_true_state(rig: Rig) -> None:
    for i in range(0, 200, 10):
        rig.sim.mute(serial(100 + i), execute=i % 20 == 0, count=1)
    for i in range(5, 200, 25):
        rig.sim.make_unreachable(serial(100 + i))
    commands = [HesCommand(f"mix{i}", serial(100 + i), (HesAction.DISCONNECT, HesAction.CONNECT)[i % 2],
                           time.time() + 30) for i in range(200)]
    outcomes = rig.run(commands)
    for c in commands:
        o = outcomes[c.command_id]
        if o.succeeded:
            assert o.control_state is rig.sim.relay_state(c.meter).control_state


# --- the pool --------------------------------------------------------------------------------


def test_the_pool_bounds_concurrent_associations_and_a_switch_reuses_its_association_for_the_read_back(
) -> None:
    r = Rig(pool_size=4)
    try:
        expires = time.time() + 30
        commands = [HesCommand(f"p{i}", serial(200 + i), HesAction.DISCONNECT, expires) for i in range(100)]
        outcomes = r.run(commands)
        assert Counter(o.kind for o in outcomes.values()) == {OutcomeKind.DISCONNECTED: 100}
        stats = r.driver.bridge.stats
        assert stats.max_links == 4
        assert stats.associations == 100  # one per meter: the read-back went on the same one
        assert (stats.actions, stats.reads) == (100, 100)
        r.ended_once()
    finally:
        r.close()


def test_commands_one_after_another_for_one_meter_reuse_one_association(rig: Rig) -> None:
    m = serial(300)
    before = rig.sim.stats.associations
    kinds = [rig.one(m, a).kind for a in (HesAction.DISCONNECT, HesAction.CONNECT, HesAction.READ)]
    assert kinds == [OutcomeKind.DISCONNECTED, OutcomeKind.CONNECTED, OutcomeKind.CONNECTED]
    assert rig.sim.stats.associations - before == 1  # within idle_release of each other
    assert rig.driver.bridge.stats.reused >= 4


def test_an_idle_association_is_released_with_rlrq(rig: Rig) -> None:
    rig.one(serial(301), HesAction.READ)
    deadline = time.monotonic() + 5.0
    while rig.driver.bridge.open_links and time.monotonic() < deadline:
        rig.client.wait_for_outcomes(10**9, 0.05)  # the loop ticks the release meanwhile
    assert rig.driver.bridge.open_links == 0
    assert rig.sim.stats.releases >= 1
