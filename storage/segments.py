"""Journal segments: the events one commit journals to one logical shard, packed as one value.

A segment is a msgpack array of (account, kind, ref, at, body) entries; its events have the
consecutive seqs first_seq … first_seq + len - 1. Packing per (commit, shard) instead of one
stored row per event is what lets a group commit journal hundreds of thousands of events a
second (bench/bench_storage.py measures both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import msgpack

from storage.records import JournalEvent, NewEvent

__all__ = ["Entry", "pack_segment", "to_events", "unpack_segment"]

Entry = tuple[str, str, str | None, int, bytes]


def pack_segment(events: Sequence[NewEvent]) -> bytes:
    """The events of one shard, in seq order, as one blob."""
    return cast(
        bytes,
        msgpack.packb([(e.account, e.kind, e.ref, e.at, e.body) for e in events], use_bin_type=True),
    )


def unpack_segment(blob: bytes) -> Sequence[Entry]:
    """The entries of a segment, in seq order."""
    return cast(Sequence[Entry], msgpack.unpackb(blob, use_list=False, raw=False))


def to_events(
    shard: int, first_seq: int, entries: Sequence[Entry], *, after_seq: int = 0
) -> list[JournalEvent]:
    """The JournalEvents of a segment starting at first_seq, skipping seq <= after_seq."""
    start = max(0, after_seq - first_seq + 1)
    return [
        JournalEvent(shard=shard, seq=first_seq + i, account=a, kind=k, ref=r, at=t, body=b)
        for i, (a, k, r, t, b) in enumerate(entries[start:], start)
    ]
