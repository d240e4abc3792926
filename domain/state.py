"""The meter entity's state: small frozen records, invariants checked on construction.

A `Meter` is what a MeterShard holds per account (DESIGN §2). It is built only by `evolve` (and the
codec, from a snapshot). Attributes that many meters share (head-end, cohort, relay capability) sit in
one interned `MeterProfile`; optional parts (bill, pending command, work order) are None when absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from domain import prepaid_days
from domain.enums import CommandOrigin, RelayAction, RelayState, RelayTarget, WorkOrderAction
from domain.errors import MeterInvariantError

__all__ = [
    "HELD_RETRY_AT",
    "PROTECTED_CASE",
    "QUIET_CASE",
    "RECENT_PAYMENT_IDS_KEPT",
    "BillState",
    "DayRead",
    "FieldWorkOrder",
    "Meter",
    "MeterCase",
    "MeterCredit",
    "MeterProfile",
    "PendingRelayCommand",
    "PrepaidState",
    "meter_profile",
    "packed_days",
    "shared_case",
]

#: Payment ids a meter remembers to answer a redelivery with "applied" and credit nothing. The desk's
#: ledger deduplicates durably; this window covers desk → shard redelivery of recent, unacked credits.
RECENT_PAYMENT_IDS_KEPT = 4
#: A pending command's ``retry_at`` while the disconnect guard (domain/guard.py) holds it: no expiry,
#: no retry, until the gateway releases it. 9999-12-31T23:59:59Z, a time every formatter can print.
HELD_RETRY_AT = 253_402_300_799
#: DLMS control modes (class 70 attribute 4) are 0..6 (research §1.1).
CONTROL_MODES = range(7)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterProfile:
    """Attributes shared by a cohort of meters. Interned: build it with `meter_profile`."""

    head_end: str
    install_year: int
    relay_capable: bool
    control_mode: int  # DLMS class 70 attribute 4; 0 = no remote switching at all

    def __post_init__(self) -> None:
        if self.control_mode not in CONTROL_MODES:
            raise MeterInvariantError(f"control_mode must be 0..6, got {self.control_mode!r}")
        if not self.head_end:
            raise MeterInvariantError("head_end must not be empty")


@lru_cache(maxsize=65536)
def meter_profile(head_end: str, install_year: int, relay_capable: bool, control_mode: int) -> MeterProfile:
    """The one shared `MeterProfile` with these attributes (7.25 lakh meters, a few hundred profiles)."""
    return MeterProfile(
        head_end=head_end,
        install_year=install_year,
        relay_capable=relay_capable,
        control_mode=control_mode,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BillState:
    """The current bill: what the rebate and the surcharge (once per bill each) are computed on."""

    bill_id: str
    amount_paise: int
    due_at: int  # first overdue second (local midnight after the due date)
    rebated: bool = False
    surcharged: bool = False
    previous_bill_id: str | None = None  # remembered too, so a re-imported bill is ignored

    def __post_init__(self) -> None:
        if self.amount_paise < 0:
            raise MeterInvariantError("bill amount must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRelayCommand:
    """The one relay command a meter has outstanding: in flight, or failed and waiting to retry."""

    command_id: str
    action: RelayAction
    attempt: int  # 1 for the first send
    issued_at: int
    expires_at: int  # a result at or after this never counts
    from_relay: RelayState  # the relay state before the command, restored if it fails
    reason: str
    correlation_id: str  # payment id, bill id or override request that caused it (audit)
    origin: CommandOrigin
    engineer_id: str | None = None
    retry_at: int | None = None  # None: in flight at the head-end; else: failed, re-send at retry_at

    def __post_init__(self) -> None:
        if self.action is RelayAction.READ or self.action is RelayAction.CREDIT:
            raise MeterInvariantError(f"a {self.action} is not a pending relay command")
        if self.attempt < 1:
            raise MeterInvariantError("attempt counts from 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldWorkOrder:
    """A field visit jodo asked for (meter not remotely switchable, or remote switching failed)."""

    work_order_id: str
    action: WorkOrderAction


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterCase:
    """Whatever is out of the ordinary about a meter: an exemption, a served notice, a relay command
    or a field work order. Most meters have none (``Meter.case is None``), which keeps the resident
    record small and the per-event copy short; read these through the `Meter` properties."""

    protected: bool = False
    on_hold: bool = False
    notice_at: int | None = None  # when the current disconnection notice was served
    switch_off_not_before: int | None = None  # notice maturity, pushed past windows by deferrals
    pending: PendingRelayCommand | None = None
    work_order: FieldWorkOrder | None = None


#: The case of a meter with nothing open, and of a merely protected one: shared, never copied.
QUIET_CASE = MeterCase()
PROTECTED_CASE = MeterCase(protected=True)


def shared_case(case: MeterCase) -> MeterCase | None:
    """``None`` for a quiet case, the shared instance for a protected-only one, else ``case``."""
    if case == QUIET_CASE:
        return None
    return PROTECTED_CASE if case == PROTECTED_CASE else case


@dataclass(frozen=True, slots=True, kw_only=True)
class DayRead:
    """One local day's energy a prepaid meter was debited for: a real read, or an estimate for a gap."""

    day: str  # ISO local date
    read_id: str
    energy_wh: int
    estimated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterCredit:
    """The credit update jodo last sent a prepaid meter that keeps its own credit (domain/credit.py): the
    balance it carried, and how it ended. One at a time per meter: a newer balance waits for it."""

    command_id: str
    balance_paise: int  # what this update told the meter (jodo's balance when it was issued)
    issued_at: int
    expires_at: int
    attempt: int = 1
    outcome: str = ""  # "" in flight; then applied | failed | rejected | expired
    error: str | None = None  # the head-end's error code or rejection reason
    retry_at: int | None = None  # a retryable failure: send the balance again at this time
    applied_paise: int | None = None  # the balance the meter last confirmed holding (any update)

    def __post_init__(self) -> None:
        if self.attempt < 1 or self.outcome not in _CREDIT_OUTCOMES:
            raise MeterInvariantError(f"credit update {self.command_id}: attempt {self.attempt}, "
                                      f"outcome {self.outcome!r}")

    @property
    def in_flight(self) -> bool:
        return self.outcome == ""


