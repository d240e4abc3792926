"""Effects: what the shard must do outside the meter once the events are journaled.

Ids in effects are deterministic (derived from the meter's state and the command), so a re-run of
the same decision yields the same ids and receivers can deduplicate on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.enums import (
    CommandOrigin,
    NoticeTemplate,
    PaymentOutcome,
    RelayAction,
    WorkOrderAction,
)

__all__ = [
    "AckPayment",
    "CancelRelayCommand",
    "CancelWorkOrder",
    "Effect",
    "MeterCommandRejected",
    "NotifyConsumer",
    "OpenWorkOrder",
    "SendRelayCommand",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRelayCommand:
    """Send to the meter's head-end. The head-end must not run it at or after ``expires_at``.
    ``action`` CREDIT is a credit update (domain/credit.py): ``balance_paise`` is what it tells the meter."""

    command_id: str
    account: str
    meter_serial: str
    head_end: str
    action: RelayAction
    expires_at: int
    reason: str
    correlation_id: str  # payment id, bill id or override request (audit)
    attempt: int = 1
    origin: CommandOrigin = CommandOrigin.AUTOMATIC
    engineer_id: str | None = None
    balance_paise: int | None = None  # a CREDIT command's balance; None for a relay switch


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRelayCommand:
    """Withdraw a command the head-end may still hold. A result for it is ignored from now on."""

    command_id: str
    account: str
    head_end: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyConsumer:
    """Put a consumer notice in the outbox. ``notice_id`` is unique per notice (outbox dedup key)."""

    notice_id: str
    account: str
    template: NoticeTemplate
    amount_paise: int | None = None  # the payment, charge or failed amount the notice is about
    dues_paise: int | None = None  # outstanding dues after the fact
    ref: str | None = None  # payment id, bill id, command id or work order id
    not_before: int | None = None  # disconnection notice: earliest lawful disconnection


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenWorkOrder:
    """Ask a field crew to switch the meter by hand."""

    work_order_id: str
    account: str
    action: WorkOrderAction
    reason: str
    meter_serial: str = ""
    correlation_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelWorkOrder:
    """The work order is no longer wanted (e.g. the consumer paid before a field disconnection)."""

    work_order_id: str
    account: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AckPayment:
    """Answer to the payment desk for one ClearPayment (also for a redelivered one)."""

    payment_id: str
    account: str
    outcome: PaymentOutcome


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterCommandRejected:
    """A command that cannot apply (e.g. a bill for an account not registered here): the sender
    should park it for a human, not retry it."""

    account: str
    command: str  # the command's class name
    ref: str  # its id (bill id, request id, account)
    reason: str


Effect = (
    SendRelayCommand
    | CancelRelayCommand
    | NotifyConsumer
    | OpenWorkOrder
    | CancelWorkOrder
    | AckPayment
    | MeterCommandRejected
)
