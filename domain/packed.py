"""A logical shard's packed meters in a few flat buffers: ~72 bytes a meter instead of ~200.

A dict of account → packed bytes costs three Python objects' worth per meter (the account str ~64 B,
the bytes ~96 B, the dict slot ~40 B: bench_fleet measured 197 B a meter, 3981ff4 + page cache
released). `PackedTable` keeps most meters in one *base*: every record ``u8 len(account) | account
(UTF-8) | u16 len(value) | value`` back to back in one `bytes`, found through two arrays in step sorted
by CRC-32 of the account (4 B each): a look-up is a bisection and a slice. Meters assigned since the
base was built stay in a dict (*hot*) in front of it; `compact` folds them in (a snapshot does it, so
the table shrinks back whenever the shard is saved). A value that is not `bytes`, or too long for the
record, stays hot: the table works for any packing.

The base is what a snapshot stores as it is (`base` / `from_base`): loading one makes no object per
meter.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["PackedTable"]

_crc = zlib.crc32
_MAX_KEY = 255
_MAX_VALUE = 65_535


def _u32(data: bytes = b"") -> array[int]:
    a = array("I")
    if a.itemsize != 4:  # pragma: no cover - every CPython platform jodo runs on has a 4-byte "I"
        a = array("L")
    if data:
        a.frombytes(data)
        if sys.byteorder != "little":  # pragma: no cover - stored little-endian
            a.byteswap()
    return a


def _le(a: array[int]) -> bytes:
    if sys.byteorder != "little":  # pragma: no cover
        b = array(a.typecode, a)
        b.byteswap()
        return b.tobytes()
    return a.tobytes()


class PackedTable(Mapping[str, object]):
    """account → packed meter for one logical shard: a compact base plus the meters assigned since."""

    __slots__ = ("_blob", "_hashes", "_hot", "_offsets", "_size")

    def __init__(self, hot: dict[str, object] | None = None) -> None:
        self._blob = b""
        self._hashes = _u32()
        self._offsets = _u32()
        self._hot: dict[str, object] = hot if hot is not None else {}
        self._size = len(self._hot)

    # ------------------------------------------------------------ the base

    @classmethod
    def from_base(cls, blob: bytes, hashes: bytes, offsets: bytes) -> PackedTable:
        """A table of a base as `base` gave it (a snapshot's). Raises ValueError if they disagree."""
        t = cls()
        t._blob, t._hashes, t._offsets = blob, _u32(hashes), _u32(offsets)
        if len(t._hashes) != len(t._offsets):
            raise ValueError(f"{len(t._hashes)} hashes for {len(t._offsets)} offsets")
        if t._offsets and t._offsets[-1] >= len(blob):
            raise ValueError("an offset past the end of the base")
        t._size = len(t._hashes)
        return t

    def base(self) -> tuple[bytes, bytes, bytes] | None:
        """(records, hashes, offsets) if every meter is in the base (after `compact`), else None."""
        if self._hot:
            return None
        return self._blob, _le(self._hashes), _le(self._offsets)

    @property
    def hot(self) -> int:
        """Meters outside the base (assigned since it was built, or that cannot be packed into it)."""
        return len(self._hot)

    def _find(self, key: bytes, h: int) -> int:
        """Index of ``key`` in the base, or -1."""
        hashes = self._hashes
        i = bisect_left(hashes, h)
        n = len(hashes)
        blob, offsets = self._blob, self._offsets
        while i < n and hashes[i] == h:
            o = offsets[i]
            k = blob[o]
            if blob[o + 1 : o + 1 + k] == key:
                return i
            i += 1
        return -1

    def _value_at(self, i: int) -> bytes:
        blob = self._blob
        o = self._offsets[i]
        p = o + 1 + blob[o]
        return blob[p + 2 : p + 2 + (blob[p] | blob[p + 1] << 8)]

    def _records(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(hash, account bytes, value) of every base record, in base order."""
        blob = self._blob
        for h, o in zip(self._hashes, self._offsets, strict=True):
            k = blob[o]
            p = o + 1 + k
            yield h, blob[o + 1 : p], blob[p + 2 : p + 2 + (blob[p] | blob[p + 1] << 8)]

    def compact(self) -> None:
        """Fold the hot meters into the base (those that fit it); a no-op if there are none.

        The base's unchanged runs are copied as slices: the cost is one bisection per hot meter and a
        few machine words per base record, not a Python object per meter."""
        hot = self._hot
        if not hot:
            return
        keep: dict[str, object] = {}
        edits: list[tuple[int, int, int, bytes, bytes]] = []  # (base index, replaces?, hash, key, value)
        hashes = self._hashes
        for account, value in hot.items():
            key = account.encode()
            if not (isinstance(value, bytes) and len(key) <= _MAX_KEY and len(value) <= _MAX_VALUE):
                keep[account] = value
                continue
            h = _crc(key)
            i = self._find(key, h) if hashes else -1
            # an insert goes before the base record at its place; a replacement takes the record's place
            edits.append((i, 1, h, key, value) if i >= 0 else (bisect_left(hashes, h), 0, h, key, value))
        if not edits:
            return
        edits.sort()
        blob, offsets = self._blob, self._offsets
        n = len(hashes)
        parts: list[bytes] = []
        new_h, new_o = _u32(), _u32()
        at = pos = 0

        def run(hi: int) -> None:  # base records [pos, hi) as they are
            nonlocal at
            if pos >= hi:
                return
            start = offsets[pos]
            end = offsets[hi] if hi < n else len(blob)
            delta = at - start
            parts.append(blob[start:end])
            new_h.extend(hashes[pos:hi])
            new_o.extend(array(new_o.typecode, [o + delta for o in offsets[pos:hi]]))
            at += end - start

        for i, replaces, h, key, value in edits:
            run(i)
            pos = max(pos, i + replaces)
            new_h.append(h)
            new_o.append(at)
            m = len(value)
            parts += (bytes((len(key),)), key, bytes((m & 0xFF, m >> 8)), value)
            at += 3 + len(key) + m
        run(n)
        self._blob, self._hashes, self._offsets = b"".join(parts), new_h, new_o
        self._hot = keep
        self._size = len(new_h) + len(keep)

    def accounts(self) -> list[str]:
        """Every account of the table (decoded once: `image` scans them three times)."""
        hot = self._hot
        blob = self._blob
        base = [blob[o + 1 : o + 1 + blob[o]].decode() for o in self._offsets]
        return list(hot) + ([a for a in base if a not in hot] if hot else base)

    def base_accounts(self, h: int) -> list[str]:
        """The accounts of the base records whose CRC-32 is ``h`` (one bisection; a serial index keeps
        only that hash of each account: domain/serials.py)."""
        hashes = self._hashes
        i = bisect_left(hashes, h)
        n = len(hashes)
        blob, offsets = self._blob, self._offsets
        out: list[str] = []
        while i < n and hashes[i] == h:
            o = offsets[i]
            out.append(blob[o + 1 : o + 1 + blob[o]].decode())
            i += 1
        return out

    def in_base(self, account: str) -> bool:
        """Whether the account has a record in the base (assigned since or not)."""
        if not self._hashes:
            return False
        key = account.encode()
        return self._find(key, _crc(key)) >= 0

    def copy(self) -> PackedTable:
        """A table with the same meters that later assignments to this one do not change (the base
        is shared: it is never changed in place)."""
        t = PackedTable(dict(self._hot))
        t._blob, t._hashes, t._offsets, t._size = self._blob, self._hashes, self._offsets, self._size
        return t

    # ------------------------------------------------------------ the mapping

    def get(self, account: str, default: Any = None) -> Any:
        value = self._hot.get(account)
        if value is not None:
            return value
        if self._hashes:
            key = account.encode()
            i = self._find(key, _crc(key))
            if i >= 0:
                return self._value_at(i)
        return default

    def __getitem__(self, account: str) -> object:
        value = self.get(account)
        if value is None:
            raise KeyError(account)
        return value

    def swap(self, account: str, value: object) -> object | None:
        """Assign ``value`` to ``account``; returns what it had (None: a new meter). One look-up."""
        hot = self._hot
        old = hot.get(account)
        if old is None and self._hashes:
            key = account.encode()
            i = self._find(key, _crc(key))
            if i >= 0:
                old = self._value_at(i)
        if old is None:
            self._size += 1
        hot[account] = value
        return old

    def __setitem__(self, account: str, value: object) -> None:
        hot = self._hot
        if account not in hot and not (self._hashes and self._find(account.encode(),
                                                                    _crc(account.encode())) >= 0):
            self._size += 1
        hot[account] = value

    def __contains__(self, account: object) -> bool:
        return isinstance(account, str) and self.get(account) is not None

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        hot = self._hot
        yield from list(hot)
        for _, key, _ in self._records():
            account = key.decode()
            if account not in hot:
                yield account

    def items(self) -> Iterator[tuple[str, object]]:  # type: ignore[override]
        hot = self._hot
        yield from list(hot.items())
        for _, key, value in self._records():
            account = key.decode()
            if account not in hot:
                yield account, value

    def values(self) -> Iterator[object]:  # type: ignore[override]
        return (v for _, v in self.items())

    def __repr__(self) -> str:
        return f"PackedTable({self._size} meters, {len(self._hot)} hot)"
