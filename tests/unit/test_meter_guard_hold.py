"""A meter whose automatic disconnect the gateway's guard holds (status held / released): it parks
the command (no expiry, no retry, no work order while held), drops it on release and issues a fresh
one under the windows, and a payment while held cancels it and tells the gateway to drop it."""

from __future__ import annotations

from test_meter_support import LAWFUL, POLICY, Sim, at, of_type, overdue_meter

from actors.shard_service import relay_command_of
from domain.effects import CancelRelayCommand, OpenWorkOrder
from domain.enums import RelayAction, RelayResultStatus, RelayState
from domain.events import RelayCommandCancelled, RelayCommandFailed, RelayCommandRetryScheduled
from domain.meter import next_check_at
from domain.state import HELD_RETRY_AT


def held_meter() -> tuple[Sim, str]:
    sim = overdue_meter().wake()
    (send,) = sim.sent(RelayAction.DISCONNECT)
    sim.result(LAWFUL + 1, RelayResultStatus.HELD, error_code="hes-a.3")
    (park,) = of_type(sim.last_events, RelayCommandRetryScheduled)
    assert park.retry_at == HELD_RETRY_AT and park.status is RelayResultStatus.HELD
    return sim, send.command_id


def test_a_held_disconnect_never_expires_retries_or_opens_a_work_order() -> None:
    sim, command_id = held_meter()
    assert sim.m.pending is not None and sim.m.pending.command_id == command_id
    assert next_check_at(sim.m, POLICY) == HELD_RETRY_AT
    for days in (1, 3, 10):  # far past the command's expiry and the day's allowed hours
        sim.check(LAWFUL + days * 86_400)
        assert sim.sent() == []
        assert of_type(sim.last_events, RelayCommandFailed) == []
        assert of_type(sim.last_effects, OpenWorkOrder) == []
    # the shard sends a held command to a restarted gateway (which knows its wave), not on a timer
    command = relay_command_of(sim.m)
    assert command is not None and command.command_id == command_id


def test_release_drops_the_parked_command_and_issues_a_fresh_one_inside_the_window() -> None:
    sim, command_id = held_meter()
    released = at(2025, 3, 27, 11)
    sim.result(released, RelayResultStatus.RELEASED, command_id=command_id)
    (dropped,) = of_type(sim.last_events, RelayCommandCancelled)
    assert not dropped.in_flight and "disconnect guard" in dropped.reason
    (fresh,) = sim.sent(RelayAction.DISCONNECT)
    assert fresh.command_id != command_id and fresh.attempt == 1
    assert fresh.expires_at > released
    assert of_type(sim.last_effects, CancelRelayCommand) == []


def test_release_at_night_waits_for_the_morning() -> None:
    sim, command_id = held_meter()
    night = at(2025, 3, 27, 23)
    sim.result(night, RelayResultStatus.RELEASED, command_id=command_id)
    assert sim.sent() == [] and sim.m.pending is None
    assert sim.m.relay is RelayState.CONNECTED
    sim.wake()
    assert sim.now == at(2025, 3, 28, 8) and len(sim.sent(RelayAction.DISCONNECT)) == 1


def test_a_payment_while_held_cancels_it_and_tells_the_gateway() -> None:
    sim, command_id = held_meter()
    sim.pay(LAWFUL + 60, sim.m.dues_paise, "PAY-9")
    (cancelled,) = of_type(sim.last_events, RelayCommandCancelled)
    assert cancelled.command_id == command_id and not cancelled.in_flight
    (cancel,) = of_type(sim.last_effects, CancelRelayCommand)
    assert cancel.command_id == command_id  # the gateway takes it out of its wave
    assert sim.m.relay is RelayState.CONNECTED and sim.m.pending is None
    assert sim.sent() == []  # (never cut: nothing to reconnect)


def test_a_late_head_end_result_for_a_held_command_still_counts() -> None:
    sim, _ = held_meter()
    sim.disconnected_ok(LAWFUL + 120)  # (a restarted gateway ran it after all)
    assert sim.m.relay is RelayState.DISCONNECTED and sim.m.pending is None


def test_held_and_released_mean_nothing_for_other_commands() -> None:
    sim = overdue_meter().wake()
    (send,) = sim.sent(RelayAction.DISCONNECT)
    sim.result(LAWFUL + 1, RelayResultStatus.RELEASED)  # not held: ignored
    assert sim.last_events == () and sim.m.pending is not None
    sim.result(LAWFUL + 2, RelayResultStatus.HELD, command_id="someone-else:c9")
    assert sim.last_events == ()
    sim.result(LAWFUL + 3, RelayResultStatus.HELD)
    sim.result(LAWFUL + 4, RelayResultStatus.HELD)  # held twice: parked once
    assert sim.last_events == () and sim.m.pending is not None
    assert sim.m.pending.command_id == send.command_id
