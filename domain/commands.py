"""Commands: what a meter entity is asked to do. Every one names its meter by ``account``.

A command is a request and may be refused or ignored; the facts that follow are events
(domain/events.py). Field checks here reject malformed input at construction (the codec turns the
ValueError into a CodecError); business refusals are effects of `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from domain.enums import ControlState, OverrideAction, RelayResultStatus, RelayState

__all__ = [
    "CheckMeter",
    "ClearPayment",
    "EngineerOverride",
    "MeterCommand",
    "PostBill",
    "RegisterMeter",
    "ReportMeterState",
    "ReportRelayResult",
    "UpdateMeter",
]

_REGISTERABLE = (RelayState.CONNECTED, RelayState.DISCONNECTED, RelayState.AWAITING_BUTTON)


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterMeter:
    """Create the meter entity. ``relay`` is its state now; ``opening_dues_paise`` carries arrears
    (or a credit, negative) over from the billing system, so a meter registered off for dues is not
    reconnected before its arrears are known."""

    account: str
    serial: str
    head_end: str
    install_year: int
    relay_capable: bool
    control_mode: int  # DLMS class 70 attribute 4, 0..6
    protected: bool = False
    relay: RelayState = RelayState.CONNECTED
    opening_dues_paise: int = 0

    def __post_init__(self) -> None:
        _need(bool(self.account) and bool(self.serial) and bool(self.head_end), "empty id")
        _need(_is_int(self.control_mode) and 0 <= self.control_mode <= 6, "control_mode must be 0..6")
        _need(self.relay in _REGISTERABLE, f"a meter cannot be registered {self.relay}")
        _need(_is_int(self.opening_dues_paise), "opening_dues_paise must be integer paise")


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateMeter:
    """Change a meter's attributes (meter swap, head-end migration, control mode read). None = keep."""

    account: str
    serial: str | None = None
    head_end: str | None = None
    install_year: int | None = None
    relay_capable: bool | None = None
    control_mode: int | None = None

    def __post_init__(self) -> None:
        _need(self.control_mode is None or 0 <= self.control_mode <= 6, "control_mode must be 0..6")
        _need(self.serial != "" and self.head_end != "", "empty id")


@dataclass(frozen=True, slots=True, kw_only=True)
class PostBill:
    """A bill from the billing system: its amount is added to the dues."""

    account: str
    bill_id: str
    amount_paise: int
    due_date: str  # ISO local date printed on the bill; paying during that day is on time
    issued_at: int

    def __post_init__(self) -> None:
        _need(bool(self.bill_id), "empty bill_id")
        _need(_is_int(self.amount_paise) and self.amount_paise >= 0, "amount_paise must be >= 0")
        try:
            date.fromisoformat(self.due_date)
        except (TypeError, ValueError):
            raise ValueError(f"due_date must be an ISO date, got {self.due_date!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearPayment:
    """A payment the desk has made durable: credit it (once per payment id)."""

    account: str
    payment_id: str
    amount_paise: int
    channel: str  # upi, card, netbanking, bbps, cash-counter, ...
    cashless: bool
    paid_at: int

    def __post_init__(self) -> None:
        _need(bool(self.payment_id), "empty payment_id")
        _need(_is_int(self.amount_paise) and self.amount_paise > 0, "amount_paise must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckMeter:
    """The shard's timer: time has passed (due date, notice maturity, window end, retry, expiry)."""

    account: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRelayResult:
    """The head-end's result for one relay command, with the relay read back when processed."""

    account: str
    command_id: str
    status: RelayResultStatus
    control_state: ControlState | None = None  # DLMS attribute 3 after the command
    output_state: bool | None = None  # DLMS attribute 2: true = supply on
    error_code: str | None = None
    retryable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportMeterState:
    """A relay read from the head-end (reconciliation, or a field crew's visit)."""

    account: str
    control_state: ControlState
    output_state: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineerOverride:
    """An engineer's action on one meter; audited with who and why."""

    account: str
    action: OverrideAction
    engineer_id: str
    reason: str
    request_id: str | None = None  # correlation id of the request (CLI/API), for the audit trail

    def __post_init__(self) -> None:
        _need(bool(self.engineer_id) and bool(self.reason), "engineer_id and reason are required")


MeterCommand = (
    RegisterMeter
    | UpdateMeter
    | PostBill
    | ClearPayment
    | CheckMeter
    | ReportRelayResult
    | ReportMeterState
    | EngineerOverride
)
