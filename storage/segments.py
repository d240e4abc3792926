"""Journal segments: the events one commit journals to one logical shard, packed as one value.

A segment is a msgpack array of (account, kind, ref, at, body) entries; its events have the
consecutive seqs first_seq … first_seq + len - 1. Packing per (commit, shard) instead of one
stored row per event is what lets a group commit journal hundreds of thousands of events a
second (bench/bench_storage.py measures both).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import cast

import msgpack

from storage.records import JournalEvent, NewEvent

__all__ = ["Entry", "group_by_shard", "pack_segment", "to_events", "unpack_segment"]

Entry = tuple[str, str, str | None, int, bytes]


_fields = attrgetter("account", "kind", "ref", "at", "body")


def group_by_shard(events: Sequence[NewEvent]) -> tuple[dict[int, list[Entry]], list[tuple[int, int]]]:
    """Split a commit's events into per-shard entry lists (in input order), and say where each
    event went: (shard, index within that shard's list), in input order."""
    groups: dict[int, list[Entry]] = {}
    placed = []
    for event in events:
        shard = event.shard
        group = groups.get(shard)
        if group is None:
            groups[shard] = group = []
        placed.append((shard, len(group)))
        group.append(_fields(event))
    return groups, placed


def pack_segment(entries: Sequence[Entry]) -> bytes:
    """One shard's entries, in seq order, as one blob."""
    return cast(bytes, msgpack.packb(entries, use_bin_type=True))


def unpack_segment(blob: bytes) -> Sequence[Entry]:
    """The entries of a segment, in seq order."""
    return cast(Sequence[Entry], msgpack.unpackb(blob, use_list=False, raw=False))


def to_events(
    shard: int, first_seq: int, entries: Sequence[Entry], *, after_seq: int = 0
) -> list[JournalEvent]:
    """The JournalEvents of a segment starting at first_seq, skipping seq <= after_seq."""
    start = max(0, after_seq - first_seq + 1)
    stored = JournalEvent.stored
    return [
        stored(shard, first_seq + i, a, k, r, t, b)
        for i, (a, k, r, t, b) in enumerate(entries[start:], start)
    ]
