"""The standing rules, run after every command that changed or may have changed a meter's situation:
expire stale commands, charge the overdue, serve and withdraw notices, decide what the relay should be,
and drive the relay there (command, cancel, retry, work order).

Everything here appends to a `Draft`: each event is applied at once, so later rules (and minted ids)
see the state the earlier ones produced, and the same inputs always give the same outputs.
"""

from __future__ import annotations

from domain.effects import (
    CancelRelayCommand,
    CancelWorkOrder,
    Effect,
    NotifyConsumer,
    OpenWorkOrder,
    SendRelayCommand,
)
from domain.enums import (
    CommandOrigin,
    ControlState,
    NoticeTemplate,
    RelayAction,
    RelayResultStatus,
    RelayState,
    RelayTarget,
    WorkOrderAction,
    WorkOrderOutcome,
)
from domain.errors import MeterInvariantError
from domain.events import (
    AwaitingButtonPress,
    DisconnectionDeferred,
    DisconnectionNoticeIssued,
    DisconnectionNoticeWithdrawn,
    LowBalanceNotified,
    MeterEvent,
    ReconnectionChargeApplied,
    RelayCommandCancelled,
    RelayCommandFailed,
    RelayCommandIssued,
    RelayCommandRetryScheduled,
    RelayStateConfirmed,
    RelayTargetSet,
    SurchargeApplied,
    WorkOrderClosed,
    WorkOrderOpened,
)
from domain.evolve import evolve
from domain.policy import Policy
from domain.rules import remote_switching_eligible, retry_delay_seconds, surcharge_paise
from domain.state import HELD_RETRY_AT, Meter, PendingRelayCommand
from domain.windows import (
    allowed_until,
    disconnection_allowed,
    next_allowed_at,
    notice_matures_at,
)

__all__ = [
    "BALANCE_UP",
    "ZERO_BALANCE",
    "Draft",
    "apply_standing_rules",
    "disconnect_due",
    "notice_due",
]

_ON = (RelayState.CONNECTED, RelayState.AWAITING_BUTTON)
_WINDOW = "no-disconnection window (night, weekly day off or holiday)"
#: Why a prepaid meter is wanted on (and a held disconnection withdrawn), and why it is cut.
BALANCE_UP = "prepaid balance above zero"
ZERO_BALANCE = "prepaid balance at or below zero"


class Draft:
    """A decision in progress: the events so far (already applied to ``state``) and the effects."""

    __slots__ = ("effects", "events", "now", "policy", "state")

    def __init__(self, state: Meter | None, now: int, policy: Policy) -> None:
        self.state = state
        self.now = now
        self.policy = policy
        self.events: list[MeterEvent] = []
        self.effects: list[Effect] = []

    @property
    def m(self) -> Meter:
        if self.state is None:
            raise MeterInvariantError("rule applied to an unregistered meter")
        return self.state

    def emit(self, event: MeterEvent) -> None:
        self.events.append(event)
        self.state = evolve(self.state, event)

    def do(self, effect: Effect) -> None:
        self.effects.append(effect)

    def mint(self, kind: str) -> str:
        """A new id; deterministic, as the meter's seq advances with the event that uses it."""
        m = self.m
        return f"{m.account}:{kind}{m.seq + 1}"

    def notify(self, notice_id: str, template: NoticeTemplate, **fields: int | str | None) -> None:
        self.do(NotifyConsumer(notice_id=notice_id, account=self.m.account, template=template, **fields))  # type: ignore[arg-type]


# ------------------------------------------------------------------ conditions (no clock inside)


def notice_due(m: Meter, policy: Policy) -> bool:
    """Would an overdue bill earn this meter a disconnection notice (apart from the date)?"""
    return (
        m.bill is not None
        and m.notice_at is None
        and m.prepaid is None  # a prepaid meter's bill is closed: it is cut at zero balance instead
        and m.desired is RelayTarget.CONNECTED
        and not m.protected
        and not m.on_hold
        and m.dues_paise >= policy.disconnection_min_dues_paise
    )


