"""Errors raised by every storage backend.

Expected outcomes are not errors: a duplicate payment, an outbox id inserted twice, a late credit
acknowledgement or an outbox update for an entry already finished are reported in return values.
What is raised here is either a bug in the caller, a file that cannot be used, or a broken disk.

    StorageError                      base; catch it only to log and crash
    ├── StoreOpenError                the file cannot be used as this store; nothing was changed
    │   ├── NotAStore                 not SQLite, or SQLite without a jodo schema
    │   ├── WrongStoreKind            a desk file opened as a shard group, or the reverse
    │   └── SchemaTooNew              written by a newer jodo
    ├── StoreClosed                   a method called after close()
    ├── WriteRejected                 the call was refused whole: nothing from it was applied
    │   ├── InvalidRecord             a record breaks its own invariants (also a ValueError)
    │   ├── UnknownOutboxEntry        an outbox update names an id never inserted
    │   ├── SnapshotAheadOfJournal    a snapshot claims a seq the shard has not reached
    │   ├── UnknownPayment            a credit acknowledgement names a payment never recorded
    │   └── HeadMismatch              expect_heads did not match: another writer owns the shard
    ├── Fenced                        the writer's lease (owner, epoch) no longer holds: nothing applied
    └── StorageUnavailable            I/O error, disk full, lock timeout, corrupt page
"""

from __future__ import annotations

__all__ = [
    "Fenced",
    "HeadMismatch",
    "InvalidRecord",
    "NotAStore",
    "SchemaTooNew",
    "SnapshotAheadOfJournal",
    "StorageError",
    "StorageUnavailable",
    "StoreClosed",
    "StoreOpenError",
    "UnknownOutboxEntry",
    "UnknownPayment",
    "WriteRejected",
    "WrongStoreKind",
]


class StorageError(Exception):
    """Base of every storage error. Callers catch a subclass; catching this one is for logging."""


class StoreOpenError(StorageError):
    """Raised by `open_*`: the file at `path` cannot be used. Nothing in it was changed.

    Caller: do not start the actor; report the path and the reason to the operator.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class NotAStore(StoreOpenError):
    """Raised by `open_*` when the file is not SQLite, or holds tables but no jodo schema.

    Caller: check the data dir in the configuration; never delete the file automatically.
    """


class WrongStoreKind(StoreOpenError):
    """Raised by `open_*` when the file belongs to the other kind of store (desk vs shard group).

    Caller: the configuration maps a path to the wrong role; fix the configuration.
    """


class SchemaTooNew(StoreOpenError):
    """Raised by `open_*` when the file's schema version is newer than this code understands.

    Caller: a newer jodo wrote this file; run that version (or newer). Never downgrade the file.
    """

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(path, f"schema version {found} is newer than supported {supported}")
        self.found = found
        self.supported = supported


class StoreClosed(StorageError):
    """Raised by any method called after `close()`. Caller: a bug; reopen the store instead."""


class WriteRejected(StorageError):
    """Raised by a write that was refused whole: nothing from the call was applied.

    Caller: a bug in the caller or corrupt input; retrying the same call fails the same way.
    Dead-letter the message that produced it and let the actor restart from durable state.
    """


class InvalidRecord(WriteRejected, ValueError):
    """Raised by a record's constructor (or by a backend re-checking it) when a field is out of
    range or of the wrong type: an empty id, a negative shard, a non-bytes body, amount <= 0.

    Caller: fix the code that built the record; the message names the field.
    """


class UnknownOutboxEntry(WriteRejected):
    """Raised by `ShardStore.commit` when an outbox update names an id that was never inserted
    (in this store, nor earlier in the same commit). The whole commit is rolled back.

    Caller: a bug (an effect updated before it was written); dead-letter the message.
    """

    def __init__(self, entry_id: str) -> None:
        super().__init__(f"outbox entry {entry_id!r} does not exist")
        self.entry_id = entry_id


class SnapshotAheadOfJournal(WriteRejected):
    """Raised by `ShardStore.save_snapshots` when a snapshot's `upto_seq` is beyond the shard's
    journal head: it would claim events that were never journaled. No snapshot of the call is kept.

    Caller: a bug; snapshot only state folded from committed events.
    """

    def __init__(self, shard: int, upto_seq: int, head: int) -> None:
        super().__init__(f"snapshot of shard {shard} up to seq {upto_seq} is beyond head {head}")
        self.shard = shard
        self.upto_seq = upto_seq
        self.head = head


class UnknownPayment(WriteRejected):
    """Raised by `DeskStore.mark_credited` when an acknowledgement names a payment the ledger
    never recorded. No acknowledgement of the batch is applied.

    Caller: a bug or a message meant for another desk; dead-letter the acknowledgement batch.
    """

    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id!r} was never recorded")
        self.payment_id = payment_id


class HeadMismatch(WriteRejected):
    """Raised by `ShardStore.commit(expect_heads=...)` when a shard's journal head is not the one
    the caller expected: another process wrote to the shard. Nothing of the commit was applied.

    Caller: this actor no longer owns the shard (it moved, or a stale instance is alive). Stop
    writing; exit and let the supervisor decide. Do not retry with the new head.
    """

    def __init__(self, shard: int, expected: int, found: int) -> None:
        super().__init__(f"shard {shard}: expected head {expected}, found {found}")
        self.shard = shard
        self.expected = expected
        self.found = found


class Fenced(StorageError):
    """Raised by a write of a fenced store (PostgreSQL, cluster mode) when the lease it was opened
    with no longer holds: another node took the resource (a higher epoch), it was released, or it
    expired. Checked inside the write's own transaction, so nothing of the write was applied.

    Caller: this node no longer owns the shard group. Stop it at once: send nothing more for it
    (no acknowledgement, no relay command), drop its state, tell the cluster keeper. Never retry.
    """

    def __init__(
        self, resource: str, owner: str, epoch: int, found_owner: str | None, found_epoch: int | None
    ) -> None:
        super().__init__(
            f"{resource}: lease of {owner} at epoch {epoch} no longer holds "
            f"(now {found_owner or 'nobody'} at epoch "
            f"{found_epoch if found_epoch is not None else 'expired'})"
        )
        self.resource = resource
        self.owner = owner
        self.epoch = epoch
        self.found_owner = found_owner
        self.found_epoch = found_epoch


class StorageUnavailable(StorageError):
    """Raised by any call when the backend fails underneath: I/O error, disk full, database locked
    beyond the busy timeout, a corrupt page. If it was raised by a write, the write may or may
    not have committed (a failure during COMMIT leaves the outcome unknown).

    Caller: do not acknowledge anything from the call. Crash; the supervisor restarts the actor,
    which recovers from what is durable and re-sends (receivers are idempotent).
    """
