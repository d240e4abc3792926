"""Automatic disconnection for dues: notice, 15 clear days, windows, exemptions (DESIGN §3, research §3)."""

from __future__ import annotations

from test_meter_support import LAWFUL, OVERDUE, POLICY, Sim, at, local, of_type, overdue_meter

from domain.effects import NotifyConsumer, OpenWorkOrder, SendRelayCommand
from domain.enums import (
    CommandOrigin,
    ControlState,
    NoticeTemplate,
    OverrideAction,
    RelayAction,
    RelayResultStatus,
    RelayState,
    RelayTarget,
    WorkOrderAction,
)
from domain.events import (
    DisconnectionDeferred,
    DisconnectionNoticeIssued,
    ReconnectionChargeApplied,
    RelayCommandRetryScheduled,
    RelayStateConfirmed,
)
from domain.meter import next_check_at
from domain.policy import load_policy


def test_overdue_dues_above_the_minimum_earn_a_disconnection_notice() -> None:
    sim = overdue_meter(100_000)
    (notice,) = of_type(sim.last_events, DisconnectionNoticeIssued)
    assert notice.at == OVERDUE and notice.bill_id == "B1" and notice.not_before == LAWFUL
    (sms,) = of_type(sim.last_effects, NotifyConsumer)
    assert sms.template is NoticeTemplate.DISCONNECTION_NOTICE and sms.not_before == LAWFUL
    assert sms.notice_id == notice.notice_id


