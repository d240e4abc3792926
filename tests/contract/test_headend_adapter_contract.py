"""The head-end adapter contract: the same tests against every adapter.

Today: the reference adapter (threaded socket driver) against the simulator on 127.0.0.1, the
in-memory `FakeHeadEnd`, and the DLMS adapter (dlms-cosem) against the Gurux-server meter simulator on
127.0.0.1, and the CIM adapter (SOAP/HTTP + EndDeviceEvents callbacks) against the CIM simulator
(headend/cim/sim.py). A new adapter joins by adding a harness to `HARNESSES`.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Collection, Iterator
from typing import Protocol

import pytest

from headend.adapter import AdapterConfig
from headend.clock import WallClock
from headend.fake import FakeHeadEnd
from headend.outcome import HeadEndOutcome, OutcomeKind
from headend.sim.config import SimConfig
from headend.sim.fleet import Fleet
from headend.sim.server import SimulatorThread
from headend.threaded import ThreadedHeadEndClient
from protocols.headend import HesAction, HesCommand, HesControlState, HesMeterState

WAIT = 10.0  # real seconds any single expectation may take


class Harness(Protocol):
    """An adapter under test plus a window on the true relays behind it."""

    def submit(self, commands: list[HesCommand]) -> None: ...
    def wait(self, command_ids: Collection[str], timeout: float = WAIT) -> dict[str, HeadEndOutcome]: ...
    def truth(self, serial: str) -> HesMeterState: ...
    def press_button(self, serial: str) -> None: ...
    def set_meter(self, serial: str, mode: int, state: HesControlState) -> None: ...
    def serial(self, index: int) -> str: ...


class SimulatorHarness:
    def __init__(self) -> None:
        self.sim = SimulatorThread(SimConfig(meters=2000)).start()
        config = AdapterConfig(command_timeout=2.0, read_timeout=2.0, retry_base=0.05, retry_max=0.2)
        self.client = ThreadedHeadEndClient("127.0.0.1", self.sim.port, config).start()

    def close(self) -> None:
        self.client.stop()
        self.sim.stop()

    def submit(self, commands: list[HesCommand]) -> None:
        self.client.submit(commands)

    def wait(self, command_ids: Collection[str], timeout: float = WAIT) -> dict[str, HeadEndOutcome]:
        wanted = set(command_ids)
        deadline = time.monotonic() + timeout
        while True:
            seen = {o.command_id: o for o in self.client.outcomes() if o.command_id in wanted}
            if len(seen) == len(wanted) or time.monotonic() > deadline:
                return seen
            self.client.wait_for_outcomes(len(self.client.outcomes()) + 1, 0.05)

    def all_outcomes(self) -> list[HeadEndOutcome]:
        return self.client.outcomes()

    def truth(self, serial: str) -> HesMeterState:
        return self.sim.relay_state(serial)

    def press_button(self, serial: str) -> None:
        self.sim.press_button(serial)

    def set_meter(self, serial: str, mode: int, state: HesControlState) -> None:
        self.sim.set_control_mode(serial, mode)
        self.sim.set_control_state(serial, state)

    def serial(self, index: int) -> str:
        return f"MPW{index:08d}"


class DlmsHarness:
    """The DLMS adapter (dlms-cosem client, LLS) against meters on Gurux's server stack."""

    def __init__(self) -> None:
        from headend.dlms import DlmsSettings, DlmsSocketDriver
        from headend.dlms_sim.server import DlmsSimulatorThread

        self.sim = DlmsSimulatorThread(2000, password=b"contract-pw").start()
        settings = DlmsSettings(port=self.sim.port, password="contract-pw", pool_size=16,
                                connect_timeout=1.0, response_timeout=0.5, queue_timeout=1.0)
        config = AdapterConfig(command_timeout=2.0, read_timeout=2.0, retry_base=0.05, retry_max=0.2)
        from headend.dlms.driver import dlms_adapter_config

        driver = DlmsSocketDriver(settings, dlms_adapter_config(settings, config))
        self.client = ThreadedHeadEndClient("", 0, driver=driver).start()

    def close(self) -> None:
        self.client.stop()
        self.sim.stop()

    submit = SimulatorHarness.submit
    wait = SimulatorHarness.wait
    all_outcomes = SimulatorHarness.all_outcomes
    serial = SimulatorHarness.serial

    def truth(self, serial: str) -> HesMeterState:
        return self.sim.sim.relay_state(serial)

    def press_button(self, serial: str) -> None:
        self.sim.sim.press_button(serial)

    def set_meter(self, serial: str, mode: int, state: HesControlState) -> None:
        self.sim.sim.set_meter(serial, mode, state)


