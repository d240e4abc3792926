"""A prepaid meter's money (issue 16), as pure functions over a small frozen record.

The meter entity (domain/meter.py, domain/prepaid_rules.py) builds a `PrepaidAccount` from its state
(`account_of`), folds these, and emits the debits as events; the arithmetic is tested on its own too
(tests/property/test_prepaid_ledger.py).

Pricing a month's reads: a month's charge is a function of the *set* of days read in it (the energy
of those days priced by slab on their sum, duty on that, a fixed charge per day read), and each read
debits ``charge(days with it) - charge(days without it)``. So the balance after any set of reads is
the same whatever order they arrived in (the differences telescope), a duplicate read id is a no-op,
and a real read for a day that had an estimate debits the difference (the true-up).

Gaps: a read for a day after missing days first charges each missing day an estimate (the mean of
the last real reads, floored to the Wh), marked ``estimated``; the real read, when it comes, replaces it.

The usual read (issue 16: CPU per read) — a real read of the day after the newest day read — is priced
and kept on the packed days themselves (`next_day_debit`, `with_read`, domain/prepaid_days.py `Packed`):
no rows are unpacked, nothing is sorted or repacked; a redelivered read is known as one the same way
(`already_read`). They give what `apply_read` and the general fold give (tests/unit/test_prepaid_days.py);
every other read (late, after a gap, a true-up) takes the general path.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import date, timedelta

from domain import prepaid_days
from domain.policy import Policy
from domain.state import DayRead, Meter, PrepaidState, packed_days
from domain.tariff import month_parts

__all__ = [
    "DayRead",
    "Debit",
    "PrepaidAccount",
    "account_of",
    "already_read",
    "apply_read",
    "balance_band",
    "daily_charge_of",
    "daily_charge_paise",
    "grant_emergency",
    "kept_days",
    "month_charge_paise",
    "month_parts_paise",
    "next_day_debit",
    "oldest_open_month",
    "oldest_open_month_of",
    "open_account",
    "recharge",
    "with_days",
    "with_read",
]

#: Real reads the estimate averages over; and how many past days a gap is filled for at most.
RECENT_READS = 7
MAX_GAP_DAYS = 31


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
    energy_paise: int = 0  # the parts of ``debit_paise`` (each a difference of the month's part)
    fixed_paise: int = 0
    duty_paise: int = 0


def open_account(opening_balance_paise: int) -> PrepaidAccount:
    return PrepaidAccount(balance_paise=opening_balance_paise)


def month_parts_paise(
    days: tuple[DayRead, ...] | list[DayRead], month: str, policy: Policy
) -> tuple[int, int, int]:
    """(energy, fixed, duty) the days of ``month`` ("YYYY-MM") read so far cost together."""
    wh = n = 0
    for d in days:
        if d.day.startswith(month):
            wh += d.energy_wh
            n += 1
    return month_parts(wh, n, policy)


def month_charge_paise(days: tuple[DayRead, ...] | list[DayRead], month: str, policy: Policy) -> int:
    """What the days of ``month`` ("YYYY-MM") read so far cost together."""
    return sum(month_parts_paise(days, month, policy))


def _estimate_wh(days: list[DayRead]) -> int:
    real = [d.energy_wh for d in days if not d.estimated][-RECENT_READS:]
    return sum(real) // len(real) if real else 0


def _put(days: list[DayRead], new: DayRead, policy: Policy) -> tuple[tuple[int, int, int], str | None]:
    """Insert or replace ``new`` in ``days`` (sorted); ((energy, fixed, duty) debited, replaced
    estimate's read id)."""
    month = new.day[:7]
    before = month_parts_paise(days, month, policy)
    replaced: str | None = None
    for i, d in enumerate(days):
        if d.day == new.day:
            replaced = d.read_id
            days[i] = new
            break
    else:
        days.append(new)
        days.sort(key=lambda d: d.day)
    after = month_parts_paise(days, month, policy)
    return (after[0] - before[0], after[1] - before[1], after[2] - before[2]), replaced


def _debit(read: DayRead, parts: tuple[int, int, int], replaces: str | None = None) -> Debit:
    return Debit(read_id=read.read_id, day=read.day, energy_wh=read.energy_wh, debit_paise=sum(parts),
                 estimated=read.estimated, replaces=replaces, energy_paise=parts[0], fixed_paise=parts[1],
                 duty_paise=parts[2])


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
                parts, _ = _put(days, e, policy)
                debits.append(_debit(e, parts))
            g += timedelta(days=1)
    real = DayRead(day=day, read_id=read_id, energy_wh=energy_wh)
    parts, replaced = _put(days, real, policy)
    debits.append(_debit(real, parts, replaced))
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


# ------------------------------------------------------------------ what the meter entity needs


def account_of(m: Meter) -> PrepaidAccount:
    """A prepaid meter's ledger as `apply_read` takes it (balance = -dues)."""
    p = m.prepaid
    if p is None:
        raise ValueError(f"{m.account} is not prepaid")
    return PrepaidAccount(balance_paise=-m.dues_paise, days=p.days, emergency_period=p.emergency_period,
                          emergency_outstanding_paise=p.emergency_outstanding_paise)


def _previous_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"


def oldest_open_month(days: tuple[DayRead, ...]) -> str | None:
    """The oldest month a read may still be debited in: the month before the newest day read (a month
    older than that is closed: its days are no longer kept, so a late read for it is refused)."""
    return _previous_month(days[-1].day[:7]) if days else None


def kept_days(days: tuple[DayRead, ...]) -> tuple[DayRead, ...]:
    """``days`` without those of closed months (a meter keeps about two months of days, not years)."""
    oldest = oldest_open_month(days)
    if oldest is None or days[0].day[:7] >= oldest:
        return days
    return tuple(d for d in days if d.day[:7] >= oldest)


def with_days(p: PrepaidState, days: tuple[DayRead, ...]) -> PrepaidState:
    """``p`` keeping ``days`` (sorted, one per day), packed (domain/prepaid_days.py)."""
    return replace(p, legacy_days=(), reads=packed_days(days))


def with_read(p: PrepaidState, day: str, read_id: str, energy_wh: int, estimated: bool) -> PrepaidState:
    """``p`` keeping that day's read (replacing the day's row if it has one), closed months dropped."""
    if not p.legacy_days:
        reads = prepaid_days.appended(p.reads, (day, read_id, energy_wh, estimated))
        if reads is not None:  # the usual read: after the newest day
            return _with_reads(p, reads)
    days = [d for d in p.days if d.day != day]
    days.append(DayRead(day=day, read_id=read_id, energy_wh=energy_wh, estimated=estimated))
    days.sort(key=lambda d: d.day)
    return with_days(p, kept_days(tuple(days)))


_OTHER_FIELDS = tuple(f.name for f in fields(PrepaidState) if f.name != "reads")
_new = object.__new__
_set = object.__setattr__


def _with_reads(p: PrepaidState, reads: bytes) -> PrepaidState:
    """``replace(p, reads=reads)`` at a third of the cost (every field copied; no invariant is on
    ``reads``): a read's hot path."""
    new = _new(PrepaidState)
    for name in _OTHER_FIELDS:
        _set(new, name, getattr(p, name))
    _set(new, "reads", reads)
    return new


def _packed(p: PrepaidState) -> prepaid_days.Packed | None:
    return None if p.legacy_days or not p.reads else prepaid_days.parsed(p.reads)


def oldest_open_month_of(p: PrepaidState) -> str | None:
    """`oldest_open_month` of ``p``'s days, without unpacking them."""
    v = _packed(p)
    if v is not None:
        return prepaid_days.month_name(v.newest_month() - 1)
    return oldest_open_month(p.days)


def next_day_debit(
    p: PrepaidState, read_id: str, day: str, energy_wh: int, policy: Policy
) -> tuple[Debit, int] | None:
    """`apply_read`'s one debit for the usual read, priced on the packed days, and `daily_charge_paise`
    of the days with it: a real read of the day after the newest day kept, that one a real read too (so
    no gap to estimate, nothing to true up), under the meter's usual read id for the day (``prefix +
    day``: so not seen before). None for any other read: then `apply_read`."""
    v = _packed(p)
    if v is None:
        return None
    k = v.newest()
    if v.est >> k & 1 or read_id != v.prefix + day or v.day(k + 1) != day or v.has_odd_id(read_id):
        return None
    wh, n = v.month_totals(day[:7])
    before = month_parts(wh, n, policy)
    after = month_parts(wh + energy_wh, n + 1, policy)
    energy, fixed, duty = after[0] - before[0], after[1] - before[1], after[2] - before[2]
    debit = Debit(read_id=read_id, day=day, energy_wh=energy_wh, debit_paise=energy + fixed + duty,
                  estimated=False, energy_paise=energy, fixed_paise=fixed, duty_paise=duty)
    return debit, -(-sum(after) // (n + 1))  # the read's month is the newest now


def already_read(p: PrepaidState, read_id: str, day: str) -> bool:
    """Would `apply_read` change nothing, ``read_id`` being seen or ``day`` read already (a redelivered
    read), as far as the packed days tell? False: not known, `apply_read` decides."""
    v = _packed(p)
    if v is None:
        return False
    k = v.bit(day)
    if k is None:
        return False
    return bool(v.read >> k & 1 and not v.est >> k & 1) or v.has_id(read_id)


def daily_charge_of(p: PrepaidState, policy: Policy) -> int:
    """`daily_charge_paise` of ``p``'s days, without unpacking them."""
    v = _packed(p)
    if v is None:
        return daily_charge_paise(p.days, policy)
    wh, n = v.month_totals(v.day(v.newest())[:7])
    return -(-sum(month_parts(wh, n, policy)) // n)


def daily_charge_paise(days: tuple[DayRead, ...], policy: Policy) -> int:
    """What a day costs at recent consumption: the newest month's charge so far per day read."""
    if not days:
        return 0
    month = days[-1].day[:7]
    n = sum(1 for d in days if d.day.startswith(month))
    return -(-month_charge_paise(days, month, policy) // n)


def balance_band(balance_paise: int) -> str:
    """The `jodo_prepaid_meters` band of a balance (negative, zero_to_100, 100_to_500, 500_plus rupees)."""
    if balance_paise < 0:
        return "negative"
    if balance_paise < 10_000:
        return "zero_to_100"
    return "100_to_500" if balance_paise < 50_000 else "500_plus"
