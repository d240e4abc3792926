"""Durable state behind one interface: journal, snapshots, ledger, outbox, dead letters, audit.

The ports are `ShardStore` and `DeskStore` (storage/api.py); records are in storage/records.py,
errors in storage/errors.py. `open_shard_store` / `open_desk_store` open the embedded default
(SQLite under a data dir); `backend(name)` picks another ("memory" for actor-tier tests).
Storage is byte-oriented: it never imports domain/ or protocols/.
"""

from __future__ import annotations

from storage.api import DEFAULT_OPTIONS, DeskStore, ShardStore, StorageBackend, StoreOptions
from storage.errors import (
    Fenced,
    HeadMismatch,
    InvalidRecord,
    NotAStore,
    SchemaTooNew,
    SnapshotAheadOfJournal,
    StorageError,
    StorageUnavailable,
    StoreClosed,
    StoreOpenError,
    UnknownOutboxEntry,
    UnknownPayment,
    WriteRejected,
    WrongStoreKind,
)
from storage.memory import MemoryBackend
from storage.postgres import PostgresBackend
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
)
from storage.sqlite import SqliteBackend, open_desk_store, open_shard_store

__all__ = [
    "DEFAULT_OPTIONS",
    "AckResult",
    "CommitResult",
    "CreditAck",
    "CreditOutcome",
    "DeadLetter",
    "DeskStore",
    "Fenced",
    "HeadMismatch",
    "InvalidRecord",
    "JournalEvent",
    "MemoryBackend",
    "NewEvent",
    "NewOutboxEntry",
    "NewPayment",
    "NotAStore",
    "OutboxEntry",
    "OutboxStatus",
    "OutboxUpdate",
    "PaymentCounts",
    "PaymentRecord",
    "PaymentStatus",
    "PostgresBackend",
    "RecordOutcome",
    "RecordResult",
    "ResolveResult",
    "SchemaTooNew",
    "ShardStore",
    "Snapshot",
    "SnapshotAheadOfJournal",
    "SqliteBackend",
    "StorageBackend",
    "StorageError",
    "StorageUnavailable",
    "StoreClosed",
    "StoreOpenError",
    "StoreOptions",
    "StoredDeadLetter",
    "UnknownOutboxEntry",
    "UnknownPayment",
    "WriteRejected",
    "WrongStoreKind",
    "backend",
    "open_desk_store",
    "open_shard_store",
]

_BACKENDS: dict[str, StorageBackend] = {
    "sqlite": SqliteBackend(), "memory": MemoryBackend(), "postgresql": PostgresBackend(),
}


def backend(name: str) -> StorageBackend:
    """The backend called `name` ("sqlite", "memory", "postgresql"); KeyError names the known ones."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown storage backend {name!r}; known: {sorted(_BACKENDS)}") from None
