"""Commands: what a meter entity is asked to do. Every one names its meter by ``account``.

A command is a request and may be refused or ignored; the facts that follow are events
(domain/events.py). Field checks here reject malformed input at construction (the codec turns the
ValueError into a CodecError); business refusals are effects of `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from domain.enums import BillingMode, ControlState, OverrideAction, RelayResultStatus, RelayState

__all__ = [
    "CheckMeter",
    "ClearPayment",
    "EngineerOverride",
    "MeterCommand",
    "PostBill",
    "RegisterMeter",
    "ReportConsumption",
    "ReportMeterState",
    "ReportRelayResult",
    "RequestEmergencyCredit",
    "SetBillingMode",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class SetBillingMode:
    """Switch a meter between postpaid and prepaid (issue 16). Switching to prepaid sets the balance to
    ``opening_balance_paise`` (the dues become its negative: one money field, ``balance = -dues``);
    switching back to postpaid keeps the money as dues. Idempotent per ``request_id``."""

    account: str
    mode: BillingMode
    opening_balance_paise: int = 0  # may be negative (arrears carried into prepaid)
    request_id: str | None = None

    def __post_init__(self) -> None:
        _need(_is_int(self.opening_balance_paise), "opening_balance_paise must be integer paise")
        _need(self.request_id != "", "empty request_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportConsumption:
    """One consumption read of a prepaid meter from the head-end (or `jodo import reads`): the energy
    imported over one local day ``read_date`` (or over the interval ``interval_start`` ..
    ``interval_end``, epoch seconds, inside that day). Debited once per ``read_id``; a read for a
    day already debited by an estimate trues the estimate up; a read for a postpaid meter is ignored
    (recorded nowhere: postpaid is billed by the billing system)."""

    account: str
    read_id: str
    read_date: str  # ISO local date (policy timezone) the energy was consumed on
    energy_wh: int  # watt-hours imported over the day / interval, >= 0
    register_wh: int | None = None  # cumulative import register (DLMS 1.0.1.8.0.255) at the end, if read
    interval_start: int | None = None  # epoch seconds; None = the whole local day
    interval_end: int | None = None
    source: str = "head-end"  # head-end id, "import", "inject"

    def __post_init__(self) -> None:
        _need(bool(self.account) and bool(self.read_id), "empty account or read_id")
        _need(_is_int(self.energy_wh) and 0 <= self.energy_wh <= 10_000_000, "energy_wh must be 0..10^7 Wh")
        _need(self.register_wh is None or (_is_int(self.register_wh) and self.register_wh >= 0),
              "register_wh must be integer Wh >= 0")
        try:
            date.fromisoformat(self.read_date)
        except (TypeError, ValueError):
            raise ValueError(f"read_date must be an ISO date, got {self.read_date!r}") from None
        _need((self.interval_start is None) == (self.interval_end is None),
              "interval_start and interval_end come together")
        if self.interval_start is not None and self.interval_end is not None:
            _need(self.interval_start < self.interval_end, "interval_start must be before interval_end")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEmergencyCredit:
    """The consumer (app, IVRS, counter) asks for emergency credit: granted once per local calendar
    month, of policy ``prepaid.emergency_credit_paise``, recovered first from the next recharge."""

    account: str
    request_id: str
    channel: str = "api"

    def __post_init__(self) -> None:
        _need(bool(self.account) and bool(self.request_id), "empty account or request_id")


MeterCommand = (
    RegisterMeter
    | UpdateMeter
    | PostBill
    | ClearPayment
    | CheckMeter
    | ReportRelayResult
    | ReportMeterState
    | EngineerOverride
    | SetBillingMode
    | ReportConsumption
    | RequestEmergencyCredit
)