def disconnect_due(m: Meter, policy: Policy) -> bool:
    """Is an automatic disconnection lawful apart from the clock (notice served, dues, exemptions)?
    The clock part is ``now >= m.switch_off_not_before`` and `disconnection_allowed`. A prepaid meter:
    balance at or below zero, not exempt (its deferral past a window is ``switch_off_not_before``)."""
    if m.prepaid is not None:
        return (m.desired is RelayTarget.CONNECTED and m.dues_paise >= 0 and not m.protected
                and not m.on_hold)
    return (
        m.desired is RelayTarget.CONNECTED
        and m.notice_at is not None
        and m.switch_off_not_before is not None
        and m.dues_paise >= policy.disconnection_min_dues_paise
        and not m.protected
        and not m.on_hold
    )


# ------------------------------------------------------------------ the standing rules


def apply_standing_rules(d: Draft, cause: str) -> None:
    """Run every standing rule once, in order. ``cause`` correlates what they issue (payment id...)."""
    m = d.m
    if (
        m.case is None
        and m.relay is RelayState.CONNECTED
        and m.desired is RelayTarget.CONNECTED
        and (m.bill is None or d.now < m.bill.due_at)
        and (m.prepaid is None or m.dues_paise < 0)
    ):
        # The common case, short-cut: a quiet, connected meter with nothing overdue (a prepaid one:
        # with a balance). Every rule below is a no-op for it (no command, notice, exemption or work
        # order; nothing due).
        return
    _expire_stale(d)
    if d.m.prepaid is None:
        _overdue(d)
        _retarget(d, cause)
    else:
        _prepaid_retarget(d, cause)
    _drive(d, cause)


def _expire_stale(d: Draft) -> None:
    p = d.m.pending
    if p is not None and p.retry_at is None and d.now >= p.expires_at + d.policy.relay_result_grace_seconds:
        attempt_failed(d, p, RelayResultStatus.EXPIRED, "no result by expiry", retryable=True, at_once=True)


def _overdue(d: Draft) -> None:
    m, now, policy = d.m, d.now, d.policy
    bill = m.bill
    if bill is not None and now >= bill.due_at and not bill.surcharged:
        amount, base = surcharge_paise(bill, m.dues_paise, policy)
        if amount > 0:
            d.emit(
                SurchargeApplied(
                    account=m.account,
                    at=now,
                    bill_id=bill.bill_id,
                    amount_paise=amount,
                    base_paise=base,
                    rate_bp=policy.billing_late_surcharge_bp,
                )
            )
    m = d.m
    if m.notice_at is not None:
        if m.dues_paise < policy.disconnection_min_dues_paise:
            d.emit(DisconnectionNoticeWithdrawn(account=m.account, at=now, reason="dues below the minimum"))
    elif notice_due(m, policy) and m.bill is not None and now >= m.bill.due_at:
        notice_id = d.mint("n")
        not_before = next_allowed_at(notice_matures_at(now, policy), policy)
        d.emit(
            DisconnectionNoticeIssued(
                account=m.account,
                at=now,
                notice_id=notice_id,
                bill_id=m.bill.bill_id,
                dues_paise=m.dues_paise,
                not_before=not_before,
            )
        )
        d.notify(
            notice_id,
            NoticeTemplate.DISCONNECTION_NOTICE,
            dues_paise=m.dues_paise,
            ref=m.bill.bill_id,
            not_before=not_before,
        )


def _retarget(d: Draft, cause: str) -> None:
    m, now, policy = d.m, d.now, d.policy
    if m.desired is RelayTarget.OFF_BY_ENGINEER:
        return  # a deliberate human disconnection: only an engineer's connect reverses it
    if _owed_supply(m, policy):
        if m.desired is not RelayTarget.CONNECTED:
            _set_target(d, RelayTarget.CONNECTED, _why_on(m, policy), cause)
        return
    if not disconnect_due(m, policy) or m.switch_off_not_before is None:
        return
    if now < m.switch_off_not_before:
        return
    if not disconnection_allowed(now, policy):
        _defer(d)
        return
    bill_id = m.bill.bill_id if m.bill is not None else cause
    _set_target(d, RelayTarget.OFF_FOR_DUES, "dues unpaid after the disconnection notice", bill_id)


