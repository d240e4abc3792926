"""The simulator's daily consumption reads: which days are still to be reported, made a frame at a time.

When an IST day ends (on the simulator's own clock, or when a lab clock is moved past midnight:
`DailyReads.report_until`), every meter's read for that day is queued; `frames` makes them lazily, at
most a few frames per call, so a 7.25 lakh-meter fleet's day (or several days after a lab-clock jump)
never sits in memory as records and never holds the simulator's loop for long. The energy is
`headend.sim.load.daily_wh` (seeded, deterministic) and the read id ``"{serial}:{day}"``: a day
reported twice is the same reads again, which the meter debits once.
"""

from __future__ import annotations

from collections import deque
from datetime import date, datetime, timedelta, timezone

from headend.sim.fleet import Fleet
from headend.sim.load import daily_wh, read_id
from protocols.headend import HesRead, HesReads

__all__ = ["IST", "MAX_CATCH_UP_DAYS", "DailyReads", "ist_day"]

IST = timezone(timedelta(hours=5, minutes=30), "IST")
# Days reported at most after a jump: a meter keeps the current and the previous month
# (domain.prepaid.kept_days) and estimates up to 31 missing days, so older days would be refused.
MAX_CATCH_UP_DAYS = 31


def ist_day(epoch: float) -> date:
    """The IST calendar day of an instant."""
    return datetime.fromtimestamp(epoch, IST).date()


class DailyReads:
    """Days queued for reporting, and the position reached in the day being reported."""

    def __init__(self, fleet: Fleet, seed: int, per_frame: int) -> None:
        self.fleet = fleet
        self.seed = seed
        self.per_frame = max(1, per_frame)
        self._days: deque[date] = deque()
        self._pos = 0  # next meter index of the first queued day
        self.reported_until: date | None = None  # days before this one were queued
        self.skipped_days = 0  # days beyond MAX_CATCH_UP_DAYS after a jump, never reported
        self.sent = 0

    def start(self, now: float) -> None:
        """Begin counting days at ``now``'s day (its reads are reported when it ends)."""
        if self.reported_until is None:
            self.reported_until = ist_day(now)

    def report_until(self, now: float) -> int:
        """Queue every day that ended by ``now`` and was not queued before; returns the days queued."""
        today = ist_day(now)
        first = self.reported_until
        if first is None or today <= first:
            self.reported_until = today if first is None else first
            return 0
        days = (today - first).days
        if days > MAX_CATCH_UP_DAYS:
            self.skipped_days += days - MAX_CATCH_UP_DAYS
            first = today - timedelta(days=MAX_CATCH_UP_DAYS)
            days = MAX_CATCH_UP_DAYS
        self._days.extend(first + timedelta(days=k) for k in range(days))
        self.reported_until = today
        return days

    @property
    def pending(self) -> bool:
        return bool(self._days) and self.fleet.size > 0

    def frames(self, max_frames: int) -> list[HesReads]:
        """Up to ``max_frames`` frames of reads, in day then meter order."""
        out: list[HesReads] = []
        fleet, seed, size = self.fleet, self.seed, self.fleet.size
        new = tuple.__new__
        while self._days and len(out) < max_frames:
            day = self._days[0]
            iso = day.isoformat()
            end = min(size, self._pos + self.per_frame)
            reads = []
            for i in range(self._pos, end):
                serial = fleet.serial(i)
                wh = daily_wh(seed, serial, day)
                reads.append(new(HesRead, (serial, read_id(serial, day), iso, wh, None)))
            if reads:
                out.append(HesReads(reads=tuple(reads)))
                self.sent += len(reads)
            self._pos = end
            if end >= size:
                self._days.popleft()
                self._pos = 0
        return out
