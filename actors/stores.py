"""Where the actors' durable state lives: one place that opens the desk and shard stores.

The backend is chosen by whoever starts the node, before the actor system forks (actors inherit
the environment): `JODO_STORE_BACKEND` = "sqlite" (default: files under the data dir) or
"postgresql", with the DSN in `JODO_STORE_DSN`. The DSN carries a password, so it travels in the
environment of the node's own processes, never in a message (messages may be logged) or a log line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from storage import backend
from storage.api import DeskStore, ShardStore, StoreOptions
from storage.postgres_schema import Fence

__all__ = ["BACKEND_ENV", "DSN_ENV", "open_desk", "open_shard", "store_backend"]

BACKEND_ENV = "JODO_STORE_BACKEND"
DSN_ENV = "JODO_STORE_DSN"


def store_backend() -> str:
    return os.environ.get(BACKEND_ENV, "sqlite") or "sqlite"


def _location(data_dir: str | os.PathLike[str]) -> str | os.PathLike[str]:
    if store_backend() == "postgresql":
        dsn = os.environ.get(DSN_ENV, "")
        if not dsn:
            raise RuntimeError(f"{BACKEND_ENV}=postgresql but {DSN_ENV} is not set")
        return dsn
    return Path(data_dir)


def open_shard(
    data_dir: str | os.PathLike[str], group: int, options: StoreOptions, fence: Fence | None = None
) -> ShardStore:
    """The group's store; writes fenced at `fence` (PostgreSQL only: SQLite is one node's)."""
    chosen: Any = backend(store_backend())
    if fence is not None:
        if store_backend() != "postgresql":
            raise RuntimeError("fenced shard stores need the postgresql backend")
        return chosen.open_shard_store(_location(data_dir), group, options, fence=fence)  # type: ignore[no-any-return]
    return chosen.open_shard_store(_location(data_dir), group, options)  # type: ignore[no-any-return]


def open_desk(data_dir: str | os.PathLike[str], options: StoreOptions | None = None) -> DeskStore:
    chosen: Any = backend(store_backend())
    if options is None:
        return chosen.open_desk_store(_location(data_dir))  # type: ignore[no-any-return]
    return chosen.open_desk_store(_location(data_dir), options)  # type: ignore[no-any-return]
