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

A read's usual work needs no rows (issue 16: CPU per read): `parsed` reads the header once, and the
`Packed` it gives says the newest day, a month's Wh and day count (`month_totals`), and whether a read id
is a row's; `appended` adds a row after the newest day in place (dropping a closed month when the row
is a month's first) — the bytes `pack` would give for the rows kept, so a state is the same whichever
way it was built (tests/unit/test_prepaid_days.py).
"""

from __future__ import annotations

import sys
from array import array
from calendar import monthrange
from collections.abc import Sequence
from datetime import date, timedelta
from functools import lru_cache

__all__ = ["Packed", "Row", "appended", "month_name", "pack", "parsed", "unpack"]

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
    n = data[at]
    if n < 0x80:  # most are one byte (the lengths, the masks of a meter with no estimate)
        return n, at + 1
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


# ------------------------------------------------------------------ reading and appending without the rows


class Packed:
    """The header of packed days, parsed: enough for a read's debit without making the rows."""

    __slots__ = ("data", "est", "heads", "length0", "masks_at", "month", "names", "odd", "odd_at", "prefix",
                 "read", "whs_at", "width")

    def __init__(self, data: bytes) -> None:
        if data[0] != _VERSION:
            raise ValueError(f"prepaid days: unknown layout version {data[0]}")
        self.data = data
        self.month, at = _read_varint(data, 1)
        n, at = _read_varint(data, at)
        self.prefix = data[at : at + n].decode()
        self.masks_at = at = at + n
        self.read, at = _read_varint(data, at)
        self.est, at = _read_varint(data, at)
        self.odd, at = _read_varint(data, at)
        self.width = chr(data[at])
        self.whs_at = at + 1
        self.odd_at = self.whs_at + self.read.bit_count() * _SIZE[self.width]
        self.names, self.length0, self.heads = _months(self.month)

    def newest(self) -> int:
        """The bit of the newest day."""
        return self.read.bit_length() - 1

    def newest_month(self) -> int:
        """The month index (year * 12 + month - 1) of the newest day."""
        k = self.newest()
        if k < len(self.names):
            return self.month if k < self.length0 else self.month + 1
        d = date.fromisoformat(self.day(k))
        return d.year * 12 + d.month - 1

    def day(self, k: int) -> str:
        """The ISO day of bit ``k``."""
        if k < len(self.names):
            return self.names[k]
        return (date(self.month // 12, self.month % 12 + 1, 1) + timedelta(days=k)).isoformat()

    def bit(self, day: str) -> int | None:
        """The bit of ``day`` if it is in the two months from the first row's (None otherwise)."""
        head, dd = day[:8], day[8:]
        if not dd.isdigit():
            return None
        k = (int(dd) - 1 if head == self.heads[0] else self.length0 + int(dd) - 1 if head == self.heads[1]
             else -1)
        return k if 0 <= k < len(self.names) and self.names[k] == day else None

    def month_totals(self, month: str) -> tuple[int, int]:
        """(Wh, days) of the rows of ``month`` ("YYYY-MM")."""
        lo, hi = _month_bits(self.month, int(month[:4]) * 12 + int(month[5:7]) - 1)
        mask = self.read & ((1 << hi) - (1 << lo))
        if not mask:
            return 0, 0
        first = (self.read & ((1 << lo) - 1)).bit_count()
        n = mask.bit_count()
        size = _SIZE[self.width]
        whs = self.data[self.whs_at + first * size : self.whs_at + (first + n) * size]
        if sys.byteorder == "little":
            return sum(memoryview(whs).cast("H" if self.width == "H" else "I")), n
        a = array(self.width, whs)  # pragma: no cover - stored little-endian
        a.byteswap()  # pragma: no cover
        return sum(a), n  # pragma: no cover

    def has_id(self, read_id: str) -> bool:
        """Is ``read_id`` a row's, as far as the two months from the first row's go (a row past them is
        not looked for)?"""
        if self.has_odd_id(read_id):
            return True
        day, head = read_id[-10:], read_id[:-10]
        if head != self.prefix and head != _EST:
            return False
        k = self.bit(day)
        if k is None or not self.read >> k & 1 or self.odd >> k & 1:
            return False
        return head == (_EST if self.est >> k & 1 else self.prefix)

    def has_odd_id(self, read_id: str) -> bool:
        """Is ``read_id`` one of the ids stored in full?"""
        if not self.odd:
            return False
        want, data, at = read_id.encode(), self.data, self.odd_at
        for _ in range(self.odd.bit_count()):
            n, at = _read_varint(data, at)
            if data[at : at + n] == want:
                return True
            at += n
        return False


_SIZE = {"H": array("H").itemsize, "I": array("I").itemsize}


@lru_cache(maxsize=64)
def month_name(month: int) -> str:
    """"YYYY-MM" of a month index (year * 12 + month - 1)."""
    return f"{month // 12:04d}-{month % 12 + 1:02d}"


@lru_cache(maxsize=32)
def _months(month: int) -> tuple[tuple[str, ...], int, tuple[str, str]]:
    """For days packed from month index ``month``: the names of the two months' days, the first's
    length, and their "YYYY-MM-" heads."""
    base = date(month // 12, month % 12 + 1, 1)
    names = _day_names(base)
    return names, monthrange(base.year, base.month)[1], (names[0][:8], names[-1][:8])


@lru_cache(maxsize=64)
def _month_bits(first: int, month: int) -> tuple[int, int]:
    """[lo, hi): the bits of month index ``month`` in days packed from month index ``first``."""
    if month < first:
        return 0, 0
    base = date(first // 12, first % 12 + 1, 1)
    start = date(month // 12, month % 12 + 1, 1)
    lo = (start - base).days
    return lo, lo + monthrange(start.year, start.month)[1]


#: bytes -> their parsed header, for the last few meters (the decision on a read parses its meter's days,
#: the fold of its event finds them here)
_PARSED: dict[bytes, Packed] = {}
_PARSED_MAX = 64


def parsed(data: bytes) -> Packed:
    """``data``'s header (``data`` not empty; only bytes jodo wrote)."""
    p = _PARSED.get(data)
    if p is None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        p = _PARSED[data] = Packed(data)
    return p


def appended(data: bytes, row: Row) -> bytes | None:
    """``data``'s rows and ``row`` after them, without the months before the month before ``row``'s (what
    `domain.prepaid.kept_days` keeps), packed as `pack` would: made in place when ``row`` comes after the
    newest day, its read id is canonical (``prefix + day``, or ``"est:" + day`` for an estimate) and its
    Wh fit the width, and either no month closes or one does and ``row`` is a real read of the second
    month after the first row's (the first read of a month). Otherwise None: then unpack and `pack`."""
    if not data:
        return None
    day, rid, wh, est = row
    v = parsed(data)
    if rid != (_EST if est else v.prefix) + day or not 0 <= wh < 1 << 8 * _SIZE[v.width]:
        return None
    k = v.bit(day)
    if k is None:
        return None if est else _rolled(v, day, wh)
    if k <= v.newest():
        return None
    bit = 1 << k
    out = bytearray(data[: v.masks_at])
    _varint(out, v.read | bit)
    _varint(out, v.est | bit if est else v.est)
    _varint(out, v.odd)
    out += data[v.whs_at - 1 : v.odd_at]  # the width byte and the Wh so far
    out += wh.to_bytes(_SIZE[v.width], "little")
    out += data[v.odd_at :]
    return bytes(out)


def _rolled(v: Packed, day: str, wh: int) -> bytes | None:
    """`appended` of a real read of the first row's month + 2, when the newest row is in month + 1 and
    every Wh is a u16: the first month's rows go, the rest shift down a month."""
    month = v.month + 1
    names, length, heads = _months(month)
    dd = day[8:]
    if day[:8] != heads[1] or not dd.isdigit() or v.width != "H":
        return None
    k = length + int(dd) - 1
    if not 0 <= k < len(names) or names[k] != day or not v.length0 <= v.newest() < len(v.names):
        return None
    shift = v.length0
    low = (1 << shift) - 1
    dropped = (v.read & low).bit_count()
    at = v.odd_at
    for _ in range((v.odd & low).bit_count()):  # skip the dropped rows' odd ids
        n, at = _read_varint(v.data, at)
        at += n
    out = bytearray((_VERSION,))
    _varint(out, month)
    p = v.prefix.encode()
    _varint(out, len(p))
    out += p
    _varint(out, v.read >> shift | 1 << k)
    _varint(out, v.est >> shift)
    _varint(out, v.odd >> shift)
    out.append(ord("H"))
    out += v.data[v.whs_at + dropped * _SIZE["H"] : v.odd_at]
    out += wh.to_bytes(_SIZE["H"], "little")
    out += v.data[at:]
    return bytes(out)
