"""Which accounts may have a serial: a compact index for the head-end's reads (`MeterHost.with_serials`).

A head-end names meters by serial; a host keys them by account and keeps each packed, so without an
index the question "which of these serials are yours" unpacks every meter (4.8 µs each). The index
keeps one machine word a meter: ``crc32(serial) << 32 | crc32(account)`` in one sorted
``array('Q')`` (8 B a meter). A serial's candidates are a bisection away; each candidate's account is
found again through its logical shard (``crc32(account) % shards``, domain/sharding.py) and the
CRC-32s a `PackedTable` base keeps (`PackedTable.base_accounts`). The caller verifies every
candidate by unpacking the meter, so a CRC collision, a serial re-assigned since, or a meter moved
to another head-end costs one unpack and is dropped: the index may be stale, never incomplete.

What the array cannot say yet is *fresh*: a meter registered, or given a new serial, since the
index was built (the host `note`s each), or a meter not in its table's base (a value the table
keeps hot). Fresh entries are a small dict of serial → accounts, folded into the array (`fold`)
once their accounts are in a base, after a snapshot compacted their table.

Built lazily in slices (`build`, with a time budget): a scan of the host's meters, then one sort.
Meters assigned while it is built are noted as fresh, so the index is complete when the scan ends.
"""

from __future__ import annotations

import time
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator

from domain.sharding import stable_hash

__all__ = ["SerialIndex", "serial_hash"]

_LOW = 0xFFFF_FFFF


def serial_hash(serial: str) -> int:
    """CRC-32 of the serial's UTF-8 (what the index keeps of it)."""
    return zlib.crc32(serial.encode("utf-8"))


def _u64() -> array[int]:
    a = array("Q")
    if a.itemsize != 8:  # pragma: no cover - every CPython platform jodo runs on has an 8-byte "Q"
        raise RuntimeError("array('Q') is not 8 bytes here")
    return a


class SerialIndex:
    """serial → candidate accounts of one host: a sorted word array plus a fresh dict.

    ``scan`` yields (account, serial, in_base) for every meter of the host (what `build` consumes);
    ``hash``: the serial's hash (tests force collisions with a small one)."""

    __slots__ = ("_fresh", "_hash", "_keys", "_scan", "_scanned", "_unsorted")

    def __init__(
        self, scan: Iterator[tuple[str, str, bool]], hash: Callable[[str], int] = serial_hash
    ) -> None:
        self._hash = hash
        self._keys = _u64()  # sorted: serial hash << 32 | account hash
        self._fresh: dict[str, list[str]] = {}  # serial → accounts, not (yet) in the array
        self._scan: Iterator[tuple[str, str, bool]] | None = scan
        self._scanned = _u64()  # what the scan found so far (unsorted)
        self._unsorted = False  # the scan ended, the sort is next

    @property
    def ready(self) -> bool:
        return self._scan is None and not self._unsorted

    @property
    def fresh(self) -> int:
        """Serials in the fresh dict."""
        return len(self._fresh)

    def __len__(self) -> int:
        return len(self._keys)

    def nbytes(self) -> int:
        """Bytes of the word array (the fresh dict not counted)."""
        return self._keys.itemsize * len(self._keys)

    def build(self, budget_s: float, clock: Callable[[], float] = time.perf_counter) -> bool:
        """Go on building for about ``budget_s`` seconds; True once the index is complete. The sort
        at the end is a call of its own."""
        if self._unsorted:
            self._keys = array(self._keys.typecode, sorted(self._scanned))
            self._scanned = _u64()
            self._unsorted = False
            return True
        scan = self._scan
        if scan is None:
            return True
        deadline = clock() + budget_s
        keys, h = self._scanned, self._hash
        for n, (account, serial, in_base) in enumerate(scan, 1):
            if in_base:
                keys.append(h(serial) << 32 | stable_hash(account))
            else:
                self.note(account, serial)
            if not n & 127 and clock() >= deadline:
                return False
        self._scan = None
        self._unsorted = True
        return False

    def note(self, account: str, serial: str) -> None:
        """A meter registered, or given a new serial, since the build began."""
        accounts = self._fresh.get(serial)
        if accounts is None:
            self._fresh[serial] = [account]
        elif account not in accounts:
            accounts.append(account)

    def candidates(self, serial: str, resolve: Callable[[int], list[str]]) -> list[str]:
        """Accounts that may have ``serial`` (each to verify); ``resolve`` finds the accounts of an
        account hash (in its logical shard's base)."""
        keys = self._keys
        h = self._hash(serial) << 32
        i = bisect_left(keys, h)
        n = len(keys)
        out: list[str] = []
        while i < n:
            k = keys[i]
            if k >> 32 != h >> 32:
                break
            out += resolve(k & _LOW)
            i += 1
        fresh = self._fresh.get(serial)
        if fresh:
            out += [a for a in fresh if a not in out] if out else fresh
        return out

    def fold(self, in_base: Callable[[str], bool]) -> int:
        """Move the fresh entries whose account is now in its table's base into the array (one copy
        of the array, in runs); returns how many stay fresh. Only for a complete index."""
        if not self.ready or not self._fresh:
            return len(self._fresh)
        h = self._hash
        stay: dict[str, list[str]] = {}
        add: set[int] = set()
        for serial, accounts in self._fresh.items():
            for account in accounts:
                if in_base(account):
                    add.add(h(serial) << 32 | stable_hash(account))
                else:
                    stay.setdefault(serial, []).append(account)
        if add:
            old = self._keys
            new = _u64()
            lo = 0
            for k in sorted(add):
                i = bisect_left(old, k, lo)
                new.extend(old[lo:i])
                if i < len(old) and old[i] == k:
                    lo = i  # there already
                else:
                    new.append(k)
                    lo = i
            new.extend(old[lo:])
            self._keys = new
        self._fresh = stay
        return len(stay)
