"""Engineer overrides: audited, immediate, and deliberate disconnections outside the window rules."""

from __future__ import annotations

from test_meter_support import LAWFUL, POLICY, Sim, at, disconnected_meter, of_type, overdue_meter

from domain.commands import EngineerOverride
from domain.effects import CancelRelayCommand, MeterCommandRejected, OpenWorkOrder
from domain.enums import CommandOrigin, OverrideAction, RelayAction, RelayState, RelayTarget
from domain.events import DisconnectionNoticeIssued, DisconnectionNoticeWithdrawn, OverrideApplied
from domain.meter import decide

SUNDAY_NIGHT = at(2025, 3, 30, 23)


def test_every_override_is_audited_with_engineer_and_reason() -> None:
    for action in OverrideAction:
        sim = Sim().register(at(2025, 3, 1))
        sim.override(at(2025, 3, 2), action, engineer="E7", reason="site visit")
        (audit,) = of_type(sim.last_events, OverrideApplied)
        assert (audit.action, audit.engineer_id, audit.reason) == (action, "E7", "site visit")


def test_engineer_disconnect_acts_at_night_and_is_flagged_deliberate() -> None:
    sim = Sim().register(at(2025, 3, 1))
    sim.override(SUNDAY_NIGHT, OverrideAction.DISCONNECT, reason="unsafe wiring")
    (audit,) = of_type(sim.last_events, OverrideApplied)
    assert audit.deliberate_disconnection
    (send,) = sim.sent(RelayAction.DISCONNECT)
    assert send.origin is CommandOrigin.ENGINEER and send.engineer_id == "E42"
    assert sim.m.desired is RelayTarget.OFF_BY_ENGINEER
    sim.disconnected_ok(SUNDAY_NIGHT + 5)
    assert sim.m.relay is RelayState.DISCONNECTED
    assert sim.m.dues_paise == 0  # no reconnection charge: not a disconnection for dues


def test_engineer_disconnected_meter_is_not_reconnected_by_a_payment() -> None:
    sim = Sim().register(at(2025, 3, 1))
    sim.override(at(2025, 3, 2, 10), OverrideAction.DISCONNECT, reason="consumer request")
    sim.disconnected_ok(at(2025, 3, 2, 10, 1))
    sim.pay(at(2025, 3, 3), 10_000)
    assert sim.sent() == [] and sim.m.relay is RelayState.DISCONNECTED
    sim.override(at(2025, 3, 4, 10), OverrideAction.CONNECT, reason="consumer back")
    assert len(sim.sent(RelayAction.CONNECT)) == 1


def test_engineer_connect_cancels_a_pending_disconnect_and_restarts_the_notice_clock() -> None:
    sim = overdue_meter().wake()
    pending = sim.m.pending
    assert pending is not None
    sim.override(LAWFUL + 60, OverrideAction.CONNECT, reason="wrong bill")
    assert of_type(sim.last_effects, CancelRelayCommand)[0].command_id == pending.command_id
    assert len(sim.sent(RelayAction.CONNECT)) == 1
    assert len(of_type(sim.last_events, DisconnectionNoticeWithdrawn)) == 1
    (fresh,) = of_type(sim.last_events, DisconnectionNoticeIssued)
    assert fresh.not_before > LAWFUL + 15 * 86400


def test_hold_cancels_a_pending_disconnect_and_keeps_the_supply_on() -> None:
    sim = overdue_meter().wake()
    sim.override(LAWFUL + 60, OverrideAction.HOLD, reason="amount paid under protest (s.56)")
    assert len(of_type(sim.last_effects, CancelRelayCommand)) == 1
    assert len(sim.sent(RelayAction.CONNECT)) == 1
    assert sim.m.desired is RelayTarget.CONNECTED


def test_protecting_a_meter_off_for_dues_reconnects_it() -> None:
    sim = disconnected_meter()
    sim.override(SUNDAY_NIGHT, OverrideAction.PROTECT, reason="life-support equipment")
    assert sim.m.protected
    assert len(sim.sent(RelayAction.CONNECT)) == 1


def test_engineer_action_on_a_meter_without_remote_switching_opens_a_work_order() -> None:
    sim = Sim().register(at(2025, 3, 1), relay_capable=False)
    sim.override(at(2025, 3, 2, 10), OverrideAction.DISCONNECT, reason="theft")
    assert sim.sent() == [] and len(of_type(sim.last_effects, OpenWorkOrder)) == 1


def test_override_for_an_unknown_meter_is_rejected() -> None:
    command = EngineerOverride(account="N0", action=OverrideAction.HOLD, engineer_id="E1", reason="x")
    events, effects = decide(None, command, 1, POLICY)
    assert events == () and isinstance(effects[0], MeterCommandRejected)
