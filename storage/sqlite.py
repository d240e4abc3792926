"""The SQLite backend: the embedded default.

Layout under the data dir::

    <data_dir>/desk.sqlite3                     the payment desk (ledger, suspense, dead letters)
    <data_dir>/shards/group-0000.sqlite3        one file per shard group (journal, snapshots, outbox)
    <data_dir>/shards/group-0001.sqlite3        …

each with its `-wal` and `-shm` companions while open. Copy a store only while it is closed, or
with SQLite's backup API.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.api import DEFAULT_OPTIONS, StoreOptions
from storage.errors import InvalidRecord
from storage.sqlite_desk import SqliteDeskStore
from storage.sqlite_shard import SqliteShardStore

__all__ = [
    "SqliteBackend",
    "SqliteDeskStore",
    "SqliteShardStore",
    "desk_path",
    "open_desk_store",
    "open_shard_store",
    "shard_group_path",
]


def shard_group_path(data_dir: str | os.PathLike[str], group: int) -> Path:
    if type(group) is not int or not 0 <= group <= 9999:
        raise InvalidRecord(f"group must be an int in 0..9999, got {group!r}")
    return Path(data_dir) / "shards" / f"group-{group:04d}.sqlite3"


def desk_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "desk.sqlite3"


def open_shard_store(
    data_dir: str | os.PathLike[str], group: int, options: StoreOptions = DEFAULT_OPTIONS
) -> SqliteShardStore:
    """Open (creating if absent) the shard group's file under `data_dir`."""
    return SqliteShardStore(shard_group_path(data_dir, group), group, options)


def open_desk_store(
    data_dir: str | os.PathLike[str], options: StoreOptions = DEFAULT_OPTIONS
) -> SqliteDeskStore:
    """Open (creating if absent) the payment desk's file under `data_dir`."""
    return SqliteDeskStore(desk_path(data_dir), options)


class SqliteBackend:
    """`StorageBackend` for SQLite; `location` is the data dir."""

    name = "sqlite"

    def open_shard_store(
        self, location: str | os.PathLike[str], group: int, options: StoreOptions = DEFAULT_OPTIONS
    ) -> SqliteShardStore:
        return open_shard_store(location, group, options)

    def open_desk_store(
        self, location: str | os.PathLike[str], options: StoreOptions = DEFAULT_OPTIONS
    ) -> SqliteDeskStore:
        return open_desk_store(location, options)
