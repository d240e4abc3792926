"""The common payment decided in one step (issue 13): what a shard runs instead of `handle`.

(And its sequel: the head-end's "connected" for the command it sent, `_connect_confirmed`.)

`handle_batched(state, command, now, policy)` gives what `handle` gives, with one difference: for a
payment that brings a meter off for dues to the reconnection threshold (the payment jodo exists
for), the events come as their one `PaymentReconnect` record (domain/fused.py) and are decided and
applied in one step, not through the standing rules one event at a time (three or four new meter
states, ~15 µs). Every other command, and every payment whose situation is anything but plain
(a command or work order open, an exemption, a surcharge or rebate that may be due, a meter not
remotely switchable), goes through `handle` itself.

The conditions below are those under which `handle` emits exactly `PaymentApplied`, maybe
`DisconnectionNoticeWithdrawn`, `RelayTargetSet` (connected) and `RelayCommandIssued` (connect,
attempt 1) and the effects ack, "payment received" notice and connect command. The property
machine (tests/property/test_meter_machine.py) holds the two equal on every command it drives:
``expand_all(events)``, state and effects.
"""

from __future__ import annotations

from domain.commands import ClearPayment, MeterCommand, ReportRelayResult
from domain.credit import keeps_meter_credit
from domain.drive import BALANCE_UP
from domain.effects import AckPayment, Effect, NotifyConsumer, SendRelayCommand
from domain.enums import (
    CommandOrigin,
    ControlState,
    NoticeTemplate,
    PaymentOutcome,
    RelayAction,
    RelayResultStatus,
    RelayState,
    RelayTarget,
)
from domain.events import MeterEvent, PaymentReconnect, RelayStateConfirmed
from domain.evolve import _with, evolve
from domain.meter import handle
from domain.policy import Policy
from domain.rules import remote_switching_eligible
from domain.state import Meter

__all__ = ["handle_batched"]

#: `drive._why_on` for dues at or below the threshold (the reason of both the target and the command)
_PAID_UP = "dues at or below the reconnection threshold"
#: `drive._overdue`'s reason for withdrawing a notice once the dues fall below the minimum
_BELOW_MINIMUM = "dues below the minimum"


def handle_batched(
    state: Meter | None, command: MeterCommand, now: int, policy: Policy
) -> tuple[Meter | None, tuple[MeterEvent, ...], tuple[Effect, ...]]:
    """`handle`, with the common payment decided in one step (see the module doc)."""
    if state is not None:
        kind = type(command)
        if kind is ClearPayment:
            done = _reconnecting_payment(state, command, now, policy)  # type: ignore[arg-type]
            if done is not None:
                return done
        elif kind is ReportRelayResult:
            done = _connect_confirmed(state, command, now)  # type: ignore[arg-type]
            if done is not None:
                return done
    return handle(state, command, now, policy)


def _connect_confirmed(
    m: Meter, c: ReportRelayResult, now: int
) -> tuple[Meter, tuple[MeterEvent, ...], tuple[Effect, ...]] | None:
    """The head-end's "connected, read back" for the connect in flight of a meter with nothing else
    open and nothing overdue: `RelayStateConfirmed`, the "supply restored" notice, and the standing
    rules have nothing to do (their short cut for a quiet connected meter)."""
    case = m.case
    if case is None or m.desired is not RelayTarget.CONNECTED:
        return None
    p = case.pending
    if (
        p is None
        or p.command_id != c.command_id
        or p.retry_at is not None
        or p.action is not RelayAction.CONNECT
        or c.status is not RelayResultStatus.PROCESSED
        or c.control_state is not ControlState.CONNECTED
        or c.output_state is not True
    ):
        return None
    if (
        case.protected
        or case.on_hold
        or case.notice_at is not None
        or case.switch_off_not_before is not None
        or case.work_order is not None
    ):
        return None
    bill = m.bill
    if bill is not None and now >= bill.due_at:
        return None
    event = RelayStateConfirmed(
        account=m.account, at=now, command_id=p.command_id, relay=RelayState.CONNECTED,
        control_state=ControlState.CONNECTED, output_state=True,
    )
    effects: tuple[Effect, ...] = ()
    if p.from_relay is not RelayState.CONNECTED:  # drive.relay_reached: the consumer is told
        effects = (NotifyConsumer(
            notice_id=f"{p.command_id}:{NoticeTemplate.SUPPLY_RESTORED}", account=m.account,
            template=NoticeTemplate.SUPPLY_RESTORED, ref=p.command_id,
        ),)
    return _with(m, case=None, relay=RelayState.CONNECTED), (event,), effects


