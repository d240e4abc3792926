"""Reconnection on payment: any hour, eligibility, cancel a pending disconnect, button meters
(DESIGN §3, research §0, §1.1, §3.2)."""

from __future__ import annotations

import pytest
from test_meter_support import (
    POLICY,
    Sim,
    at,
    disconnected_meter,
    of_type,
    overdue_meter,
)

from domain.effects import CancelRelayCommand, NotifyConsumer, OpenWorkOrder
from domain.enums import (
    CommandOrigin,
    ControlState,
    NoticeTemplate,
    RelayAction,
    RelayResultStatus,
    RelayState,
    RelayTarget,
    WorkOrderAction,
)
from domain.events import AwaitingButtonPress, RelayCommandCancelled, RelayStateConfirmed
from domain.meter import next_check_at
from domain.policy import load_policy


def pay_up(sim: Sim, now: int, payment_id: str = "PAY-1") -> Sim:
    return sim.pay(now, sim.m.dues_paise, payment_id)


def test_payment_at_night_still_reconnects() -> None:
    sim = disconnected_meter()
    pay_up(sim, at(2025, 3, 27, 23, 30))
    (send,) = sim.sent(RelayAction.CONNECT)
    assert send.correlation_id == "PAY-1" and send.origin is CommandOrigin.AUTOMATIC
    assert send.expires_at == sim.now + POLICY.relay_command_expiry_seconds
    assert sim.m.relay is RelayState.CONNECTING and sim.m.desired is RelayTarget.CONNECTED
    sim.connected_ok(sim.now + 4)
    assert sim.m.relay is RelayState.CONNECTED
    (sms,) = of_type(sim.last_effects, NotifyConsumer)
    assert sms.template is NoticeTemplate.SUPPLY_RESTORED


def test_payment_on_a_sunday_holiday_still_reconnects() -> None:
    sim = disconnected_meter()
    pay_up(sim, at(2026, 1, 26, 3))  # Republic Day 2026, a Monday, at 3 am
    assert len(sim.sent(RelayAction.CONNECT)) == 1
    sim = disconnected_meter()
    pay_up(sim, at(2025, 3, 30, 21))  # a Sunday night
    assert len(sim.sent(RelayAction.CONNECT)) == 1


def test_partial_payment_above_the_threshold_does_not_reconnect() -> None:
    sim = disconnected_meter()
    sim.pay(at(2025, 3, 28, 10), sim.m.dues_paise - 1)
    assert sim.sent() == []
    assert sim.m.relay is RelayState.DISCONNECTED and sim.m.dues_paise == 1


def test_reconnection_charge_must_be_paid_to_reconnect() -> None:
    sim = disconnected_meter(100_000)
    charge = POLICY.disconnection_reconnection_charge_paise
    surcharge = 100_000 * POLICY.billing_late_surcharge_bp // 10_000
    sim.pay(at(2025, 3, 28, 10), 100_000 + surcharge)  # the bill and surcharge, not the charge
    assert sim.sent() == [] and sim.m.dues_paise == charge
    sim.pay(at(2025, 3, 28, 11), charge, "P2")
    assert len(sim.sent(RelayAction.CONNECT)) == 1


def test_reconnect_threshold_is_policy() -> None:
    lenient = load_policy("[reconnection]\nthreshold_paise = 5000\n")
    sim = disconnected_meter()
    sim.policy = lenient
    sim.pay(at(2025, 3, 28, 10), sim.m.dues_paise - 5000)
    assert len(sim.sent(RelayAction.CONNECT)) == 1


def test_payment_cancels_pending_disconnect() -> None:
    sim = overdue_meter().wake()
    pending = sim.m.pending
    assert pending is not None and pending.action is RelayAction.DISCONNECT
    pay_up(sim, sim.now + 30)
    assert (
        CancelRelayCommand(command_id=pending.command_id, account=sim.m.account, head_end="hes-a")
        in sim.last_effects
    )
    # The cancel may race the meter: jodo assumes the cut happened and sends a connect.
    (send,) = sim.sent(RelayAction.CONNECT)
    assert sim.m.pending is not None and sim.m.pending.command_id == send.command_id
    # A late result for the cancelled disconnect is ignored.
    sim.result(
        sim.now + 2,
        command_id=pending.command_id,
        control_state=ControlState.DISCONNECTED,
        output_state=False,
    )
    assert sim.last_events == () and sim.last_effects == ()
    sim.connected_ok(sim.now + 3)
    assert sim.m.relay is RelayState.CONNECTED


