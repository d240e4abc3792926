"""Signed checkpoints on every backend: a checkpoint or its signature edited in the database is
named; a chain rewritten whole (hashes recomputed, so the chain alone looks intact) no longer
reproduces the checkpoint, stored or kept off-site; an intact store passes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jodo import audit
from storage import NewEvent, NewPayment, PostgresBackend, SqliteBackend, StorageBackend
from storage.audit import GENESIS, journal_link_hash
from storage.sqlite import desk_path, shard_group_path


class Db:
    def __init__(self, kind: str, location: Any) -> None:
        self.kind, self.location = kind, location
        self.backend: StorageBackend = SqliteBackend() if kind == "sqlite" else PostgresBackend()

    def sql(self, statement: str, params: Sequence[Any] = (), *, file: str = "desk") -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            path = desk_path(self.location) if file == "desk" else shard_group_path(self.location, 0)
            with sqlite3.connect(path) as db:
                return db.execute(statement, params).fetchall()
        for name in ("payments", "journal_segments", "shard_heads", "audit_checkpoints"):
            statement = statement.replace(f" {name} ", f" jodo_{name} ")
        with psycopg.connect(self.location, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description is not None else []


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return Db("sqlite", tmp_path / "data")
    return Db("postgresql", request.getfixturevalue("pg_dsn"))


@pytest.fixture
def stores(db: Db) -> Iterator[audit.AuditStores]:
    shard = db.backend.open_shard_store(db.location, 0)
    shard.commit([NewEvent(shard=3, account="acct-1", kind="PaymentApplied", ref=f"pay_{i}", at=10 + i,
                           body=msgpack.packb({"amount_paise": 100 * i})) for i in range(1, 4)])
    shard.commit([NewEvent(shard=3, account="acct-1", kind="RelayCommandIssued", ref="cmd-1", at=20,
                           body=b"connect")])
    desk = db.backend.open_desk_store(db.location)
    desk.record_payments([NewPayment(payment_id="pay_1", gateway="g", event_id=None, account="acct-1",
                                     amount_paise=100, channel="upi", paid_at=1, received_at=1, body=b"{}")],
                         at=5)
    stores = audit.AuditStores(desk=desk, shards=[("group:0", shard)])  # type: ignore[arg-type, list-item]
    yield stores
    stores.close()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _lines(report: audit.Report) -> list[str]:
    return [f.line() for f in report.verdict.findings]


def test_an_intact_store_with_checkpoints_verifies(stores: audit.AuditStores, key: Ed25519PrivateKey,
                                                    tmp_path: Path) -> None:
    audit.write_checkpoint(stores, key, at=100, outbox_dir=tmp_path / "outbox")
    audit.write_checkpoint(stores, key, at=200, outbox_dir=tmp_path / "outbox")
    shipped = audit.read_checkpoint_file(tmp_path / "outbox" / audit.CHECKPOINT_FILE)
    assert len(shipped) == 2  # each shipped once
    assert stores.desk.audit_checkpoints(unsent=True) == []
    report = audit.verify(stores, key.public_key(), from_checkpoints=shipped)
    assert report.intact, _lines(report)
    assert report.checkpoints_checked == 4 and report.newest_checkpoint_at == 200
    assert report.lines()[-1].startswith("INTACT: 2 chains")


@pytest.mark.parametrize("column", ["body", "signature"])
def test_an_edited_checkpoint_is_named(db: Db, stores: audit.AuditStores, key: Ed25519PrivateKey,
                                       tmp_path: Path, column: str) -> None:
    number = audit.write_checkpoint(stores, key, at=100, outbox_dir=tmp_path)
    value = bytes(db.sql(f"SELECT {column} FROM audit_checkpoints WHERE id = ?", (number,))[0][0])
    forged = value.replace(b'"at":100', b'"at":999') if column == "body" else bytes(64)
    db.sql(f"UPDATE audit_checkpoints SET {column} = ? WHERE id = ?", (forged, number))
    report = audit.verify(stores, key.public_key())
    assert _lines(report) == [f"desk checkpoints seq 0: edited: checkpoint {number}: the signature does not"
                              " verify (body or signature edited)"]


def test_a_checkpoint_signed_by_another_key_is_named(stores: audit.AuditStores, key: Ed25519PrivateKey,
                                                     tmp_path: Path) -> None:
    audit.write_checkpoint(stores, Ed25519PrivateKey.generate(), at=100, outbox_dir=tmp_path)
    assert "not the key given" in _lines(audit.verify(stores, key.public_key()))[0]


def _rewrite_newest_segment(db: Db) -> None:
    """An attacker with the database: edit the newest journal segment of shard 3 and recompute its
    hash and the head's, so the chain alone verifies."""
    first, last, events, prev = db.sql("SELECT first_seq, last_seq, events, prev_hash FROM journal_segments "
                                       "WHERE shard = 3 ORDER BY first_seq DESC LIMIT 1", file="shard")[0]
    forged = bytes(events).replace(b"connect", b"disconn")
    link = journal_link_hash(bytes(prev or GENESIS), 3, int(first), int(last), forged)
    db.sql("UPDATE journal_segments SET events = ?, chain_hash = ? WHERE shard = 3 AND first_seq = ?",
           (forged, link, first), file="shard")
    db.sql("UPDATE shard_heads SET chain_hash = ? WHERE shard = 3", (link,), file="shard")


def test_a_chain_rewritten_whole_is_caught_by_the_stored_checkpoint(
    db: Db, stores: audit.AuditStores, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    audit.write_checkpoint(stores, key, at=100, outbox_dir=tmp_path)
    _rewrite_newest_segment(db)
    assert stores.shards[0][1].audit_verify().intact  # the chain alone cannot tell
    assert _lines(audit.verify(stores, key.public_key())) == [
        "group:0 journal:3 seq 4: edited: the chain was rewritten: seq 4 no longer has the hash checkpoint 1"
        " signed"]


def test_records_deleted_with_their_checkpoints_are_caught_by_the_off_site_copy(
    db: Db, stores: audit.AuditStores, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    audit.write_checkpoint(stores, key, at=100, outbox_dir=tmp_path)
    off_site = audit.read_checkpoint_file(tmp_path / audit.CHECKPOINT_FILE)
    # the attacker drops the newest segment, fixes the head, and deletes the checkpoints in the database
    db.sql("DELETE FROM journal_segments WHERE shard = 3 AND first_seq = 4", file="shard")
    prev = db.sql("SELECT chain_hash FROM journal_segments WHERE shard = 3 AND first_seq = 1",
                  file="shard")[0][0]
    db.sql("UPDATE shard_heads SET last_seq = 3, chain_hash = ? WHERE shard = 3", (prev,), file="shard")
    db.sql("DELETE FROM audit_checkpoints WHERE id > ?", (0,))
    assert audit.verify(stores, key.public_key()).intact  # nothing left in the database shows it
    report = audit.verify(stores, key.public_key(), from_checkpoints=off_site)
    assert _lines(report) == [f"group:0 journal:3 seq 4: deleted: {audit.CHECKPOINT_FILE} line 1 signed"
                              " seq 4; the chain now ends at seq 3"]
