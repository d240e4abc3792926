"""The common payment decided in one step (issue 13): what a shard runs instead of `handle`.

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

from domain.commands import ClearPayment, MeterCommand
from domain.effects import AckPayment, Effect, NotifyConsumer, SendRelayCommand
from domain.enums import (
    CommandOrigin,
    NoticeTemplate,
    PaymentOutcome,
    RelayAction,
    RelayState,
    RelayTarget,
)
from domain.events import MeterEvent, PaymentReconnect
from domain.evolve import evolve
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
    if type(command) is ClearPayment and state is not None:
        done = _reconnecting_payment(state, command, now, policy)
        if done is not None:
            return done
    return handle(state, command, now, policy)


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
    served = case is not None and case.notice_at is not None
    withdrawn = _BELOW_MINIMUM if served and dues_after < policy.disconnection_min_dues_paise else None
    command_id = f"{account}:c{m.seq + 1}"  # Draft.mint("c"): the seq is the one before the command
    expires_at = now + policy.relay_command_expiry_seconds
    event = PaymentReconnect(
        account=account, at=now, payment_id=pid, amount_paise=c.amount_paise, channel=c.channel,
        cashless=c.cashless, paid_at=c.paid_at, dues_after_paise=dues_after, command_id=command_id,
        expires_at=expires_at, reason=_PAID_UP, notice_withdrawn=withdrawn,
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
            action=RelayAction.CONNECT, expires_at=expires_at, reason=_PAID_UP, correlation_id=pid,
            attempt=1, origin=CommandOrigin.AUTOMATIC, engineer_id=None,
        ),
    )
    return new, (event,), effects
