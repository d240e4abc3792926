"""The PostgreSQL backend: every shard group and the ledger of a cluster in one database.

`PostgresBackend` opens stores at a libpq DSN (the `location`); the schema is applied on open
(`storage/postgres_schema.py`: versioned migrations under an advisory lock, component "store").
Shard groups share tables, keyed by their group (`grp`), so a group can be opened by whichever node
holds its lease; such a store is opened with a `Fence` and every write checks it in its own
transaction (`storage.Fenced`).

Layout (same shapes as SQLite, storage/sqlite_journal.py):

    jodo_shard_heads   (grp, shard) → last_seq, upto_at
    jodo_journal       one packed segment (storage/segments.py) per commit per logical shard,
                       keyed (grp, shard, first_seq); upto_at is the shard's running max event time
    jodo_snapshots     (grp, shard, upto_seq) → body
    jodo_outbox        (grp, id) → consumer notices, work orders
    jodo_payments      the ledger: payment_id primary key, (gateway, event_id) unique
    jodo_ledger        one row: receipt and dead-letter sequences and the counts by status
    jodo_dead_letters

**Several desks write the one ledger at once** (every node's). `record_payments` takes the
`jodo_ledger` row lock first, then looks up which payments exist, inserts the new ones with the
next receipt seqs and bumps the counts, all in one transaction: deduplication is cluster-wide and
race-free, receipt seqs stay gap-free (1, 2, 3 … in commit order, as the contract says), and
`payment_counts` reads one row. The price: desks' ledger commits serialise on that row. Each is a
group commit of a whole batch (a few milliseconds), so the ledger takes hundreds of commits a second
across the cluster; bench/bench_cluster.py measures what it costs against SQLite.

Connections are autocommit with explicit transactions, so no transaction stays open between calls
or between the pages of an iterator. A lost connection raises `StorageUnavailable` (the DSN's
password redacted) and the next call reconnects: a PostgreSQL restart costs the calls made while it
is down, and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from types import TracebackType
from typing import Any, Self, TypeVar

import msgpack
import psycopg

from storage.api import DEFAULT_OPTIONS, StoreOptions
from storage.errors import (
    HeadMismatch,
    InvalidRecord,
    SnapshotAheadOfJournal,
    StorageError,
    StorageUnavailable,
    StoreClosed,
    UnknownOutboxEntry,
    UnknownPayment,
    WriteRejected,
)
from storage.postgres_cluster import redact
from storage.postgres_schema import CLUSTER_MIGRATIONS, Fence, check_fence, migrate
from storage.records import (
    AckResult,
    CommitResult,
    CreditAck,
    CreditOutcome,
    DeadLetter,
    JournalEvent,
    NewEvent,
    NewOutboxEntry,
    NewPayment,
    OutboxEntry,
    OutboxStatus,
    OutboxUpdate,
    PaymentCounts,
    PaymentRecord,
    PaymentStatus,
    RecordOutcome,
    RecordResult,
    ResolveResult,
    Snapshot,
    StoredDeadLetter,
    check_payment,
)
from storage.segments import group_by_shard, pack_segment, to_events, unpack_segment

__all__ = ["STORE_MIGRATIONS", "PostgresBackend", "PostgresDeskStore", "PostgresShardStore"]

T = TypeVar("T")
_PAGE = 500  # rows per query while streaming
_at = itemgetter(3)

#: Migration n (1-based) of the "store" component is STORE_MIGRATIONS[n - 1]; append only.
STORE_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jodo_shard_heads (
            grp integer NOT NULL, shard integer NOT NULL CHECK (shard >= 0),
            last_seq bigint NOT NULL CHECK (last_seq >= 0), upto_at bigint NOT NULL,
            PRIMARY KEY (grp, shard))""",
        """CREATE TABLE jodo_journal (
            grp integer NOT NULL, shard integer NOT NULL, first_seq bigint NOT NULL CHECK (first_seq >= 1),
            last_seq bigint NOT NULL, upto_at bigint NOT NULL, events bytea NOT NULL,
            PRIMARY KEY (grp, shard, first_seq), CHECK (last_seq >= first_seq))""",
        """CREATE TABLE jodo_snapshots (
            grp integer NOT NULL, shard integer NOT NULL, upto_seq bigint NOT NULL CHECK (upto_seq >= 0),
            at bigint NOT NULL, body bytea NOT NULL, PRIMARY KEY (grp, shard, upto_seq))""",
        """CREATE TABLE jodo_outbox (
            grp integer NOT NULL, id text NOT NULL, shard integer NOT NULL, kind text NOT NULL,
            account text NOT NULL,
            status text NOT NULL CHECK (status IN ('pending', 'sent', 'done', 'failed')),
            attempts integer NOT NULL, created_at bigint NOT NULL, updated_at bigint NOT NULL,
            body bytea NOT NULL, PRIMARY KEY (grp, id))""",
        """CREATE INDEX jodo_outbox_open ON jodo_outbox (grp, created_at, id)
            WHERE status IN ('pending', 'sent')""",
        """CREATE TABLE jodo_ledger (
            id integer PRIMARY KEY CHECK (id = 1), receipt_seq bigint NOT NULL,
            dead_letter_id bigint NOT NULL, pending bigint NOT NULL, applied bigint NOT NULL,
            suspense bigint NOT NULL, duplicates bigint NOT NULL)""",
        "INSERT INTO jodo_ledger VALUES (1, 0, 0, 0, 0, 0, 0)",
        """CREATE TABLE jodo_payments (
            payment_id text PRIMARY KEY, gateway text NOT NULL, event_id text, account text NOT NULL,
            original_account text, amount_paise bigint NOT NULL CHECK (amount_paise > 0),
            channel text NOT NULL, paid_at bigint NOT NULL, received_at bigint NOT NULL,
            committed_at bigint NOT NULL, receipt_seq bigint NOT NULL UNIQUE,
            status text NOT NULL CHECK (status IN ('pending', 'applied', 'suspense')),
            applied_at bigint, suspended_at bigint, resolved_at bigint, resolved_by text,
            body bytea NOT NULL, shard integer)""",
        """CREATE UNIQUE INDEX jodo_payments_by_gateway_event ON jodo_payments (gateway, event_id)
            WHERE event_id IS NOT NULL""",
        "CREATE INDEX jodo_payments_pending ON jodo_payments (shard, receipt_seq) WHERE status = 'pending'",
        "CREATE INDEX jodo_payments_suspense ON jodo_payments (receipt_seq) WHERE status = 'suspense'",
        "CREATE INDEX jodo_payments_by_account ON jodo_payments (account, receipt_seq)",
        """CREATE TABLE jodo_dead_letters (
            id bigint PRIMARY KEY, source text NOT NULL, message_type text NOT NULL, reason text NOT NULL,
            at bigint NOT NULL, body bytea NOT NULL)""",
    ),
)