class CimHarness:
    """The CIM adapter (lxml, SOAP/HTTP, EndDeviceEvents callback listener) against the CIM simulator.

    Its message subset has no read (jodo sends only create EndDeviceControls): the read tests do not
    apply to it (`reads`), and a READ fails ``unsupported``. It takes credit updates (3.20.22.13)."""

    reads = False
    credit_updates = True

    def __init__(self) -> None:
        from headend.cim.core import CimCoreConfig
        from headend.cim.driver import CimHttpDriver, CimSettings
        from headend.cim.sim import CimSimConfig, CimSimThread

        self.sim = CimSimThread(CimSimConfig(meters=2000, token="contract-token")).start()
        self.driver = CimHttpDriver(CimSettings(url=self.sim.url, token="contract-token",
                                                core=CimCoreConfig(callback_timeout=2.0)))
        self.outcomes: list[HeadEndOutcome] = []

    def close(self) -> None:
        self.driver.close()
        self.sim.stop()

    def submit(self, commands: list[HesCommand]) -> None:
        self.outcomes += self.driver.submit(commands)

    def wait(self, command_ids: Collection[str], timeout: float = WAIT) -> dict[str, HeadEndOutcome]:
        wanted = set(command_ids)
        deadline = time.monotonic() + timeout
        while True:
            self.outcomes += self.driver.on_readable()
            seen = {o.command_id: o for o in self.outcomes if o.command_id in wanted}
            if len(seen) == len(wanted) or time.monotonic() > deadline:
                return seen
            select.select([self.driver.fileno()], [], [], 0.05)

    def all_outcomes(self) -> list[HeadEndOutcome]:
        return list(self.outcomes)

    def truth(self, serial: str) -> HesMeterState:
        return self.sim.sim.fleet.state(serial)

    def credit(self, serial: str) -> int | None:
        return self.sim.call(lambda s: s.credits.get(serial))

    def press_button(self, serial: str) -> None:
        self.sim.sim.fleet.press_button(serial)

    def set_meter(self, serial: str, mode: int, state: HesControlState) -> None:
        self.sim.sim.fleet.set_control_mode(serial, mode)
        self.sim.sim.fleet.set_control_state(serial, state)

    def serial(self, index: int) -> str:
        return f"MPW{index:08d}"


class FakeHarness:
    credit_updates = True  # the fake takes credit updates as a CIM head-end does

    def __init__(self) -> None:
        self.fake = FakeHeadEnd(Fleet(2000), clock=WallClock())
        self.outcomes: list[HeadEndOutcome] = []

    def close(self) -> None:
        self.fake.close()

    def submit(self, commands: list[HesCommand]) -> None:
        self.outcomes += self.fake.submit(commands)

    def wait(self, command_ids: Collection[str], timeout: float = WAIT) -> dict[str, HeadEndOutcome]:
        wanted = set(command_ids)
        deadline = time.monotonic() + timeout
        while True:
            self.outcomes += self.fake.on_tick()
            seen = {o.command_id: o for o in self.outcomes if o.command_id in wanted}
            if len(seen) == len(wanted) or time.monotonic() > deadline:
                return seen

    def all_outcomes(self) -> list[HeadEndOutcome]:
        return list(self.outcomes)

    def truth(self, serial: str) -> HesMeterState:
        return self.fake.fleet.state(serial)

    def credit(self, serial: str) -> int | None:
        return self.fake.credits.get(serial)

    def press_button(self, serial: str) -> None:
        self.fake.fleet.press_button(serial)

    def set_meter(self, serial: str, mode: int, state: HesControlState) -> None:
        self.fake.fleet.set_control_mode(serial, mode)
        self.fake.fleet.set_control_state(serial, state)

    def serial(self, index: int) -> str:
        return f"MPW{index:08d}"