def _prepaid_retarget(d: Draft, cause: str) -> None:
    """The prepaid standing rule (issue 16): on while the balance is above zero (or exempt); at zero
    or below, the consumer is told first ("zero" notice, once per top-up), then the supply is cut, but
    only outside the no-disconnection windows: inside one the cut is held (`DisconnectionDeferred`)
    until the window ends, when the shard's timer checks the meter again."""
    m, now, policy = d.m, d.now, d.policy
    if m.desired is RelayTarget.OFF_BY_ENGINEER:
        return
    p = m.prepaid
    if p is not None and m.dues_paise >= 0 and "zero" not in p.notified:
        # at zero or below every consumer is told first: before any cut, if it was off already, and
        # also when protected or on hold (they are spared the cut, not the news)
        notice_id = d.mint("l")
        d.emit(LowBalanceNotified(account=m.account, at=now, threshold="zero", balance_paise=-m.dues_paise))
        d.notify(notice_id, NoticeTemplate.LOW_BALANCE, dues_paise=m.dues_paise, ref="zero")
        m = d.m
    if _owed_supply(m, policy):
        if m.notice_at is not None or m.switch_off_not_before is not None:
            why = BALANCE_UP if m.dues_paise < 0 else _why_on(m, policy)
            d.emit(DisconnectionNoticeWithdrawn(account=m.account, at=now, reason=why))
        if d.m.desired is not RelayTarget.CONNECTED:
            _set_target(d, RelayTarget.CONNECTED, _why_on(m, policy), cause)
        return
    if d.m.desired is not RelayTarget.CONNECTED:
        return  # off already, or on its way off
    if not disconnection_allowed(now, policy):
        sonb = d.m.switch_off_not_before
        if sonb is None or sonb <= now:
            _defer(d)
        return
    _set_target(d, RelayTarget.OFF_FOR_DUES, ZERO_BALANCE, cause)


def _owed_supply(m: Meter, policy: Policy) -> bool:
    """Must the supply be on whatever the notice says? (paid up — a prepaid meter: a balance above
    zero —, protected or on hold)"""
    if m.prepaid is not None:
        return m.dues_paise < 0 or m.protected or m.on_hold
    return m.dues_paise <= policy.reconnection_threshold_paise or m.protected or m.on_hold


def _why_on(m: Meter, policy: Policy) -> str:
    if m.prepaid is not None and m.dues_paise < 0:
        return BALANCE_UP
    if m.prepaid is None and m.dues_paise <= policy.reconnection_threshold_paise:
        return "dues at or below the reconnection threshold"
    return "protected consumer" if m.protected else "automatic disconnection on hold"


def _set_target(d: Draft, target: RelayTarget, reason: str, correlation_id: str) -> None:
    d.emit(
        RelayTargetSet(
            account=d.m.account, at=d.now, target=target, reason=reason, correlation_id=correlation_id
        )
    )


def _defer(d: Draft) -> None:
    d.emit(
        DisconnectionDeferred(
            account=d.m.account, at=d.now, not_before=next_allowed_at(d.now, d.policy), reason=_WINDOW
        )
    )


def _drive(d: Draft, cause: str) -> None:
    m, now, policy = d.m, d.now, d.policy
    want_on = m.desired is RelayTarget.CONNECTED
    p = m.pending
    if p is not None:
        if (p.action is RelayAction.CONNECT) == want_on:
            if p.retry_at is None or now < p.retry_at:
                return  # in flight, or waiting for its retry
            origin = p.origin
            if not want_on and m.desired is RelayTarget.OFF_BY_ENGINEER:
                origin = CommandOrigin.ENGINEER  # an engineer's disconnection took an automatic one over
            if want_on or origin is CommandOrigin.ENGINEER or disconnection_allowed(now, policy):
                issue(d, p.action, p.attempt + 1, p.reason, p.correlation_id, origin, p.engineer_id)
                return
            cancel_pending(d, "retry fell in a " + _WINDOW)
        else:
            cancel_pending(d, f"relay now wanted {m.desired}")
        m = d.m
    order = m.work_order
    if order is not None and (order.action is WorkOrderAction.RECONNECT) != want_on:
        close_work_order(d, WorkOrderOutcome.CANCELLED, f"relay now wanted {m.desired}", tell_crew=True)
        order = None
    if (m.relay in _ON) if want_on else (m.relay is RelayState.DISCONNECTED):
        return
    if order is not None:
        return  # a field crew is on it
    eligible = remote_switching_eligible(m.profile, policy)
    if want_on:
        reason = _why_on(m, policy) if _owed_supply(m, policy) else "relay read off while wanted on"
        if eligible:
            issue(d, RelayAction.CONNECT, 1, reason, cause, CommandOrigin.AUTOMATIC, None)
        else:
            open_work_order(d, WorkOrderAction.RECONNECT, f"{reason}; not remotely switchable", cause)
        return
    by_engineer = m.desired is RelayTarget.OFF_BY_ENGINEER
    if not by_engineer:
        if not disconnection_allowed(now, policy):
            if m.switch_off_not_before is None or m.switch_off_not_before <= now:
                _defer(d)
            return
        if m.switch_off_not_before is not None and now < m.switch_off_not_before:
            return
    origin = CommandOrigin.ENGINEER if by_engineer else CommandOrigin.AUTOMATIC
    prepaid = m.prepaid is not None
    reason = ("engineer's disconnection" if by_engineer
              else ZERO_BALANCE if prepaid else "dues unpaid after the disconnection notice")
    correlation = m.bill.bill_id if m.bill is not None and not by_engineer and not prepaid else cause
    if eligible:
        issue(d, RelayAction.DISCONNECT, 1, reason, correlation, origin, None)
    else:
        open_work_order(d, WorkOrderAction.DISCONNECT, f"{reason}; not remotely switchable", correlation)


