"""The journal of a SQLite shard group: segments appended in commit order, chained per shard.

Each commit appends one segment per logical shard it touches (storage/segments.py packs the
events). Segments are keyed by a group-wide `segment_id` that only grows, so a commit writes new
rows at the end of one b-tree instead of touching one index page per logical shard. Measured
while choosing: a commit of 1 000 events over 256 shards wrote ~1.2 MiB of WAL with segments
keyed (shard, first_seq), ~166 KiB appended (bench/bench_storage.py prints the current figure).
Each segment points to its shard's previous segment (`prev_segment`), and `shard_heads` points
to the newest; reading a shard walks that chain backwards with a recursive query.

`upto_at` is the newest event time of the shard up to and including the segment (a running
max), so a walk back can stop exactly at the first segment older than `since`.

Each segment is also a link of its logical shard's audit chain (storage/audit.py): `prev_hash` and
`chain_hash` are computed inside the write transaction from the head's `chain_hash`, one SHA-256 a
segment. Both are NULL on segments written before the chain (schema version 1).

There is no per-event index: random inserts into an account or ref index cost several times the
journal's own writes (bench/bench_storage.py measures the alternative), so audit queries walk one
shard's chain and let SQLite byte-search each segment (instr) before any is decoded.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence

from storage.audit import GENESIS, JournalLink, journal_link_hash

__all__ = [
    "DDL",
    "MIGRATION_TO_CHAIN",
    "Head",
    "append",
    "audit_links",
    "covered",
    "heads_of",
    "matching_segments",
    "prune",
    "segments",
    "tail_ids",
]

DDL = (
    """CREATE TABLE journal_counters (name TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL)
        STRICT""",
    "INSERT INTO journal_counters (name, value) VALUES ('segment_id', 0)",
    """CREATE TABLE shard_heads (
        shard INTEGER PRIMARY KEY CHECK (shard >= 0),
        last_seq INTEGER NOT NULL CHECK (last_seq >= 0),
        last_segment INTEGER,
        upto_at INTEGER NOT NULL,
        chain_hash BLOB
    ) STRICT""",
    """CREATE TABLE journal_segments (
        segment_id INTEGER PRIMARY KEY,
        shard INTEGER NOT NULL,
        first_seq INTEGER NOT NULL CHECK (first_seq >= 1),
        last_seq INTEGER NOT NULL,
        upto_at INTEGER NOT NULL,
        prev_segment INTEGER,
        events BLOB NOT NULL,
        prev_hash BLOB,
        chain_hash BLOB,
        CHECK (last_seq >= first_seq)
    ) STRICT""",
)

#: schema version 1 (before the audit chain) -> 2
MIGRATION_TO_CHAIN = (
    "ALTER TABLE shard_heads ADD COLUMN chain_hash BLOB",
    "ALTER TABLE journal_segments ADD COLUMN prev_hash BLOB",
    "ALTER TABLE journal_segments ADD COLUMN chain_hash BLOB",
)

_WALK_HOPS = 512  # segments walked per query by an audit scan
_FETCH = 64  # segments fetched per query while streaming


# shard, last_seq, last_segment, upto_at, chain_hash: a shard_heads row
Head = tuple[int, int, int | None, int, bytes | None]


def heads_of(db: sqlite3.Connection, shards: Sequence[int]) -> dict[int, Head]:
    """The shard_heads rows of `shards` ((shard, 0, None, 0, None) for a shard never written)."""
    select = "SELECT shard, last_seq, last_segment, upto_at, chain_hash FROM shard_heads"
    if len(shards) > 16:  # one scan of a few hundred rows beats many lookups
        found = {row[0]: row for row in db.execute(select)}
    else:  # one statement (a look-up each was ~16 statements a commit on the webhook path)
        marks = ",".join("?" * len(shards))
        found = {row[0]: row for row in db.execute(f"{select} WHERE shard IN ({marks})", tuple(shards))}
    return {s: found.get(s) or (s, 0, None, 0, None) for s in shards}


def append(
    db: sqlite3.Connection,
    heads: Mapping[int, Head],
    segments_by_shard: Mapping[int, tuple[int, int, bytes]],
) -> dict[int, int]:
    """Append one segment per shard: (event count, newest event time, packed events).
    Returns shard -> new last seq. Runs inside the caller's write transaction."""
    segment_id = int(db.execute("SELECT value FROM journal_counters WHERE name = 'segment_id'").fetchone()[0])
    rows = []
    new_heads = []
    for shard, (count, newest, blob) in segments_by_shard.items():
        _, last_seq, last_segment, upto_at, prev = heads[shard]
        segment_id += 1
        upto_at = max(upto_at, newest)
        prev = prev or GENESIS  # the first link, or the first after an upgrade
        link = journal_link_hash(prev, shard, last_seq + 1, last_seq + count, blob)
        rows.append(
            (segment_id, shard, last_seq + 1, last_seq + count, upto_at, last_segment, blob, prev, link)
        )
        new_heads.append((shard, last_seq + count, segment_id, upto_at, link))
    db.executemany(
        "INSERT INTO journal_segments (segment_id, shard, first_seq, last_seq, upto_at, prev_segment,"
        " events, prev_hash, chain_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.executemany(
        "INSERT INTO shard_heads (shard, last_seq, last_segment, upto_at, chain_hash) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (shard) DO UPDATE SET last_seq = excluded.last_seq,"
        " last_segment = excluded.last_segment, upto_at = excluded.upto_at, chain_hash = excluded.chain_hash",
        new_heads,
    )
    db.execute("UPDATE journal_counters SET value = ? WHERE name = 'segment_id'", (segment_id,))
    return {row[0]: row[1] for row in new_heads}


