"""The prepaid commands of the meter entity (issue 16): switch the billing mode, debit a read, grant
emergency credit; and the part of a recharge that recovers emergency credit.

Each handler appends to a `Draft` (domain/drive.py) and returns the correlation id for the standing
rules, or None when nothing changed, as domain/meter.py's handlers do. The arithmetic is
domain/prepaid.py's; the rule at zero balance (notice, friendly windows, cut) is
`drive._prepaid_retarget`, run by the standing rules after every command that changed something.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from domain.commands import (
    ClearPayment,
    MeterCommand,
    ReportConsumption,
    RequestEmergencyCredit,
    SetBillingMode,
)
from domain.drive import Draft
from domain.effects import MeterCommandRejected
from domain.enums import BillingMode, NoticeTemplate, RelayTarget
from domain.events import (
    BillingModeSet,
    ConsumptionDebited,
    DisconnectionDeferred,
    DisconnectionNoticeWithdrawn,
    EmergencyCreditGranted,
    EmergencyCreditRecovered,
    LowBalanceNotified,
    MeterEvent,
    PaymentApplied,
    PaymentReconnect,
    RelayTargetSet,
)
from domain.policy import Policy
from domain.prepaid import (
    Debit,
    account_of,
    already_read,
    apply_read,
    daily_charge_of,
    grant_emergency,
    next_day_debit,
    oldest_open_month_of,
)
from domain.state import Meter
from domain.tariff import recharge_warning
from domain.windows import local_date

__all__ = [
    "emergency_credit",
    "recover_emergency_credit",
    "report_consumption",
    "set_billing_mode",
    "tally",
]

_SWITCHED_POSTPAID = "switched to postpaid: a disconnection needs a bill and the s.56 notice again"


def _reject(d: Draft, account: str, command: object, ref: str, reason: str) -> None:
    d.do(MeterCommandRejected(account=account, command=type(command).__name__, ref=ref, reason=reason))


def set_billing_mode(d: Draft, c: SetBillingMode) -> str | None:
    """Prepaid: the balance becomes ``opening_balance_paise`` (dues = its negative), the current bill
    is closed. Postpaid again: the money stays as dues; a prepaid cut is lifted (a postpaid one needs
    a bill and its notice). The same request again, or a switch to the mode the meter is in under
    another request, changes nothing (the latter is refused for prepaid: it would reset the balance)."""
    m = d.state
    ref = c.request_id or c.account
    if m is None:
        _reject(d, c.account, c, ref, "no such meter")
        return None
    if c.mode is BillingMode.PREPAID:
        if m.prepaid is not None:
            if c.request_id is None or c.request_id != m.prepaid.mode_request_id:
                _reject(d, m.account, c, ref, "already prepaid: top the balance up with a payment")
            return None
        if m.notice_at is not None or m.switch_off_not_before is not None:
            d.emit(DisconnectionNoticeWithdrawn(account=m.account, at=d.now, reason="switched to prepaid"))
        d.emit(BillingModeSet(account=m.account, at=d.now, mode=BillingMode.PREPAID,
                              balance_paise=c.opening_balance_paise, request_id=c.request_id))
        return c.request_id or f"{m.account}:prepaid{d.now}"
    if m.prepaid is None:
        return None  # postpaid already
    d.emit(BillingModeSet(account=m.account, at=d.now, mode=BillingMode.POSTPAID,
                          balance_paise=-m.dues_paise, request_id=c.request_id))
    if m.switch_off_not_before is not None:
        d.emit(DisconnectionNoticeWithdrawn(account=m.account, at=d.now, reason=_SWITCHED_POSTPAID))
    if d.m.desired is RelayTarget.OFF_FOR_DUES:
        cause = c.request_id or f"{m.account}:postpaid{d.now}"
        d.emit(RelayTargetSet(account=m.account, at=d.now, target=RelayTarget.CONNECTED,
                              reason=_SWITCHED_POSTPAID, correlation_id=cause))
    return c.request_id or f"{m.account}:postpaid{d.now}"


def report_consumption(d: Draft, c: ReportConsumption) -> str | None:
    """Debit one read (domain/prepaid.py: out of order, duplicates, gaps estimated and trued up), then
    the low-balance notices. A read for a postpaid meter is ignored (the billing system bills it)."""
    m = d.state
    if m is None:
        _reject(d, c.account, c, c.read_id, "no such meter")
        return None
    if m.prepaid is None:
        return None
    if c.interval_start is not None:
        # Summed at the edge instead (jodo/intervals.py, `jodo import reads` with interval rows): a
        # meter keeps one read id a day (~2 B packed); per-interval idempotency would need every
        # interval's id, 48-96 a day, in every prepaid meter's state.
        _reject(d, m.account, c, c.read_id, "interval reads are not debited: send the day's sum as one "
                                            "whole-day read (jodo import reads sums interval files)")
        return None
    today = local_date(d.now, d.policy).isoformat()
    if c.read_date > today:
        _reject(d, m.account, c, c.read_id, f"read_date {c.read_date} is after today ({today})")
        return None
    oldest = oldest_open_month_of(m.prepaid)
    if oldest is not None and c.read_date[:7] < oldest:
        _reject(d, m.account, c, c.read_id, f"read for {c.read_date[:7]}: months before {oldest} are closed")
        return None
    usual = next_day_debit(m.prepaid, c.read_id, c.read_date, c.energy_wh, d.policy)
    if usual is not None:
        debits: tuple[Debit, ...] = (usual[0],)
    elif already_read(m.prepaid, c.read_id, c.read_date):
        return None  # a redelivered read
    else:
        debits = apply_read(account_of(m), c.read_id, c.read_date, c.energy_wh, d.policy)[1]
    if not debits:
        return None  # that read id, or a real read of that day, was debited before
    balance = -m.dues_paise
    for x in debits:
        balance -= x.debit_paise
        d.emit(ConsumptionDebited(
            account=m.account, at=d.now, read_id=x.read_id, read_date=x.day, energy_wh=x.energy_wh,
            energy_paise=x.energy_paise, fixed_paise=x.fixed_paise, duty_paise=x.duty_paise,
            debit_paise=x.debit_paise, balance_after_paise=balance, estimated=x.estimated,
            replaces=x.replaces, source=c.source,
        ))
    _low_balance_notices(d, None if usual is None else usual[1])
    return c.read_id


def _low_balance_notices(d: Draft, daily: int | None = None) -> None:
    """"used_75pc": that share (policy) of the balance after the last top-up is used; "days_left_N":
    the balance lasts N days or fewer at this month's daily charge (``daily``, if the caller has it).
    Each once per top-up; a balance at or below zero is the standing rule's ("zero", then the cut)."""
    m, policy = d.m, d.policy
    p = m.prepaid
    balance = -m.dues_paise
    if p is None or balance <= 0:
        return
    bp = policy.prepaid_low_balance_used_bp
    used = f"used_{bp // 100}pc"
    if (p.funded_paise > 0 and used not in p.notified
            and (p.funded_paise - balance) * 10_000 >= p.funded_paise * bp):
        _notice(d, used, balance, None)
    n = policy.prepaid_low_balance_days_left
    if daily is None:
        daily = daily_charge_of(p, policy)
    left = f"days_left_{n}"
    if n > 0 and daily > 0 and balance // daily <= n and left not in d.m.prepaid.notified:  # type: ignore[union-attr]
        _notice(d, left, balance, balance // daily)


def _notice(d: Draft, threshold: str, balance: int, days_left: int | None) -> None:
    notice_id = d.mint("l")
    d.emit(LowBalanceNotified(account=d.m.account, at=d.now, threshold=threshold, balance_paise=balance,
                              days_left=days_left))
    d.notify(notice_id, NoticeTemplate.LOW_BALANCE, dues_paise=-balance, ref=threshold)


def emergency_credit(d: Draft, c: RequestEmergencyCredit) -> str | None:
    """Grant `prepaid.emergency_credit_paise` once per local month with none outstanding; a refusal
    says why. The same request id again changes nothing."""
    m = d.state
    if m is None:
        _reject(d, c.account, c, c.request_id, "no such meter")
        return None
    p = m.prepaid
    if p is None:
        _reject(d, m.account, c, c.request_id, "not a prepaid meter")
        return None
    if c.request_id == p.emergency_request_id:
        return None
    period = local_date(d.now, d.policy).isoformat()[:7]
    _, amount = grant_emergency(account_of(m), period, d.policy)
    if amount == 0:
        why = ("emergency credit is off (prepaid.emergency_credit_paise = 0)"
               if d.policy.prepaid_emergency_credit_paise == 0
               else f"{p.emergency_outstanding_paise} paise of emergency credit still outstanding"
               if p.emergency_outstanding_paise > 0 else f"emergency credit already granted in {period}")
        _reject(d, m.account, c, c.request_id, why)
        return None
    balance = -m.dues_paise + amount
    d.emit(EmergencyCreditGranted(account=m.account, at=d.now, request_id=c.request_id, amount_paise=amount,
                                  period=period, balance_after_paise=balance))
    d.notify(f"{m.account}:ec:{c.request_id}", NoticeTemplate.EMERGENCY_CREDIT, amount_paise=amount,
             dues_paise=-balance, ref=c.request_id)
    return c.request_id


def recover_emergency_credit(d: Draft, c: ClearPayment) -> int:
    """A recharge of a prepaid meter pays back outstanding emergency credit first
    (`EmergencyCreditRecovered`, before the `PaymentApplied` of the same payment id, so once per
    payment); returns the paise recovered (what the balance does *not* rise by)."""
    m = d.m
    p = m.prepaid
    if p is None or p.emergency_outstanding_paise == 0 or c.amount_paise <= 0:
        return 0
    recovered = min(c.amount_paise, p.emergency_outstanding_paise)
    d.emit(EmergencyCreditRecovered(account=m.account, at=d.now, payment_id=c.payment_id,
                                    amount_paise=recovered,
                                    outstanding_after_paise=p.emergency_outstanding_paise - recovered))
    return recovered


_TALLIED = frozenset({ConsumptionDebited, EmergencyCreditGranted, EmergencyCreditRecovered,
                      DisconnectionDeferred})


def tally(
    events: Iterable[tuple[int, MeterEvent]],
    states: Mapping[str, Meter],
    refused: Iterable[tuple[MeterCommand, str]],
    duplicate_reads: int,
) -> dict[tuple[str, str], int]:
    """What a journaled host step did to prepaid meters, for the metrics: (metric, label) → count.
    ``("prepaid_reads", outcome)``: debited, estimated, trued_up, rejected, duplicate;
    ``("emergency_credit", event)``: granted, recovered; ``("prepaid_disconnection_held", "")``: a cut at
    zero balance held by a no-disconnection window. ``refused``: the step's refused and failed commands."""
    out: Counter[tuple[str, str]] = Counter()
    for _, e in events:
        kind = type(e)
        if kind not in _TALLIED:
            continue
        if kind is ConsumptionDebited:
            assert isinstance(e, ConsumptionDebited)
            outcome = "estimated" if e.estimated else "trued_up" if e.replaces is not None else "debited"
            out["prepaid_reads", outcome] += 1
        elif kind is EmergencyCreditGranted:
            out["emergency_credit", "granted"] += 1
        elif kind is EmergencyCreditRecovered:
            out["emergency_credit", "recovered"] += 1
        else:
            m = states.get(e.account)
            if m is not None and m.prepaid is not None:
                out["prepaid_disconnection_held", ""] += 1
    rejected = sum(1 for c, _ in refused if type(c) is ReportConsumption)
    if rejected:
        out["prepaid_reads", "rejected"] += rejected
    if duplicate_reads:
        out["prepaid_reads", "duplicate"] += duplicate_reads
    return dict(out)


_RECHARGES = frozenset({PaymentApplied, PaymentReconnect})


def recharges_off_rule(
    events: Iterable[tuple[int, MeterEvent]], states: Mapping[str, Meter], policy: Policy,
) -> list[tuple[str, str, str, str]]:
    """(rule, account, payment_id, why) for each recharge of a prepaid meter journaled in this step that is
    off KERC's recharge rule (multiples of Rs 100, at least a week's average use; rule "multiple" or
    "week_average"). Only ever flagged: the money is already credited in full (docs/prepaid.md,
    ``prepaid.recharge_rule``; refusing a gateway's captured money would lose a payment)."""
    if policy.prepaid_recharge_rule == "off":
        return []
    found = []
    for _, e in events:
        if type(e) not in _RECHARGES:
            continue
        assert isinstance(e, PaymentApplied | PaymentReconnect)
        m = states.get(e.account)
        if m is None or m.prepaid is None:
            continue
        why = recharge_warning(e.amount_paise, 7 * daily_charge_of(m.prepaid, policy), policy)
        if why is not None:
            found.append(("multiple" if "multiple" in why else "week_average", e.account, e.payment_id, why))
    return found