# ------------------------------------------------------------------ building blocks


def issue(
    d: Draft,
    action: RelayAction,
    attempt: int,
    reason: str,
    correlation_id: str,
    origin: CommandOrigin,
    engineer_id: str | None,
) -> None:
    """Send a relay command. An automatic disconnect expires when the allowed period ends, so a slow
    head-end cannot run it at night; every command expires after the policy's expiry at the latest."""
    m, now, policy = d.m, d.now, d.policy
    command_id = d.mint("c")
    expires_at = now + policy.relay_command_expiry_seconds
    if action is RelayAction.DISCONNECT and origin is CommandOrigin.AUTOMATIC:
        expires_at = min(expires_at, allowed_until(now, policy))
    d.emit(
        RelayCommandIssued(
            account=m.account,
            at=now,
            command_id=command_id,
            action=action,
            attempt=attempt,
            expires_at=expires_at,
            reason=reason,
            correlation_id=correlation_id,
            origin=origin,
            engineer_id=engineer_id,
        )
    )
    d.do(
        SendRelayCommand(
            command_id=command_id,
            account=m.account,
            meter_serial=m.serial,
            head_end=m.profile.head_end,
            action=action,
            expires_at=expires_at,
            reason=reason,
            correlation_id=correlation_id,
            attempt=attempt,
            origin=origin,
            engineer_id=engineer_id,
        )
    )


def cancel_pending(d: Draft, reason: str) -> None:
    """Drop the pending command; tell the head-end if it holds it (in flight)."""
    m = d.m
    p = m.pending
    if p is None:
        return
    in_flight = p.retry_at is None
    d.emit(
        RelayCommandCancelled(
            account=m.account, at=d.now, command_id=p.command_id, in_flight=in_flight, reason=reason
        )
    )
    if in_flight or p.retry_at == HELD_RETRY_AT:  # a held one must leave the guard's wave
        d.do(CancelRelayCommand(command_id=p.command_id, account=m.account, head_end=m.profile.head_end))


def attempt_failed(
    d: Draft,
    p: PendingRelayCommand,
    status: RelayResultStatus,
    error_code: str | None,
    *,
    retryable: bool,
    at_once: bool = False,
) -> None:
    """Schedule a retry with backoff (at once for an expiry), or give up and open a work order."""
    m, now, policy = d.m, d.now, d.policy
    if retryable and p.attempt < policy.relay_max_attempts:
        retry_at = now if at_once else now + retry_delay_seconds(p.attempt, policy)
        d.emit(
            RelayCommandRetryScheduled(
                account=m.account,
                at=now,
                command_id=p.command_id,
                attempt=p.attempt,
                retry_at=retry_at,
                status=status,
                error_code=error_code,
            )
        )
        return
    d.emit(
        RelayCommandFailed(
            account=m.account,
            at=now,
            command_id=p.command_id,
            action=p.action,
            attempts=p.attempt,
            status=status,
            error_code=error_code,
            retryable=retryable,
        )
    )
    action = WorkOrderAction.RECONNECT if p.action is RelayAction.CONNECT else WorkOrderAction.DISCONNECT
    why = f"remote {p.action} gave up after {p.attempt} attempt(s): {error_code or status}"
    open_work_order(d, action, why, p.correlation_id, failed=True)


