"""Which accounts may have a serial: a compact index for the head-end's reads (`MeterHost.with_serials`).

A head-end names meters by serial; a host keys them by account and keeps each packed, so without an
index the question "which of these serials are yours" unpacks every meter (4.8 µs each). The index
keeps one machine word a meter, ``crc32(serial) << 32 | crc32(account)``, in 1 024 sorted
``array('Q')``s by the serial hash's top bits (8 B a meter; a bucket sorts in a millisecond, so no
sort of the whole index ever holds the shard). A serial's candidates are a bisection away; each
candidate's account is found again through its logical shard (``crc32(account) % shards``,
domain/sharding.py) and the CRC-32s a `PackedTable` base keeps (`PackedTable.base_accounts`). The
caller verifies every candidate by unpacking the meter, so a CRC collision, a serial re-assigned
since, or a meter moved to another head-end costs one unpack and is dropped: the index may be
stale, never incomplete.

What the array cannot say yet is *fresh*: a meter registered, or given a new serial, since the
index was built (the host `note`s each), or a meter not in its table's base (a value the table
keeps hot). Fresh entries are a small dict of serial → accounts, folded into the arrays (`fold`)
once their accounts are in a base, after a snapshot compacted their table.

Built lazily in slices (`build`, with a time budget): a scan of the host's meters, then the buckets'
sorts. Meters assigned while it is built are noted as fresh, so the index is complete when the scan ends.
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
_BUCKET_BITS = 10  # 1 024 sorted arrays: a bucket sorts in ~1 ms at 12.5 lakh meters a host
_SHIFT = 32 - _BUCKET_BITS


def serial_hash(serial: str) -> int:
    """CRC-32 of the serial's UTF-8 (what the index keeps of it)."""
    return zlib.crc32(serial.encode("utf-8"))


def _u64() -> array[int]:
    a = array("Q")
    if a.itemsize != 8:  # pragma: no cover - every CPython platform jodo runs on has an 8-byte "Q"
        raise RuntimeError("array('Q') is not 8 bytes here")
    return a


class SerialIndex:
    """serial → candidate accounts of one host: sorted word arrays plus a fresh dict.

    ``scan`` yields (account, serial, in_base) for every meter of the host (what `build` consumes);
    ``hash``: the serial's hash (tests force collisions with a small one)."""

    __slots__ = ("_buckets", "_fresh", "_hash", "_scan", "_unsorted")

    def __init__(
        self, scan: Iterator[tuple[str, str, bool]], hash: Callable[[str], int] = serial_hash
    ) -> None:
        self._hash = hash
        # by the serial hash's top bits, each sorted: serial hash << 32 | account hash
        self._buckets = [_u64() for _ in range(1 << _BUCKET_BITS)]
        self._fresh: dict[str, list[str]] = {}  # serial → accounts, not (yet) in the arrays
        self._scan: Iterator[tuple[str, str, bool]] | None = scan
        self._unsorted = len(self._buckets)  # buckets from here on are yet to sort (the scan ended)

    @property
    def ready(self) -> bool:
        return self._scan is None and self._unsorted >= len(self._buckets)

    @property
    def fresh(self) -> int:
        """Serials in the fresh dict."""
        return len(self._fresh)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def nbytes(self) -> int:
        """Bytes of the word arrays (the fresh dict not counted)."""
        return 8 * len(self)

    def build(self, budget_s: float, clock: Callable[[], float] = time.perf_counter) -> bool:
        """Go on building for about ``budget_s`` seconds; True once the index is complete. The scan
        files each meter's word in its bucket; the buckets are sorted after it, a few a call."""
        deadline = clock() + budget_s
        scan = self._scan
        if scan is not None:
            buckets, h = self._buckets, self._hash
            for n, (account, serial, in_base) in enumerate(scan, 1):
                if in_base:
                    sh = h(serial)
                    buckets[sh >> _SHIFT].append(sh << 32 | stable_hash(account))
                else:
                    self.note(account, serial)
                if not n & 127 and clock() >= deadline:
                    return False
            self._scan = None
            self._unsorted = 0
            return False
        buckets = self._buckets
        while self._unsorted < len(buckets):
            i = self._unsorted
            b = buckets[i]
            if len(b) > 1:
                buckets[i] = array(b.typecode, sorted(b))
            self._unsorted = i + 1
            if not i & 15 and clock() >= deadline:
                break
        return self.ready

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
        sh = self._hash(serial)
        keys = self._buckets[sh >> _SHIFT]
        i = bisect_left(keys, sh << 32)
        n = len(keys)
        out: list[str] = []
        first = i
        while i < n:
            k = keys[i]
            if k >> 32 != sh:
                break
            out += resolve(k & _LOW)
            i += 1
        if i - first > 1:  # (two accounts of one CRC-32 in a shard resolve to both, per word)
            out = list(dict.fromkeys(out))
        fresh = self._fresh.get(serial)
        if fresh:
            out += [a for a in fresh if a not in out] if out else fresh
        return out

    def fold(self, in_base: Callable[[str], bool]) -> int:
        """Move the fresh entries whose account is now in its table's base into the arrays (each
        bucket touched copied once, in runs); returns how many stay fresh. Only for a complete index."""
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
        by_bucket: dict[int, list[int]] = {}
        for k in sorted(add):
            by_bucket.setdefault(k >> (32 + _SHIFT), []).append(k)
        buckets = self._buckets
        for b, ks in by_bucket.items():
            old = buckets[b]
            new = _u64()
            lo = 0
            for k in ks:
                i = bisect_left(old, k, lo)
                new.extend(old[lo:i])
                if not (i < len(old) and old[i] == k):  # (already there: a serial set back)
                    new.append(k)
                lo = i
            new.extend(old[lo:])
            buckets[b] = new
        self._fresh = stay
        return len(stay)
