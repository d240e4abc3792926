"""Events: facts about one meter, journaled before any effect leaves the shard, folded by `evolve`.

Every event carries ``account`` and ``at`` (epoch seconds when it was decided) plus what `evolve`
needs and what an auditor asks: who or what caused it (payment id, bill id, engineer, command id).
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.enums import (
    BillingMode,
    CommandOrigin,
    ControlState,
    OverrideAction,
    RelayAction,
    RelayResultStatus,
    RelayState,
    RelayTarget,
    WorkOrderAction,
    WorkOrderOutcome,
)

__all__ = [
    "AwaitingButtonPress",
    "BillPosted",
    "BillingModeSet",
    "ConsumptionDebited",
    "DisconnectionDeferred",
    "DisconnectionNoticeIssued",
    "DisconnectionNoticeWithdrawn",
    "EmergencyCreditGranted",
    "EmergencyCreditRecovered",
    "LowBalanceNotified",
    "MeterCreditEnded",
    "MeterCreditSent",
    "MeterEvent",
    "MeterRegistered",
    "MeterUpdated",
    "OverrideApplied",
    "PaymentApplied",
    "PaymentReconnect",
    "RebateGranted",
    "ReconnectionChargeApplied",
    "RelayCommandCancelled",
    "RelayCommandFailed",
    "RelayCommandIssued",
    "RelayCommandRetryScheduled",
    "RelayStateConfirmed",
    "RelayStateReported",
    "RelayTargetSet",
    "SurchargeApplied",
    "WorkOrderClosed",
    "WorkOrderOpened",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterRegistered:
    account: str
    at: int
    serial: str
    head_end: str
    install_year: int
    relay_capable: bool
    control_mode: int
    protected: bool
    relay: RelayState
    opening_dues_paise: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterUpdated:
    """The meter's attributes after the update (all of them, not only the changed ones)."""

    account: str
    at: int
    serial: str
    head_end: str
    install_year: int
    relay_capable: bool
    control_mode: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BillPosted:
    account: str
    at: int
    bill_id: str
    amount_paise: int
    due_date: str
    due_at: int  # first overdue second (local midnight after due_date)
    issued_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentApplied:
    account: str
    at: int
    payment_id: str
    amount_paise: int
    channel: str
    cashless: bool
    paid_at: int
    dues_after_paise: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RebateGranted:
    """Cashless payment by the due date that settled the bill: rate x bill amount, floored."""

    account: str
    at: int
    bill_id: str
    payment_id: str
    amount_paise: int
    rate_bp: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SurchargeApplied:
    """Delayed-payment surcharge on the bill's unpaid part (``base_paise``), floored."""

    account: str
    at: int
    bill_id: str
    amount_paise: int
    base_paise: int
    rate_bp: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DisconnectionNoticeIssued:
    """The s.56 written notice was served; disconnection is lawful from ``not_before``."""

    account: str
    at: int
    notice_id: str
    bill_id: str
    dues_paise: int
    not_before: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DisconnectionNoticeWithdrawn:
    account: str
    at: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DisconnectionDeferred:
    """A due automatic disconnection met a no-disconnection window; it waits until ``not_before``."""

    account: str
    at: int
    not_before: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayTargetSet:
    """What jodo wants the relay to be from now on, and why."""

    account: str
    at: int
    target: RelayTarget
    reason: str
    correlation_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCommandIssued:
    account: str
    at: int
    command_id: str
    action: RelayAction
    attempt: int
    expires_at: int
    reason: str
    correlation_id: str
    origin: CommandOrigin
    engineer_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCommandCancelled:
    """The pending command is dropped. ``in_flight``: the head-end had it, so it may have run; jodo
    then assumes it did (and drives the relay back), since a cancel can race the meter."""

    account: str
    at: int
    command_id: str
    in_flight: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCommandRetryScheduled:
    """This attempt failed, was rejected or expired; the command is re-sent at ``retry_at``."""

    account: str
    at: int
    command_id: str
    attempt: int
    retry_at: int
    status: RelayResultStatus
    error_code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCommandFailed:
    """The command is given up (attempts used up, or not retryable); a work order follows."""

    account: str
    at: int
    command_id: str
    action: RelayAction
    attempts: int
    status: RelayResultStatus
    error_code: str | None = None
    retryable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStateConfirmed:
    """The pending command is done: the relay read back as ``relay`` (connected or disconnected)."""

    account: str
    at: int
    command_id: str
    relay: RelayState
    control_state: ControlState
    output_state: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AwaitingButtonPress:
    """The meter is ready_for_reconnection (control modes 1, 3, 5, 6): the consumer must press."""

    account: str
    at: int
    control_mode: int
    command_id: str | None = None  # the connect command that got here; None if seen in a read


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStateReported:
    """A read with nothing pending showed the relay in another state than jodo believed."""

    account: str
    at: int
    relay: RelayState
    control_state: ControlState
    output_state: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrderOpened:
    account: str
    at: int
    work_order_id: str
    action: WorkOrderAction
    reason: str
    correlation_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrderClosed:
    account: str
    at: int
    work_order_id: str
    outcome: WorkOrderOutcome
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectionChargeApplied:
    """A disconnection for dues was confirmed; reconnecting costs this (research §0, Ujjain)."""

    account: str
    at: int
    amount_paise: int
    ref: str  # the command or work order that disconnected