def open_work_order(
    d: Draft, action: WorkOrderAction, reason: str, correlation_id: str, *, failed: bool = False
) -> None:
    """Open one work order for ``action`` (none if one is open already) and tell the consumer of a
    field reconnection."""
    order = d.m.work_order
    if order is not None:
        if order.action is action:
            return
        close_work_order(d, WorkOrderOutcome.CANCELLED, f"superseded by a {action}", tell_crew=True)
    m = d.m
    work_order_id = d.mint("w")
    d.emit(
        WorkOrderOpened(
            account=m.account,
            at=d.now,
            work_order_id=work_order_id,
            action=action,
            reason=reason,
            correlation_id=correlation_id,
        )
    )
    d.do(
        OpenWorkOrder(
            work_order_id=work_order_id,
            account=m.account,
            action=action,
            reason=reason,
            meter_serial=m.serial,
            correlation_id=correlation_id,
        )
    )
    if action is WorkOrderAction.RECONNECT:
        template = NoticeTemplate.RECONNECT_FAILED if failed else NoticeTemplate.FIELD_VISIT_SCHEDULED
        d.notify(f"{work_order_id}:{template}", template, dues_paise=m.dues_paise, ref=work_order_id)


def close_work_order(d: Draft, outcome: WorkOrderOutcome, reason: str, *, tell_crew: bool) -> None:
    m = d.m
    order = m.work_order
    if order is None:
        return
    d.emit(
        WorkOrderClosed(
            account=m.account, at=d.now, work_order_id=order.work_order_id, outcome=outcome, reason=reason
        )
    )
    if tell_crew:
        d.do(CancelWorkOrder(work_order_id=order.work_order_id, account=m.account, reason=reason))


def relay_reached(
    d: Draft,
    relay: RelayState,
    was: RelayState,
    ref: str,
    *,
    command: PendingRelayCommand | None,
    control_state: ControlState,
    output_state: bool,
) -> None:
    """The relay is now ``relay`` (by ``command``'s result, or by a read when ``command`` is None):
    record it, close a work order it fulfils, charge for a disconnection for dues, tell the consumer."""
    m = d.m
    if command is not None:
        if relay is RelayState.AWAITING_BUTTON:
            d.emit(
                AwaitingButtonPress(
                    account=m.account,
                    at=d.now,
                    control_mode=m.profile.control_mode,
                    command_id=command.command_id,
                )
            )
        else:
            d.emit(
                RelayStateConfirmed(
                    account=m.account,
                    at=d.now,
                    command_id=command.command_id,
                    relay=relay,
                    control_state=control_state,
                    output_state=output_state,
                )
            )
    m = d.m
    if relay is RelayState.AWAITING_BUTTON:
        if m.desired is RelayTarget.CONNECTED and was is not RelayState.AWAITING_BUTTON:
            d.notify(f"{ref}:{NoticeTemplate.PRESS_BUTTON}", NoticeTemplate.PRESS_BUTTON, ref=ref)
        return
    order = m.work_order
    fulfils = order is not None and (order.action is WorkOrderAction.RECONNECT) == (
        relay is RelayState.CONNECTED
    )
    if fulfils:
        how = "relay switched remotely" if command is not None else "relay read in the ordered state"
        close_work_order(d, WorkOrderOutcome.DONE, how, tell_crew=command is not None)
    if (
        relay is RelayState.CONNECTED
        and was is not RelayState.CONNECTED
        and m.desired is RelayTarget.CONNECTED
    ):
        d.notify(f"{ref}:{NoticeTemplate.SUPPLY_RESTORED}", NoticeTemplate.SUPPLY_RESTORED, ref=ref)
    elif (
        relay is RelayState.DISCONNECTED
        and was is not RelayState.DISCONNECTED
        and m.desired is not RelayTarget.CONNECTED
    ):
        # (a prepaid meter cut at zero balance pays no reconnection charge: not in KERC's rules)
        charge = 0 if m.prepaid is not None else d.policy.disconnection_reconnection_charge_paise
        if m.desired is RelayTarget.OFF_FOR_DUES and (command is not None or fulfils) and charge > 0:
            d.emit(ReconnectionChargeApplied(account=m.account, at=d.now, amount_paise=charge, ref=ref))
        d.notify(
            f"{ref}:{NoticeTemplate.DISCONNECTED}",
            NoticeTemplate.DISCONNECTED,
            dues_paise=d.m.dues_paise,
            ref=ref,
        )