_CREDIT_OUTCOMES = frozenset({"", "applied", "failed", "rejected", "expired"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepaidState:
    """What a prepaid meter has beyond its balance (which is ``-Meter.dues_paise``): the days read in
    the current and the previous local month (what their debits are priced on, domain/prepaid.py), the
    emergency credit outstanding, and which low-balance notices went out since the last top-up."""

    # (a tuple of records is never the first field: the flat encoder cannot inline it there)
    funded_paise: int = 0  # the balance right after the last top-up: what "75 % used" is a share of
    # The days as records, as 658650c wrote them (kept so its packed meters load; positional in the
    # flat form, so renamed from ``days`` freely). Always () in a state jodo builds now: see ``reads``.
    legacy_days: tuple[DayRead, ...] = ()
    emergency_outstanding_paise: int = 0
    emergency_period: str | None = None  # local month "YYYY-MM" of the last emergency credit
    emergency_request_id: str | None = None  # its request id (a redelivered request is a no-op)
    mode_request_id: str | None = None  # the SetBillingMode that made the meter prepaid
    notified: tuple[str, ...] = ()  # low-balance thresholds notified since the last top-up
    reads: bytes = b""  # the days kept, packed (domain/prepaid_days.py): ~2 B a day, not ~41 as records
    credit: MeterCredit | None = None  # a meter that keeps its own credit: the last update sent it

    def __post_init__(self) -> None:
        if self.emergency_outstanding_paise < 0 or self.funded_paise < 0:
            raise MeterInvariantError("emergency credit outstanding and funded balance must be >= 0")

    @property
    def days(self) -> tuple[DayRead, ...]:
        """The days read in the current and the previous local month, sorted by day, one per day."""
        return self.legacy_days or (_unpacked_days(self.reads) if self.reads else ())


#: reads -> days of the last few meters: a command reads its meter's days a few times, and the state
#: an event just packed is read again at once (`packed_days` puts it here). At most ~0.3 MB.
_DAYS_SEEN: dict[bytes, tuple[DayRead, ...]] = {}
_DAYS_SEEN_MAX = 64


def _remember(reads: bytes, days: tuple[DayRead, ...]) -> None:
    if len(_DAYS_SEEN) >= _DAYS_SEEN_MAX:
        _DAYS_SEEN.clear()
    _DAYS_SEEN[reads] = days


_new = object.__new__
_set = object.__setattr__


def _day_read(day: str, read_id: str, energy_wh: int, estimated: bool) -> DayRead:
    """A `DayRead` of values jodo packed itself (no checks; ~half the cost of the keyword __init__,
    which is most of unpacking a month-end meter's days)."""
    d = _new(DayRead)
    _set(d, "day", day)
    _set(d, "read_id", read_id)
    _set(d, "energy_wh", energy_wh)
    _set(d, "estimated", estimated)
    return d


def _unpacked_days(reads: bytes) -> tuple[DayRead, ...]:
    days = _DAYS_SEEN.get(reads)
    if days is None:
        days = tuple([_day_read(*row) for row in prepaid_days.unpack(reads)])
        _remember(reads, days)
    return days


def packed_days(days: tuple[DayRead, ...]) -> bytes:
    """``days`` (sorted, one per day) as `PrepaidState.reads` keeps them."""
    reads = prepaid_days.pack([(d.day, d.read_id, d.energy_wh, d.estimated) for d in days])
    _remember(reads, days)
    return reads


_TRANSIT = {RelayState.CONNECTING: RelayAction.CONNECT, RelayState.DISCONNECTING: RelayAction.DISCONNECT}


@dataclass(frozen=True, slots=True, kw_only=True)
class Meter:
    """One meter entity (id = the consumer account, MP's IVRS number). Money in integer paise.

    ``dues_paise`` may be negative (a credit). ``relay`` is what jodo believes; ``desired`` is what
    it wants and why. A pending command exists exactly when the relay is connecting/disconnecting.
    """

    account: str
    serial: str
    profile: MeterProfile
    relay: RelayState
    desired: RelayTarget
    dues_paise: int = 0
    bill: BillState | None = None
    case: MeterCase | None = None  # None: nothing open (see MeterCase)
    seq: int = 0  # ids this meter has minted (commands, notices, work orders): ids are deterministic
    recent_payment_ids: tuple[str, ...] = ()
    prepaid: PrepaidState | None = None  # None: postpaid (appended: older packed meters load as postpaid)

    @property
    def protected(self) -> bool:
        return self.case is not None and self.case.protected

    @property
    def on_hold(self) -> bool:
        return self.case is not None and self.case.on_hold

    @property
    def notice_at(self) -> int | None:
        return None if self.case is None else self.case.notice_at

    @property
    def switch_off_not_before(self) -> int | None:
        return None if self.case is None else self.case.switch_off_not_before

    @property
    def pending(self) -> PendingRelayCommand | None:
        return None if self.case is None else self.case.pending

    @property
    def work_order(self) -> FieldWorkOrder | None:
        return None if self.case is None else self.case.work_order

    def __post_init__(self) -> None:
        pending = None if self.case is None else self.case.pending
        expected = _TRANSIT.get(self.relay)
        if (pending.action if pending is not None else None) is not expected:
            raise MeterInvariantError(
                f"{self.account}: relay {self.relay} with pending "
                f"{pending.action if pending is not None else None}"
            )
        if self.seq < 0 or len(self.recent_payment_ids) > RECENT_PAYMENT_IDS_KEPT:
            raise MeterInvariantError(f"{self.account}: bad seq or payment id window")
