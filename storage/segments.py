"""Journal segments: the events one commit journals to one logical shard, packed as one value.

A segment is a msgpack array of (account, kind, ref, at, body) entries; its events have the
consecutive seqs first_seq … first_seq + len - 1. Packing per (commit, shard) instead of one
stored row per event is what lets a group commit journal hundreds of thousands of events a
second (bench/bench_storage.py measures both).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import cast

import msgpack

from storage.records import JournalEvent, NewEvent

__all__ = ["Entry", "events_of_account", "events_of_ref", "group_by_shard", "pack_segment", "to_events",
           "unpack_segment"]

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


def events_of_account(
    shard: int, segments: Iterable[tuple[int, Sequence[Entry]]], account: str, *, limit: int, since: int
) -> list[JournalEvent]:
    """The account's events at or after `since`, newest first, at most `limit`, from candidate
    segments given newest first as (first_seq, entries) (an audit query of any backend)."""
    found: list[JournalEvent] = []
    for first_seq, entries in segments:
        for offset in range(len(entries) - 1, -1, -1):
            entry = entries[offset]
            if entry[0] == account and entry[3] >= since:
                found.extend(to_events(shard, first_seq + offset, [entry]))
                if len(found) == limit:
                    return found
    return found


def events_of_ref(
    shard: int, segments: Iterable[tuple[int, Sequence[Entry]]], ref: str, *, since: int
) -> list[JournalEvent]:
    """The events caused by `ref` at or after `since`, oldest first, from candidate segments given
    newest first as (first_seq, entries)."""
    found: list[JournalEvent] = []
    for first_seq, entries in segments:
        for offset in range(len(entries) - 1, -1, -1):
            entry = entries[offset]
            if entry[2] == ref and entry[3] >= since:
                found.extend(to_events(shard, first_seq + offset, [entry]))
    found.reverse()
    return found
