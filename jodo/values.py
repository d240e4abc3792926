"""How a person writes a value, parsed one way everywhere one is typed: `jodo inject`, the inject API
(``POST /v1/admin/inject``) and `jodo import` CSV files.

=========  ==========================================================================================
money      integer paise: ``150000`` (Rs 1,500.00); ``1500.00`` is refused, never rounded
boolean    ``true/false``, ``yes/no``, ``1/0`` (any case; ``y``/``n`` too)
date       ISO ``2026-12-21``, or unix seconds (the IST date of that moment)
date-time  unix seconds ``1765000000``, or ISO 8601 ``2026-12-07T10:30`` (no offset means IST;
           ``+05:30``, ``Z`` are honoured); a bare date is its midnight, IST
integer    ``42`` (digits, optional minus)
duration   ``90s``, ``30m``, ``12h``, ``16d`` (or plain seconds ``3600``)
=========  ==========================================================================================

Every parser takes what a person typed (a string) or what a JSON client sent (a number, a boolean)
and returns the typed value, or raises `BadValue` saying what was wrong; callers add the field name
and an accepted example (`jodo.schema`, `jodo.csvimport`).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

__all__ = [
    "EARLIEST",
    "IST",
    "LATEST",
    "BadValue",
    "parse_bool",
    "parse_date",
    "parse_datetime",
    "parse_duration",
    "parse_int",
    "parse_paise",
]

IST = timezone(timedelta(hours=5, minutes=30), "IST")
EARLIEST = 946_684_800  # 2000-01-01 UTC: an earlier timestamp is a unit mistake
LATEST = 4_102_444_800  # 2100-01-01 UTC: a later one is milliseconds, not seconds
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_DECIMAL = re.compile(r"-?[0-9]+\.[0-9]+")
_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


class BadValue(ValueError):
    """A value that does not parse; the message says why, without the field name (the caller adds it)."""


def _shown(value: Any) -> str:
    return repr(value[:40]) if isinstance(value, str) else repr(value)


def _int_of(value: Any, what: str = "an integer") -> int:
    if isinstance(value, bool):
        raise BadValue(f"{value!r} is not {what}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise BadValue(f"{_shown(value)} is not {what}")


def parse_int(value: Any, lo: int | None = None, hi: int | None = None, unit: str = "") -> int:
    """An integer, optionally within ``lo..hi``."""
    number = _int_of(value)
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
        raise BadValue(f"{number} is out of range {bounds}{' ' + unit if unit else ''}")
    return number


def parse_paise(value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Money: integer paise. A decimal (``120.50``, or the float 120.5) is refused with the paise it
    would be, so the person sees the unit at once; nothing is ever rounded."""
    if isinstance(value, float) or (isinstance(value, str) and _DECIMAL.fullmatch(value.strip())):
        text = str(value).strip()
        rupees, _, fraction = text.lstrip("-").partition(".")
        hint = ""
        if len(fraction) <= 2:
            paise = int(rupees or "0") * 100 + int(fraction.ljust(2, "0"))
            hint = f" (Rs {text} is {'-' if text.startswith('-') else ''}{paise} paise)"
        raise BadValue(f"{_shown(value)} is not whole paise: money is integer paise{hint}")
    try:
        number = _int_of(value, "an integer number of paise")
    except BadValue:
        raise BadValue(f"{_shown(value)} is not an integer number of paise") from None
    return parse_int(number, lo, hi, "paise")


def parse_bool(value: Any) -> bool:
    """``true/false/yes/no/1/0`` (any case), or a JSON boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise BadValue(f"{_shown(value)} is not a boolean (true/false, yes/no, 1/0)")


def parse_date(value: Any) -> date:
    """An ISO date, or unix seconds (the date in IST of that moment)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.strip().isdigit()
    ):
        seconds = _int_of(value)
        if not EARLIEST <= seconds <= LATEST:
            raise BadValue(f"{seconds} is not unix seconds between 2000 and 2100")
        return datetime.fromtimestamp(seconds, UTC).astimezone(IST).date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise BadValue(f"{_shown(value)} is neither an ISO date (YYYY-MM-DD) nor unix seconds")


def parse_datetime(value: Any, *, latest: float | None = None) -> int:
    """Unix seconds, or an ISO 8601 date-time (no offset: IST; a bare date: its midnight, IST).

    Refused before 2000, and after ``latest`` (unix seconds; default 2100): a unit mistake."""
    top = LATEST if latest is None else latest
    if (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.strip().isdigit()
    ):
        seconds = _int_of(value)
        if not EARLIEST <= seconds <= top:
            raise BadValue(f"{seconds} is not unix seconds between 2000 and {_when(top)}")
        return seconds
    if not isinstance(value, str):
        raise BadValue(f"{_shown(value)} is neither unix seconds nor an ISO 8601 date-time")
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise BadValue(f"{_shown(value)} is neither unix seconds nor an ISO 8601 date-time") from None
    seconds = int((moment if moment.tzinfo else moment.replace(tzinfo=IST)).timestamp())
    if not EARLIEST <= seconds <= top:
        raise BadValue(f"{_shown(value)} is before 2000 or after {_when(top)}")
    return seconds


def parse_duration(value: Any) -> int:
    """Seconds: ``90s``, ``30m``, ``12h``, ``16d``, or a plain number of seconds (at most 100 years)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _DURATION.fullmatch(value.strip().lower()) if isinstance(value, str) else None
        if match is None:
            raise BadValue(f"{_shown(value)} is not a duration (90s, 30m, 12h, 16d, or seconds)")
        seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 <= seconds <= 100 * 365 * 86_400:
        raise BadValue(f"{seconds} s is not a duration between 0 and 100 years")
    return seconds


def _when(seconds: float) -> str:
    if seconds >= LATEST:
        return "2100"
    return datetime.fromtimestamp(seconds, IST).strftime("%Y-%m-%d %H:%M IST")
