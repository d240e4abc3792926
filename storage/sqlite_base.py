"""What both SQLite stores share: opening a file, its schema version, transactions, errors.

A store file is opened in WAL mode with `synchronous` FULL (or NORMAL), so readers never block
the writer and a commit returns only once it is in the WAL (and, with FULL, fsynced). Writes use
BEGIN IMMEDIATE: writers from other connections or processes queue on the busy timeout rather
than failing half-way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from storage.api import StoreOptions
from storage.errors import (
    NotAStore,
    SchemaTooNew,
    StorageError,
    StorageUnavailable,
    StoreClosed,
    StoreOpenError,
    WriteRejected,
    WrongStoreKind,
)

__all__ = ["SqliteFile"]

_CACHE_KIB = 65_536  # page cache per connection; the hot b-tree pages of a busy group fit
_WAL_SIZE_LIMIT = 64 * 1024 * 1024  # truncate the WAL back to this after a checkpoint
# errors that mean "this input cannot be stored", as opposed to "the store failed"
_REJECTED = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    OverflowError,
)


def _connect(path: Path, options: StoreOptions) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(
            path, isolation_level=None, timeout=options.busy_timeout_ms / 1000, cached_statements=64
        )
    except (OSError, sqlite3.Error) as exc:
        raise StoreOpenError(str(path), str(exc)) from exc


def _schema_is_current(conn: sqlite3.Connection, kind: str, version: int) -> bool:
    """True when the file already holds this store at this version: checked in a read transaction,
    so opening a store (the front door opens the guard store per request) never waits on a writer.
    Anything else — a new file, an old version, a foreign file — goes the locked path below."""
    try:
        row = conn.execute("SELECT store, version FROM schema_version").fetchone()
    except sqlite3.DatabaseError:  # no such table, not a database, locked in a rollback journal
        return False
    return row is not None and tuple(row) == (kind, version)


def _check_or_create_schema(
    conn: sqlite3.Connection, path: Path, kind: str, version: int, ddl: Sequence[str],
    migrations: Mapping[int, Sequence[str]],
) -> None:
    if _schema_is_current(conn, kind, version):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_version" not in tables:
            if tables:
                raise NotAStore(str(path), "has tables but no jodo schema_version table")
            conn.execute("CREATE TABLE schema_version (store TEXT NOT NULL, version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version (store, version) VALUES (?, ?)", (kind, version))
            for statement in ddl:
                conn.execute(statement)
        else:
            row = conn.execute("SELECT store, version FROM schema_version").fetchone()
            if row is None:
                raise NotAStore(str(path), "schema_version table is empty")
            found_kind, found_version = row
            if found_kind != kind:
                raise WrongStoreKind(str(path), f"is a {found_kind} store, not a {kind} store")
            if found_version > version:
                raise SchemaTooNew(str(path), found_version, version)
            for step in range(found_version, version):  # migrations[n] takes version n to n + 1
                if step not in migrations:
                    raise StoreOpenError(str(path), f"no migration from schema version {step}")
                for statement in migrations[step]:
                    conn.execute(statement)
            if found_version < version:
                conn.execute("UPDATE schema_version SET version = ?", (version,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _configure(conn: sqlite3.Connection, path: Path, options: StoreOptions) -> None:
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreOpenError(str(path), f"cannot switch to WAL (journal_mode is {mode})")
    conn.execute(f"PRAGMA synchronous={options.synchronous.upper()}")
    conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")


class SqliteFile:
    """One connection to one store file; base of the SQLite stores."""

    def __init__(
        self, path: Path, options: StoreOptions, *, kind: str, version: int, ddl: Sequence[str],
        migrations: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        self.path = path
        self.options = options
        conn = _connect(path, options)
        try:
            # validate before configuring, so a foreign file is refused untouched
            _check_or_create_schema(conn, path, kind, version, ddl, migrations or {})
            _configure(conn, path, options)
        except StorageError:
            conn.close()
            raise
        except sqlite3.OperationalError as exc:
            conn.close()
            raise StorageUnavailable(f"{path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            conn.close()
            raise NotAStore(str(path), str(exc)) from exc
        self._conn: sqlite3.Connection | None = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosed(f"{self.path} is closed")
        return self._conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except (sqlite3.Error, OverflowError) as exc:
            raise self._storage_error(exc) from exc

    def _storage_error(self, exc: Exception) -> StorageError:
        if self._conn is None:  # closed while a caller was still iterating
            return StoreClosed(f"{self.path} is closed")
        if isinstance(exc, _REJECTED):
            return WriteRejected(f"{self.path}: {exc}")
        return StorageUnavailable(f"{self.path}: {exc}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on exit, rolled back whole on any exception."""
        conn = self._db()
        with self._translated():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def set_cache_kib(self, kib: int) -> None:
        """Cap this connection's page cache at ``kib`` KiB; pages beyond it are freed now."""
        with self._translated():
            self._db().execute(f"PRAGMA cache_size=-{max(64, int(kib))}")

    def release_memory(self) -> None:
        """Give back every cached page no transaction holds (SQLite's `sqlite3_db_release_memory`)."""
        with self._translated():
            self._db().execute("PRAGMA shrink_memory")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._db()
        with self._translated():
            return conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        conn = self._db()
        with self._translated():
            return conn.execute(sql, params).fetchone()

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

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
