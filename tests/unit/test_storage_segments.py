"""A journal segment packs one shard's events of one commit and unpacks them with their seqs."""

from __future__ import annotations

from storage import JournalEvent, NewEvent
from storage.segments import pack_segment, to_events, unpack_segment


def _events(n: int) -> list[NewEvent]:
    return [
        NewEvent(
            shard=4,
            account=f"a{i}",
            kind="K",
            ref=None if i % 2 else f"r{i}",
            at=100 + i,
            body=bytes([i]) * i,
        )
        for i in range(n)
    ]


def test_a_segment_round_trips_its_events_with_consecutive_seqs() -> None:
    new = _events(5)
    events = to_events(4, 11, unpack_segment(pack_segment(new)))
    assert events == [
        JournalEvent(shard=4, seq=11 + i, account=e.account, kind=e.kind, ref=e.ref, at=e.at, body=e.body)
        for i, e in enumerate(new)
    ]


def test_events_up_to_a_seq_are_skipped() -> None:
    entries = unpack_segment(pack_segment(_events(5)))
    assert [e.seq for e in to_events(4, 11, entries, after_seq=13)] == [14, 15]
    assert [e.seq for e in to_events(4, 11, entries, after_seq=5)] == [11, 12, 13, 14, 15]
    assert to_events(4, 11, entries, after_seq=15) == []
