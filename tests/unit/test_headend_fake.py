"""`FakeHeadEnd`: the in-memory adapter other components test against, and its hooks."""

from __future__ import annotations

import pytest

from headend.clock import ManualClock
from headend.fake import FakeHeadEnd
from headend.outcome import HeadEndOutcome, OutcomeKind, relay_outcome
from headend.port import HeadEndDriver
from headend.sim.fleet import Fleet
from protocols.headend import HesAction, HesCommand, HesControlState

T0 = 1_700_000_000.0


def make(mode: int = 2) -> tuple[FakeHeadEnd, ManualClock]:
    clock = ManualClock(T0)
    fleet = Fleet.from_serials(["M1", "M2", "M3"], mode=mode, control_state=HesControlState.DISCONNECTED)
    return FakeHeadEnd(fleet, clock=clock), clock


def c(
    cid: str, meter: str = "M1", action: HesAction = HesAction.CONNECT, expires: float = T0 + 60
) -> HesCommand:
    return HesCommand(cid, meter, action, expires)


def test_it_is_a_head_end_driver_without_a_socket() -> None:
    fake, _ = make()
    driver: HeadEndDriver = fake
    assert driver.fileno() is None and driver.on_readable() == [] and driver.next_tick_in() is None


def test_by_default_a_command_ends_at_once_in_the_fleets_true_state() -> None:
    fake, _ = make()
    (o,) = fake.submit([c("a")])
    assert (o.kind, o.control_state, o.output_state) == (
        OutcomeKind.CONNECTED,
        HesControlState.CONNECTED,
        True,
    )
    assert fake.fleet.state("M1").output_state is True
    assert fake.submitted == [c("a")]


def test_a_mode_1_meter_waits_for_its_button() -> None:
    fake, _ = make(mode=1)
    assert fake.submit([c("a")])[0].kind is OutcomeKind.READY_FOR_RECONNECTION
    fake.fleet.press_button("M1")
    assert fake.submit([c("r", action=HesAction.READ)])[0].kind is OutcomeKind.CONNECTED


def test_a_dropped_command_never_ends_and_is_not_run() -> None:
    fake, clock = make()
    fake.drop_when(lambda cmd: cmd.meter == "M1")
    assert fake.submit([c("a"), c("b", "M2")])[0].command_id == "b"
    clock.advance(3600)
    assert fake.on_tick() == []
    assert fake.fleet.state("M1").control_state is HesControlState.DISCONNECTED


def test_a_delayed_command_ends_on_the_first_tick_after_its_delay() -> None:
    fake, clock = make()
    fake.delay_when(lambda cmd: True, seconds=5.0)
    assert fake.submit([c("a")]) == []
    assert fake.next_tick_in() == clock.to_real(5.0)
    clock.advance(4.9)
    assert fake.on_tick() == []
    clock.advance(0.1)
    assert [o.kind for o in fake.on_tick()] == [OutcomeKind.CONNECTED]


def test_a_delayed_command_whose_expiry_comes_first_ends_expired_and_never_runs() -> None:
    fake, clock = make()
    fake.delay_when(lambda cmd: True, seconds=5.0)
    fake.submit([c("a", expires=T0 + 2)])
    clock.advance(5)
    assert [o.kind for o in fake.on_tick()] == [OutcomeKind.EXPIRED]
    assert fake.fleet.state("M1").control_state is HesControlState.DISCONNECTED


def test_reject_and_fail_hooks_give_those_outcomes_without_touching_the_relay() -> None:
    fake, _ = make()
    fake.reject_when(lambda cmd: cmd.meter == "M1", reason="rate_limited")
    fake.fail_when(lambda cmd: cmd.meter == "M2", error="no_communication")
    fake.fail_when(lambda cmd: cmd.meter == "M3", error="relay_stuck")
    a, b, d = fake.submit([c("a"), c("b", "M2"), c("d", "M3")])
    assert (a.kind, a.reason) == (OutcomeKind.REJECTED, "rate_limited")
    assert (b.kind, b.error, b.retryable) == (OutcomeKind.FAILED, "no_communication", True)
    assert (d.kind, d.error, d.retryable) == (OutcomeKind.FAILED, "relay_stuck", False)
    assert fake.fleet.count(HesControlState.DISCONNECTED) == 3
    fake.clear_hooks()
    assert fake.submit([c("again")])[0].kind is OutcomeKind.CONNECTED


def test_a_pending_command_id_is_not_run_twice() -> None:
    fake, clock = make()
    fake.delay_when(lambda cmd: True, seconds=1.0)
    fake.submit([c("a"), c("a")])
    fake.submit([c("a")])
    clock.advance(1)
    assert len(fake.on_tick()) == 1


def test_after_close_nothing_more_is_taken() -> None:
    fake, _ = make()
    fake.close()
    assert fake.submit([c("a")]) == []


def test_the_fast_relay_outcome_equals_the_regular_one_and_refuses_non_relay_kinds() -> None:
    fast = relay_outcome(
        "c", "m", HesAction.CONNECT, OutcomeKind.CONNECTED, 1.0, 2, HesControlState.CONNECTED, True, 2
    )
    slow = HeadEndOutcome(
        command_id="c",
        meter="m",
        action=HesAction.CONNECT,
        kind=OutcomeKind.CONNECTED,
        at=1.0,
        attempts=2,
        control_state=HesControlState.CONNECTED,
        output_state=True,
        control_mode=2,
    )
    assert fast == slow and hash(fast) == hash(slow)
    with pytest.raises(ValueError):
        relay_outcome(
            "c", "m", HesAction.CONNECT, OutcomeKind.FAILED, 1.0, 1, HesControlState.CONNECTED, True, 2
        )