def _reconnecting_payment(
    m: Meter, c: ClearPayment, now: int, policy: Policy
) -> tuple[Meter, tuple[MeterEvent, ...], tuple[Effect, ...]] | None:
    if m.relay is not RelayState.DISCONNECTED or m.desired is not RelayTarget.OFF_FOR_DUES:
        return None
    case = m.case
    if case is not None and (
        case.pending is not None or case.work_order is not None or case.protected or case.on_hold
    ):
        return None
    dues_after = m.dues_paise - c.amount_paise
    if dues_after > policy.reconnection_threshold_paise or c.payment_id in m.recent_payment_ids:
        return None
    reason, withdraw = _PAID_UP, _BELOW_MINIMUM
    if m.prepaid is not None:  # a recharge: on once the balance is above zero, emergency credit repaid
        if dues_after >= 0 or m.prepaid.emergency_outstanding_paise or keeps_meter_credit(m, policy):
            return None  # (a meter keeping its own credit is sent the balance: `handle` decides that)
        reason, withdraw = BALANCE_UP, BALANCE_UP
    bill = m.bill
    if bill is not None:
        if not bill.surcharged and now >= bill.due_at:
            return None  # a surcharge may be due first: the standing rules decide
        settles = m.dues_paise > 0 and dues_after <= 0
        if c.cashless and settles and not bill.rebated and c.paid_at < bill.due_at:
            return None  # a rebate may be granted
    if not remote_switching_eligible(m.profile, policy):
        return None
    account, pid = m.account, c.payment_id
    if m.prepaid is None:
        served = case is not None and case.notice_at is not None
        withdrawn = withdraw if served and dues_after < policy.disconnection_min_dues_paise else None
    else:  # drive._prepaid_retarget: a held cut (or a notice) is withdrawn with the balance up
        served = case is not None and (case.notice_at is not None or case.switch_off_not_before is not None)
        withdrawn = withdraw if served else None
    command_id = f"{account}:c{m.seq + 1}"  # Draft.mint("c"): the seq is the one before the command
    expires_at = now + policy.relay_command_expiry_seconds
    event = PaymentReconnect(
        account=account, at=now, payment_id=pid, amount_paise=c.amount_paise, channel=c.channel,
        cashless=c.cashless, paid_at=c.paid_at, dues_after_paise=dues_after, command_id=command_id,
        expires_at=expires_at, reason=reason, notice_withdrawn=withdrawn,
    )
    new = evolve(m, event)
    effects = (
        AckPayment(payment_id=pid, account=account, outcome=PaymentOutcome.APPLIED),
        NotifyConsumer(
            notice_id=f"{account}:paid:{pid}", account=account, template=NoticeTemplate.PAYMENT_RECEIVED,
            amount_paise=c.amount_paise, dues_paise=dues_after, ref=pid,
        ),
        SendRelayCommand(
            command_id=command_id, account=account, meter_serial=m.serial, head_end=m.profile.head_end,
            action=RelayAction.CONNECT, expires_at=expires_at, reason=reason, correlation_id=pid,
            attempt=1, origin=CommandOrigin.AUTOMATIC, engineer_id=None,
        ),
    )
    return new, (event,), effects