def test_dues_below_the_minimum_earn_no_notice_and_no_disconnection() -> None:
    sim = overdue_meter(POLICY.disconnection_min_dues_paise // 2)
    assert sim.m.notice_at is None
    assert next_check_at(sim.m, POLICY) is None
    sim.check(at(2025, 4, 30, 10))
    assert sim.sent() == []


def test_no_disconnect_before_fifteen_clear_days() -> None:
    sim = overdue_meter()
    sim.check(at(2025, 3, 26, 17, 59))  # 15 days later, but the 26th is only the 15th clear day
    assert sim.sent() == []
    assert sim.m.relay is RelayState.CONNECTED


def test_clear_days_exclude_the_day_of_service_and_the_day_of_action() -> None:
    # Served 11 March 00:00; clear days 12..26 March; action possible on 27 March, not before.
    sim = overdue_meter()
    assert local(sim.m.switch_off_not_before or 0).date().isoformat() == "2025-03-27"
    # With 1 clear day: served on the 11th, the 12th is clear, action from the 13th.
    one_day = load_policy("[disconnection]\nnotice_clear_days = 1\n")
    sim = Sim(policy=one_day).register(at(2025, 3, 1)).bill(at(2025, 3, 1), 100_000, "2025-03-10").wake()
    assert sim.m.notice_at == at(2025, 3, 11)
    assert sim.m.switch_off_not_before == at(2025, 3, 13, 8)


def test_disconnection_happens_when_the_notice_matures_inside_allowed_hours() -> None:
    sim = overdue_meter().wake()
    assert sim.now == LAWFUL
    (send,) = sim.sent(RelayAction.DISCONNECT)
    assert send.origin is CommandOrigin.AUTOMATIC and send.correlation_id == "B1"
    assert sim.m.relay is RelayState.DISCONNECTING and sim.m.desired is RelayTarget.OFF_FOR_DUES


def test_no_disconnect_at_night() -> None:
    sim = overdue_meter()
    sim.check(at(2025, 3, 27, 18, 0))
    assert sim.sent() == []
    (deferred,) = of_type(sim.last_events, DisconnectionDeferred)
    assert deferred.not_before == at(2025, 3, 28, 8)
    sim.check(at(2025, 3, 28, 7, 59, 59))
    assert sim.sent() == []
    sim.wake()
    assert sim.now == at(2025, 3, 28, 8) and len(sim.sent(RelayAction.DISCONNECT)) == 1


def test_no_disconnect_on_sunday() -> None:
    # Due Thursday 13 March, overdue and served Friday 14th: the 16th day is Sunday 30 March.
    sim = Sim().register(at(2025, 3, 1)).bill(at(2025, 3, 1), 100_000, "2025-03-13").wake()
    assert sim.m.switch_off_not_before == at(2025, 3, 31, 8)  # Monday morning, not Sunday
    sim.check(at(2025, 3, 30, 11))  # Sunday, mid-morning
    assert sim.sent() == []
    sim.wake()
    assert local(sim.now).weekday() == 0 and len(sim.sent(RelayAction.DISCONNECT)) == 1


def test_no_disconnect_on_a_holiday() -> None:
    # Gandhi Jayanti, Thursday 2 October 2025, is in the example calendar.
    sim = Sim().register(at(2025, 9, 1)).bill(at(2025, 9, 1), 100_000, "2025-09-15").wake()
    sim.check(at(2025, 10, 2, 11))
    sim.check(at(2025, 10, 2, 11))
    # Notice served 16 Sept → lawful from 2 Oct; the holiday pushes it to Friday 3 October 08:00.
    assert sim.sent() == []
    assert next_check_at(sim.m, POLICY) == at(2025, 10, 3, 8)


def test_no_disconnect_for_a_protected_meter() -> None:
    sim = overdue_meter(protected=True)
    assert sim.m.notice_at is None
    sim.check(at(2025, 4, 30, 10))
    assert sim.sent() == []
    assert next_check_at(sim.m, POLICY) is None


def test_no_disconnect_while_on_hold() -> None:
    sim = overdue_meter()
    sim.override(at(2025, 3, 20, 10), OverrideAction.HOLD, reason="disputed, paid under protest")
    sim.check(LAWFUL)
    assert sim.sent() == []
    assert next_check_at(sim.m, POLICY) is None
    sim.override(at(2025, 4, 1, 10), OverrideAction.RELEASE, reason="dispute settled")
    assert len(sim.sent(RelayAction.DISCONNECT)) == 1


def test_automatic_disconnect_expires_when_the_allowed_period_ends() -> None:
    sim = overdue_meter()
    sim.check(at(2025, 3, 27, 17, 55))
    (send,) = sim.sent(RelayAction.DISCONNECT)
    assert send.expires_at == at(2025, 3, 27, 18, 0)


def test_expired_disconnect_is_not_retried_at_night() -> None:
    sim = overdue_meter()
    sim.check(at(2025, 3, 27, 17, 55))
    sim.wake()  # 18:00: no result came; the expiry is inside the night window
    assert sim.sent() == []
    assert sim.m.relay is RelayState.CONNECTED and sim.m.pending is None
    assert next_check_at(sim.m, POLICY) == at(2025, 3, 28, 8)
    sim.wake()
    assert len(sim.sent(RelayAction.DISCONNECT)) == 1


def test_a_processed_result_arriving_after_expiry_is_the_relay_s_truth() -> None:
    """The head-end runs a command only before its expiry, so a late "processed" was in transit: the
    relay did switch. Refusing it left jodo believing the meter connected (and sending it again)."""
    sim = overdue_meter().wake()
    expires = sim.m.pending.expires_at if sim.m.pending else 0
    sim.result(expires + 1, control_state=ControlState.DISCONNECTED, output_state=False)
    assert len(of_type(sim.last_events, RelayStateConfirmed)) == 1
    assert of_type(sim.last_events, RelayCommandRetryScheduled) == []
    assert sim.m.relay is RelayState.DISCONNECTED and sim.sent() == []


def test_a_failed_result_arriving_after_expiry_counts_as_expired() -> None:
    sim = overdue_meter().wake()
    expires = sim.m.pending.expires_at if sim.m.pending else 0
    sim.result(expires + 1, RelayResultStatus.FAILED, error_code="TEMPORARY_FAILURE", retryable=True)
    assert of_type(sim.last_events, RelayCommandRetryScheduled)[0].status is RelayResultStatus.EXPIRED
    assert sim.m.relay is not RelayState.DISCONNECTED


def test_confirmed_disconnection_adds_the_reconnection_charge_and_notifies() -> None:
    sim = overdue_meter(100_000).wake()
    dues = sim.m.dues_paise
    sim.disconnected_ok(sim.now + 5)
    assert sim.m.relay is RelayState.DISCONNECTED
    (charge,) = of_type(sim.last_events, ReconnectionChargeApplied)
    assert charge.amount_paise == POLICY.disconnection_reconnection_charge_paise
    assert sim.m.dues_paise == dues + charge.amount_paise
    (sms,) = of_type(sim.last_effects, NotifyConsumer)
    assert sms.template is NoticeTemplate.DISCONNECTED and sms.dues_paise == sim.m.dues_paise
    assert next_check_at(sim.m, POLICY) is None


def test_meter_not_remotely_switchable_gets_one_disconnect_work_order() -> None:
    sim = overdue_meter(install_year=2018).wake()
    assert sim.sent() == []
    (order,) = of_type(sim.last_effects, OpenWorkOrder)
    assert order.action is WorkOrderAction.DISCONNECT
    sim.check(at(2025, 3, 28, 10))
    sim.check(at(2025, 3, 29, 10))
    assert of_type(sim.last_effects, OpenWorkOrder) == []
    assert next_check_at(sim.m, POLICY) is None
    # The crew cuts the supply; a read shows it: the order closes and the charge applies.
    sim.read(at(2025, 3, 29, 12), ControlState.DISCONNECTED, False)
    assert sim.m.work_order is None and sim.m.relay is RelayState.DISCONNECTED
    assert len(of_type(sim.last_events, ReconnectionChargeApplied)) == 1


def test_a_new_notice_needs_dues_back_above_the_minimum() -> None:
    sim = overdue_meter(100_000).pay(at(2025, 3, 20), 90_000)
    assert sim.m.notice_at is None  # withdrawn: dues fell below the minimum
    sim.check(LAWFUL)
    assert sim.sent() == []


def test_every_automatic_disconnect_command_is_audited() -> None:
    sim = overdue_meter().wake()
    (send,) = of_type(sim.last_effects, SendRelayCommand)
    assert send.reason and send.correlation_id == "B1" and send.engineer_id is None
    assert send.command_id.startswith(sim.m.account + ":c")
