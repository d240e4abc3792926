"""The days a prepaid meter keeps, packed into one `bytes` (issue 16: memory).

A prepaid meter keeps the days read in the current and the previous local month (domain/prepaid.py
`kept_days`): up to 62, each a day, a read id, its Wh and whether it is an estimate. As records they
cost ~41 bytes a day packed (~2.5 KB at a month's end); packed here, ~2 bytes a day plus the meter's
read-id prefix once. Nothing is dropped: `unpack` gives back exactly the rows `pack` was given, so
idempotency per read id and every debit are what they were (tests/unit/test_prepaid_days.py).

Layout (version 1), every integer an unsigned LEB128 varint unless said otherwise::

    u8 version (1) | month index of the first row (year * 12 + month - 1) | prefix length | prefix
    | read mask | estimated mask | odd-id mask | Wh of each row, in day order | each odd id: length, id

Bit ``k`` of a mask is the day ``k`` days after the 1st of the first row's month. A row's read id is
*canonical* when it is ``prefix + day`` (a real read; the prefix is the one most of the meter's real
read ids have, e.g. ``"{serial}:"`` for ``"{serial}:{read_date}"``) or ``"est:" + day`` (an estimate,
as `domain.prepaid.apply_read` names them); only the others ("odd") are stored in full, so read ids
of any shape still work, they just cost their length.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, timedelta

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
    c = Counter(rid[:-10] for day, rid, _, est in rows if not est and rid.endswith(day))
    return c.most_common(1)[0][0] if c else ""


def pack(rows: Sequence[Row]) -> bytes:
    """``rows`` (sorted by day, one per day) as bytes; ``b""`` for none."""
    if not rows:
        return b""
    first = date.fromisoformat(rows[0][0])
    base = date(first.year, first.month, 1)
    prefix = _prefix(rows)
    read = est_mask = odd_mask = 0
    odd: list[bytes] = []
    whs = bytearray()
    last = -1
    for day, rid, wh, est in rows:
        k = (date.fromisoformat(day) - base).days
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
        _varint(whs, wh)
    out = bytearray((_VERSION,))
    _varint(out, base.year * 12 + base.month - 1)
    p = prefix.encode()
    _varint(out, len(p))
    out += p
    for mask in (read, est_mask, odd_mask):
        _varint(out, mask)
    out += whs
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
    days: list[tuple[str, bool, bool]] = []
    k = 0
    while read:
        if read & 1:
            bit = 1 << k
            days.append(((base + timedelta(days=k)).isoformat(), bool(est_mask & bit), bool(odd_mask & bit)))
        read >>= 1
        k += 1
    whs: list[int] = []
    for _ in days:
        wh, at = _read_varint(data, at)
        whs.append(wh)
    rows: list[Row] = []
    for (day, est, is_odd), wh in zip(days, whs, strict=True):
        if is_odd:
            n, at = _read_varint(data, at)
            rid = data[at : at + n].decode()
            at += n
        else:
            rid = (_EST if est else prefix) + day
        rows.append((day, rid, wh, est))
    return rows
