"""Payment messages: a cleared payment as it enters jodo, and the batches that carry payments between
the front door, the payment desk and the meter shards.

Records (`PaymentReceived`, `PaymentItemResult`) are codec messages: they travel as msgpack inside the
batch classes, which are what Thespian sees. Batches carry bytes and print in O(1) (Thespian formats
``str(message)`` on every send and receive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from protocols.codec import message
from protocols.wire import BatchCarrier, Carrier

__all__ = [
    "MAX_PAYMENT_PAISE",
    "CreditAckBatch",
    "CreditBatch",
    "DeskSaturated",
    "PaymentBatch",
    "PaymentBatchResult",
    "PaymentItemResult",
    "PaymentReceived",
    "PaymentResultCode",
    "validate_account",
    "validate_payment_id",
]

#: Largest single payment accepted anywhere: Rs 10 crore. Above it the amount is a typo or an attack.
MAX_PAYMENT_PAISE = 10_000_000_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-/]{0,127}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def validate_payment_id(value: str, what: str = "payment_id") -> None:
    """Raise ValueError unless ``value`` is 1-128 safe characters (letters, digits, ``_.:-/``)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{what} must be 1-128 characters of letters, digits and _.:-/")


def validate_account(value: str) -> None:
    """Raise ValueError unless ``value`` looks like a consumer account (IVRS) number."""
    if not isinstance(value, str) or not _ACCOUNT.match(value):
        raise ValueError("account must be 1-64 characters of letters, digits, _ and -")


@message
@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentReceived:
    """A payment the gateway or counter says has cleared. Money in integer paise; times epoch seconds."""

    payment_id: str
    account: str
    amount_paise: int
    channel: str
    gateway: str
    paid_at: int
    received_at: int
    cashless: bool = True
    event_id: str | None = None  # the gateway's delivery id (x-razorpay-event-id), deduplicated too

    def __post_init__(self) -> None:
        validate_payment_id(self.payment_id)
        validate_account(self.account)
        if isinstance(self.amount_paise, bool) or not isinstance(self.amount_paise, int):
            raise ValueError("amount_paise must be an integer number of paise")
        if not 0 < self.amount_paise <= MAX_PAYMENT_PAISE:
            raise ValueError(f"amount_paise must be between 1 and {MAX_PAYMENT_PAISE}")
        if not self.channel or len(self.channel) > 32:
            raise ValueError("channel must be 1-32 characters")
        if not self.gateway or len(self.gateway) > 32:
            raise ValueError("gateway must be 1-32 characters")
        if self.paid_at <= 0 or self.received_at <= 0:
            raise ValueError("paid_at and received_at must be positive epoch seconds")
        if self.event_id is not None:
            validate_payment_id(self.event_id, "event_id")


class PaymentResultCode(StrEnum):
    """What the desk did with one payment of a batch."""

    ACCEPTED = "accepted"  # durable in the ledger, on its way to the meter
    DUPLICATE = "duplicate"  # seen before (payment id or gateway event id): nothing changed
    REJECTED = "rejected"  # malformed: the reason says what; nothing stored


@message
@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentItemResult:
    """The desk's answer for one item of a `PaymentBatch`, in the batch's order."""

    index: int
    payment_id: str
    code: PaymentResultCode
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class PaymentBatch(BatchCarrier):
    """Front door / import / inject → desk: encoded `PaymentReceived` records (codec.encode_many)."""

    batch_id: str
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class PaymentBatchResult(BatchCarrier):
    """Desk → sender, after the ledger commit: encoded `PaymentItemResult` records."""

    batch_id: str
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class DeskSaturated(BatchCarrier):
    """Desk → sender: too many payments in flight; nothing of the batch was stored. Retry later."""

    batch_id: str
    retry_after_s: int = 1


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CreditBatch(Carrier):
    """Desk → meter shard: encoded `ClearPayment` commands for meters the shard hosts."""

    batch_id: str
    payload: bytes
    received_wall: tuple[float, ...] = ()  # per payment, wall time the desk got it (latency metric)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CreditAckBatch(Carrier):
    """Meter shard → desk, after the shard's journal commit: encoded `AckPayment` effects."""

    batch_id: str
    group: int
    payload: bytes
    credited_at: int = 0