AnyHarness = SimulatorHarness | FakeHarness | DlmsHarness | CimHarness
HARNESSES: dict[str, Callable[[], AnyHarness]] = {
    "reference-adapter-vs-simulator": SimulatorHarness,
    "fake": FakeHarness,
    "dlms-adapter-vs-gurux-server": DlmsHarness,
    "cim-adapter-vs-cim-simulator": CimHarness,
}


@pytest.fixture(params=sorted(HARNESSES))
def he(request: pytest.FixtureRequest) -> Iterator[AnyHarness]:
    harness = HARNESSES[request.param]()
    try:
        yield harness
    finally:
        harness.close()


def command(cid: str, serial: str, action: HesAction, expires_in: float = 60.0) -> HesCommand:
    return HesCommand(cid, serial, action, time.time() + expires_in)


def one(he: AnyHarness, c: HesCommand) -> HeadEndOutcome:
    he.submit([c])
    outcome = he.wait([c.command_id])[c.command_id]
    assert (outcome.command_id, outcome.meter, outcome.action) == (c.command_id, c.meter, c.action)
    return outcome


def test_connect_on_a_disconnected_direct_meter_ends_connected_with_the_relay_closed(
    he: AnyHarness,
) -> None:
    m = he.serial(1)
    he.set_meter(m, 2, HesControlState.DISCONNECTED)
    o = one(he, command("c1", m, HesAction.CONNECT))
    assert (o.kind, o.control_state, o.output_state) == (
        OutcomeKind.CONNECTED,
        HesControlState.CONNECTED,
        True,
    )
    assert he.truth(m).output_state is True


def test_disconnect_ends_disconnected_with_the_relay_open(he: AnyHarness) -> None:
    m = he.serial(2)
    o = one(he, command("d1", m, HesAction.DISCONNECT))
    assert (o.kind, o.output_state) == (OutcomeKind.DISCONNECTED, False)
    assert he.truth(m).control_state is HesControlState.DISCONNECTED


def test_a_mode_1_meter_ends_awaiting_the_button_and_the_button_closes_it(
    he: AnyHarness,
) -> None:
    m = he.serial(3)
    he.set_meter(m, 1, HesControlState.DISCONNECTED)
    o = one(he, command("c3", m, HesAction.CONNECT))
    assert o.kind is OutcomeKind.READY_FOR_RECONNECTION and o.awaiting_button
    assert he.truth(m).output_state is False  # still dark until the consumer acts
    he.press_button(m)
    if not getattr(he, "reads", True):
        assert he.truth(m).control_state is HesControlState.CONNECTED
        return
    after = one(he, command("r3", m, HesAction.READ))
    assert after.kind is OutcomeKind.CONNECTED
    assert he.truth(m).control_state is HesControlState.CONNECTED


def test_an_expired_command_ends_expired_and_never_runs(he: AnyHarness) -> None:
    m = he.serial(4)
    he.set_meter(m, 2, HesControlState.DISCONNECTED)
    o = one(he, command("late", m, HesAction.CONNECT, expires_in=-1.0))
    assert o.kind is OutcomeKind.EXPIRED and o.attempts == 0
    assert he.truth(m).control_state is HesControlState.DISCONNECTED


def test_an_unknown_meter_is_rejected(he: AnyHarness) -> None:
    o = one(he, command("u1", "NO-SUCH-METER", HesAction.CONNECT))
    assert (o.kind, o.reason) == (OutcomeKind.REJECTED, "unknown_meter")


