"""Relay command outcomes: confirmation, retries with backoff, expiry, work orders, reconciliation
(DESIGN §3, research §1.1, §4.1, §7.5-7.6)."""

from __future__ import annotations

from test_meter_support import POLICY, Sim, at, disconnected_meter, of_type, overdue_meter

from domain.effects import CancelWorkOrder, NotifyConsumer, OpenWorkOrder
from domain.enums import (
    ControlState,
    NoticeTemplate,
    OverrideAction,
    RelayAction,
    RelayResultStatus,
    RelayState,
    WorkOrderAction,
)
from domain.events import (
    RelayCommandFailed,
    RelayCommandRetryScheduled,
    RelayStateReported,
)
from domain.meter import next_check_at

NIGHT = at(2025, 3, 28, 23)


def reconnecting(**register: object) -> Sim:
    sim = disconnected_meter(**register)
    return sim.pay(NIGHT, sim.m.dues_paise, "PAY-1")


def test_retryable_failure_retries_with_exponential_backoff_then_opens_a_work_order() -> None:
    sim = reconnecting()
    first = sim.sent(RelayAction.CONNECT)[0]
    sim.result(NIGHT + 10, RelayResultStatus.FAILED, error_code="TEMPORARY_FAILURE", retryable=True)
    (retry,) = of_type(sim.last_events, RelayCommandRetryScheduled)
    assert retry.retry_at == NIGHT + 10 + 30  # OSGP: 30 s x 2^0
    assert next_check_at(sim.m, POLICY) == NIGHT + 40
    sim.wake()
    (second,) = sim.sent(RelayAction.CONNECT)
    assert second.attempt == 2 and second.command_id != first.command_id
    assert second.correlation_id == first.correlation_id == "PAY-1"
    sim.result(NIGHT + 50, RelayResultStatus.FAILED, error_code="TEMPORARY_FAILURE", retryable=True)
    assert of_type(sim.last_events, RelayCommandRetryScheduled)[0].retry_at == NIGHT + 50 + 60  # 30 x 2^1
    sim.wake()
    assert sim.sent(RelayAction.CONNECT)[0].attempt == 3
    sim.result(NIGHT + 200, RelayResultStatus.FAILED, error_code="TEMPORARY_FAILURE", retryable=True)
    (failed,) = of_type(sim.last_events, RelayCommandFailed)
    assert failed.attempts == 3
    (order,) = of_type(sim.last_effects, OpenWorkOrder)
    assert order.action is WorkOrderAction.RECONNECT
    (sms,) = of_type(sim.last_effects, NotifyConsumer)
    assert sms.template is NoticeTemplate.RECONNECT_FAILED
    assert sim.m.relay is RelayState.DISCONNECTED and sim.m.pending is None
    assert next_check_at(sim.m, POLICY) is None
    sim.check(NIGHT + 3600)
    assert sim.sent() == [] and of_type(sim.last_effects, OpenWorkOrder) == []


def test_non_retryable_failure_opens_a_work_order_at_once() -> None:
    sim = reconnecting()
    sim.result(NIGHT + 5, RelayResultStatus.FAILED, error_code="READ_WRITE_DENIED", retryable=False)
    assert of_type(sim.last_events, RelayCommandFailed)[0].attempts == 1
    assert len(of_type(sim.last_effects, OpenWorkOrder)) == 1


def test_rejected_command_follows_its_retryable_flag() -> None:
    sim = reconnecting()
    sim.result(NIGHT + 5, RelayResultStatus.REJECTED, error_code="rate_limited", retryable=True)
    assert len(of_type(sim.last_events, RelayCommandRetryScheduled)) == 1


def test_expired_result_reissues_the_command_at_once() -> None:
    sim = reconnecting()
    first = sim.sent()[0]
    sim.result(NIGHT + 60, RelayResultStatus.EXPIRED)
    (again,) = sim.sent(RelayAction.CONNECT)
    assert again.attempt == 2 and again.command_id != first.command_id


def test_no_result_by_the_expiry_and_its_grace_reissues_the_command() -> None:
    sim = reconnecting()
    sim.wake()
    assert sim.now == NIGHT + POLICY.relay_command_expiry_seconds + POLICY.relay_result_grace_seconds
    assert POLICY.relay_result_grace_seconds > 0
    assert sim.sent(RelayAction.CONNECT)[0].attempt == 2


