"""A prepaid meter's money (issue 16), as pure functions over a small frozen record.

Not yet wired into the meter entity (domain/meter.py refuses the prepaid commands until it is): this is
the arithmetic the entity will fold, tested on its own (tests/property/test_prepaid_ledger.py).

Pricing a month's reads: a month's charge is a function of the *set* of days read in it (the energy
of those days priced by slab on their sum, duty on that, a fixed charge per day read), and each read
debits ``charge(days with it) - charge(days without it)``. So the balance after any set of reads is
the same whatever order they arrived in (the differences telescope), a duplicate read id is a no-op,
and a real read for a day that had an estimate debits the difference (the true-up).

Gaps: a read for a day after missing days first charges each missing day an estimate (the mean of
the last real reads, floored to the Wh), marked ``estimated``; the real read, when it comes, replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

from domain.policy import Policy
from domain.tariff import month_duty_paise, month_energy_paise

__all__ = [
    "DayRead",
    "Debit",
    "PrepaidAccount",
    "apply_read",
    "grant_emergency",
    "month_charge_paise",
    "open_account",
    "recharge",
]

#: Real reads the estimate averages over; and how many past days a gap is filled for at most.
RECENT_READS = 7
MAX_GAP_DAYS = 31


@dataclass(frozen=True, slots=True, kw_only=True)
class DayRead:
    day: str  # ISO local date
    read_id: str
    energy_wh: int
    estimated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepaidAccount:
    balance_paise: int
    emergency_outstanding_paise: int = 0
    emergency_period: str | None = None  # "YYYY-MM" of the last emergency credit granted
    days: tuple[DayRead, ...] = ()  # sorted by day; one per day
    recent_payment_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Debit:
    """One read's debit (or an estimate's): ``debit_paise`` is what the balance moved down by."""

    read_id: str
    day: str
    energy_wh: int
    debit_paise: int
    estimated: bool
    replaces: str | None = None


def open_account(opening_balance_paise: int) -> PrepaidAccount:
    return PrepaidAccount(balance_paise=opening_balance_paise)


def month_charge_paise(days: tuple[DayRead, ...] | list[DayRead], month: str, policy: Policy) -> int:
    """What the days of ``month`` ("YYYY-MM") read so far cost together."""
    wh = n = 0
    for d in days:
        if d.day.startswith(month):
            wh += d.energy_wh
            n += 1
    return (month_energy_paise(wh, policy) + month_duty_paise(wh, policy)
            + n * policy.prepaid_fixed_charge_paise_per_day)


def _estimate_wh(days: list[DayRead]) -> int:
    real = [d.energy_wh for d in days if not d.estimated][-RECENT_READS:]
    return sum(real) // len(real) if real else 0


def _put(days: list[DayRead], new: DayRead, policy: Policy) -> tuple[int, str | None]:
    """Insert or replace ``new`` in ``days`` (sorted); (debit, replaced estimate's read id)."""
    month = new.day[:7]
    before = month_charge_paise(days, month, policy)
    replaced: str | None = None
    for i, d in enumerate(days):
        if d.day == new.day:
            replaced = d.read_id
            days[i] = new
            break
    else:
        days.append(new)
        days.sort(key=lambda d: d.day)
    return month_charge_paise(days, month, policy) - before, replaced


def apply_read(
    account: PrepaidAccount, read_id: str, day: str, energy_wh: int, policy: Policy
) -> tuple[PrepaidAccount, tuple[Debit, ...]]:
    """Debit one real read. A read id seen before, or a second real read for a day, changes nothing."""
    date.fromisoformat(day)  # a bad date is the caller's ValueError
    by_day = {d.day: d for d in account.days}
    if any(d.read_id == read_id for d in account.days):
        return account, ()
    old = by_day.get(day)
    if old is not None and not old.estimated:
        return account, ()  # the day is read already (under another id): the first read stands
    days = list(account.days)
    debits: list[Debit] = []
    last_real = max((d.day for d in days if not d.estimated), default=None)
    if last_real is not None and last_real < day:
        gap_from = max(date.fromisoformat(last_real) + timedelta(days=1),
                       date.fromisoformat(day) - timedelta(days=MAX_GAP_DAYS))
        est = _estimate_wh(days)
        g = gap_from
        while g.isoformat() < day:
            iso = g.isoformat()
            if iso not in by_day:
                e = DayRead(day=iso, read_id=f"est:{iso}", energy_wh=est, estimated=True)
                debit, _ = _put(days, e, policy)
                debits.append(Debit(read_id=e.read_id, day=iso, energy_wh=est, debit_paise=debit,
                                    estimated=True))
            g += timedelta(days=1)
    debit, replaced = _put(days, DayRead(day=day, read_id=read_id, energy_wh=energy_wh), policy)
    debits.append(Debit(read_id=read_id, day=day, energy_wh=energy_wh, debit_paise=debit, estimated=False,
                        replaces=replaced))
    total = sum(d.debit_paise for d in debits)
    return replace(account, balance_paise=account.balance_paise - total, days=tuple(days)), tuple(debits)


def grant_emergency(account: PrepaidAccount, period: str, policy: Policy) -> tuple[PrepaidAccount, int]:
    """Emergency credit: once per period and only with none outstanding; (account, amount granted)."""
    amount = policy.prepaid_emergency_credit_paise
    if amount == 0 or account.emergency_period == period or account.emergency_outstanding_paise > 0:
        return account, 0
    return replace(account, balance_paise=account.balance_paise + amount,
                   emergency_outstanding_paise=amount, emergency_period=period), amount


def recharge(
    account: PrepaidAccount, payment_id: str, amount_paise: int, kept: int = 4
) -> tuple[PrepaidAccount, int]:
    """Credit a recharge once per payment id; outstanding emergency credit is recovered from it first.
    (account, emergency credit recovered). The balance rises by the whole amount minus the recovery:
    a negative balance is thereby recovered before anything is left to spend."""
    if payment_id in account.recent_payment_ids:
        return account, 0
    recovered = min(amount_paise, account.emergency_outstanding_paise)
    return replace(
        account,
        balance_paise=account.balance_paise + amount_paise - recovered,
        emergency_outstanding_paise=account.emergency_outstanding_paise - recovered,
        recent_payment_ids=(*account.recent_payment_ids, payment_id)[-kept:],
    ), recovered
