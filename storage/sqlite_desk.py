"""DeskStore on SQLite: the payment desk's ledger, suspense and dead letters in one file.

Counts (payments by status, duplicates, dead letters) and the receipt/dead-letter sequences live
in a `counters` table updated in the same transaction as the rows they count, so a metrics
scrape reads a few rows instead of counting millions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path

from storage.api import StoreOptions
from storage.audit import (
    DESK_STORE,
    GENESIS,
    PAYMENT_IMAGE,
    ChainHead,
    DeskLink,
    StoredCheckpoint,
    Verdict,
    body_digest,
    desk_chain,
    desk_link,
    verify_desk,
)
from storage.records import (
    AckResult,
    CreditAck,
    DeadLetter,
    NewPayment,
    PaymentCounts,
    PaymentRecord,
    PaymentStatus,
    RecordOutcome,
    RecordResult,
    ResolveResult,
    StoredDeadLetter,
    decide_acks,
)
from storage.sqlite_base import SqliteFile

__all__ = ["SCHEMA_VERSION", "SqliteDeskStore"]

SCHEMA_VERSION = 3  # 3: the audit chain (storage/audit.py)
_KIND = "desk"
_PAGE = 500

_AUDIT_DDL = (
    """CREATE TABLE audit_links (
        chain TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, record BLOB NOT NULL,
        hash BLOB NOT NULL, PRIMARY KEY (chain, seq)
    ) STRICT""",
    """CREATE TABLE audit_heads (chain TEXT NOT NULL PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL)
        STRICT""",
    "CREATE TABLE audit_meta (name TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL) STRICT",
    """CREATE TABLE audit_checkpoints (
        id INTEGER NOT NULL PRIMARY KEY, at INTEGER NOT NULL, body BLOB NOT NULL,
        signature BLOB NOT NULL, sent_at INTEGER
    ) STRICT""",
)
_CHAIN = desk_chain(0)  # one writer per file: one chain

_DDL = (
    "CREATE TABLE counters (name TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL) STRICT",
    """INSERT INTO counters (name, value) VALUES ('receipt_seq', 0), ('dead_letter_id', 0),
        ('pending', 0), ('applied', 0), ('suspense', 0), ('duplicates', 0)""",
    """CREATE TABLE payments (
        payment_id TEXT NOT NULL PRIMARY KEY,
        gateway TEXT NOT NULL,
        event_id TEXT,
        account TEXT NOT NULL,
        original_account TEXT,
        amount_paise INTEGER NOT NULL CHECK (amount_paise > 0),
        channel TEXT NOT NULL,
        paid_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        committed_at INTEGER NOT NULL,
        receipt_seq INTEGER NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'suspense')),
        applied_at INTEGER,
        suspended_at INTEGER,
        resolved_at INTEGER,
        resolved_by TEXT,
        body BLOB NOT NULL,
        shard INTEGER,
        body_digest BLOB,
        audit_version INTEGER
    ) STRICT""",
    "CREATE INDEX payments_pending_by_shard ON payments (shard, receipt_seq) WHERE status = 'pending'",
    """CREATE UNIQUE INDEX payments_by_gateway_event ON payments (gateway, event_id)
        WHERE event_id IS NOT NULL""",
    "CREATE INDEX payments_pending ON payments (receipt_seq) WHERE status = 'pending'",
    "CREATE INDEX payments_suspense ON payments (receipt_seq) WHERE status = 'suspense'",
    "CREATE INDEX payments_by_account ON payments (account, receipt_seq)",
    """CREATE TABLE dead_letters (
        id INTEGER NOT NULL PRIMARY KEY,
        source TEXT NOT NULL,
        message_type TEXT NOT NULL,
        reason TEXT NOT NULL,
        at INTEGER NOT NULL,
        body BLOB NOT NULL
    ) STRICT""",
    *_AUDIT_DDL,
    "INSERT INTO audit_meta (name, value) VALUES ('pre_chain_receipts', 0)",
)

#: version n -> n + 1 for files written by an older jodo
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE payments ADD COLUMN shard INTEGER",
        "CREATE INDEX payments_pending_by_shard ON payments (shard, receipt_seq) WHERE status = 'pending'",
    ),
    2: (
        "ALTER TABLE payments ADD COLUMN body_digest BLOB",
        "ALTER TABLE payments ADD COLUMN audit_version INTEGER",
        *_AUDIT_DDL,
        # the chain starts here: payments recorded before it are named as such by verify
        "INSERT INTO audit_meta (name, value) SELECT 'pre_chain_receipts', value FROM counters"
        " WHERE name = 'receipt_seq'",
    ),
}

_PAYMENT_COLUMNS = (
    "payment_id, gateway, event_id, account, original_account, amount_paise, channel, paid_at,"
    " received_at, committed_at, receipt_seq, status, applied_at, suspended_at, resolved_at,"
    " resolved_by, body, shard"
)


def _payment(row: tuple[object, ...]) -> PaymentRecord:
    values = dict(zip(_PAYMENT_COLUMNS.replace(" ", "").split(","), row, strict=True))
    values["status"] = PaymentStatus(str(values["status"]))
    return PaymentRecord(**values)  # type: ignore[arg-type]


def _bump(db: sqlite3.Connection, deltas: dict[str, int]) -> None:
    db.executemany(
        "UPDATE counters SET value = value + ? WHERE name = ?",
        [(delta, name) for name, delta in deltas.items() if delta],
    )


def _counter(db: sqlite3.Connection, name: str) -> int:
    return int(db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])


_IN_CHUNK = 500  # ids per IN (...) look-up, well under SQLite's variable limit
_IMAGE_COLUMNS = ", ".join(PAYMENT_IMAGE)


_STATUS_AT = PAYMENT_IMAGE.index("status")
_ACCOUNT_AT = PAYMENT_IMAGE.index("account")
_APPLIED_AT = PAYMENT_IMAGE.index("applied_at")
_SUSPENDED_AT = PAYMENT_IMAGE.index("suspended_at")
_AUDIT_VERSION_AT = PAYMENT_IMAGE.index("audit_version")


def _image_rows(db: sqlite3.Connection, ids: Sequence[str]) -> list[tuple[object, ...]]:
    """The audit images (storage/audit.py PAYMENT_IMAGE) of these payments as stored (any order)."""
    found: list[tuple[object, ...]] = []
    for lo in range(0, len(ids), _IN_CHUNK):
        part = ids[lo : lo + _IN_CHUNK]
        marks = ",".join("?" * len(part))
        found += db.execute(f"SELECT {_IMAGE_COLUMNS} FROM payments WHERE payment_id IN ({marks})", part)
    return found


def _images(db: sqlite3.Connection, ids: Sequence[str]) -> list[tuple[object, ...]]:
    """The audit images of payments just changed, in `ids` order."""
    found = {row[0]: tuple(row) for row in _image_rows(db, ids)}
    return [found[i] for i in ids]


def _credited_image(row: tuple[object, ...], target: PaymentStatus, at: int) -> tuple[object, ...]:
    """The image of ``row`` after `mark_credited`'s UPDATE to ``target`` at ``at`` (the same columns
    that statement sets: status, applied_at or suspended_at, audit_version + 1)."""
    image = list(row)
    image[_STATUS_AT] = target.value
    image[_APPLIED_AT if target is PaymentStatus.APPLIED else _SUSPENDED_AT] = at
    version = image[_AUDIT_VERSION_AT]
    image[_AUDIT_VERSION_AT] = (version if isinstance(version, int) else 0) + 1
    return tuple(image)


class SqliteDeskStore(SqliteFile):
    """The payment desk's store in one SQLite file."""

    def __init__(self, path: Path, options: StoreOptions) -> None:
        super().__init__(path, options, kind=_KIND, version=SCHEMA_VERSION, ddl=_DDL, migrations=_MIGRATIONS)

    # ------------------------------------------------------------ ledger

    def record_payments(self, payments: Sequence[NewPayment], *, at: int) -> tuple[RecordResult, ...]:
        results = []
        images: list[tuple[object, ...]] = []
        digests = [body_digest(p.body) for p in payments]  # outside the write lock
        with self._write() as db:
            receipt = _counter(db, "receipt_seq")
            for p, digest in zip(payments, digests, strict=True):
                cursor = db.execute(
                    "INSERT INTO payments (payment_id, gateway, event_id, account, amount_paise,"
                    " channel, paid_at, received_at, committed_at, receipt_seq, status, body, shard,"
                    " body_digest, audit_version)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, 1)"
                    " ON CONFLICT (payment_id) DO NOTHING"
                    " ON CONFLICT (gateway, event_id) WHERE event_id IS NOT NULL DO NOTHING",
                    (
                        p.payment_id,
                        p.gateway,
                        p.event_id,
                        p.account,
                        p.amount_paise,
                        p.channel,
                        p.paid_at,
                        p.received_at,
                        at,
                        receipt + 1,
                        p.body,
                        p.shard,
                        digest,
                    ),
                )
                if cursor.rowcount == 1:
                    receipt += 1
                    images.append((p.payment_id, p.gateway, p.event_id, p.account, None, p.amount_paise,
                                   p.channel, p.paid_at, p.received_at, at, receipt, "pending", None, None,
                                   None, None, p.shard, digest, 1))
                    results.append(
                        RecordResult(
                            payment_id=p.payment_id,
                            outcome=RecordOutcome.NEW,
                            stored_payment_id=p.payment_id,
                            receipt_seq=receipt,
                        )
                    )
                    continue
                stored_id, stored_receipt = db.execute(
                    "SELECT payment_id, receipt_seq FROM payments WHERE payment_id = ?"
                    " OR (gateway = ? AND event_id = ?) ORDER BY payment_id != ? LIMIT 1",
                    (p.payment_id, p.gateway, p.event_id, p.payment_id),
                ).fetchone()
                results.append(
                    RecordResult(
                        payment_id=p.payment_id,
                        outcome=RecordOutcome.DUPLICATE,
                        stored_payment_id=stored_id,
                        receipt_seq=stored_receipt,
                    )
                )
            new = sum(r.outcome is RecordOutcome.NEW for r in results)
            db.execute("UPDATE counters SET value = ? WHERE name = 'receipt_seq'", (receipt,))
            _bump(db, {"pending": new, "duplicates": len(results) - new})
            self._chain(db, images, at)
        return tuple(results)

    def mark_credited(self, acks: Sequence[CreditAck]) -> tuple[AckResult, ...]:
        results: list[AckResult] = []
        with self._write() as db:
            # one look-up per chunk of ids and one executemany per outcome: a shard acknowledges
            # thousands at a time, and two statements per ack were a third of the desk's time
            # the rows as audit images (status and account among them): a changed row's new image is
            # computed from its old one below, not read back after the update (measured: the read-back
            # was ~7 % of the desk's CPU under the webhook load)
            stored = {str(row[0]): row for row in _image_rows(db, list({ack.payment_id for ack in acks}))}
            known = {pid: (PaymentStatus(str(row[_STATUS_AT])), str(row[_ACCOUNT_AT]))
                     for pid, row in stored.items()}
            results, changes = decide_acks(acks, known)
            deltas = {"pending": -len(changes), "applied": 0, "suspense": 0}
            updates: dict[PaymentStatus, list[tuple[int, str]]] = {
                PaymentStatus.APPLIED: [], PaymentStatus.SUSPENSE: []
            }
            for payment_id, (target, at) in changes.items():
                updates[target].append((at, payment_id))
                deltas[target.value] += 1
            for target, rows in updates.items():
                if rows:
                    column = "applied_at" if target is PaymentStatus.APPLIED else "suspended_at"
                    db.executemany(
                        f"UPDATE payments SET status = '{target.value}', {column} = ?,"
                        " audit_version = COALESCE(audit_version, 0) + 1 WHERE payment_id = ?",
                        rows,
                    )
            _bump(db, deltas)
            if changes:
                images = [_credited_image(stored[pid], target, at) for pid, (target, at) in changes.items()]
                self._chain(db, images, max(at for _t, at in changes.values()))
        return tuple(results)

    def unacknowledged(
        self, *, after_receipt_seq: int = 0, shards: Collection[int] | None = None
    ) -> Iterator[PaymentRecord]:
        cursor = after_receipt_seq
        among = "" if shards is None else " AND shard IN (SELECT value FROM json_each(?))"
        extra: tuple[str, ...] = () if shards is None else (json.dumps(sorted(shards)),)
        while True:
            rows = self._rows(
                f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE status = 'pending'"
                f" AND receipt_seq > ?{among} ORDER BY receipt_seq LIMIT ?",
                (cursor, *extra, _PAGE),
            )
            yield from (_payment(row) for row in rows)
            if len(rows) < _PAGE:
                return
            cursor = rows[-1][10]

    def payment(self, payment_id: str) -> PaymentRecord | None:
        row = self._one(f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_id = ?", (payment_id,))
        return None if row is None else _payment(row)

    def payments_for_account(self, account: str, *, limit: int = 100) -> list[PaymentRecord]:
        rows = self._rows(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE account = ? ORDER BY receipt_seq DESC LIMIT ?",
            (account, limit),
        )
        return [_payment(row) for row in rows]

    def payment_counts(self) -> PaymentCounts:
        values = dict(self._rows("SELECT name, value FROM counters"))
        return PaymentCounts(
            pending=values["pending"],
            applied=values["applied"],
            suspense=values["suspense"],
            duplicates=values["duplicates"],
        )

    # ------------------------------------------------------------ suspense

    def suspense(self, *, limit: int = 100, after_receipt_seq: int = 0) -> list[PaymentRecord]:
        rows = self._rows(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE status = 'suspense'"
            " AND receipt_seq > ? ORDER BY receipt_seq LIMIT ?",
            (after_receipt_seq, limit),
        )
        return [_payment(row) for row in rows]

    def count_suspense(self) -> int:
        return int(self._one("SELECT value FROM counters WHERE name = 'suspense'")[0])

    def resolve_suspense(
        self, payment_id: str, account: str, *, at: int, by: str, shard: int | None = None
    ) -> ResolveResult:
        with self._write() as db:
            row = db.execute("SELECT status FROM payments WHERE payment_id = ?", (payment_id,)).fetchone()
            if row is None:
                return ResolveResult.UNKNOWN_PAYMENT
            if row[0] != PaymentStatus.SUSPENSE.value:
                return ResolveResult.NOT_IN_SUSPENSE
            db.execute(
                "UPDATE payments SET status = 'pending', original_account ="
                " COALESCE(original_account, account), account = ?, resolved_at = ?,"
                " resolved_by = ?, shard = COALESCE(?, shard),"
                " audit_version = COALESCE(audit_version, 0) + 1 WHERE payment_id = ?",
                (account, at, by, shard, payment_id),
            )
            _bump(db, {"suspense": -1, "pending": 1})
            self._chain(db, _images(db, [payment_id]), at)
        return ResolveResult.RESOLVED

    # ------------------------------------------------------------ audit chain and checkpoints

    @staticmethod
    def _chain(db: sqlite3.Connection, images: Sequence[Sequence[object]], at: int) -> None:
        """Append one link covering `images` to the ledger's chain, in the caller's transaction."""
        if not images:
            return
        row = db.execute("SELECT seq, hash FROM audit_heads WHERE chain = ?", (_CHAIN,)).fetchone()
        seq, prev = (1, GENESIS) if row is None else (row[0] + 1, row[1])
        record, link = desk_link(_CHAIN, seq, at, prev, images)
        db.execute("INSERT INTO audit_links (chain, seq, at, record, hash) VALUES (?, ?, ?, ?, ?)",
                   (_CHAIN, seq, at, record, link))
        db.execute("INSERT INTO audit_heads (chain, seq, hash) VALUES (?, ?, ?) ON CONFLICT (chain)"
                   " DO UPDATE SET seq = excluded.seq, hash = excluded.hash", (_CHAIN, seq, link))

    def audit_heads(self) -> list[ChainHead]:
        """The ledger chain's head (cheap), for checkpoints and metrics."""
        rows = self._rows("SELECT chain, seq, hash FROM audit_heads WHERE seq > 0")
        return [ChainHead(store=DESK_STORE, chain=c, seq=q, hash=h) for c, q, h in rows]

    def audit_verify(self, wanted: Collection[tuple[str, int]] = ()) -> Verdict:
        """Verify the ledger's chain and every payment row against it (storage/audit.py); read-only."""
        db = self._db()
        with self._translated():
            heads = {chain: (seq, link)
                     for chain, seq, link in db.execute("SELECT chain, seq, hash FROM audit_heads")}
            pre = int(db.execute("SELECT value FROM audit_meta WHERE name = 'pre_chain_receipts'")
                      .fetchone()[0])
            links = (DeskLink(*row) for row in
                     db.execute("SELECT chain, seq, record, hash FROM audit_links ORDER BY chain, seq"))
            return verify_desk(DESK_STORE, links, heads, self._audit_rows(), pre_chain_receipts=pre,
                               wanted=wanted)

    def _audit_rows(self) -> Iterator[tuple[Sequence[object], bytes]]:
        after = -(2**62)
        while True:
            rows = self._rows(f"SELECT {_IMAGE_COLUMNS}, body FROM payments WHERE receipt_seq > ?"
                              " ORDER BY receipt_seq LIMIT ?", (after, _PAGE))
            yield from ((row[:-1], row[-1]) for row in rows)
            if len(rows) < _PAGE:
                return
            after = rows[-1][PAYMENT_IMAGE.index("receipt_seq")]

    def put_audit_checkpoint(self, *, at: int, body: bytes, signature: bytes) -> int:
        """Store a signed checkpoint (unsent: the outbox of checkpoints); returns its id."""
        with self._write() as db:
            cursor = db.execute("INSERT INTO audit_checkpoints (at, body, signature) VALUES (?, ?, ?)",
                                (at, body, signature))
            return int(cursor.lastrowid or 0)

    def audit_checkpoints(self, *, unsent: bool = False, limit: int = 100) -> list[StoredCheckpoint]:
        """Checkpoints newest first (only those not yet sent off-site with `unsent`)."""
        where = " WHERE sent_at IS NULL" if unsent else ""
        rows = self._rows(f"SELECT id, at, body, signature, sent_at FROM audit_checkpoints{where}"
                          " ORDER BY id DESC LIMIT ?", (limit,))
        return [StoredCheckpoint(*row) for row in rows]

    def mark_checkpoints_sent(self, ids: Iterable[int], *, at: int) -> None:
        with self._write() as db:
            db.executemany("UPDATE audit_checkpoints SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
                           [(at, i) for i in ids])

    # ------------------------------------------------------------ dead letters

    def put_dead_letters(self, letters: Sequence[DeadLetter]) -> tuple[int, ...]:
        with self._write() as db:
            first = _counter(db, "dead_letter_id") + 1
            ids = tuple(range(first, first + len(letters)))
            db.executemany(
                "INSERT INTO dead_letters (id, source, message_type, reason, at, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (id_, d.source, d.message_type, d.reason, d.at, d.body)
                    for id_, d in zip(ids, letters, strict=True)
                ],
            )
            _bump(db, {"dead_letter_id": len(letters)})
        return ids

    def dead_letters(self, *, limit: int = 100, before_id: int | None = None) -> list[StoredDeadLetter]:
        rows = self._rows(
            "SELECT id, source, message_type, reason, at, body FROM dead_letters"
            " WHERE id < ? ORDER BY id DESC LIMIT ?",
            (2**62 if before_id is None else before_id, limit),
        )
        return [
            StoredDeadLetter(id=i, source=s, message_type=m, reason=r, at=a, body=b)
            for i, s, m, r, a, b in rows
        ]

    def count_dead_letters(self) -> int:
        return int(self._one("SELECT value FROM counters WHERE name = 'dead_letter_id'")[0])

    # ------------------------------------------------------------ reconciliation

    def payments_paid_between(self, gateway: str, start: int, end: int) -> Iterator[PaymentRecord]:
        # one query: with no paid_at index every page would scan the whole ledger again (keyset pages
        # of 500 over 10 lakh rows: 9-11 s for a 25 000-row window, against one scan)
        rows = self._rows(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE gateway = ? AND paid_at BETWEEN ? AND ?"
            " ORDER BY paid_at, payment_id",
            (gateway, start, end),
        )
        return (_payment(row) for row in rows)
