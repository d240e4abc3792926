"""The meter entity's pure core: ``decide`` a command into events and effects, ``evolve`` the state.

    events, effects = decide(state, command, now, policy)
    state = apply_all(state, events)          # or: state, events, effects = handle(...)
    wake = next_check_at(state, policy)       # when the shard's timer must send CheckMeter

decide is deterministic (ids come from the meter's own counter), reads no clock (``now`` is epoch
seconds, UTC) and never mutates its input, so an actor can compute, then assign once, and re-run a
handler after an exception with the same result. Each command is first handled on its own (a payment
is credited, a result recorded), then the standing rules (domain/drive.py) run on the new state: that
is where surcharges, notices, disconnections, reconnections, retries and work orders come from, so a
CheckMeter and a payment reach the same decisions. Commands that change nothing (a redelivered
payment, a result for an old command) produce no events and skip the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.commands import (
    CheckMeter,
    ClearPayment,
    EngineerOverride,
    MeterCommand,
    PostBill,
    RegisterMeter,
    ReportConsumption,
    ReportMeterState,
    ReportRelayResult,
    RequestEmergencyCredit,
    SetBillingMode,
    UpdateMeter,
)
from domain.credit import credit_check_at, credit_result, sync_meter_credit
from domain.drive import (
    Draft,
    apply_standing_rules,
    attempt_failed,
    cancel_pending,
    disconnect_due,
    issue,
    notice_due,
    open_work_order,
    relay_reached,
)
from domain.effects import AckPayment, Effect, MeterCommandRejected
from domain.enums import (
    CommandOrigin,
    NoticeTemplate,
    OverrideAction,
    PaymentOutcome,
    RelayAction,
    RelayResultStatus,
    RelayState,
    RelayTarget,
    WorkOrderAction,
)
from domain.events import (
    BillPosted,
    DisconnectionNoticeWithdrawn,
    MeterEvent,
    MeterRegistered,
    MeterUpdated,
    OverrideApplied,
    PaymentApplied,
    RebateGranted,
    RelayCommandCancelled,
    RelayCommandRetryScheduled,
    RelayStateReported,
    RelayTargetSet,
)
from domain.evolve import apply_all, evolve
from domain.policy import Policy
from domain.prepaid_rules import (
    emergency_credit,
    recover_emergency_credit,
    report_consumption,
    set_billing_mode,
)
from domain.rules import (
    command_outcome,
    reading_relay,
    reading_satisfies,
    rebate_paise,
    remote_switching_eligible,
    surcharge_paise,
)
from domain.state import HELD_RETRY_AT, Meter, PendingRelayCommand, meter_profile
from domain.windows import due_at_for

__all__ = ["Meter", "apply_all", "decide", "evolve", "handle", "next_check_at"]

Decision = tuple[tuple[MeterEvent, ...], tuple[Effect, ...]]


def decide(state: Meter | None, command: MeterCommand, now: int, policy: Policy) -> Decision:
    """The events (facts, to journal) and effects (to send after the journal commit) of a command."""
    _, events, effects = handle(state, command, now, policy)
    return events, effects


def handle(
    state: Meter | None, command: MeterCommand, now: int, policy: Policy
) -> tuple[Meter | None, tuple[MeterEvent, ...], tuple[Effect, ...]]:
    """`decide`, also returning the state after the events (what ``apply_all`` would give)."""
    d = Draft(state, now, policy)
    cause = _HANDLERS[type(command)](d, command)
    if cause is not None and d.state is not None:
        apply_standing_rules(d, cause)
        if d.state.prepaid is not None and policy.prepaid_meter_credit_head_ends:
            sync_meter_credit(d, cause)  # a meter that keeps its own credit: tell it the balance
    return d.state, tuple(d.events), tuple(d.effects)


def next_check_at(state: Meter, policy: Policy) -> int | None:
    """When the shard must next send CheckMeter to this meter, or None if nothing is scheduled.

    Candidates: the pending command's expiry or retry, the bill's due date (surcharge, notice), the
    notice's maturity or a deferral past a no-disconnection window. After any decide that ran the
    standing rules at ``now`` the result is later than ``now``: a due time that had passed was acted on.
    """
    m = state
    times: list[int] = []
    p = m.pending
    if p is not None:
        times.append(p.expires_at + policy.relay_result_grace_seconds if p.retry_at is None else p.retry_at)
    bill = m.bill
    if bill is not None:
        if not bill.surcharged and surcharge_paise(bill, m.dues_paise, policy)[0] > 0:
            times.append(bill.due_at)
        if notice_due(m, policy):
            times.append(bill.due_at)
    if m.switch_off_not_before is not None:
        if disconnect_due(m, policy):
            times.append(m.switch_off_not_before)
        elif (
            m.desired is RelayTarget.OFF_FOR_DUES
            and p is None
            and m.work_order is None
            and m.relay is not RelayState.DISCONNECTED
        ):
            times.append(m.switch_off_not_before)  # re-disconnect deferred past a window
    if m.prepaid is not None and m.prepaid.credit is not None:
        credit_at = credit_check_at(m, policy)  # the meter's own credit: an update's expiry or retry
        if credit_at is not None:
            times.append(credit_at)
    return min(times) if times else None


# ------------------------------------------------------------------ command handlers
# Each returns the correlation id for the standing rules, or None when nothing changed.


def _reject(d: Draft, account: str, command: object, ref: str, reason: str) -> None:
    d.do(MeterCommandRejected(account=account, command=type(command).__name__, ref=ref, reason=reason))


def _register(d: Draft, c: RegisterMeter) -> str | None:
    m = d.state
    if m is not None:
        profile = meter_profile(c.head_end, c.install_year, c.relay_capable, c.control_mode)
        if (m.serial, m.profile, m.protected) != (c.serial, profile, c.protected):
            _reject(d, c.account, c, c.account, "already registered with other attributes: send UpdateMeter")
        return None
    d.emit(
        MeterRegistered(
            account=c.account,
            at=d.now,
            serial=c.serial,
            head_end=c.head_end,
            install_year=c.install_year,
            relay_capable=c.relay_capable,
            control_mode=c.control_mode,
            protected=c.protected,
            relay=c.relay,
            opening_dues_paise=c.opening_dues_paise,
        )
    )
    return f"register:{c.account}"


def _update(d: Draft, c: UpdateMeter) -> str | None:
    m = d.state
    if m is None:
        _reject(d, c.account, c, c.account, "no such meter")
        return None
    p = m.profile
    new = MeterUpdated(
        account=m.account,
        at=d.now,
        serial=m.serial if c.serial is None else c.serial,
        head_end=p.head_end if c.head_end is None else c.head_end,
        install_year=p.install_year if c.install_year is None else c.install_year,
        relay_capable=p.relay_capable if c.relay_capable is None else c.relay_capable,
        control_mode=p.control_mode if c.control_mode is None else c.control_mode,
    )
    if (new.serial, new.head_end, new.install_year, new.relay_capable, new.control_mode) == (
        m.serial,
        p.head_end,
        p.install_year,
        p.relay_capable,
        p.control_mode,
    ):
        return None
    d.emit(new)
    return f"update:{m.account}:{d.now}"


def _post_bill(d: Draft, c: PostBill) -> str | None:
    m = d.state
    if m is None:
        _reject(d, c.account, c, c.bill_id, "no such meter")
        return None
    if m.bill is not None and c.bill_id in (m.bill.bill_id, m.bill.previous_bill_id):
        return None  # re-imported bill
    if m.prepaid is not None:
        _reject(d, m.account, c, c.bill_id, "prepaid meter: bills are not posted (its balance is debited "
                                            "by reads; switch it to postpaid first)")
        return None
    d.emit(
        BillPosted(
            account=m.account,
            at=d.now,
            bill_id=c.bill_id,
            amount_paise=c.amount_paise,
            due_date=c.due_date,
            due_at=due_at_for(c.due_date, d.policy),
            issued_at=c.issued_at,
        )
    )
    return c.bill_id


def _clear_payment(d: Draft, c: ClearPayment) -> str | None:
    m = d.state
    if m is None:
        d.do(AckPayment(payment_id=c.payment_id, account=c.account, outcome=PaymentOutcome.UNKNOWN_ACCOUNT))
        return None
    applied = AckPayment(payment_id=c.payment_id, account=m.account, outcome=PaymentOutcome.APPLIED)
    if c.payment_id in m.recent_payment_ids:
        d.do(applied)  # a redelivery: same answer, nothing credited
        return None
    # a prepaid recharge pays back emergency credit first (emitted before the PaymentApplied)
    recovered = 0 if m.prepaid is None else recover_emergency_credit(d, c)
    dues_after = m.dues_paise + recovered - c.amount_paise
    d.emit(
        PaymentApplied(
            account=m.account,
            at=d.now,
            payment_id=c.payment_id,
            amount_paise=c.amount_paise,
            channel=c.channel,
            cashless=c.cashless,
            paid_at=c.paid_at,
            dues_after_paise=dues_after,
        )
    )
    bill = m.bill
    # Rebate: the cashless payment, made by the due date, that settles what is owed; once per bill.
    settles = m.dues_paise > 0 and dues_after <= 0
    if c.cashless and settles and bill is not None and not bill.rebated and c.paid_at < bill.due_at:
        amount = rebate_paise(bill, d.policy)
        if amount > 0:
            d.emit(
                RebateGranted(
                    account=m.account,
                    at=d.now,
                    bill_id=bill.bill_id,
                    payment_id=c.payment_id,
                    amount_paise=amount,
                    rate_bp=d.policy.billing_cashless_rebate_bp,
                )
            )
    d.do(applied)
    d.notify(
        f"{m.account}:paid:{c.payment_id}",
        NoticeTemplate.PAYMENT_RECEIVED,
        amount_paise=c.amount_paise,
        dues_paise=d.m.dues_paise,
        ref=c.payment_id,
    )
    return c.payment_id


def _check(d: Draft, c: CheckMeter) -> str | None:
    return None if d.state is None else f"check:{d.now}"


def _relay_result(d: Draft, c: ReportRelayResult) -> str | None:
    m = d.state
    p = m.pending if m is not None else None
    if m is None or p is None or p.command_id != c.command_id:
        if m is not None and m.prepaid is not None and m.prepaid.credit is not None:
            return credit_result(d, c)  # the result of a credit update (domain/credit.py)
        return None  # unknown, old or cancelled command: never counts
    if c.status in _GUARD_STATUSES or p.retry_at == HELD_RETRY_AT:
        handled = _guard_result(d, c, p)
        if handled is not _NOT_GUARD:
            return handled
    elif p.retry_at is not None:
        return None  # already failed, waiting for its retry: never counts
    # A processed result is the head-end's word that the relay switched, whenever it arrives: the
    # head-end only runs a command before its expiry, so a late one was in transit (refusing it and
    # sending the command again made one reconnect run twice). Any other late result is an expiry.
    if c.status is not RelayResultStatus.PROCESSED and d.now >= p.expires_at:
        attempt_failed(d, p, RelayResultStatus.EXPIRED, "result after expiry", retryable=True, at_once=True)
    elif c.status is RelayResultStatus.PROCESSED:
        outcome = command_outcome(p.action, c.control_state, c.output_state)
        if outcome is None or c.control_state is None or c.output_state is None:
            attempt_failed(d, p, RelayResultStatus.FAILED, "state not changed", retryable=True)
        else:
            relay_reached(
                d,
                outcome,
                p.from_relay,
                p.command_id,
                command=p,
                control_state=c.control_state,
                output_state=c.output_state,
            )
    elif c.status is RelayResultStatus.EXPIRED:
        attempt_failed(d, p, c.status, c.error_code, retryable=True, at_once=True)
    else:
        attempt_failed(d, p, c.status, c.error_code, retryable=c.retryable)
    return p.correlation_id


_GUARD_STATUSES = (RelayResultStatus.HELD, RelayResultStatus.RELEASED)
_NOT_GUARD = "not a guard answer"


def _guard_result(d: Draft, c: ReportRelayResult, p: PendingRelayCommand) -> str | None:
    """The disconnect guard's answers (domain/guard.py). HELD parks an in-flight disconnect (no expiry,
    no retry, no work order while held); RELEASED drops the parked command so the standing rules issue
    a fresh one (new expiry, windows checked again). A head-end result for a parked command (a gateway
    restarted and ran it after all) is handled as usual: returns `_NOT_GUARD`."""
    held = p.retry_at == HELD_RETRY_AT
    if c.status is RelayResultStatus.HELD:
        if held or p.retry_at is not None or p.action is not RelayAction.DISCONNECT:
            return None
        d.emit(RelayCommandRetryScheduled(
            account=d.m.account, at=d.now, command_id=p.command_id, attempt=p.attempt,
            retry_at=HELD_RETRY_AT, status=RelayResultStatus.HELD, error_code=c.error_code,
        ))
        return p.correlation_id
    if c.status is RelayResultStatus.RELEASED:
        if not held:
            return None
        d.emit(RelayCommandCancelled(account=d.m.account, at=d.now, command_id=p.command_id,
                                     in_flight=False, reason="released by the disconnect guard"))
        return p.correlation_id
    return _NOT_GUARD


def _meter_state(d: Draft, c: ReportMeterState) -> str | None:
    m = d.state
    if m is None:
        return None
    reading = reading_relay(c.control_state, c.output_state)
    ref = f"{m.account}:read{d.now}"
    p = m.pending
    if p is not None:
        live = p.retry_at is not None or d.now < p.expires_at + d.policy.relay_result_grace_seconds
        if not (live and reading_satisfies(p.action, reading)):
            return None  # a read says nothing reliable about a command still in flight
        relay_reached(
            d,
            reading,
            p.from_relay,
            p.command_id,
            command=p,
            control_state=c.control_state,
            output_state=c.output_state,
        )
        return p.correlation_id
    if reading is not m.relay:
        d.emit(
            RelayStateReported(
                account=m.account,
                at=d.now,
                relay=reading,
                control_state=c.control_state,
                output_state=c.output_state,
            )
        )
        relay_reached(
            d,
            reading,
            m.relay,
            ref,
            command=None,
            control_state=c.control_state,
            output_state=c.output_state,
        )
    return ref


def _override(d: Draft, c: EngineerOverride) -> str | None:
    m = d.state
    if m is None:
        _reject(d, c.account, c, c.request_id or c.account, "no such meter")
        return None
    correlation = c.request_id or f"{m.account}:override{d.now}"
    d.emit(
        OverrideApplied(
            account=m.account,
            at=d.now,
            action=c.action,
            engineer_id=c.engineer_id,
            reason=c.reason,
            request_id=c.request_id,
            deliberate_disconnection=c.action is OverrideAction.DISCONNECT,
        )
    )
    why = f"engineer {c.engineer_id}: {c.reason}"
    if c.action is OverrideAction.CONNECT:
        if m.notice_at is not None:
            # Reconnecting by hand restarts the s.56 clock: a later cut needs a fresh notice.
            d.emit(DisconnectionNoticeWithdrawn(account=m.account, at=d.now, reason=why))
        _force(d, RelayAction.CONNECT, RelayTarget.CONNECTED, why, correlation, c.engineer_id)
    elif c.action is OverrideAction.DISCONNECT:
        _force(d, RelayAction.DISCONNECT, RelayTarget.OFF_BY_ENGINEER, why, correlation, c.engineer_id)
    return correlation


def _force(
    d: Draft, action: RelayAction, target: RelayTarget, why: str, correlation: str, engineer_id: str
) -> None:
    """An engineer's connect/disconnect acts at once, whatever jodo believes the relay is."""
    if d.m.desired is not target:
        d.emit(
            RelayTargetSet(
                account=d.m.account, at=d.now, target=target, reason=why, correlation_id=correlation
            )
        )
    p = d.m.pending
    if p is not None:
        if p.action is action and p.retry_at is None:
            return  # already on its way
        if p.action is not action:
            cancel_pending(d, why)
    if remote_switching_eligible(d.m.profile, d.policy):
        issue(d, action, 1, why, correlation, CommandOrigin.ENGINEER, engineer_id)
    else:
        order = WorkOrderAction.RECONNECT if action is RelayAction.CONNECT else WorkOrderAction.DISCONNECT
        open_work_order(d, order, f"{why}; not remotely switchable", correlation)


_HANDLERS: dict[type[Any], Callable[[Draft, Any], str | None]] = {
    RegisterMeter: _register,
    UpdateMeter: _update,
    PostBill: _post_bill,
    ClearPayment: _clear_payment,
    CheckMeter: _check,
    ReportRelayResult: _relay_result,
    ReportMeterState: _meter_state,
    EngineerOverride: _override,
    SetBillingMode: set_billing_mode,
    ReportConsumption: report_consumption,
    RequestEmergencyCredit: emergency_credit,
}
