"""Interval reads summed into day reads, at the edge (`jodo import reads` with interval columns).

A meter's intervals of one IST day (15-min, 30-min, or any whole-minute lengths, mixed) become one day
read, ``energy_wh`` their sum and read id ``"{account}:{day}"`` (the same file imported again is the
same reads, debited once), but only if they cover the day exactly: 00:00 to 24:00 IST, no gap, no
overlap. Anything else is refused with what is wrong and where: an interval crossing midnight, one
not on whole minutes, one overlapping another of that meter and day (the row), a day with gaps
(``missing 13:00-13:30``, at the day's first line).

Why here and not in the meter: a meter debits each read once by its read id, and the ids it keeps are
one per day (about 2 bytes a day packed, domain/prepaid_days.py); per-interval idempotency would
need every interval's id (48 or 96 a day) in every prepaid meter's state. So the meter core keeps
refusing a raw interval `ReportConsumption`, and the summing happens before the command exists.

Memory: one Python int (a 1 440-bit minute mask, ~200 B) and a few counters per meter-day in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from jodo.values import IST

__all__ = ["DAY_MINUTES", "DayIntervals", "IntervalDay", "day_end", "day_read_id", "interval_day"]

DAY_MINUTES = 24 * 60  # IST has no daylight saving: every day is 1 440 minutes
_FULL = (1 << DAY_MINUTES) - 1


def day_read_id(account: str, day: date) -> str:
    """The read id of a day summed from intervals: deterministic, so a re-import is a duplicate."""
    return f"{account}:{day.isoformat()}"


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def interval_day(start: int, end: int) -> tuple[date, int, int]:
    """The IST day of an interval (unix seconds) and its first and end minute in that day.
    Raises ValueError naming what is wrong: not after its start, not on whole minutes, crossing
    midnight IST (an interval may end at 00:00 of the next day, not after)."""
    if end <= start:
        raise ValueError("interval_end is not after interval_start")
    begin = datetime.fromtimestamp(start, IST)
    finish = datetime.fromtimestamp(end, IST)
    if start % 60 or end % 60:
        raise ValueError(f"interval {begin:%H:%M:%S}-{finish:%H:%M:%S} is not on whole minutes")
    day = begin.date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=IST)
    first = (start - int(midnight.timestamp())) // 60
    last = (end - int(midnight.timestamp())) // 60
    if last > DAY_MINUTES:
        raise ValueError(f"interval {begin:%Y-%m-%d %H:%M}-{finish:%Y-%m-%d %H:%M} crosses midnight IST: "
                         f"split it at 00:00")
    return day, first, last


@dataclass(slots=True)
class IntervalDay:
    """One meter's intervals of one day, as far as the file has them."""

    account: str
    day: date
    first_line: int
    last_line: int
    energy_wh: int = 0
    covered: int = 0  # bit m set: minute m of the day is covered by some interval
    rows: int = 0
    bad_rows: int = 0  # rows of this meter-day refused on their own (they make the day bad too)

    def gaps(self) -> list[tuple[int, int]]:
        """The uncovered stretches, as (first minute, end minute)."""
        if self.covered == _FULL:
            return []
        bits = format(self.covered, f"0{DAY_MINUTES}b")[::-1]  # bits[m] == "1": minute m is covered
        return [(m.start(), m.end()) for m in re.finditer("0+", bits)]


@dataclass(slots=True)
class DayIntervals:
    """Adds interval rows up per (account, day); `add` refuses a row, `finish` refuses a day."""

    days: dict[tuple[str, date], IntervalDay] = field(default_factory=dict)

    def add(
        self, line: int, account: str, start: int, end: int, energy_wh: int
    ) -> tuple[IntervalDay | None, str | None]:
        """Take one interval; returns its meter-day and None, or the meter-day (if known) and why the
        row is refused (its energy then counts nowhere, and its day is refused too)."""
        try:
            day, first, last = interval_day(start, end)
        except ValueError as exc:
            return None, str(exc)
        key = (account, day)
        d = self.days.get(key)
        if d is None:
            d = self.days[key] = IntervalDay(account=account, day=day, first_line=line, last_line=line)
        d.last_line = line
        d.rows += 1
        mask = ((1 << (last - first)) - 1) << first
        if d.covered & mask:
            d.bad_rows += 1
            clash = d.covered & mask
            lo = (clash & -clash).bit_length() - 1  # its first minute already covered
            return d, (f"interval {_hhmm(first)}-{_hhmm(last)} overlaps another interval of {account} on "
                       f"{day.isoformat()} (minute {_hhmm(lo)} is already covered)")
        d.covered |= mask
        d.energy_wh += energy_wh
        return d, None

    def problem(self, d: IntervalDay, max_wh: int) -> str | None:
        """Why the meter-day cannot be one day read, or None."""
        if d.bad_rows:
            return (f"{d.account} {d.day.isoformat()}: {d.bad_rows} of its intervals refused "
                    f"(see their lines)")
        gaps = d.gaps()
        if gaps:
            shown = ", ".join(f"{_hhmm(a)}-{_hhmm(b)}" for a, b in gaps[:3])
            more = f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
            return (f"{d.account} {d.day.isoformat()}: intervals do not cover the day "
                    f"(lines {d.first_line}-{d.last_line}): missing {shown}{more}")
        if d.energy_wh > max_wh:
            return (f"{d.account} {d.day.isoformat()}: the intervals add up to {d.energy_wh} Wh, "
                    f"above {max_wh}")
        return None


def day_end(day: date) -> int:
    """Unix seconds at the end of an IST day (00:00 of the next)."""
    nxt = day + timedelta(days=1)
    return int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=IST).timestamp())
