"""Local calendar arithmetic for the rules: due dates, s.56 clear days, no-disconnection windows.

Time is always a parameter (epoch seconds, UTC); local dates and times use the policy's time zone.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from domain.policy import Policy

__all__ = [
    "allowed_until",
    "disconnection_allowed",
    "due_at_for",
    "local_date",
    "local_instant",
    "next_allowed_at",
    "notice_matures_at",
]


def local_date(t: int, policy: Policy) -> date:
    """The local calendar date at epoch second ``t``."""
    return datetime.fromtimestamp(t, policy.zone).date()


def local_instant(day: date, minute: int, policy: Policy) -> int:
    """Epoch seconds of local ``day`` plus ``minute`` minutes (1440 = the next midnight)."""
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
    return int(naive.replace(tzinfo=policy.zone).timestamp())


@lru_cache(maxsize=4096)
def _due_at(due_date: str, zone_key: str) -> int:
    day = date.fromisoformat(due_date) + timedelta(days=1)
    return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone_key)).timestamp())


def due_at_for(due_date: str, policy: Policy) -> int:
    """First second after the due date (local midnight ending it): paid before it is paid on time,
    and from it on the bill is overdue. Cached: a billing batch shares a handful of due dates."""
    return _due_at(due_date, policy.timezone)


def notice_matures_at(served_at: int, policy: Policy) -> int:
    """Earliest instant a disconnection may follow a notice served at ``served_at`` (s.56(1)).

    "Clear days" exclude both the day of service and the day of disconnection: a notice served on
    local day D with 15 clear days allows disconnection from local midnight starting day D + 16.
    The no-disconnection windows then apply on top (see `next_allowed_at`).
    """
    day = local_date(served_at, policy) + timedelta(days=policy.disconnection_notice_clear_days + 1)
    return local_instant(day, 0, policy)


def _day_off(day: date, policy: Policy) -> bool:
    return day.weekday() in policy.weekday_off_set or day.isoformat() in policy.holiday_set


def next_allowed_at(t: int, policy: Policy) -> int:
    """The earliest instant >= ``t`` outside every no-disconnection window (nights, days off)."""
    today = local_date(t, policy)
    # Consecutive days off are bounded by 6 weekdays plus every listed holiday.
    for offset in range(len(policy.holiday_set) + 8):
        day = today + timedelta(days=offset)
        if _day_off(day, policy):
            continue
        for start, end in policy.allowed_minutes:
            if t < local_instant(day, end, policy):
                return max(t, local_instant(day, start, policy))
    raise AssertionError("Policy guarantees at least one working day a week")  # pragma: no cover


def disconnection_allowed(t: int, policy: Policy) -> bool:
    """True if an automatic disconnection may be issued at ``t``."""
    return next_allowed_at(t, policy) == t


def allowed_until(t: int, policy: Policy) -> int:
    """End of the allowed period containing ``t`` (``t`` itself if ``t`` is inside a window).

    Automatic disconnect commands expire by then, so a slow head-end cannot cut supply at night.
    """
    day = local_date(t, policy)
    if _day_off(day, policy):
        return t
    for start, end in policy.allowed_minutes:
        if local_instant(day, start, policy) <= t < local_instant(day, end, policy):
            return local_instant(day, end, policy)
    return t