_PAYMENT_COLUMNS = (
    "payment_id, gateway, event_id, account, original_account, amount_paise, channel, paid_at,"
    " received_at, committed_at, receipt_seq, status, applied_at, suspended_at, resolved_at,"
    " resolved_by, body, shard"
)
_PAYMENT_NAMES = tuple(_PAYMENT_COLUMNS.replace(" ", "").split(","))
_OUTBOX_COLUMNS = "id, shard, kind, account, status, attempts, created_at, updated_at, body"
# the caller's input, not the database, is at fault
_REJECTED = (psycopg.errors.IntegrityError, psycopg.errors.DataError, OverflowError)


def _payment(row: Sequence[Any]) -> PaymentRecord:
    values = dict(zip(_PAYMENT_NAMES, row, strict=True))
    values["status"] = PaymentStatus(str(values["status"]))
    values["body"] = bytes(values["body"])
    return PaymentRecord(**values)


def _outbox_entry(row: Sequence[Any]) -> OutboxEntry:
    id_, shard, kind, account, status, attempts, created_at, updated_at, body = row
    return OutboxEntry(id=id_, shard=shard, kind=kind, account=account, status=OutboxStatus(status),
                       attempts=attempts, created_at=created_at, updated_at=updated_at, body=bytes(body))


class _Connection:
    """One connection to the database, re-opened after a failure; errors mapped to storage's."""

    def __init__(self, dsn: str, options: StoreOptions) -> None:
        self._dsn = dsn
        self._sync = "on" if options.synchronous == "full" else "off"
        self._lock_timeout = options.busy_timeout_ms
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        with self._translated():
            conn = self._connection()
            migrate(conn, "store", STORE_MIGRATIONS)
            migrate(conn, "cluster", CLUSTER_MIGRATIONS)

    @property
    def where(self) -> str:
        return redact(self._dsn)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreClosed("the store is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop()
        conn = psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=5,
            options=f"-c synchronous_commit={self._sync} -c lock_timeout={self._lock_timeout}",
        )
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except _REJECTED as exc:
            raise WriteRejected(redact(f"postgresql: {exc}")) from None
        except psycopg.Error as exc:
            self._drop()
            what = f"postgresql ({self.where}): {type(exc).__name__}: {exc}"
            raise StorageUnavailable(redact(what)) from None

    @contextmanager
    def write(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction: committed on exit, rolled back whole on any exception."""
        with self._translated():
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                yield cur

    def rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        with self._translated():
            return self._connection().execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> tuple[Any, ...] | None:
        with self._translated():
            return self._connection().execute(sql, params).fetchone()

    def close(self) -> None:
        self._drop()
        self._closed = True


class _Store:
    def __init__(self, dsn: str, options: StoreOptions) -> None:
        self.options = options
        self._db = _Connection(dsn, options)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _paged(fetch: Callable[[T | None], list[tuple[Any, ...]]], key: Callable[[tuple[Any, ...]], T]
           ) -> Iterator[tuple[Any, ...]]:
    """Rows page by page (`fetch(after)`; None first), no transaction held between pages."""
    after: T | None = None
    while True:
        rows = fetch(after)
        yield from rows
        if len(rows) < _PAGE:
            return
        after = key(rows[-1])


# ---------------------------------------------------------------- shard group


class PostgresShardStore(_Store):
    """One shard group's journal, snapshots and outbox, in the cluster's database."""

    def __init__(self, dsn: str, group: int, options: StoreOptions, fence: Fence | None = None) -> None:
        if type(group) is not int or not 0 <= group <= 65_535:
            raise InvalidRecord(f"group must be an int in 0..65535, got {group!r}")
        super().__init__(dsn, options)
        self._group = group
        self.fence = fence

    @property
    def group(self) -> int:
        return self._group

    def _heads_for_update(
        self, cur: psycopg.Cursor[Any], shards: Sequence[int]
    ) -> dict[int, tuple[int, int]]:
        cur.execute(
            "SELECT shard, last_seq, upto_at FROM jodo_shard_heads WHERE grp = %s AND shard = ANY(%s)"
            " ORDER BY shard FOR UPDATE",
            (self._group, list(shards)),
        )
        found = {int(s): (int(q), int(a)) for s, q, a in cur.fetchall()}
        return {s: found.get(s, (0, 0)) for s in shards}

    def commit(
        self,
        events: Sequence[NewEvent] = (),
        *,
        outbox: Sequence[NewOutboxEntry] = (),
        outbox_updates: Sequence[OutboxUpdate] = (),
        expect_heads: Mapping[int, int] | None = None,
    ) -> CommitResult:
        groups, placed = group_by_shard(events)
        packed = {s: (len(es), max(map(_at, es)), pack_segment(es)) for s, es in groups.items()}
        expected = dict(expect_heads or {})
        with self._db.write() as cur:
            check_fence(cur, self.fence)
            heads = self._heads_for_update(cur, sorted(groups.keys() | expected.keys()))
            for shard, seq in expected.items():
                if heads[shard][0] != seq:
                    raise HeadMismatch(shard, seq, heads[shard][0])
            segments, new_heads = [], []
            for shard, (count, newest, blob) in packed.items():
                last, upto = heads[shard]
                upto = max(upto, newest)
                segments.append((self._group, shard, last + 1, last + count, upto, blob))
                new_heads.append((self._group, shard, last + count, upto))
            if segments:
                cur.executemany(
                    "INSERT INTO jodo_journal (grp, shard, first_seq, last_seq, upto_at, events)"
                    " VALUES (%s, %s, %s, %s, %s, %s)", segments)
                cur.executemany(
                    "INSERT INTO jodo_shard_heads (grp, shard, last_seq, upto_at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (grp, shard) DO UPDATE SET last_seq = EXCLUDED.last_seq,"
                    " upto_at = EXCLUDED.upto_at", new_heads)
            existing = self._insert_outbox(cur, outbox)
            ignored = self._update_outbox(cur, outbox_updates)
        first = {shard: heads[shard][0] + 1 for shard in groups}
        return CommitResult(
            seqs=tuple(first[shard] + offset for shard, offset in placed),
            heads={shard: seq for _, shard, seq, _ in new_heads},
            outbox_existing=existing, outbox_ignored=ignored,
        )

    def _insert_outbox(self, cur: psycopg.Cursor[Any], entries: Sequence[NewOutboxEntry]) -> tuple[str, ...]:
        if not entries:
            return ()
        cur.execute("SELECT id FROM jodo_outbox WHERE grp = %s AND id = ANY(%s)",
                    (self._group, [e.id for e in entries]))
        existing = {r[0] for r in cur.fetchall()}
        rows, repeated = [], []
        for e in entries:
            if e.id in existing:
                repeated.append(e.id)
            else:
                existing.add(e.id)
                rows.append((self._group, e.id, e.shard, e.kind, e.account, e.at, e.at, e.body))
        if rows:
            cur.executemany(
                f"INSERT INTO jodo_outbox (grp, {_OUTBOX_COLUMNS}) VALUES (%s, %s, %s, %s, %s, 'pending', 0,"
                " %s, %s, %s)", rows)
        return tuple(repeated)

    def _update_outbox(self, cur: psycopg.Cursor[Any], updates: Sequence[OutboxUpdate]) -> tuple[str, ...]:
        if not updates:
            return ()
        cur.execute("SELECT id, status FROM jodo_outbox WHERE grp = %s AND id = ANY(%s) FOR UPDATE",
                    (self._group, list({u.id for u in updates})))
        status: dict[str, str] = dict(cur.fetchall())
        ignored, rows = [], []
        for u in updates:
            current = status.get(u.id)
            if current is None:
                raise UnknownOutboxEntry(u.id)
            if current not in ("pending", "sent"):
                ignored.append(u.id)
                continue
            status[u.id] = u.status.value
            rows.append((u.status.value, u.at, int(u.status is OutboxStatus.SENT), self._group, u.id))
        if rows:
            cur.executemany("UPDATE jodo_outbox SET status = %s, updated_at = %s, attempts = attempts + %s"
                            " WHERE grp = %s AND id = %s", rows)
        return tuple(ignored)

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        shards = sorted({s.shard for s in snapshots})
        with self._db.write() as cur:
            check_fence(cur, self.fence)
            heads = self._heads_for_update(cur, shards)
            for snap in snapshots:
                if snap.upto_seq > heads[snap.shard][0]:
                    raise SnapshotAheadOfJournal(snap.shard, snap.upto_seq, heads[snap.shard][0])
            cur.executemany(
                "INSERT INTO jodo_snapshots (grp, shard, upto_seq, at, body) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (grp, shard, upto_seq) DO UPDATE SET at = EXCLUDED.at, body = EXCLUDED.body",
                [(self._group, s.shard, s.upto_seq, s.at, s.body) for s in snapshots])
            cur.executemany(
                "INSERT INTO jodo_shard_heads (grp, shard, last_seq, upto_at) VALUES (%s, %s, 0, 0)"
                " ON CONFLICT (grp, shard) DO NOTHING", [(self._group, s) for s in shards])
            for shard in shards:
                cur.execute(
                    "DELETE FROM jodo_snapshots WHERE grp = %s AND shard = %s AND upto_seq < (SELECT upto_seq"
                    " FROM jodo_snapshots WHERE grp = %s AND shard = %s ORDER BY upto_seq DESC"
                    " LIMIT 1 OFFSET %s)",
                    (self._group, shard, self._group, shard, self.options.keep_snapshots - 1))
                if self.options.prune_on_snapshot:
                    cur.execute("SELECT MIN(upto_seq) FROM jodo_snapshots WHERE grp = %s AND shard = %s",
                                (self._group, shard))
                    row = cur.fetchone()
                    if row is not None and row[0] is not None:
                        self._prune(cur, shard, int(row[0]))

    def _prune(self, cur: psycopg.Cursor[Any], shard: int, upto_seq: int) -> int:
        cur.execute("DELETE FROM jodo_journal WHERE grp = %s AND shard = %s AND last_seq <= %s"
                    " RETURNING last_seq - first_seq + 1", (self._group, shard, upto_seq))
        return sum(int(r[0]) for r in cur.fetchall())

    def prune_journal(self, shard: int, upto_seq: int) -> int:
        with self._db.write() as cur:
            check_fence(cur, self.fence)
            cur.execute("SELECT MAX(upto_seq) FROM jodo_snapshots WHERE grp = %s AND shard = %s",
                        (self._group, shard))
            row = cur.fetchone()
            if row is None or row[0] is None:
                return 0
            return self._prune(cur, shard, min(upto_seq, int(row[0])))

    # ------------------------------------------------------------ reads

    def head(self, shard: int) -> int:
        row = self._db.one("SELECT last_seq FROM jodo_shard_heads WHERE grp = %s AND shard = %s",
                           (self._group, shard))
        return 0 if row is None else int(row[0])

    def heads(self) -> dict[int, int]:
        rows = self._db.rows("SELECT shard, last_seq FROM jodo_shard_heads WHERE grp = %s ORDER BY shard",
                             (self._group,))
        return {int(s): int(q) for s, q in rows}

    def journal(self, shard: int, *, after_seq: int = 0) -> Iterator[JournalEvent]:
        def fetch(after: int | None) -> list[tuple[Any, ...]]:
            return self._db.rows(
                "SELECT first_seq, events FROM jodo_journal WHERE grp = %s AND shard = %s AND last_seq > %s"
                " AND first_seq > %s ORDER BY first_seq LIMIT %s",
                (self._group, shard, after_seq, -1 if after is None else after, _PAGE))

        for first_seq, blob in _paged(fetch, lambda r: int(r[0])):
            yield from to_events(shard, int(first_seq), unpack_segment(bytes(blob)), after_seq=after_seq)

    def latest_snapshot(self, shard: int) -> Snapshot | None:
        row = self._db.one(
            "SELECT upto_seq, at, body FROM jodo_snapshots WHERE grp = %s AND shard = %s"
            " ORDER BY upto_seq DESC LIMIT 1", (self._group, shard))
        return None if row is None else Snapshot(shard=shard, upto_seq=int(row[0]), at=int(row[1]),
                                                 body=bytes(row[2]))

    def recover(self, shards: Iterable[int] | None = None) -> Iterator[Snapshot | JournalEvent]:
        after: dict[int, int] = {}
        for shard in sorted(self.heads() if shards is None else set(shards)):
            snapshot = self.latest_snapshot(shard)
            if snapshot is not None:
                yield snapshot
            after[shard] = snapshot.upto_seq if snapshot is not None else 0
        for shard, seq in after.items():
            yield from self.journal(shard, after_seq=seq)

    def _matching(self, shard: int, text: str, since: int | None) -> Iterator[tuple[int, Sequence[Any]]]:
        """(first_seq, entries) of segments that may hold `text` as a msgpack str, newest first."""
        needle = msgpack.packb(text, use_bin_type=True)

        def fetch(before: int | None) -> list[tuple[Any, ...]]:
            return self._db.rows(
                "SELECT first_seq, events FROM jodo_journal WHERE grp = %s AND shard = %s AND upto_at >= %s"
                " AND first_seq < %s AND position(%s::bytea IN events) > 0 ORDER BY first_seq DESC LIMIT %s",
                (self._group, shard, since or 0, 2**62 if before is None else before, needle, _PAGE))

        for first_seq, blob in _paged(fetch, lambda r: int(r[0])):
            yield int(first_seq), unpack_segment(bytes(blob))

    def events_for_account(
        self, shard: int, account: str, *, limit: int = 100, since: int | None = None
    ) -> list[JournalEvent]:
        found: list[JournalEvent] = []
        for first_seq, entries in self._matching(shard, account, since):
            for offset in range(len(entries) - 1, -1, -1):
                entry = entries[offset]
                if entry[0] == account and entry[3] >= (since or 0):
                    found.extend(to_events(shard, first_seq + offset, [entry]))
                    if len(found) == limit:
                        return found
        return found

    def events_for_ref(self, shard: int, ref: str, *, since: int | None = None) -> list[JournalEvent]:
        found: list[JournalEvent] = []
        for first_seq, entries in self._matching(shard, ref, since):
            for offset in range(len(entries) - 1, -1, -1):
                entry = entries[offset]
                if entry[2] == ref and entry[3] >= (since or 0):
                    found.extend(to_events(shard, first_seq + offset, [entry]))
        found.reverse()
        return found

    def open_outbox(self, *, kind: str | None = None, shard: int | None = None) -> Iterator[OutboxEntry]:
        def fetch(after: tuple[int, str] | None) -> list[tuple[Any, ...]]:
            created, id_ = after if after is not None else (-1, "")
            return self._db.rows(
                f"SELECT {_OUTBOX_COLUMNS} FROM jodo_outbox WHERE grp = %s AND status IN ('pending', 'sent')"
                " AND (created_at, id) > (%s, %s) ORDER BY created_at, id LIMIT %s",
                (self._group, created, id_, _PAGE))

        for row in _paged(fetch, lambda r: (int(r[6]), str(r[0]))):
            if (kind is None or row[2] == kind) and (shard is None or row[1] == shard):
                yield _outbox_entry(row)

    def outbox_entry(self, entry_id: str) -> OutboxEntry | None:
        row = self._db.one(f"SELECT {_OUTBOX_COLUMNS} FROM jodo_outbox WHERE grp = %s AND id = %s",
                           (self._group, entry_id))
        return None if row is None else _outbox_entry(row)

    def count_open_outbox(self) -> dict[tuple[str, OutboxStatus], int]:
        rows = self._db.rows(
            "SELECT kind, status, COUNT(*) FROM jodo_outbox WHERE grp = %s AND status IN ('pending', 'sent')"
            " GROUP BY kind, status", (self._group,))
        return {(kind, OutboxStatus(status)): int(n) for kind, status, n in rows}


# ---------------------------------------------------------------- desk


class PostgresDeskStore(_Store):
    """The cluster's one payments ledger, suspense and dead letters."""

    def record_payments(self, payments: Sequence[NewPayment], *, at: int) -> tuple[RecordResult, ...]:
        for p in payments:
            check_payment(p)
        with self._db.write() as cur:
            cur.execute("SELECT receipt_seq FROM jodo_ledger WHERE id = 1 FOR UPDATE")  # the ledger's lock
            row = cur.fetchone()
            receipt = int(row[0]) if row else 0
            cur.execute(
                "SELECT payment_id, receipt_seq, gateway, event_id FROM jodo_payments"
                " WHERE payment_id = ANY(%s) OR (event_id IS NOT NULL AND (gateway, event_id) IN"
                " (SELECT * FROM unnest(%s::text[], %s::text[])))",
                ([p.payment_id for p in payments], [p.gateway for p in payments if p.event_id is not None],
                 [p.event_id for p in payments if p.event_id is not None]))
            by_id: dict[str, tuple[str, int]] = {}
            by_event: dict[tuple[str, str], tuple[str, int]] = {}
            for pid, seq, gateway, event_id in cur.fetchall():
                by_id[pid] = (pid, int(seq))
                if event_id is not None:
                    by_event[(gateway, event_id)] = (pid, int(seq))
            results, rows = [], []
            for p in payments:
                stored = by_id.get(p.payment_id)
                if stored is None and p.event_id is not None:
                    stored = by_event.get((p.gateway, p.event_id))
                if stored is not None:
                    results.append(RecordResult(payment_id=p.payment_id, outcome=RecordOutcome.DUPLICATE,
                                                stored_payment_id=stored[0], receipt_seq=stored[1]))
                    continue
                receipt += 1
                by_id[p.payment_id] = (p.payment_id, receipt)
                if p.event_id is not None:
                    by_event[(p.gateway, p.event_id)] = (p.payment_id, receipt)
                rows.append((p.payment_id, p.gateway, p.event_id, p.account, p.amount_paise, p.channel,
                             p.paid_at, p.received_at, at, receipt, p.body, p.shard))
                results.append(RecordResult(payment_id=p.payment_id, outcome=RecordOutcome.NEW,
                                            stored_payment_id=p.payment_id, receipt_seq=receipt))
            if rows:
                cur.executemany(
                    "INSERT INTO jodo_payments (payment_id, gateway, event_id, account, amount_paise,"
                    " channel, paid_at, received_at, committed_at, receipt_seq, status, body, shard)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s)", rows)
            cur.execute("UPDATE jodo_ledger SET receipt_seq = %s, pending = pending + %s,"
                        " duplicates = duplicates + %s WHERE id = 1",
                        (receipt, len(rows), len(results) - len(rows)))
        return tuple(results)

    def mark_credited(self, acks: Sequence[CreditAck]) -> tuple[AckResult, ...]:
        results: list[AckResult] = []
        with self._db.write() as cur:
            cur.execute("SELECT 1 FROM jodo_ledger WHERE id = 1 FOR UPDATE")  # counts move with the rows
            cur.execute("SELECT payment_id, status, account FROM jodo_payments WHERE payment_id = ANY(%s)",
                        (list({a.payment_id for a in acks}),))
            known = {pid: (PaymentStatus(status), account) for pid, status, account in cur.fetchall()}
            deltas = {"pending": 0, "applied": 0, "suspense": 0}
            updates: dict[PaymentStatus, list[tuple[int, str]]] = {PaymentStatus.APPLIED: [],
                                                                   PaymentStatus.SUSPENSE: []}
            for ack in acks:
                row = known.get(ack.payment_id)
                if row is None:
                    raise UnknownPayment(ack.payment_id)
                status, account = row
                applied = ack.outcome is CreditOutcome.APPLIED
                target = PaymentStatus.APPLIED if applied else PaymentStatus.SUSPENSE
                if account != ack.account:
                    results.append(AckResult.STALE)
                elif status is target:
                    results.append(AckResult.DUPLICATE)
                elif status is not PaymentStatus.PENDING:
                    results.append(AckResult.STALE)
                else:
                    known[ack.payment_id] = (target, account)
                    updates[target].append((ack.at, ack.payment_id))
                    deltas["pending"] -= 1
                    deltas[target.value] += 1
                    results.append(AckResult.RECORDED)
            for target, rows in updates.items():
                if rows:
                    column = "applied_at" if target is PaymentStatus.APPLIED else "suspended_at"
                    cur.executemany(f"UPDATE jodo_payments SET status = '{target.value}', {column} = %s"
                                    " WHERE payment_id = %s AND status = 'pending'", rows)
            cur.execute("UPDATE jodo_ledger SET pending = pending + %s, applied = applied + %s,"
                        " suspense = suspense + %s WHERE id = 1",
                        (deltas["pending"], deltas["applied"], deltas["suspense"]))
        return tuple(results)

    def unacknowledged(
        self, *, after_receipt_seq: int = 0, shards: Collection[int] | None = None
    ) -> Iterator[PaymentRecord]:
        among = "" if shards is None else " AND shard = ANY(%s)"
        extra: tuple[Any, ...] = () if shards is None else (sorted(shards),)

        def fetch(after: int | None) -> list[tuple[Any, ...]]:
            return self._db.rows(
                f"SELECT {_PAYMENT_COLUMNS} FROM jodo_payments WHERE status = 'pending' AND receipt_seq > %s"
                f"{among} ORDER BY receipt_seq LIMIT %s",
                (after_receipt_seq if after is None else after, *extra, _PAGE))

        yield from (_payment(r) for r in _paged(fetch, lambda r: int(r[10])))

    def payment(self, payment_id: str) -> PaymentRecord | None:
        row = self._db.one(f"SELECT {_PAYMENT_COLUMNS} FROM jodo_payments WHERE payment_id = %s",
                           (payment_id,))
        return None if row is None else _payment(row)

    def payments_for_account(self, account: str, *, limit: int = 100) -> list[PaymentRecord]:
        rows = self._db.rows(f"SELECT {_PAYMENT_COLUMNS} FROM jodo_payments WHERE account = %s"
                             " ORDER BY receipt_seq DESC LIMIT %s", (account, limit))
        return [_payment(r) for r in rows]

    def payment_counts(self) -> PaymentCounts:
        row = self._db.one("SELECT pending, applied, suspense, duplicates FROM jodo_ledger WHERE id = 1")
        assert row is not None
        return PaymentCounts(pending=int(row[0]), applied=int(row[1]), suspense=int(row[2]),
                             duplicates=int(row[3]))

    def suspense(self, *, limit: int = 100, after_receipt_seq: int = 0) -> list[PaymentRecord]:
        rows = self._db.rows(f"SELECT {_PAYMENT_COLUMNS} FROM jodo_payments WHERE status = 'suspense'"
                             " AND receipt_seq > %s ORDER BY receipt_seq LIMIT %s",
                             (after_receipt_seq, limit))
        return [_payment(r) for r in rows]

    def count_suspense(self) -> int:
        return self.payment_counts().suspense

    def resolve_suspense(
        self, payment_id: str, account: str, *, at: int, by: str, shard: int | None = None
    ) -> ResolveResult:
        with self._db.write() as cur:
            cur.execute("SELECT 1 FROM jodo_ledger WHERE id = 1 FOR UPDATE")
            cur.execute("SELECT status FROM jodo_payments WHERE payment_id = %s FOR UPDATE", (payment_id,))
            row = cur.fetchone()
            if row is None:
                return ResolveResult.UNKNOWN_PAYMENT
            if row[0] != PaymentStatus.SUSPENSE.value:
                return ResolveResult.NOT_IN_SUSPENSE
            cur.execute(
                "UPDATE jodo_payments SET status = 'pending', original_account = COALESCE(original_account,"
                " account), account = %s, resolved_at = %s, resolved_by = %s, shard = COALESCE(%s, shard)"
                " WHERE payment_id = %s", (account, at, by, shard, payment_id))
            cur.execute("UPDATE jodo_ledger SET suspense = suspense - 1, pending = pending + 1 WHERE id = 1")
        return ResolveResult.RESOLVED

    def put_dead_letters(self, letters: Sequence[DeadLetter]) -> tuple[int, ...]:
        with self._db.write() as cur:
            cur.execute("UPDATE jodo_ledger SET dead_letter_id = dead_letter_id + %s WHERE id = 1"
                        " RETURNING dead_letter_id", (len(letters),))
            row = cur.fetchone()
            last = int(row[0]) if row else len(letters)
            ids = tuple(range(last - len(letters) + 1, last + 1))
            if letters:
                cur.executemany(
                    "INSERT INTO jodo_dead_letters (id, source, message_type, reason, at, body)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    [(i, d.source, d.message_type, d.reason, d.at, d.body)
                     for i, d in zip(ids, letters, strict=True)])
        return ids

    def dead_letters(self, *, limit: int = 100, before_id: int | None = None) -> list[StoredDeadLetter]:
        rows = self._db.rows("SELECT id, source, message_type, reason, at, body FROM jodo_dead_letters"
                             " WHERE id < %s ORDER BY id DESC LIMIT %s",
                             (2**62 if before_id is None else before_id, limit))
        return [StoredDeadLetter(id=int(i), source=s, message_type=m, reason=r, at=int(a), body=bytes(b))
                for i, s, m, r, a, b in rows]

    def count_dead_letters(self) -> int:
        row = self._db.one("SELECT dead_letter_id FROM jodo_ledger WHERE id = 1")
        return 0 if row is None else int(row[0])


# ---------------------------------------------------------------- backend


class PostgresBackend:
    """`StorageBackend` for PostgreSQL; `location` is a libpq DSN (it carries a password: never log it)."""

    name = "postgresql"

    def open_shard_store(
        self, location: str | os.PathLike[str], group: int, options: StoreOptions = DEFAULT_OPTIONS,
        *, fence: Fence | None = None,
    ) -> PostgresShardStore:
        return PostgresShardStore(str(location), group, options, fence)

    def open_desk_store(
        self, location: str | os.PathLike[str], options: StoreOptions = DEFAULT_OPTIONS
    ) -> PostgresDeskStore:
        return PostgresDeskStore(str(location), options)
