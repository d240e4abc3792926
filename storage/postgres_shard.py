"""ShardStore on PostgreSQL: a shard group's journal, snapshots and outbox in the cluster's tables.

Every group's rows share the tables, keyed by `grp`. The journal is the SQLite one's layout: one
segment row per (commit, logical shard) holding that commit's events packed
(storage/segments.py), so a commit of thousands of events writes a few hundred rows in one
statement. Segments are keyed (grp, shard, first_seq): a shard's tail is one index range, with no
chain to walk (the SQLite file appends by a group-wide id to keep one b-tree hot; PostgreSQL's
heap appends anyway and the one index is what reads need). `jodo_shard_heads` holds each shard's
last seq and `upto_at`, the newest event time up to the segment (a running max), which lets an
audit walk back stop at `since`.

Writes of one group serialise on a transaction-scoped advisory lock (group), taken before the
heads are read, so two handles on one group share one gap-free sequence. With a `Fence`, every
write first checks the lease in the same transaction (storage/postgres_schema.py) and a refused
write raises `Fenced` with nothing applied.

A commit is a handful of round trips whatever its size: BEGIN + fence, lock, heads, one INSERT of
all segments, one upsert of the heads, and for the outbox one INSERT … ON CONFLICT DO NOTHING, one
locking read and one UPDATE, then COMMIT.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

import msgpack
import psycopg

from storage.api import StoreOptions
from storage.audit import (
    GENESIS,
    ChainHead,
    JournalLink,
    Verdict,
    audit_store_name,
    journal_chain,
    journal_link_hash,
    verify_journal,
)
from storage.errors import HeadMismatch, InvalidRecord, SnapshotAheadOfJournal, UnknownOutboxEntry
from storage.postgres_base import PostgresConnection
from storage.postgres_schema import Fence, check_fence
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
from storage.segments import (
    Entry,
    events_of_account,
    events_of_ref,
    group_by_shard,
    pack_segment,
    to_events,
    unpack_segment,
)

__all__ = ["PostgresShardStore"]

_GROUP_LOCK = 0x6A6F6467  # advisory lock class of shard groups ("jodg"); the key is the group
_FETCH = 64  # segments fetched per query while streaming
_WALK = 512  # segments examined per query by an audit scan
_OUTBOX_PAGE = 500
_at = itemgetter(3)  # an Entry's event time

_OUTBOX_COLUMNS = "id, shard, kind, account, status, attempts, created_at, updated_at, body"


def _outbox_entry(row: tuple[Any, ...]) -> OutboxEntry:
    id_, shard, kind, account, status, attempts, created_at, updated_at, body = row
    return OutboxEntry(
        id=id_,
        shard=shard,
        kind=kind,
        account=account,
        status=OutboxStatus(status),
        attempts=attempts,
        created_at=created_at,
        updated_at=updated_at,
        body=bytes(body),
    )


class PostgresShardStore(PostgresConnection):
    """One shard group's rows in the cluster's database."""

    def __init__(self, dsn: str, group: int, options: StoreOptions, fence: Fence | None = None) -> None:
        if type(group) is not int or not 0 <= group < 2**31:
            raise InvalidRecord(f"group must be an int in 0..2**31-1, got {group!r}")
        super().__init__(dsn, options, f"postgresql shard group {group}")
        self._group = group
        self._fence = fence

    @property
    def group(self) -> int:
        return self._group

    def _begin(self, cur: psycopg.Cursor[Any]) -> None:
        """First statements of every write: the fence, then the group's lock."""
        check_fence(cur, self._fence)
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_GROUP_LOCK, self._group))

    def _heads(
        self, cur: psycopg.Cursor[Any], shards: Sequence[int]
    ) -> dict[int, tuple[int, int, bytes | None]]:
        """shard → (last_seq, upto_at, chain hash); (0, 0, None) for a shard never written. Read
        after the lock."""
        cur.execute(
            "SELECT shard, last_seq, upto_at, chain_hash FROM jodo_shard_heads WHERE grp = %s"
            " AND shard = ANY(%s)",
            (self._group, list(shards)),
        )
        found = {shard: (last, upto, link) for shard, last, upto, link in cur.fetchall()}
        return {s: found.get(s, (0, 0, None)) for s in shards}

    # ------------------------------------------------------------ writes

    def commit(
        self,
        events: Sequence[NewEvent] = (),
        *,
        outbox: Sequence[NewOutboxEntry] = (),
        outbox_updates: Sequence[OutboxUpdate] = (),
        expect_heads: Mapping[int, int] | None = None,
    ) -> CommitResult:
        groups, placed = group_by_shard(events)
        packed = {
            shard: (len(entries), max(map(_at, entries)), pack_segment(entries))
            for shard, entries in groups.items()
        }
        expected = dict(expect_heads or {})

        def body(cur: psycopg.Cursor[Any]) -> tuple[dict[int, int], dict[int, int], tuple[str, ...],
                                                      tuple[str, ...]]:
            self._begin(cur)
            heads = self._heads(cur, sorted(groups.keys() | expected.keys()))
            for shard, seq in expected.items():
                if heads[shard][0] != seq:
                    raise HeadMismatch(shard, seq, heads[shard][0])
            after = self._append(cur, heads, packed) if packed else {}
            existing = self._insert_outbox(cur, outbox)
            ignored = self._update_outbox(cur, outbox_updates)
            return {s: heads[s][0] for s in groups}, after, existing, ignored

        before, after, existing, ignored = self._write(body)
        seqs = [before[shard] + 1 + offset for shard, offset in placed]
        return CommitResult(seqs=tuple(seqs), heads=after, outbox_existing=existing, outbox_ignored=ignored)

    def _append(
        self,
        cur: psycopg.Cursor[Any],
        heads: Mapping[int, tuple[int, int, bytes | None]],
        packed: Mapping[int, tuple[int, int, bytes]],
    ) -> dict[int, int]:
        shards, firsts, lasts, uptos, blobs, prevs, links = [], [], [], [], [], [], []
        for shard, (count, newest, blob) in packed.items():
            last_seq, upto_at, prev = heads[shard]
            prev = prev or GENESIS  # the first link, or the first after the upgrade
            shards.append(shard)
            firsts.append(last_seq + 1)
            lasts.append(last_seq + count)
            uptos.append(max(upto_at, newest))
            blobs.append(blob)
            prevs.append(prev)
            links.append(journal_link_hash(prev, shard, last_seq + 1, last_seq + count, blob))
        cur.execute(
            """WITH seg AS (
                   INSERT INTO jodo_journal_segments (grp, shard, first_seq, last_seq, upto_at, events,
                                                      prev_hash, chain_hash)
                   SELECT %(grp)s, * FROM unnest(%(shards)s::integer[], %(firsts)s::bigint[],
                                                 %(lasts)s::bigint[], %(uptos)s::bigint[],
                                                 %(blobs)b::bytea[], %(prevs)b::bytea[], %(links)b::bytea[])
                   RETURNING shard, last_seq, upto_at, chain_hash)
               INSERT INTO jodo_shard_heads (grp, shard, last_seq, upto_at, chain_hash)
               SELECT %(grp)s, shard, last_seq, upto_at, chain_hash FROM seg
               ON CONFLICT (grp, shard) DO UPDATE
                   SET last_seq = EXCLUDED.last_seq, upto_at = EXCLUDED.upto_at,
                       chain_hash = EXCLUDED.chain_hash""",
            {"grp": self._group, "shards": shards, "firsts": firsts, "lasts": lasts, "uptos": uptos,
             "blobs": blobs, "prevs": prevs, "links": links},
        )
        return dict(zip(shards, lasts, strict=True))

    def _insert_outbox(self, cur: psycopg.Cursor[Any], entries: Sequence[NewOutboxEntry]) -> tuple[str, ...]:
        if not entries:
            return ()
        first: dict[str, NewOutboxEntry] = {}
        for e in entries:
            first.setdefault(e.id, e)  # a second insert of an id in this commit is a no-op
        rows = list(first.values())
        cur.execute(
            """INSERT INTO jodo_outbox (grp, id, shard, kind, account, status, attempts, created_at,
                                        updated_at, body)
               SELECT %s, id, shard, kind, account, 'pending', 0, at, at, body
                 FROM unnest(%s::text[], %s::integer[], %s::text[], %s::text[], %s::bigint[], %b::bytea[])
                      AS u(id, shard, kind, account, at, body)
               ON CONFLICT (grp, id) DO NOTHING RETURNING id""",
            (
                self._group,
                [e.id for e in rows],
                [e.shard for e in rows],
                [e.kind for e in rows],
                [e.account for e in rows],
                [e.at for e in rows],
                [e.body for e in rows],
            ),
        )
        inserted = {row[0] for row in cur.fetchall()}
        repeated = []
        for e in entries:
            if first.get(e.id) is e and e.id in inserted:
                continue
            repeated.append(e.id)
        return tuple(repeated)

    def _update_outbox(self, cur: psycopg.Cursor[Any], updates: Sequence[OutboxUpdate]) -> tuple[str, ...]:
        if not updates:
            return ()
        cur.execute(
            "SELECT id, status, attempts, updated_at FROM jodo_outbox WHERE grp = %s AND id = ANY(%s)"
            " ORDER BY id FOR UPDATE",
            (self._group, sorted({u.id for u in updates})),
        )
        state: dict[str, list[Any]] = {row[0]: list(row[1:]) for row in cur.fetchall()}
        ignored = []
        changed: set[str] = set()
        for u in updates:  # applied in order: a later update of the same id sees the earlier one
            current = state.get(u.id)
            if current is None:
                raise UnknownOutboxEntry(u.id)
            if current[0] not in ("pending", "sent"):
                ignored.append(u.id)
                continue
            current[0] = u.status.value
            current[1] += int(u.status is OutboxStatus.SENT)
            current[2] = u.at
            changed.add(u.id)
        if changed:
            ids = sorted(changed)
            cur.execute(
                """UPDATE jodo_outbox AS o SET status = u.status, attempts = u.attempts,
                          updated_at = u.updated_at
                     FROM unnest(%s::text[], %s::text[], %s::integer[], %s::bigint[])
                          AS u(id, status, attempts, updated_at)
                    WHERE o.grp = %s AND o.id = u.id""",
                (ids, [state[i][0] for i in ids], [state[i][1] for i in ids], [state[i][2] for i in ids],
                 self._group),
            )
        return tuple(ignored)

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        shards = sorted({snap.shard for snap in snapshots})

        def body(cur: psycopg.Cursor[Any]) -> None:
            self._begin(cur)
            heads = self._heads(cur, shards)
            for snap in snapshots:
                head = heads[snap.shard][0]
                if snap.upto_seq > head:
                    raise SnapshotAheadOfJournal(snap.shard, snap.upto_seq, head)
            cur.executemany(
                """INSERT INTO jodo_snapshots (grp, shard, upto_seq, at, body) VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (grp, shard, upto_seq) DO UPDATE SET at = EXCLUDED.at, body = EXCLUDED.body""",
                [(self._group, s.shard, s.upto_seq, s.at, s.body) for s in snapshots],
            )
            cur.execute(
                """INSERT INTO jodo_shard_heads (grp, shard, last_seq, upto_at)
                   SELECT %s, shard, 0, 0 FROM unnest(%s::integer[]) AS u(shard)
                   ON CONFLICT (grp, shard) DO NOTHING""",
                (self._group, shards),
            )
            cur.execute(
                """DELETE FROM jodo_snapshots AS s USING (
                       SELECT shard, upto_seq,
                              row_number() OVER (PARTITION BY shard ORDER BY upto_seq DESC) AS newest
                         FROM jodo_snapshots WHERE grp = %(grp)s AND shard = ANY(%(shards)s)) AS k
                    WHERE s.grp = %(grp)s AND s.shard = k.shard AND s.upto_seq = k.upto_seq
                      AND k.newest > %(keep)s""",
                {"grp": self._group, "shards": shards, "keep": self.options.keep_snapshots},
            )
            if self.options.prune_on_snapshot:
                cur.execute(
                    "SELECT shard, min(upto_seq) FROM jodo_snapshots WHERE grp = %s AND shard = ANY(%s)"
                    " GROUP BY shard",
                    (self._group, shards),
                )
                for shard, oldest in cur.fetchall():
                    self._prune(cur, shard, oldest)

        if snapshots:
            self._write(body)

    def prune_journal(self, shard: int, upto_seq: int) -> int:
        def body(cur: psycopg.Cursor[Any]) -> int:
            self._begin(cur)
            cur.execute(
                "SELECT max(upto_seq) FROM jodo_snapshots WHERE grp = %s AND shard = %s", (self._group, shard)
            )
            row = cur.fetchone()
            if row is None or row[0] is None:
                return 0
            return self._prune(cur, shard, min(upto_seq, int(row[0])))

        return self._write(body)

    def _prune(self, cur: psycopg.Cursor[Any], shard: int, upto_seq: int) -> int:
        """Delete the shard's segments wholly at or below upto_seq; their event count."""
        cur.execute(
            "WITH gone AS (DELETE FROM jodo_journal_segments WHERE grp = %s AND shard = %s AND last_seq <= %s"
            " RETURNING last_seq - first_seq + 1 AS n) SELECT coalesce(sum(n), 0) FROM gone",
            (self._group, shard, upto_seq),
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------ audit chain

    def audit_heads(self) -> list[ChainHead]:
        """Each logical shard's chain head (cheap: the heads table), for checkpoints and metrics."""
        store = audit_store_name(self._group)
        rows = self._rows("SELECT shard, last_seq, chain_hash FROM jodo_shard_heads WHERE grp = %s"
                          " AND chain_hash IS NOT NULL", (self._group,))
        return [ChainHead(store=store, chain=journal_chain(int(shard)), seq=int(seq), hash=bytes(link))
                for shard, seq, link in rows]

    def audit_verify(self, wanted: Collection[tuple[str, int]] = ()) -> Verdict:
        """Verify every logical shard's audit chain in this group (storage/audit.py); read-only."""
        heads = {int(shard): (int(last), None if link is None else bytes(link)) for shard, last, link in
                 self._rows("SELECT shard, last_seq, chain_hash FROM jodo_shard_heads WHERE grp = %s",
                            (self._group,))}
        return verify_journal(audit_store_name(self._group), self._audit_links(), heads, wanted)

    def _audit_links(self) -> Iterator[JournalLink]:
        after = (-1, 0)
        while True:
            rows = self._rows(
                "SELECT shard, first_seq, last_seq, events, prev_hash, chain_hash FROM jodo_journal_segments"
                " WHERE grp = %s AND (shard, first_seq) > (%s, %s) ORDER BY shard, first_seq LIMIT %s",
                (self._group, *after, _FETCH),
            )
            for shard, first, last, events, prev, link in rows:
                yield JournalLink(int(shard), int(first), int(last), bytes(events),
                                  None if prev is None else bytes(prev),
                                  None if link is None else bytes(link))
            if len(rows) < _FETCH:
                return
            after = (int(rows[-1][0]), int(rows[-1][1]))

    # ------------------------------------------------------------ journal reads

    def head(self, shard: int) -> int:
        row = self._one(
            "SELECT last_seq FROM jodo_shard_heads WHERE grp = %s AND shard = %s", (self._group, shard)
        )
        return 0 if row is None else int(row[0])

    def heads(self) -> dict[int, int]:
        rows = self._rows(
            "SELECT shard, last_seq FROM jodo_shard_heads WHERE grp = %s ORDER BY shard", (self._group,)
        )
        return {int(shard): int(seq) for shard, seq in rows}

    def journal(self, shard: int, *, after_seq: int = 0) -> Iterator[JournalEvent]:
        return self._replay({shard: after_seq})

    def _replay(self, after: Mapping[int, int]) -> Iterator[JournalEvent]:
        """Events with seq > after[shard] of every shard in `after`: shard by shard, in seq order."""
        for shard in sorted(after):
            floor = after[shard]
            cursor = 0  # last first_seq read
            while True:
                rows = self._rows(
                    "SELECT first_seq, events FROM jodo_journal_segments WHERE grp = %s AND shard = %s"
                    " AND last_seq > %s AND first_seq > %s ORDER BY first_seq LIMIT %s",
                    (self._group, shard, floor, cursor, _FETCH),
                )
                for first_seq, blob in rows:
                    yield from to_events(shard, first_seq, unpack_segment(blob), after_seq=floor)
                if len(rows) < _FETCH:
                    break
                cursor = rows[-1][0]

    def latest_snapshot(self, shard: int) -> Snapshot | None:
        row = self._one(
            "SELECT upto_seq, at, body FROM jodo_snapshots WHERE grp = %s AND shard = %s"
            " ORDER BY upto_seq DESC LIMIT 1",
            (self._group, shard),
        )
        if row is None:
            return None
        return Snapshot(shard=shard, upto_seq=row[0], at=row[1], body=bytes(row[2]))

    def recover(self, shards: Iterable[int] | None = None) -> Iterator[Snapshot | JournalEvent]:
        after: dict[int, int] = {}
        for shard in sorted(self.heads() if shards is None else set(shards)):
            snapshot = self.latest_snapshot(shard)
            if snapshot is not None:
                yield snapshot
            after[shard] = snapshot.upto_seq if snapshot is not None else 0
        yield from self._replay(after)

    # ------------------------------------------------------------ audit

    def events_for_account(
        self, shard: int, account: str, *, limit: int = 100, since: int | None = None
    ) -> list[JournalEvent]:
        return events_of_account(shard, self._matching(shard, account, since or 0), account, limit=limit,
                                 since=since or 0)

    def events_for_ref(self, shard: int, ref: str, *, since: int | None = None) -> list[JournalEvent]:
        return events_of_ref(shard, self._matching(shard, ref, since or 0), ref, since=since or 0)

    def _matching(self, shard: int, text: str, since: int) -> Iterator[tuple[int, Sequence[Entry]]]:
        """(first_seq, entries) of the shard's segments that may hold `text` as a msgpack str,
        newest first, walking back no further than the first segment wholly older than `since`.
        The server byte-searches each segment; only hits travel and are decoded."""
        needle = msgpack.packb(text, use_bin_type=True)
        below = 2**62
        while True:
            rows = self._rows(
                "SELECT first_seq, upto_at, CASE WHEN position(%s::bytea IN events) > 0 THEN events END"
                " FROM jodo_journal_segments WHERE grp = %s AND shard = %s AND first_seq < %s"
                " ORDER BY first_seq DESC LIMIT %s",
                (needle, self._group, shard, below, _WALK),
            )
            for first_seq, upto_at, hit in rows:
                if upto_at < since:
                    return
                if hit is not None:
                    yield first_seq, unpack_segment(bytes(hit))
            if len(rows) < _WALK:
                return
            below = rows[-1][0]

    # ------------------------------------------------------------ outbox reads

    def open_outbox(self, *, kind: str | None = None, shard: int | None = None) -> Iterator[OutboxEntry]:
        after: tuple[int, str] = (-1, "")
        while True:
            rows = self._rows(
                f"SELECT {_OUTBOX_COLUMNS} FROM jodo_outbox WHERE grp = %s AND status IN ('pending', 'sent')"
                " AND (created_at, id) > (%s, %s) AND (%s::text IS NULL OR kind = %s)"
                " AND (%s::integer IS NULL OR shard = %s) ORDER BY created_at, id LIMIT %s",
                (self._group, *after, kind, kind, shard, shard, _OUTBOX_PAGE),
            )
            yield from (_outbox_entry(row) for row in rows)
            if len(rows) < _OUTBOX_PAGE:
                return
            after = (rows[-1][6], rows[-1][0])

    def outbox_entry(self, entry_id: str) -> OutboxEntry | None:
        row = self._one(
            f"SELECT {_OUTBOX_COLUMNS} FROM jodo_outbox WHERE grp = %s AND id = %s", (self._group, entry_id)
        )
        return None if row is None else _outbox_entry(row)

    def count_open_outbox(self) -> dict[tuple[str, OutboxStatus], int]:
        rows = self._rows(
            "SELECT kind, status, count(*) FROM jodo_outbox WHERE grp = %s AND status IN ('pending', 'sent')"
            " GROUP BY kind, status",
            (self._group,),
        )
        return {(kind, OutboxStatus(status)): int(count) for kind, status, count in rows}