def test_a_result_in_transit_at_the_expiry_is_not_raced_by_a_second_command() -> None:
    """bench_storm found it: the head-end ran attempt 1 just before its expiry, its result reached the
    shard just after, and attempt 2 (sent at once on "expired") ran too: one reconnect executed twice."""
    sim = reconnecting()
    expiry = NIGHT + POLICY.relay_command_expiry_seconds
    sim.check(expiry)  # the expiry passes with the result still on its way: nothing is sent again
    assert sim.sent() == [] and sim.m.relay is RelayState.CONNECTING
    sim.connected_ok(expiry + 2)  # then it arrives: the relay did switch
    assert sim.m.relay is RelayState.CONNECTED and sim.m.pending is None
    assert sim.sent() == []


def test_a_late_result_other_than_processed_is_an_expiry() -> None:
    sim = reconnecting()
    first = sim.sent()[0]
    sim.result(NIGHT + POLICY.relay_command_expiry_seconds + 1, RelayResultStatus.FAILED,
               error_code="TEMPORARY_FAILURE", retryable=True)
    (again,) = sim.sent(RelayAction.CONNECT)
    assert again.attempt == 2 and again.command_id != first.command_id


def test_result_for_an_unknown_command_is_ignored() -> None:
    sim = reconnecting()
    before = sim.m
    sim.result(
        NIGHT + 5, command_id="N1234567890:c999", control_state=ControlState.CONNECTED, output_state=True
    )
    assert sim.last_events == () and sim.last_effects == () and sim.m == before


def test_duplicate_result_is_ignored() -> None:
    sim = reconnecting()
    command_id = sim.sent()[0].command_id
    sim.connected_ok(NIGHT + 5)
    sim.result(NIGHT + 6, command_id=command_id, control_state=ControlState.CONNECTED, output_state=True)
    assert sim.last_events == () and sim.last_effects == ()


def test_processed_result_without_the_state_change_counts_as_a_failure() -> None:
    sim = reconnecting()
    sim.result(NIGHT + 5, control_state=ControlState.DISCONNECTED, output_state=False)
    (retry,) = of_type(sim.last_events, RelayCommandRetryScheduled)
    assert retry.status is RelayResultStatus.FAILED
    assert sim.m.relay is RelayState.CONNECTING


def test_read_showing_off_with_nothing_pending_reissues_a_connect() -> None:
    sim = Sim().register(at(2025, 3, 1))
    sim.read(at(2025, 3, 2, 22), ControlState.DISCONNECTED, False)
    assert of_type(sim.last_events, RelayStateReported)[0].relay is RelayState.DISCONNECTED
    assert len(sim.sent(RelayAction.CONNECT)) == 1


def test_read_showing_on_while_off_for_dues_redisconnects_only_outside_windows() -> None:
    sim = disconnected_meter()
    sim.read(at(2025, 3, 28, 21), ControlState.CONNECTED, True)  # bypassed at night
    assert sim.m.relay is RelayState.CONNECTED and sim.sent() == []
    assert of_type(sim.last_effects, NotifyConsumer) == []  # no "supply restored" for a bypass
    assert next_check_at(sim.m, POLICY) == at(2025, 3, 29, 8)
    sim.wake()
    assert len(sim.sent(RelayAction.DISCONNECT)) == 1


def test_read_confirming_a_pending_command_completes_it() -> None:
    sim = reconnecting()
    sim.read(NIGHT + 30, ControlState.CONNECTED, True)
    assert sim.m.relay is RelayState.CONNECTED and sim.m.pending is None


def test_read_contradicting_a_command_in_flight_is_ignored() -> None:
    sim = reconnecting()
    sim.read(NIGHT + 1, ControlState.DISCONNECTED, False)
    assert sim.last_events == () and sim.m.relay is RelayState.CONNECTING


def test_remote_success_closes_an_open_work_order_and_tells_the_crew() -> None:
    sim = reconnecting()
    sim.result(NIGHT + 5, RelayResultStatus.FAILED, error_code="HARDWARE_FAULT", retryable=False)
    order = sim.m.work_order
    assert order is not None
    sim.override(NIGHT + 600, OverrideAction.CONNECT, reason="retry from the control room")
    sim.connected_ok(NIGHT + 610)
    assert sim.m.work_order is None
    assert of_type(sim.last_effects, CancelWorkOrder)[0].work_order_id == order.work_order_id


def test_disconnect_failure_ends_in_a_disconnect_work_order() -> None:
    sim = overdue_meter().wake()
    sim.result(sim.now + 5, RelayResultStatus.FAILED, error_code="OBJECT_UNDEFINED", retryable=False)
    (order,) = of_type(sim.last_effects, OpenWorkOrder)
    assert order.action is WorkOrderAction.DISCONNECT
    assert sim.m.relay is RelayState.CONNECTED
