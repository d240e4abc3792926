"""The PostgreSQL backend: every store of a cluster in one database.

`location` is a libpq DSN ("host=… port=… dbname=… user=… password=…"); it is never put in an
exception message or a log (passwords are redacted). Opening a store connects (one connection per
store) and applies the migrations this code knows, under an advisory lock, so nodes starting at
once apply each step once:

    "cluster"  jodo_members, jodo_leases (storage/postgres_schema.py): fenced writes read the leases
    "store"    STORE_MIGRATIONS (storage/postgres_base.py): journal, snapshots, outbox, ledger, …

    storage/postgres_shard.py   PostgresShardStore: a shard group's rows (keyed by grp); fencing
    storage/postgres_desk.py    PostgresDeskStore: the one ledger every desk writes at once

A database whose schema is newer than this code raises `SchemaTooNew`; an unreachable server
raises `StorageUnavailable`.
"""

from __future__ import annotations

import os

from storage.api import DEFAULT_OPTIONS, StoreOptions
from storage.errors import InvalidRecord
from storage.postgres_base import STORE_MIGRATIONS
from storage.postgres_desk import PostgresDeskStore
from storage.postgres_schema import Fence
from storage.postgres_shard import PostgresShardStore

__all__ = ["STORE_MIGRATIONS", "PostgresBackend", "PostgresDeskStore", "PostgresShardStore"]


def _dsn(location: str | os.PathLike[str]) -> str:
    if not isinstance(location, str) or not location:
        raise InvalidRecord("the postgresql backend's location is a libpq DSN string")
    return location


class PostgresBackend:
    """`StorageBackend` for PostgreSQL; `location` is a DSN."""

    name = "postgresql"

    def open_shard_store(
        self,
        location: str | os.PathLike[str],
        group: int,
        options: StoreOptions = DEFAULT_OPTIONS,
        *,
        fence: Fence | None = None,
    ) -> PostgresShardStore:
        """Open group `group`'s store; with `fence`, every write checks that lease first."""
        return PostgresShardStore(_dsn(location), group, options, fence)

    def open_desk_store(
        self, location: str | os.PathLike[str], options: StoreOptions = DEFAULT_OPTIONS
    ) -> PostgresDeskStore:
        return PostgresDeskStore(_dsn(location), options)