def test_a_read_reports_the_relay_and_changes_nothing(he: AnyHarness) -> None:
    m = he.serial(5)
    he.set_meter(m, 3, HesControlState.READY_FOR_RECONNECTION)
    o = one(he, command("r5", m, HesAction.READ))
    if not getattr(he, "reads", True):  # CIM's subset has no read: it ends at once, final, and says why
        assert (o.kind, o.error, o.retryable, o.attempts) == (OutcomeKind.FAILED, "unsupported", False, 0)
        assert he.truth(m).control_state is HesControlState.READY_FOR_RECONNECTION
        return
    assert (o.kind, o.control_state, o.output_state, o.control_mode) == (
        OutcomeKind.READY_FOR_RECONNECTION,
        HesControlState.READY_FOR_RECONNECTION,
        False,
        3,
    )
    assert he.truth(m).control_state is HesControlState.READY_FOR_RECONNECTION


def test_a_mode_0_meter_refuses_a_disconnect_with_a_failure_not_worth_retrying(
    he: AnyHarness,
) -> None:
    m = he.serial(6)
    he.set_meter(m, 0, HesControlState.CONNECTED)
    o = one(he, command("d6", m, HesAction.DISCONNECT))
    assert (o.kind, o.error, o.retryable) == (OutcomeKind.FAILED, "not_permitted", False)
    assert he.truth(m).output_state is True


def test_many_commands_each_end_exactly_once_in_their_true_state(he: AnyHarness) -> None:
    reads = getattr(he, "reads", True)
    actions = [HesAction.CONNECT, HesAction.DISCONNECT, HesAction.READ][:3 if reads else 2]
    commands = [command(f"m{i}", he.serial(100 + i), actions[i % len(actions)]) for i in range(600)]
    he.submit(commands)
    outcomes = he.wait([c.command_id for c in commands])
    assert len(outcomes) == 600
    every = [o.command_id for o in he.all_outcomes() if o.command_id.startswith("m")]
    assert sorted(every) == sorted(c.command_id for c in commands)  # none twice
    for c in commands:
        o = outcomes[c.command_id]
        assert o.control_state is he.truth(c.meter).control_state


def test_the_same_command_id_twice_in_one_submission_ends_once(he: AnyHarness) -> None:
    m = he.serial(7)
    he.set_meter(m, 2, HesControlState.DISCONNECTED)
    c = command("twice", m, HesAction.CONNECT)
    he.submit([c, c])
    he.wait([c.command_id])
    he.submit([command("marker", m, HesAction.READ if getattr(he, "reads", True) else HesAction.DISCONNECT)])
    he.wait(["marker"])
    assert [o.command_id for o in he.all_outcomes()].count("twice") == 1


def test_a_credit_update_is_applied_and_held_by_the_meter_or_fails_unsupported_at_once(
    he: AnyHarness,
) -> None:
    """Issue 16: a prepaid meter that keeps its own credit is sent its balance (CIM 3.20.22.13). The
    reference protocol, and DLMS behind it, have no credit update: FAILED unsupported, final, nothing sent."""
    m = he.serial(8)
    before = he.truth(m)
    c = HesCommand("k1", m, HesAction.CREDIT, time.time() + 60.0, 123_456)
    o = one(he, c)
    if getattr(he, "credit_updates", False):
        assert (o.kind, o.error, o.attempts) == (OutcomeKind.APPLIED, None, 1)
        assert he.credit(m) == 123_456  # type: ignore[union-attr]
        newer = one(he, HesCommand("k2", m, HesAction.CREDIT, time.time() + 60.0, -505))
        assert newer.kind is OutcomeKind.APPLIED and he.credit(m) == -505  # type: ignore[union-attr]
    else:
        assert (o.kind, o.error, o.retryable, o.attempts) == (OutcomeKind.FAILED, "unsupported", False, 0)
    assert he.truth(m) == before  # the relay is not touched either way
