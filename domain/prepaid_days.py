"""The days a prepaid meter keeps, packed into one `bytes` (issue 16: memory).

A prepaid meter keeps the days read in the current and the previous local month (domain/prepaid.py
`kept_days`): up to 62, each a day, a read id, its Wh and whether it is an estimate. As records they
cost ~41 bytes a day packed (~2.5 KB at a month's end); packed here, ~2 bytes a day plus the meter's
read-id prefix once (a day's Wh is a u16 unless one of the meter's days needs a u32). Nothing is
dropped: `unpack` gives back exactly the rows `pack` was given, so idempotency per read id and every
debit are what they were (tests/unit/test_meter_prepaid.py).

Layout (version 1), every integer an unsigned LEB128 varint unless said otherwise::

    u8 version (1) | month index of the first row (year * 12 + month - 1) | prefix length | prefix
    | read mask | estimated mask | odd-id mask | u8 'H' or 'I' | Wh of each row, in day order, u16 or
    u32 little-endian (u16 when every day fits) | each odd id: length, id

Bit ``k`` of a mask is the day ``k`` days after the 1st of the first row's month. A row's read id is
*canonical* when it is ``prefix + day`` (a real read; the prefix is that of the newest real read
id ending with its day, e.g. ``"{serial}:"`` for ``"{serial}:{read_date}"``) or ``"est:" + day`` (an
estimate, as `domain.prepaid.apply_read` names them); only the others ("odd") are stored in full, so read ids
of any shape still work, they just cost their length.
"""

from __future__ import annotations

import sys
from array import array
from calendar import monthrange
from collections.abc import Sequence
from datetime import date, timedelta
from functools import lru_cache

__all__ = ["Row", "pack", "unpack"]

#: (ISO day, read id, Wh, estimated), sorted by day, one per day.
Row = tuple[str, str, int, bool]

_VERSION = 1
_EST = "est:"


def _varint(out: bytearray, n: int) -> None:
    if n < 0:
        raise ValueError(f"cannot pack a negative number ({n}) into prepaid days")
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[at]
        at += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, at
        shift += 7


def _prefix(rows: Sequence[Row]) -> str:
    """The prefix of the newest real read id that ends with its day ("" if none does)."""
    for day, rid, _, est in reversed(rows):
        if not est and rid.endswith(day):
            return rid[:-10]
    return ""


def _le(a: array[int]) -> bytes:
    if sys.byteorder != "little":  # pragma: no cover - stored little-endian
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _next_month(d: date) -> date:
    return date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)


@lru_cache(maxsize=32)
def _day_names(base: date) -> tuple[str, ...]:
    """The ISO names of the days of ``base``'s month and the next one (what the masks' bits mostly are)."""
    n = monthrange(base.year, base.month)[1] + monthrange(_next_month(base).year, _next_month(base).month)[1]
    return tuple((base + timedelta(days=k)).isoformat() for k in range(n))


def pack(rows: Sequence[Row]) -> bytes:
    """``rows`` (sorted by day, one per day) as bytes; ``b""`` for none."""
    if not rows:
        return b""
    first = date.fromisoformat(rows[0][0])
    base = date(first.year, first.month, 1)
    month0, month1 = rows[0][0][:8], _next_month(base).isoformat()[:8]  # "YYYY-MM-" of the two months
    length0 = monthrange(base.year, base.month)[1]
    prefix = _prefix(rows)
    read = est_mask = odd_mask = 0
    odd: list[bytes] = []
    whs: list[int] = []
    last = -1
    for day, rid, wh, est in rows:
        head = day[:8]  # the common case without a date object: a day of the first month or the next
        k = (int(day[8:]) - 1 if head == month0 else length0 + int(day[8:]) - 1 if head == month1
             else (date.fromisoformat(day) - base).days)
        if k <= last:
            raise ValueError(f"prepaid days out of order or repeated at {day}")
        last = k
        bit = 1 << k
        read |= bit
        if est:
            est_mask |= bit
        if rid != (_EST if est else prefix) + day:
            odd_mask |= bit
            odd.append(rid.encode())
        whs.append(wh)
    out = bytearray((_VERSION,))
    _varint(out, base.year * 12 + base.month - 1)
    p = prefix.encode()
    _varint(out, len(p))
    out += p
    for mask in (read, est_mask, odd_mask):
        _varint(out, mask)
    if min(whs) < 0:
        raise ValueError(f"cannot pack a negative energy ({min(whs)} Wh) into prepaid days")
    width = "H" if max(whs) <= 0xFFFF else "I"  # a household's day: 2 bytes
    out.append(ord(width))
    out += _le(array(width, whs))
    for o in odd:
        _varint(out, len(o))
        out += o
    return bytes(out)


def unpack(data: bytes) -> list[Row]:
    """The rows `pack` was given (only for bytes jodo wrote: no check beyond the version)."""
    if not data:
        return []
    if data[0] != _VERSION:
        raise ValueError(f"prepaid days: unknown layout version {data[0]}")
    month, at = _read_varint(data, 1)
    n, at = _read_varint(data, at)
    prefix = data[at : at + n].decode()
    at += n
    read, at = _read_varint(data, at)
    est_mask, at = _read_varint(data, at)
    odd_mask, at = _read_varint(data, at)
    base = date(month // 12, month % 12 + 1, 1)
    names = _day_names(base)
    bits = [k for k, c in enumerate(bin(read)[:1:-1]) if c == "1"]
    if bits[-1] >= len(names):  # days beyond the two months (only ever in hand-made rows)
        names = tuple((base + timedelta(days=k)).isoformat() for k in range(bits[-1] + 1))
    width = chr(data[at])
    whs = array(width)
    end = at + 1 + len(bits) * whs.itemsize
    whs.frombytes(data[at + 1 : end])
    if sys.byteorder != "little":  # pragma: no cover - stored little-endian
        whs.byteswap()
    at = end
    if not est_mask and not odd_mask:  # every day a real read with a canonical id: the common case
        return [(names[k], prefix + names[k], wh, False) for k, wh in zip(bits, whs, strict=True)]
    rows: list[Row] = []
    for k, wh in zip(bits, whs, strict=True):
        day, est, is_odd = names[k], bool(est_mask >> k & 1), bool(odd_mask >> k & 1)
        if is_odd:
            n, at = _read_varint(data, at)
            rid = data[at : at + n].decode()
            at += n
        else:
            rid = (_EST if est else prefix) + day
        rows.append((day, rid, wh, est))
    return rows
