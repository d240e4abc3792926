"""ShardStore on SQLite: one file per shard group.

The journal is stored as segments (storage/segments.py): one row per logical shard per commit,
with its first/last seq and min/max event time. There is no per-event secondary index: random
inserts into an account or ref index cost 6-8x the journal's throughput (bench/bench_storage.py
measures it), so the audit queries scan one logical shard's segments instead, filtered in SQL by
time (`since`, through an index on (shard, max_at)) and by a byte search for the account or ref,
so only segments that may hold a match are decoded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import msgpack

from storage.api import StoreOptions
from storage.errors import HeadMismatch, SnapshotAheadOfJournal, UnknownOutboxEntry
from storage.records import (
    CommitResult,
    JournalEvent,
    NewEvent,
    NewOutboxEntry,
    OutboxEntry,
    OutboxStatus,
    OutboxUpdate,
    Snapshot,
)
from storage.segments import Entry, pack_segment, to_events, unpack_segment
from storage.sqlite_base import SqliteFile

__all__ = ["SCHEMA_VERSION", "SqliteShardStore"]

SCHEMA_VERSION = 1
_KIND = "shard_group"
_PAGE = 64  # segments or outbox rows fetched per query while streaming

_DDL = (
    """CREATE TABLE shard_heads (
        shard INTEGER PRIMARY KEY,
        last_seq INTEGER NOT NULL CHECK (last_seq >= 0)
    ) STRICT""",
    """CREATE TABLE journal_segments (
        shard INTEGER NOT NULL CHECK (shard >= 0),
        first_seq INTEGER NOT NULL CHECK (first_seq >= 1),
        last_seq INTEGER NOT NULL,
        min_at INTEGER NOT NULL,
        max_at INTEGER NOT NULL,
        events BLOB NOT NULL,
        PRIMARY KEY (shard, first_seq),
        CHECK (last_seq >= first_seq)
    ) STRICT""",
    "CREATE INDEX journal_segments_by_time ON journal_segments (shard, max_at)",
    """CREATE TABLE snapshots (
        shard INTEGER NOT NULL,
        upto_seq INTEGER NOT NULL CHECK (upto_seq >= 0),
        at INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (shard, upto_seq)
    ) STRICT""",
    """CREATE TABLE outbox (
        id TEXT NOT NULL PRIMARY KEY,
        shard INTEGER NOT NULL,
        kind TEXT NOT NULL,
        account TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'done', 'failed')),
        attempts INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        body BLOB NOT NULL
    ) STRICT, WITHOUT ROWID""",
    """CREATE INDEX outbox_open ON outbox (created_at, id)
        WHERE status IN ('pending', 'sent')""",
)

_OUTBOX_COLUMNS = "id, shard, kind, account, status, attempts, created_at, updated_at, body"


def _outbox_entry(row: tuple[object, ...]) -> OutboxEntry:
    id_, shard, kind, account, status, attempts, created_at, updated_at, body = row
    return OutboxEntry(
        id=id_,  # type: ignore[arg-type]
        shard=shard,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        account=account,  # type: ignore[arg-type]
        status=OutboxStatus(str(status)),
        attempts=attempts,  # type: ignore[arg-type]
        created_at=created_at,  # type: ignore[arg-type]
        updated_at=updated_at,  # type: ignore[arg-type]
        body=body,  # type: ignore[arg-type]
    )


def _head(db: sqlite3.Connection, shard: int) -> int:
    row = db.execute("SELECT last_seq FROM shard_heads WHERE shard = ?", (shard,)).fetchone()
    return 0 if row is None else int(row[0])


class SqliteShardStore(SqliteFile):
    """A shard group's journal, snapshots and outbox in one SQLite file."""

    def __init__(self, path: Path, group: int, options: StoreOptions) -> None:
        super().__init__(path, options, kind=_KIND, version=SCHEMA_VERSION, ddl=_DDL)
        self._group = group

    @property
    def group(self) -> int:
        return self._group

    # ------------------------------------------------------------ writes

    def commit(
        self,
        events: Sequence[NewEvent] = (),
        *,
        outbox: Sequence[NewOutboxEntry] = (),
        outbox_updates: Sequence[OutboxUpdate] = (),
        expect_heads: Mapping[int, int] | None = None,
    ) -> CommitResult:
        by_shard: dict[int, list[NewEvent]] = {}
        for event in events:
            bucket = by_shard.get(event.shard)
            if bucket is None:
                by_shard[event.shard] = bucket = []
            bucket.append(event)
        blobs = {shard: pack_segment(evs) for shard, evs in by_shard.items()}  # outside the lock
        with self._write() as db:
            before = {shard: _head(db, shard) for shard in by_shard}
            for shard, expected in (expect_heads or {}).items():
                found = before[shard] if shard in before else _head(db, shard)
                if found != expected:
                    raise HeadMismatch(shard, expected, found)
            after = {shard: before[shard] + len(evs) for shard, evs in by_shard.items()}
            db.executemany(
                "INSERT INTO journal_segments (shard, first_seq, last_seq, min_at, max_at, events)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (shard, before[shard] + 1, after[shard], *_time_range(evs), blobs[shard])
                    for shard, evs in by_shard.items()
                ],
            )
            db.executemany(
                "INSERT INTO shard_heads (shard, last_seq) VALUES (?, ?)"
                " ON CONFLICT (shard) DO UPDATE SET last_seq = excluded.last_seq",
                list(after.items()),
            )
            existing = self._insert_outbox(db, outbox)
            ignored = self._update_outbox(db, outbox_updates)
        next_seq = dict(before)
        seqs = []
        for event in events:
            seq = next_seq[event.shard] + 1
            next_seq[event.shard] = seq
            seqs.append(seq)
        return CommitResult(seqs=tuple(seqs), heads=after, outbox_existing=existing, outbox_ignored=ignored)

    @staticmethod
    def _insert_outbox(db: sqlite3.Connection, entries: Sequence[NewOutboxEntry]) -> tuple[str, ...]:
        existing = []
        for e in entries:
            cursor = db.execute(
                f"INSERT INTO outbox ({_OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (e.id, e.shard, e.kind, e.account, e.at, e.at, e.body),
            )
            if cursor.rowcount == 0:
                existing.append(e.id)
        return tuple(existing)

    @staticmethod
    def _update_outbox(db: sqlite3.Connection, updates: Sequence[OutboxUpdate]) -> tuple[str, ...]:
        ignored = []
        for u in updates:
            cursor = db.execute(
                "UPDATE outbox SET status = ?, updated_at = ?, attempts = attempts + ?"
                " WHERE id = ? AND status IN ('pending', 'sent')",
                (u.status.value, u.at, int(u.status is OutboxStatus.SENT), u.id),
            )
            if cursor.rowcount == 0:
                if db.execute("SELECT 1 FROM outbox WHERE id = ?", (u.id,)).fetchone() is None:
                    raise UnknownOutboxEntry(u.id)
                ignored.append(u.id)
        return tuple(ignored)

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        keep_offset = self.options.keep_snapshots - 1
        with self._write() as db:
            for snap in snapshots:
                head = _head(db, snap.shard)
                if snap.upto_seq > head:
                    raise SnapshotAheadOfJournal(snap.shard, snap.upto_seq, head)
                db.execute(
                    "INSERT INTO snapshots (shard, upto_seq, at, body) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (shard, upto_seq) DO UPDATE SET at = excluded.at,"
                    " body = excluded.body",
                    (snap.shard, snap.upto_seq, snap.at, snap.body),
                )
                db.execute(
                    "INSERT INTO shard_heads (shard, last_seq) VALUES (?, 0) ON CONFLICT (shard) DO NOTHING",
                    (snap.shard,),
                )
            for shard in {snap.shard for snap in snapshots}:
                db.execute(
                    "DELETE FROM snapshots WHERE shard = ? AND upto_seq < (SELECT upto_seq"
                    " FROM snapshots WHERE shard = ? ORDER BY upto_seq DESC LIMIT 1 OFFSET ?)",
                    (shard, shard, keep_offset),
                )
                if self.options.prune_on_snapshot:
                    oldest = db.execute(
                        "SELECT MIN(upto_seq) FROM snapshots WHERE shard = ?", (shard,)
                    ).fetchone()[0]
                    _prune(db, shard, oldest)

    def prune_journal(self, shard: int, upto_seq: int) -> int:
        with self._write() as db:
            row = db.execute("SELECT MAX(upto_seq) FROM snapshots WHERE shard = ?", (shard,)).fetchone()
            if row[0] is None:
                return 0
            return _prune(db, shard, min(upto_seq, int(row[0])))

    # ------------------------------------------------------------ journal reads

    def head(self, shard: int) -> int:
        row = self._one("SELECT last_seq FROM shard_heads WHERE shard = ?", (shard,))
        return 0 if row is None else int(row[0])

    def heads(self) -> dict[int, int]:
        return dict(self._rows("SELECT shard, last_seq FROM shard_heads ORDER BY shard"))

    def journal(self, shard: int, *, after_seq: int = 0) -> Iterator[JournalEvent]:
        start = self._one(
            "SELECT MAX(first_seq) FROM journal_segments WHERE shard = ? AND first_seq <= ?",
            (shard, after_seq + 1),
        )[0]
        cursor = (start or 1) - 1  # page by first_seq > cursor
        while True:
            rows = self._rows(
                "SELECT first_seq, events FROM journal_segments"
                " WHERE shard = ? AND first_seq > ? ORDER BY first_seq LIMIT ?",
                (shard, cursor, _PAGE),
            )
            for first_seq, blob in rows:
                yield from to_events(shard, first_seq, unpack_segment(blob), after_seq=after_seq)
            if len(rows) < _PAGE:
                return
            cursor = rows[-1][0]

    def latest_snapshot(self, shard: int) -> Snapshot | None:
        row = self._one(
            "SELECT upto_seq, at, body FROM snapshots WHERE shard = ? ORDER BY upto_seq DESC LIMIT 1",
            (shard,),
        )
        if row is None:
            return None
        return Snapshot(shard=shard, upto_seq=row[0], at=row[1], body=row[2])

    def recover(self, shards: Iterable[int] | None = None) -> Iterator[Snapshot | JournalEvent]:
        for shard in sorted(self.heads() if shards is None else set(shards)):
            snapshot = self.latest_snapshot(shard)
            if snapshot is not None:
                yield snapshot
            yield from self.journal(shard, after_seq=snapshot.upto_seq if snapshot else 0)

    # ------------------------------------------------------------ audit

    def events_for_account(
        self, shard: int, account: str, *, limit: int = 100, since: int | None = None
    ) -> list[JournalEvent]:
        found: list[JournalEvent] = []
        for first_seq, entries in self._segments_containing(shard, account, since, newest=True):
            for offset in range(len(entries) - 1, -1, -1):
                entry = entries[offset]
                if entry[0] == account and entry[3] >= (since or 0):
                    found.extend(to_events(shard, first_seq + offset, [entry]))
                    if len(found) == limit:
                        return found
        return found

    def events_for_ref(self, shard: int, ref: str, *, since: int | None = None) -> list[JournalEvent]:
        found: list[JournalEvent] = []
        for first_seq, entries in self._segments_containing(shard, ref, since, newest=False):
            for offset, entry in enumerate(entries):
                if entry[2] == ref and entry[3] >= (since or 0):
                    found.extend(to_events(shard, first_seq + offset, [entry]))
        return found

    def _segments_containing(
        self, shard: int, text: str, since: int | None, *, newest: bool
    ) -> Iterator[tuple[int, Sequence[Entry]]]:
        """(first_seq, entries) of the shard's segments whose bytes hold `text` as a msgpack
        str and whose newest event is at or after `since`, paged, newest or oldest first."""
        needle = msgpack.packb(text, use_bin_type=True)
        order, compare = ("DESC", "<") if newest else ("ASC", ">")
        cursor = 2**62 if newest else 0
        while True:
            rows = self._rows(
                "SELECT first_seq, events FROM journal_segments"
                f" WHERE shard = ? AND max_at >= ? AND first_seq {compare} ?"
                f" AND instr(events, ?) > 0 ORDER BY first_seq {order} LIMIT ?",
                (shard, since or 0, cursor, needle, _PAGE),
            )
            for first_seq, blob in rows:
                yield first_seq, unpack_segment(blob)
            if len(rows) < _PAGE:
                return
            cursor = rows[-1][0]

    # ------------------------------------------------------------ outbox reads

    def open_outbox(self, *, kind: str | None = None, shard: int | None = None) -> Iterator[OutboxEntry]:
        after: tuple[int, str] = (-1, "")
        while True:
            rows = self._rows(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status IN ('pending', 'sent')"
                " AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?",
                (*after, _PAGE * 8),
            )
            for row in rows:
                if (kind is None or row[2] == kind) and (shard is None or row[1] == shard):
                    yield _outbox_entry(row)
            if len(rows) < _PAGE * 8:
                return
            after = (rows[-1][6], rows[-1][0])

    def outbox_entry(self, entry_id: str) -> OutboxEntry | None:
        row = self._one(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (entry_id,))
        return None if row is None else _outbox_entry(row)

    def count_open_outbox(self) -> dict[tuple[str, OutboxStatus], int]:
        rows = self._rows(
            "SELECT kind, status, COUNT(*) FROM outbox WHERE status IN ('pending', 'sent')"
            " GROUP BY kind, status"
        )
        return {(kind, OutboxStatus(status)): count for kind, status, count in rows}


def _time_range(events: Sequence[NewEvent]) -> tuple[int, int]:
    times = [e.at for e in events]
    return min(times), max(times)


def _prune(db: sqlite3.Connection, shard: int, upto_seq: int) -> int:
    """Delete the shard's whole segments that end at or before upto_seq; count their events."""
    deleted = db.execute(
        "SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM journal_segments"
        " WHERE shard = ? AND last_seq <= ?",
        (shard, upto_seq),
    ).fetchone()[0]
    db.execute("DELETE FROM journal_segments WHERE shard = ? AND last_seq <= ?", (shard, upto_seq))
    return int(deleted)