def test_payment_cancels_a_disconnect_waiting_to_retry_without_asking_the_head_end() -> None:
    sim = overdue_meter().wake()
    sim.result(sim.now + 5, RelayResultStatus.FAILED, error_code="TEMPORARY_FAILURE", retryable=True)
    assert sim.m.pending is not None and sim.m.pending.retry_at is not None
    pay_up(sim, sim.now + 10)
    (cancelled,) = of_type(sim.last_events, RelayCommandCancelled)
    assert not cancelled.in_flight
    assert of_type(sim.last_effects, CancelRelayCommand) == []
    assert sim.sent() == []  # the disconnect never ran: the relay is still on
    assert sim.m.relay is RelayState.CONNECTED and sim.m.pending is None


@pytest.mark.parametrize(
    "register",
    [
        {"install_year": 2019},  # older cohort: a later phase (research §0)
        {"install_year": 2025},
        {"head_end": "hes-legacy"},  # head-end not enabled
        {"relay_capable": False},  # CT meter, IS 15959-3 (research §1.2)
        {"control_mode": 0},  # remote switching disabled (research §1.1)
    ],
)
def test_ineligible_meter_gets_exactly_one_reconnect_work_order_and_a_field_visit_notice(
    register: dict[str, object],
) -> None:
    sim = Sim(policy=load_policy('[rollout]\nhead_ends = ["hes-a"]\n'))
    sim.register(at(2025, 3, 1), relay=RelayState.DISCONNECTED, opening_dues_paise=60_000, **register)
    assert sim.sent() == [] and of_type(sim.last_effects, OpenWorkOrder) == []
    sim.pay(at(2025, 3, 2, 22), 60_000)
    assert sim.sent() == []
    (order,) = of_type(sim.last_effects, OpenWorkOrder)
    assert order.action is WorkOrderAction.RECONNECT and order.correlation_id == "P1"
    templates = [n.template for n in of_type(sim.last_effects, NotifyConsumer)]
    assert NoticeTemplate.FIELD_VISIT_SCHEDULED in templates
    sim.pay(at(2025, 3, 2, 23), 100, "P2")
    sim.check(at(2025, 3, 3))
    assert of_type(sim.last_effects, OpenWorkOrder) == []
    # The crew reconnects; a read shows it; the order closes.
    sim.read(at(2025, 3, 3, 11), ControlState.CONNECTED, True)
    assert sim.m.work_order is None and sim.m.relay is RelayState.CONNECTED


def test_registered_off_meter_with_arrears_stays_off_until_paid() -> None:
    sim = Sim().register(at(2025, 3, 1), relay=RelayState.DISCONNECTED, opening_dues_paise=80_000)
    sim.check(at(2025, 3, 2))
    assert sim.sent() == [] and sim.m.desired is RelayTarget.OFF_FOR_DUES
    sim.pay(at(2025, 3, 2, 1), 80_000)
    assert len(sim.sent(RelayAction.CONNECT)) == 1


@pytest.mark.parametrize("mode", [1, 3, 5, 6])
def test_mode_1_meter_ends_awaiting_button(mode: int) -> None:
    sim = disconnected_meter(control_mode=mode)
    pay_up(sim, at(2025, 3, 28, 2))
    sim.result(sim.now + 3, control_state=ControlState.READY_FOR_RECONNECTION, output_state=False)
    assert sim.m.relay is RelayState.AWAITING_BUTTON and sim.m.pending is None
    (awaiting,) = of_type(sim.last_events, AwaitingButtonPress)
    assert awaiting.control_mode == mode
    (sms,) = of_type(sim.last_effects, NotifyConsumer)
    assert sms.template is NoticeTemplate.PRESS_BUTTON
    assert next_check_at(sim.m, POLICY) is None
    # The consumer presses the button; the next read shows the supply on.
    sim.read(at(2025, 3, 28, 7), ControlState.CONNECTED, True)
    assert sim.m.relay is RelayState.CONNECTED
    (sms,) = of_type(sim.last_effects, NotifyConsumer)
    assert sms.template is NoticeTemplate.SUPPLY_RESTORED


def test_mode_2_meter_connects_without_the_button() -> None:
    sim = disconnected_meter(control_mode=2)
    pay_up(sim, at(2025, 3, 28, 2))
    sim.connected_ok(sim.now + 3)
    assert of_type(sim.last_events, RelayStateConfirmed)[0].relay is RelayState.CONNECTED


def test_payment_while_awaiting_the_button_sends_nothing_more() -> None:
    sim = disconnected_meter(control_mode=1)
    pay_up(sim, at(2025, 3, 28, 2))
    sim.result(sim.now + 3, control_state=ControlState.READY_FOR_RECONNECTION, output_state=False)
    sim.pay(at(2025, 3, 28, 3), 500, "P-extra")
    assert sim.sent() == []
