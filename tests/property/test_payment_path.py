"""The shard's one-step payment (domain/payment_path.py) decides exactly what `handle` decides, on
meters in any situation: same state, same effects, and events that expand to `handle`'s.

The meter states are drawn directly (relay, wanted state, dues, bill with its due date, rebate and
surcharge flags, notice, deferral, exemptions, work order, command in flight or waiting to retry,
cohort), so the situations a full payment meets are all covered, not only those a story reaches.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import payment_path
from domain.commands import ClearPayment, ReportRelayResult
from domain.enums import (
    CommandOrigin,
    ControlState,
    RelayAction,
    RelayResultStatus,
    RelayState,
    RelayTarget,
    WorkOrderAction,
)
from domain.events import PaymentReconnect
from domain.fused import expand_all, fuse_all
from domain.meter import handle
from domain.payment_path import handle_batched
from domain.policy import load_policy
from domain.state import BillState, FieldWorkOrder, Meter, MeterCase, PendingRelayCommand, meter_profile

POLICY = load_policy()
NOW = 1_741_000_000  # 2025-03-03, a Monday, 16:36 IST
ACCOUNT = "N0000000001"
_TRANSIT = {RelayState.CONNECTING: RelayAction.CONNECT, RelayState.DISCONNECTING: RelayAction.DISCONNECT}

times = st.integers(NOW - 40 * 86_400, NOW + 40 * 86_400)
opt_times = st.none() | times


#: relay states and wanted states drawn for a payment: mostly the one-step path's own, then any
PAYMENT_RELAYS = st.just(RelayState.DISCONNECTED) | st.sampled_from(list(RelayState))
PAYMENT_WANTED = st.just(RelayTarget.OFF_FOR_DUES) | st.sampled_from(list(RelayTarget))


@st.composite
def meters(
    draw: st.DrawFn,
    relays: st.SearchStrategy[RelayState] = PAYMENT_RELAYS,
    wanted: st.SearchStrategy[RelayTarget] = PAYMENT_WANTED,
) -> Meter:
    relay = draw(relays)
    action = _TRANSIT.get(relay)
    pending = None
    if action is not None:
        pending = PendingRelayCommand(
            command_id=f"{ACCOUNT}:c1", action=action, attempt=draw(st.integers(1, 3)), issued_at=NOW - 60,
            expires_at=draw(times),
            from_relay=draw(st.sampled_from([RelayState.CONNECTED, RelayState.DISCONNECTED])),
            reason="r", correlation_id="x", origin=draw(st.sampled_from(list(CommandOrigin))),
            retry_at=draw(opt_times),
        )
    notice_at = draw(opt_times)
    case = MeterCase(
        protected=draw(st.booleans()), on_hold=draw(st.booleans()), notice_at=notice_at,
        switch_off_not_before=draw(opt_times) if notice_at is not None or draw(st.booleans()) else None,
        pending=pending,
        work_order=draw(st.none() | st.builds(FieldWorkOrder, work_order_id=st.just("w1"),
                                              action=st.sampled_from(list(WorkOrderAction)))),
    )
    plain = draw(st.booleans())  # half of them with nothing open but the notice: the fast path's case
    if plain:
        case = MeterCase(notice_at=notice_at, switch_off_not_before=case.switch_off_not_before,
                         pending=pending)
    bill = draw(st.none() | st.builds(
        BillState, bill_id=st.just("B1"), amount_paise=st.integers(0, 300_000), due_at=times,
        rebated=st.booleans(), surcharged=st.booleans(), previous_bill_id=st.none() | st.just("B0"),
    ))
    profile = draw(st.just(meter_profile("hes-a", 2022, True, 2)) | st.builds(
        meter_profile, st.sampled_from(["hes-a", "hes-b"]), st.integers(2015, 2026), st.booleans(),
        st.integers(0, 6),
    ))
    return Meter(
        account=ACCOUNT, serial="SM-1", profile=profile, relay=relay,
        desired=draw(wanted),
        dues_paise=draw(st.integers(-10_000, 400_000)), bill=bill,
        case=None if case == MeterCase() else case, seq=draw(st.integers(0, 5)),
        recent_payment_ids=tuple(draw(st.lists(st.sampled_from(["P0", "P1", "P2"]), max_size=3,
                                               unique=True))),
    )


@settings(max_examples=1000, deadline=None)
@given(
    m=meters(),
    amount=st.just(410_000) | st.integers(1, 400_000),  # all the dues, or any part
    cashless=st.booleans(),
    paid_at=times,
    payment_id=st.sampled_from(["P1", "P9"]),
    now=times,
)
def test_the_one_step_payment_decides_what_handle_decides(
    m: Meter, amount: int, cashless: bool, paid_at: int, payment_id: str, now: int
) -> None:
    c = ClearPayment(account=ACCOUNT, payment_id=payment_id, amount_paise=amount, channel="upi",
                     cashless=cashless, paid_at=paid_at)
    state, events, effects = handle(m, c, now, POLICY)
    b_state, b_events, b_effects = handle_batched(m, c, now, POLICY)
    assert b_state == state
    assert b_effects == effects
    assert expand_all(b_events) == list(events)
    assert fuse_all(list(b_events)) == fuse_all(events)  # what the journal gets


def test_the_drawn_meters_reach_the_one_step_path_with_and_without_a_notice() -> None:
    seen: set[bool] = set()

    @settings(max_examples=400, deadline=None, database=None)
    @given(m=meters(), amount=st.just(410_000) | st.integers(1, 400_000), now=times)
    def run(m: Meter, amount: int, now: int) -> None:
        c = ClearPayment(account=ACCOUNT, payment_id="P9", amount_paise=amount, channel="upi",
                         cashless=True, paid_at=now)
        _, events, _ = handle_batched(m, c, now, POLICY)
        if len(events) == 1 and isinstance(events[0], PaymentReconnect):
            seen.add(events[0].notice_withdrawn is not None)

    run()
    assert seen == {True, False}


RESULT_METERS = meters(
    relays=st.just(RelayState.CONNECTING) | st.sampled_from(list(RelayState)),
    wanted=st.just(RelayTarget.CONNECTED) | st.sampled_from(list(RelayTarget)),
)


@settings(max_examples=1000, deadline=None)
@given(
    m=RESULT_METERS,
    command_id=st.sampled_from([f"{ACCOUNT}:c1", "other"]),
    status=st.just(RelayResultStatus.PROCESSED) | st.sampled_from(list(RelayResultStatus)),
    control_state=st.just(ControlState.CONNECTED) | st.none() | st.sampled_from(list(ControlState)),
    output_state=st.just(True) | st.none() | st.booleans(),
    now=times,
)
def test_the_one_step_connect_result_decides_what_handle_decides(
    m: Meter, command_id: str, status: RelayResultStatus, control_state: ControlState | None,
    output_state: bool | None, now: int,
) -> None:
    c = ReportRelayResult(account=ACCOUNT, command_id=command_id, status=status, control_state=control_state,
                          output_state=output_state, error_code=None if status is RelayResultStatus.PROCESSED
                          else "e", retryable=False)
    assert handle_batched(m, c, now, POLICY) == handle(m, c, now, POLICY)


def test_the_drawn_results_reach_the_one_step_path_with_and_without_a_notice_to_send() -> None:
    seen: set[int] = set()

    @settings(max_examples=400, deadline=None, database=None)
    @given(m=RESULT_METERS, now=times)
    def run(m: Meter, now: int) -> None:
        c = ReportRelayResult(account=ACCOUNT, command_id=f"{ACCOUNT}:c1", status=RelayResultStatus.PROCESSED,
                              control_state=ControlState.CONNECTED, output_state=True)
        if payment_path._connect_confirmed(m, c, now) is not None:
            seen.add(len(handle_batched(m, c, now, POLICY)[2]))

    run()
    assert seen == {0, 1}