_CHAIN = """
    WITH RECURSIVE chain(depth, id, prev, first_seq, last_seq) AS (
        SELECT 0, segment_id, prev_segment, first_seq, last_seq FROM journal_segments
         WHERE segment_id = (SELECT last_segment FROM shard_heads WHERE shard = :shard)
        UNION ALL
        SELECT depth + 1, s.segment_id, s.prev_segment, s.first_seq, s.last_seq
          FROM journal_segments AS s JOIN chain ON s.segment_id = chain.prev
         WHERE chain.first_seq > :floor
    )
"""


def tail_ids(db: sqlite3.Connection, shard: int, after_seq: int) -> list[int]:
    """Ids of the shard's segments holding seqs > after_seq, oldest first (one statement)."""
    rows = db.execute(
        _CHAIN + "SELECT id FROM chain WHERE last_seq > :floor ORDER BY depth DESC",
        {"shard": shard, "floor": after_seq},
    ).fetchall()
    return [row[0] for row in rows]


def covered(db: sqlite3.Connection, shard: int, upto_seq: int) -> tuple[list[int], int]:
    """Ids of the shard's segments wholly at or below upto_seq, and how many events they hold."""
    rows = db.execute(
        _CHAIN + "SELECT id, last_seq - first_seq + 1 FROM chain WHERE last_seq <= :upto",
        {"shard": shard, "floor": 0, "upto": upto_seq},
    ).fetchall()
    return [row[0] for row in rows], sum(row[1] for row in rows)


def prune(db: sqlite3.Connection, shard: int, upto_seq: int) -> int:
    """Delete the shard's segments wholly at or below upto_seq; return their event count.
    The chain stays valid: pruning removes its oldest end."""
    ids, events = covered(db, shard, upto_seq)
    db.execute(
        "DELETE FROM journal_segments WHERE segment_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    )
    return events


def segments(db: sqlite3.Connection, ids: Sequence[int]) -> Iterator[tuple[int, int, int, bytes]]:
    """(segment_id, shard, first_seq, events) for `ids`, in the given order, a page at a time."""
    for start in range(0, len(ids), _FETCH):
        page = ids[start : start + _FETCH]
        rows = db.execute(
            "SELECT segment_id, shard, first_seq, events FROM journal_segments"
            " WHERE segment_id IN (SELECT value FROM json_each(?))",
            (json.dumps(page),),
        ).fetchall()
        by_id = {row[0]: row for row in rows}
        yield from (by_id[i] for i in page if i in by_id)


_MATCHING = """
    WITH RECURSIVE chain(depth, id, prev, first_seq, hit) AS (
        SELECT 0, segment_id, prev_segment, first_seq,
               CASE WHEN instr(events, :needle) > 0 THEN events END
          FROM journal_segments WHERE segment_id = :start AND upto_at >= :since
        UNION ALL
        SELECT depth + 1, s.segment_id, s.prev_segment, s.first_seq,
               CASE WHEN instr(s.events, :needle) > 0 THEN s.events END
          FROM journal_segments AS s JOIN chain ON s.segment_id = chain.prev
         WHERE s.upto_at >= :since
        LIMIT :hops
    )
    SELECT id, prev, first_seq, hit FROM chain ORDER BY depth
"""


def matching_segments(
    db: sqlite3.Connection, shard: int, needle: bytes, since: int
) -> Iterator[tuple[int, bytes]]:
    """(first_seq, events) of the shard's segments containing `needle`, newest first, walking
    back no further than the first segment whose events are all older than `since`."""
    row = db.execute("SELECT last_segment FROM shard_heads WHERE shard = ?", (shard,)).fetchone()
    start = None if row is None else row[0]
    while start is not None:
        rows = db.execute(
            _MATCHING,
            {"needle": needle, "start": start, "since": since, "hops": _WALK_HOPS},
        ).fetchall()
        for _id, _prev, first_seq, hit in rows:
            if hit is not None:
                yield first_seq, hit
        start = rows[-1][1] if len(rows) == _WALK_HOPS else None


def audit_links(db: sqlite3.Connection) -> Iterator[JournalLink]:
    """Every segment as a chain link, by (shard, first_seq), a page at a time (for verification:
    by seq, not by `prev_segment`, so a relinked or reordered row shows)."""
    order = sorted(db.execute("SELECT shard, first_seq, segment_id FROM journal_segments").fetchall())
    for start in range(0, len(order), _FETCH):
        page = [row[2] for row in order[start : start + _FETCH]]
        rows = db.execute(
            "SELECT segment_id, shard, first_seq, last_seq, events, prev_hash, chain_hash"
            " FROM journal_segments WHERE segment_id IN (SELECT value FROM json_each(?))",
            (json.dumps(page),),
        ).fetchall()
        by_id = {row[0]: row for row in rows}
        yield from (JournalLink(*by_id[i][1:]) for i in page if i in by_id)
