"""A journal segment packs one shard's events of one commit and unpacks them with their seqs."""

from __future__ import annotations

from storage import JournalEvent, NewEvent
from storage.segments import group_by_shard, pack_segment, to_events, unpack_segment


def _events(n: int, shards: int = 1) -> list[NewEvent]:
    return [
        NewEvent(
            shard=4 + i % shards,
            account=f"a{i}",
            kind="K",
            ref=None if i % 2 else f"r{i}",
            at=100 + i,
            body=bytes([i]) * i,
        )
        for i in range(n)
    ]


def test_a_commit_is_split_per_shard_keeping_input_order() -> None:
    groups, placed = group_by_shard(_events(5, shards=2))
    assert {shard: [entry[0] for entry in entries] for shard, entries in groups.items()} == {
        4: ["a0", "a2", "a4"],
        5: ["a1", "a3"],
    }
    assert placed == [(4, 0), (5, 0), (4, 1), (5, 1), (4, 2)]


def test_a_segment_round_trips_its_events_with_consecutive_seqs() -> None:
    new = _events(5)
    groups, _ = group_by_shard(new)
    events = to_events(4, 11, unpack_segment(pack_segment(groups[4])))
    assert events == [
        JournalEvent(shard=4, seq=11 + i, account=e.account, kind=e.kind, ref=e.ref, at=e.at, body=e.body)
        for i, e in enumerate(new)
    ]


def test_events_up_to_a_seq_are_skipped() -> None:
    groups, _ = group_by_shard(_events(5))
    entries = unpack_segment(pack_segment(groups[4]))
    assert [e.seq for e in to_events(4, 11, entries, after_seq=13)] == [14, 15]
    assert [e.seq for e in to_events(4, 11, entries, after_seq=5)] == [11, 12, 13, 14, 15]
    assert to_events(4, 11, entries, after_seq=15) == []
