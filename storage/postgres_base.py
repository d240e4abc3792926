"""What both PostgreSQL stores share: the tables, one connection, transactions, error mapping.

Every store of a cluster uses the same tables (`STORE_MIGRATIONS`): shard groups' rows carry their
group in a `grp` column, the desk's ledger is one ledger for every desk. A store holds one
connection in autocommit mode; every write is one explicit transaction (`_write`), every read one
statement (iterators page with keyset queries, holding no transaction between pages).

Errors are mapped onto storage/errors.py and never carry the DSN's password:

    IntegrityError, DataError (the caller's values)    → WriteRejected
    a deadlock or serialisation failure                → the transaction is retried (a few times)
    anything else from psycopg (lost server, timeout)  → StorageUnavailable; the next call reconnects
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from psycopg import errors as pg_errors

from storage.api import StoreOptions
from storage.errors import StorageError, StorageUnavailable, StoreClosed, WriteRejected
from storage.postgres_cluster import redact
from storage.postgres_schema import CLUSTER_MIGRATIONS, migrate

__all__ = ["STORE_MIGRATIONS", "PostgresConnection"]

T = TypeVar("T")

_RETRIES = 5  # a deadlock between two desks' batches is retried this many times before giving up
_RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_REJECTED = (psycopg.IntegrityError, psycopg.DataError, OverflowError)

#: Migration n (1-based) of the "store" component is STORE_MIGRATIONS[n - 1]; append only.
STORE_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # ---- shard groups: one segment row per (commit, logical shard), as in SQLite
        """CREATE TABLE jodo_shard_heads (
            grp integer NOT NULL CHECK (grp >= 0),
            shard integer NOT NULL CHECK (shard >= 0),
            last_seq bigint NOT NULL CHECK (last_seq >= 0),
            upto_at bigint NOT NULL,
            PRIMARY KEY (grp, shard)
        )""",
        """CREATE TABLE jodo_journal_segments (
            grp integer NOT NULL,
            shard integer NOT NULL,
            first_seq bigint NOT NULL CHECK (first_seq >= 1),
            last_seq bigint NOT NULL,
            upto_at bigint NOT NULL,
            events bytea NOT NULL,
            PRIMARY KEY (grp, shard, first_seq),
            CHECK (last_seq >= first_seq)
        )""",
        """CREATE TABLE jodo_snapshots (
            grp integer NOT NULL,
            shard integer NOT NULL,
            upto_seq bigint NOT NULL CHECK (upto_seq >= 0),
            at bigint NOT NULL,
            body bytea NOT NULL,
            PRIMARY KEY (grp, shard, upto_seq)
        )""",
        """CREATE TABLE jodo_outbox (
            grp integer NOT NULL,
            id text NOT NULL,
            shard integer NOT NULL,
            kind text NOT NULL,
            account text NOT NULL,
            status text NOT NULL CHECK (status IN ('pending', 'sent', 'done', 'failed')),
            attempts integer NOT NULL,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            body bytea NOT NULL,
            PRIMARY KEY (grp, id)
        )""",
        """CREATE INDEX jodo_outbox_open ON jodo_outbox (grp, created_at, id)
            WHERE status IN ('pending', 'sent')""",
        # lz4 where the server has it (PostgreSQL 14+ built with lz4): segments and snapshots are
        # TOASTed, and pglz doubled the time of a commit's INSERT (measured: 256 segments of ~5 KB)
        """DO $$ BEGIN
               EXECUTE 'ALTER TABLE jodo_journal_segments ALTER COLUMN events SET COMPRESSION lz4';
               EXECUTE 'ALTER TABLE jodo_snapshots ALTER COLUMN body SET COMPRESSION lz4';
           EXCEPTION WHEN OTHERS THEN NULL;  -- no lz4 here: keep the default
           END $$""",
        # ---- the desk: one ledger for every desk of the cluster
        "CREATE SEQUENCE jodo_receipt_seq",
        """CREATE TABLE jodo_payments (
            payment_id text PRIMARY KEY,
            gateway text NOT NULL,
            event_id text,
            account text NOT NULL,
            original_account text,
            amount_paise bigint NOT NULL CHECK (amount_paise > 0),
            channel text NOT NULL,
            paid_at bigint NOT NULL,
            received_at bigint NOT NULL,
            committed_at bigint NOT NULL,
            receipt_seq bigint NOT NULL UNIQUE,
            status text NOT NULL CHECK (status IN ('pending', 'applied', 'suspense')),
            applied_at bigint,
            suspended_at bigint,
            resolved_at bigint,
            resolved_by text,
            body bytea NOT NULL,
            shard integer CHECK (shard >= 0)
        )""",
        """CREATE UNIQUE INDEX jodo_payments_by_gateway_event ON jodo_payments (gateway, event_id)
            WHERE event_id IS NOT NULL""",
        "CREATE INDEX jodo_payments_pending ON jodo_payments (receipt_seq) WHERE status = 'pending'",
        """CREATE INDEX jodo_payments_pending_by_shard ON jodo_payments (shard, receipt_seq)
            WHERE status = 'pending'""",
        "CREATE INDEX jodo_payments_suspense ON jodo_payments (receipt_seq) WHERE status = 'suspense'",
        "CREATE INDEX jodo_payments_by_account ON jodo_payments (account, receipt_seq)",
        # counts as deltas in a few rows, summed on read (see storage/postgres_desk.py)
        """CREATE TABLE jodo_desk_counts (
            slot integer PRIMARY KEY,
            pending bigint NOT NULL DEFAULT 0,
            applied bigint NOT NULL DEFAULT 0,
            suspense bigint NOT NULL DEFAULT 0,
            duplicates bigint NOT NULL DEFAULT 0,
            dead_letters bigint NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE jodo_dead_letters (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            source text NOT NULL,
            message_type text NOT NULL,
            reason text NOT NULL,
            at bigint NOT NULL,
            body bytea NOT NULL
        )""",
    ),
    (
        # ---- 2: the audit chain (storage/audit.py); rows from before it keep NULL hashes
        "ALTER TABLE jodo_shard_heads ADD COLUMN chain_hash bytea",
        "ALTER TABLE jodo_journal_segments ADD COLUMN prev_hash bytea, ADD COLUMN chain_hash bytea",
        "ALTER TABLE jodo_payments ADD COLUMN body_digest bytea, ADD COLUMN audit_version bigint",
        """CREATE TABLE jodo_audit_links (
            chain text NOT NULL, seq bigint NOT NULL, at bigint NOT NULL, record bytea NOT NULL,
            hash bytea NOT NULL, PRIMARY KEY (chain, seq)
        )""",
        "CREATE TABLE jodo_audit_heads (chain text PRIMARY KEY, seq bigint NOT NULL, hash bytea NOT NULL)",
        "CREATE TABLE jodo_audit_meta (name text PRIMARY KEY, value bigint NOT NULL)",
        """INSERT INTO jodo_audit_meta (name, value)
           SELECT 'pre_chain_receipts', coalesce(max(receipt_seq), 0) FROM jodo_payments""",
        """CREATE TABLE jodo_audit_checkpoints (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at bigint NOT NULL,
            body bytea NOT NULL, signature bytea NOT NULL, sent_at bigint
        )""",
    ),
)


#: Below the cluster's default lease TTL (3 s): a take-over waits at most this long for a paused writer.
IDLE_IN_TRANSACTION_MS = 1_000


def _unavailable(what: str, exc: BaseException) -> StorageUnavailable:
    return StorageUnavailable(redact(f"{what}: {type(exc).__name__}: {exc}"))


def connect(dsn: str, options: StoreOptions, what: str) -> psycopg.Connection[Any]:
    """An autocommit connection with the store's settings, both schemas migrated."""
    settings = (
        f"-c lock_timeout={options.busy_timeout_ms}"
        f" -c synchronous_commit={'on' if options.synchronous == 'full' else 'off'}"
        # a writer paused inside a transaction (SIGSTOP, a frozen VM) would hold its share lock on
        # its group's lease row, and the take-over's UPDATE would wait for it for as long as the
        # pause lasts: the server ends such a session instead (its transaction rolls back)
        f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
    )
    try:
        # bounded waits when the network drops packets (a partition): connect, and unacknowledged
        # data (tcp_user_timeout), each give up within seconds instead of the kernel's minutes
        conn = psycopg.connect(dsn, autocommit=True, options=settings, connect_timeout=5,
                               tcp_user_timeout=5_000, keepalives=1, keepalives_idle=5,
                               keepalives_interval=2, keepalives_count=2)
    except psycopg.Error as exc:
        raise _unavailable(f"{what}: cannot connect", exc) from None
    try:
        migrate(conn, "cluster", CLUSTER_MIGRATIONS)  # fenced writes read jodo_leases
        migrate(conn, "store", STORE_MIGRATIONS)
    except StorageError:
        conn.close()
        raise
    except psycopg.Error as exc:
        conn.close()
        raise _unavailable(f"{what}: schema", exc) from None
    return conn


class PostgresConnection:
    """One connection to the cluster's database; base of the PostgreSQL stores."""

    def __init__(self, dsn: str, options: StoreOptions, what: str) -> None:
        self.options = options
        self._dsn = dsn
        self._what = what  # names the store in messages (never the DSN: it holds a password)
        self._conn: psycopg.Connection[Any] | None = connect(dsn, options, what)
        self._closed = False

    def _db(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreClosed(f"{self._what} is closed")
        conn = self._conn
        if conn is None or conn.broken or conn.closed:  # lost earlier: reconnect
            self._drop()
            self._conn = conn = connect(self._dsn, self.options, self._what)
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _error(self, exc: BaseException) -> StorageError:
        if self._closed:  # closed while a caller was still iterating
            return StoreClosed(f"{self._what} is closed")
        if isinstance(exc, _REJECTED):
            return WriteRejected(redact(f"{self._what}: {type(exc).__name__}: {exc}"))
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            self._drop()
        return _unavailable(self._what, exc)

    def _write(self, body: Callable[[psycopg.Cursor[Any]], T]) -> T:
        """Run `body` in one transaction: committed when it returns, rolled back whole if it raises.
        A deadlock or serialisation failure runs it again from the start."""
        for attempt in range(_RETRIES):
            conn = self._db()
            try:
                with conn.transaction(), conn.cursor(binary=True) as cur:
                    return body(cur)
            except StorageError:
                raise
            except _RETRIED as exc:
                if attempt == _RETRIES - 1:
                    raise self._error(exc) from None
            except (psycopg.Error, OverflowError) as exc:
                raise self._error(exc) from None
        raise AssertionError("unreachable")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._db()
        try:
            with conn.cursor(binary=True) as cur:
                return cur.execute(sql, params).fetchall()
        except (psycopg.Error, OverflowError) as exc:
            raise self._error(exc) from None

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except (psycopg.Error, OverflowError) as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        self._closed = True
        self._drop()

    def __enter__(self) -> Self:
        self._db()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