@dataclass(frozen=True, slots=True, kw_only=True)
class OverrideApplied:
    """An engineer's action, audited. ``deliberate_disconnection`` marks a human-ordered cut, which
    no-disconnection windows do not bind."""

    account: str
    at: int
    action: OverrideAction
    engineer_id: str
    reason: str
    request_id: str | None = None
    deliberate_disconnection: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentReconnect:
    """The common payment as ONE journal record (issue 13): a payment that brings a meter off for dues
    to the reconnection threshold, and the connect command sent for it at once.

    It stands for exactly the events `parts` gives, in that order, which is what decide emits for such
    a payment: `PaymentApplied`, a `DisconnectionNoticeWithdrawn` when ``notice_withdrawn`` (its
    reason) is set, `RelayTargetSet` to connected, and `RelayCommandIssued` (connect, attempt 1,
    automatic, no engineer), all at ``at``, both correlated with the payment and with one ``reason``.
    Journals written before it hold those events one by one; both replay to the same state
    (`domain.fused`). Its journal ref is the command id (the command's audit trail)."""

    account: str
    at: int
    payment_id: str
    amount_paise: int
    channel: str
    cashless: bool
    paid_at: int
    dues_after_paise: int
    command_id: str
    expires_at: int
    reason: str
    notice_withdrawn: str | None = None

    def parts(
        self,
    ) -> tuple[PaymentApplied, DisconnectionNoticeWithdrawn, RelayTargetSet, RelayCommandIssued] | tuple[
        PaymentApplied, RelayTargetSet, RelayCommandIssued
    ]:
        """The events this record stands for, in order."""
        account, at = self.account, self.at
        paid = PaymentApplied(
            account=account, at=at, payment_id=self.payment_id, amount_paise=self.amount_paise,
            channel=self.channel, cashless=self.cashless, paid_at=self.paid_at,
            dues_after_paise=self.dues_after_paise,
        )
        target = RelayTargetSet(
            account=account, at=at, target=RelayTarget.CONNECTED, reason=self.reason,
            correlation_id=self.payment_id,
        )
        issued = RelayCommandIssued(
            account=account, at=at, command_id=self.command_id, action=RelayAction.CONNECT, attempt=1,
            expires_at=self.expires_at, reason=self.reason, correlation_id=self.payment_id,
            origin=CommandOrigin.AUTOMATIC, engineer_id=None,
        )
        if self.notice_withdrawn is None:
            return paid, target, issued
        withdrawn = DisconnectionNoticeWithdrawn(account=account, at=at, reason=self.notice_withdrawn)
        return paid, withdrawn, target, issued


# ---------------------------------------------------------------- prepaid (issue 16)
# A prepaid meter's balance is the negative of its ``dues_paise``: a consumption debit raises the dues,
# a recharge is an ordinary payment (ClearPayment → PaymentApplied / PaymentReconnect, same fused path).


@dataclass(frozen=True, slots=True, kw_only=True)
class BillingModeSet:
    account: str
    at: int
    mode: BillingMode
    balance_paise: int  # the balance from now on (prepaid), = -dues
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumptionDebited:
    """One day's (or interval's) charge debited from a prepaid balance. ``estimated``: no read came
    for that day, so the charge was estimated from recent consumption; ``replaces`` names the
    estimate a real read trues up (the debit then is the difference, may be negative)."""

    account: str
    at: int
    read_id: str
    read_date: str
    energy_wh: int
    energy_paise: int  # slab-priced energy charge
    fixed_paise: int  # fixed charge for the day
    duty_paise: int  # electricity duty
    debit_paise: int  # what the balance moved by (sum, or the true-up difference)
    balance_after_paise: int
    estimated: bool = False
    replaces: str | None = None  # read id of the estimate this read trues up
    source: str = "head-end"


@dataclass(frozen=True, slots=True, kw_only=True)
class LowBalanceNotified:
    """A low-balance notice: ``threshold`` is "used_75pc" style (share of the month's charges used),
    "days_left_3" (about N days left) or "zero" (disconnection due, consumer told first)."""

    account: str
    at: int
    threshold: str
    balance_paise: int
    days_left: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyCreditGranted:
    account: str
    at: int
    request_id: str
    amount_paise: int
    period: str  # local month "YYYY-MM": once per period
    balance_after_paise: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyCreditRecovered:
    """The part of a recharge that paid back outstanding emergency credit (before the balance)."""

    account: str
    at: int
    payment_id: str
    amount_paise: int
    outstanding_after_paise: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterCreditSent:
    """A credit update issued to a prepaid meter that keeps its own credit (domain/credit.py): tell it
    ``balance_paise`` (CIM 3.20.22.13). ``command_id`` is minted from the meter's seq."""

    account: str
    at: int
    command_id: str
    balance_paise: int
    expires_at: int
    attempt: int = 1
    correlation_id: str = ""  # what changed the balance (payment id, read id, request id)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterCreditEnded:
    """How a credit update ended: applied (the meter holds the balance), failed (``retry_at`` set when it
    is sent again), rejected or expired."""

    account: str
    at: int
    command_id: str
    outcome: str  # applied | failed | rejected | expired
    error: str | None = None
    retry_at: int | None = None


MeterEvent = (
    MeterRegistered
    | MeterUpdated
    | BillPosted
    | PaymentApplied
    | RebateGranted
    | SurchargeApplied
    | DisconnectionNoticeIssued
    | DisconnectionNoticeWithdrawn
    | DisconnectionDeferred
    | RelayTargetSet
    | RelayCommandIssued
    | RelayCommandCancelled
    | RelayCommandRetryScheduled
    | RelayCommandFailed
    | RelayStateConfirmed
    | AwaitingButtonPress
    | RelayStateReported
    | WorkOrderOpened
    | WorkOrderClosed
    | ReconnectionChargeApplied
    | OverrideApplied
    | PaymentReconnect
    | BillingModeSet
    | ConsumptionDebited
    | LowBalanceNotified
    | EmergencyCreditGranted
    | EmergencyCreditRecovered
    | MeterCreditSent
    | MeterCreditEnded
)
