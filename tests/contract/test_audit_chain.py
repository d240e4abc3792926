"""The audit chain on every backend: real SQLite files and a real PostgreSQL server, written by the
stores, then tampered with directly in SQL; verification names each edited, deleted, inserted or
reordered record, and passes an intact store."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import psycopg
import pytest

from storage import (
    CreditAck,
    CreditOutcome,
    NewEvent,
    NewPayment,
    PostgresBackend,
    SqliteBackend,
    StorageBackend,
)
from storage.audit import Finding, Verdict
from storage.sqlite import desk_path, shard_group_path

GROUP = 0


class Db:
    """One backend's store location and raw SQL on its tables (the tamperer's view)."""

    def __init__(self, kind: str, location: Any) -> None:
        self.kind = kind
        self.location = location
        self.backend: StorageBackend = SqliteBackend() if kind == "sqlite" else PostgresBackend()

    def table(self, name: str) -> str:
        return name if self.kind == "sqlite" else f"jodo_{name}"

    def sql(self, statement: str, params: Sequence[Any] = (), *, file: str = "desk") -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            path = desk_path(self.location) if file == "desk" else shard_group_path(self.location, GROUP)
            with sqlite3.connect(path) as db:
                return db.execute(statement, params).fetchall()
        with psycopg.connect(self.location, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description is not None else []

    def t(self, statement: str) -> str:
        """`{payments}` → this backend's table name."""
        for name in ("payments", "journal_segments", "shard_heads", "audit_links", "audit_heads",
                     "audit_meta", "audit_checkpoints"):
            statement = statement.replace("{" + name + "}", self.table(name))
        return statement

    def verify_shards(self) -> Verdict:
        with self.backend.open_shard_store(self.location, GROUP) as store:
            return store.audit_verify()  # type: ignore[attr-defined, no-any-return]

    def verify_desk(self) -> Verdict:
        with self.backend.open_desk_store(self.location) as desk:
            return desk.audit_verify()  # type: ignore[attr-defined, no-any-return]

    def segment(self, shard: int, index: int) -> tuple[int, bytes]:
        """(first_seq, events) of the shard's index-th segment."""
        rows = self.sql(
            self.t("SELECT first_seq, events FROM {journal_segments} WHERE shard = ? ORDER BY first_seq"),
            (shard,), file="shard",
        )
        return int(rows[index][0]), bytes(rows[index][1])


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return Db("sqlite", tmp_path)
    return Db("postgresql", request.getfixturevalue("pg_dsn"))


def _body(**fields: Any) -> bytes:
    return msgpack.packb(fields)  # type: ignore[no-any-return]


def _events(commit: int) -> list[NewEvent]:
    """Two shards, three events each per commit: a payment applied, a relay command, its outcome."""
    out = []
    for shard in (1, 2):
        account = f"acct-{shard}"
        out += [
            NewEvent(shard=shard, account=account, kind="PaymentApplied", ref=f"pay-{commit}-{shard}",
                     at=1_000 + commit, body=_body(amount_paise=10_000 * (commit + 1))),
            NewEvent(shard=shard, account=account, kind="RelayCommandIssued", ref=f"cmd-{commit}-{shard}",
                     at=1_000 + commit, body=_body(action="connect")),
            NewEvent(shard=shard, account=account, kind="RelayStateConfirmed", ref=f"cmd-{commit}-{shard}",
                     at=1_001 + commit, body=_body(state="connected")),
        ]
    return out


def _pay(n: int) -> NewPayment:
    return NewPayment(payment_id=f"pay_{n}", gateway="razorpay", event_id=f"evt_{n}", account=f"acct-{n}",
                      amount_paise=5_000 * n, channel="upi", paid_at=900 + n, received_at=901 + n,
                      body=b'{"payment": %d}' % n, shard=n % 4)


@pytest.fixture
def written(db: Db) -> Db:
    """Journal: shards 1 and 2, four commits (segments) each. Ledger: five payments recorded, three
    credited, one to suspense and resolved."""
    with db.backend.open_shard_store(db.location, GROUP) as store:
        for commit in range(4):
            store.commit(_events(commit))
    with db.backend.open_desk_store(db.location) as desk:
        desk.record_payments([_pay(n) for n in range(1, 4)], at=1_000)
        desk.record_payments([_pay(n) for n in range(4, 6)], at=1_001)
        desk.mark_credited([CreditAck(payment_id=f"pay_{n}", account=f"acct-{n}",
                                      outcome=CreditOutcome.APPLIED, at=1_002) for n in (1, 2, 4)])
        desk.mark_credited([CreditAck(payment_id="pay_3", account="acct-3",
                                      outcome=CreditOutcome.UNKNOWN_ACCOUNT, at=1_003)])
        desk.resolve_suspense("pay_3", "acct-33", at=1_004, by="eng-7", shard=1)
    return db


def _only(verdict: Verdict) -> Finding:
    assert len(verdict.findings) == 1, [f.line() for f in verdict.findings]
    return verdict.findings[0]


def test_an_intact_store_verifies_with_every_chain_head(written: Db) -> None:
    shards = written.verify_shards()
    desk = written.verify_desk()
    assert shards.intact and desk.intact, [f.line() for f in shards.findings + desk.findings]
    assert {(h.chain, h.seq, h.links) for h in shards.heads} == {("journal:1", 12, 4), ("journal:2", 12, 4)}
    assert [(h.store, h.links) for h in desk.heads] == [("desk", 5)]  # two records, two credits, one resolve
    assert shards.notes == [] and desk.notes == []


# ---------------------------------------------------------------- the journal


def test_an_edited_journal_event_is_named(written: Db) -> None:
    first_seq, events = written.segment(1, 1)
    entries = [list(e) for e in msgpack.unpackb(events)]
    entries[0][4] = _body(amount_paise=99_999_00)  # the PaymentApplied's amount
    written.sql(written.t("UPDATE {journal_segments} SET events = ? WHERE shard = 1 AND first_seq = ?"),
                (msgpack.packb(entries), first_seq), file="shard")
    finding = _only(written.verify_shards())
    assert (finding.store, finding.chain, finding.seq, finding.what) == ("group:0", "journal:1", 4, "edited")
    assert "seqs 4-6" in finding.detail


def test_a_deleted_journal_record_is_named(written: Db) -> None:
    written.sql(written.t("DELETE FROM {journal_segments} WHERE shard = 2 AND first_seq = 7"), file="shard")
    finding = _only(written.verify_shards())
    assert (finding.chain, finding.seq, finding.what) == ("journal:2", 7, "deleted")
    assert "seqs 7-9 are missing" in finding.detail


def test_the_newest_journal_record_deleted_is_named_by_the_head(written: Db) -> None:
    written.sql(written.t("DELETE FROM {journal_segments} WHERE shard = 1 AND first_seq = 10"), file="shard")
    finding = _only(written.verify_shards())
    assert (finding.chain, finding.seq, finding.what) == ("journal:1", 10, "deleted")


def test_an_inserted_journal_record_is_named(written: Db) -> None:
    _first, events = written.segment(1, 0)
    columns = "shard, first_seq, last_seq, upto_at, events, prev_hash, chain_hash"
    values: tuple[Any, ...] = (1, 13, 15, 2_000, events, bytes(32), bytes(32))
    if written.kind == "sqlite":
        columns = "segment_id, " + columns
        values = (1_000, *values)
    else:
        columns = "grp, " + columns
        values = (GROUP, *values)
    marks = ", ".join("?" * len(values))
    written.sql(written.t(f"INSERT INTO {{journal_segments}} ({columns}) VALUES ({marks})"), values,
                file="shard")
    finding = _only(written.verify_shards())
    assert (finding.chain, finding.seq, finding.what) == ("journal:1", 13, "inserted")


def test_two_swapped_journal_records_are_named_as_reordered(written: Db) -> None:
    first_a, events_a = written.segment(2, 1)
    first_b, events_b = written.segment(2, 2)
    update = written.t("UPDATE {journal_segments} SET events = ? WHERE shard = 2 AND first_seq = ?")
    written.sql(update, (events_b, first_a), file="shard")
    written.sql(update, (events_a, first_b), file="shard")
    finding = _only(written.verify_shards())
    assert (finding.chain, finding.seq, finding.what) == ("journal:2", 4, "reordered")
    assert "seqs 7-9" in finding.detail


# ---------------------------------------------------------------- the ledger


def test_an_edited_money_row_is_named(written: Db) -> None:
    written.sql(written.t("UPDATE {payments} SET amount_paise = 1 WHERE payment_id = 'pay_2'"))
    finding = _only(written.verify_desk())
    assert (finding.store, finding.what) == ("desk", "edited")
    assert "payment pay_2" in finding.detail
    assert "amount_paise 10000 in the chain, 1 in the table" in finding.detail


def test_an_edited_payment_status_is_named(written: Db) -> None:
    written.sql(written.t("UPDATE {payments} SET status = 'applied' WHERE payment_id = 'pay_5'"))
    finding = _only(written.verify_desk())
    assert finding.what == "edited"
    assert "status 'pending' in the chain, 'applied' in the table" in finding.detail


def test_an_edited_payment_body_is_named(written: Db) -> None:
    written.sql(written.t("UPDATE {payments} SET body = ? WHERE payment_id = 'pay_1'"), (b'{"forged": 1}',))
    finding = _only(written.verify_desk())
    assert finding.what == "edited" and "body differs from its digest" in finding.detail


def test_a_deleted_money_row_is_named(written: Db) -> None:
    written.sql(written.t("DELETE FROM {payments} WHERE payment_id = 'pay_4'"))
    finding = _only(written.verify_desk())
    assert finding.what == "deleted"
    assert "payment pay_4 is in the chain but not in the ledger" in finding.detail


def test_an_inserted_money_row_is_named(written: Db) -> None:
    written.sql(written.t(
        "INSERT INTO {payments} (payment_id, gateway, event_id, account, amount_paise, channel, paid_at,"
        " received_at, committed_at, receipt_seq, status, body) VALUES ('pay_forged', 'razorpay', NULL,"
        " 'acct-9', 100000, 'upi', 1, 1, 1, 77, 'pending', ?)"), (b"{}",))
    finding = _only(written.verify_desk())
    assert (finding.chain, finding.seq, finding.what) == ("payments", 77, "inserted")
    assert "pay_forged" in finding.detail


def test_two_swapped_money_rows_are_named_as_reordered(written: Db) -> None:
    receipts = dict(written.sql(written.t("SELECT payment_id, receipt_seq FROM {payments}")))
    a, b = int(receipts["pay_1"]), int(receipts["pay_4"])
    update = written.t("UPDATE {payments} SET receipt_seq = ? WHERE payment_id = ?")
    written.sql(update, (-1, "pay_1"))
    written.sql(update, (a, "pay_4"))
    written.sql(update, (b, "pay_1"))
    findings = written.verify_desk().findings
    assert [f.what for f in findings] == ["reordered", "reordered"]
    assert {f.detail.split(":")[0] for f in findings} == {"payment pay_1", "payment pay_4"}


def test_a_deleted_ledger_link_is_named(written: Db) -> None:
    written.sql(written.t("DELETE FROM {audit_links} WHERE seq = 3"))
    finding = _only(written.verify_desk())
    assert (finding.seq, finding.what) == (3, "deleted") and finding.chain.startswith("desk:")


def test_an_edited_ledger_link_is_named(written: Db) -> None:
    record = bytes(written.sql(written.t("SELECT record FROM {audit_links} WHERE seq = 2"))[0][0])
    forged = record.replace(b"acct-4", b"acct-X")
    assert forged != record
    written.sql(written.t("UPDATE {audit_links} SET record = ? WHERE seq = 2"), (forged,))
    finding = _only(written.verify_desk())
    assert (finding.seq, finding.what) == (2, "edited") and "differs from its hash" in finding.detail


def test_two_swapped_ledger_links_are_named_as_reordered(written: Db) -> None:
    update = written.t("UPDATE {audit_links} SET seq = ? WHERE seq = ?")
    written.sql(update, (-2, 2))
    written.sql(update, (2, 3))
    written.sql(update, (3, -2))
    finding = _only(written.verify_desk())
    assert (finding.seq, finding.what) == (2, "reordered")


# ---------------------------------------------------------------- stores from before the chain


def _as_before_the_chain(db: Db) -> None:
    """Make the store look like one written by jodo before the chain, then migrated: no hashes on the
    rows written so far, no ledger links, pre-chain receipts counted."""
    db.sql(db.t("UPDATE {journal_segments} SET prev_hash = NULL, chain_hash = NULL"), file="shard")
    db.sql(db.t("UPDATE {shard_heads} SET chain_hash = NULL"), file="shard")
    db.sql(db.t("DELETE FROM {audit_links}"))
    db.sql(db.t("DELETE FROM {audit_heads}"))
    db.sql(db.t("UPDATE {payments} SET audit_version = NULL, body_digest = NULL"))
    db.sql(db.t("UPDATE {audit_meta} SET value = (SELECT max(receipt_seq) FROM {payments})"))


def test_a_store_from_before_the_chain_opens_and_its_chain_starts_at_the_next_write(written: Db) -> None:
    _as_before_the_chain(written)
    assert written.verify_shards().intact and written.verify_desk().intact
    with written.backend.open_shard_store(written.location, GROUP) as store:
        store.commit(_events(9))
    with written.backend.open_desk_store(written.location) as desk:
        desk.record_payments([_pay(6)], at=2_000)
        desk.mark_credited([CreditAck(payment_id="pay_5", account="acct-5", outcome=CreditOutcome.APPLIED,
                                      at=2_001)])
    shards, ledger = written.verify_shards(), written.verify_desk()
    assert shards.intact and ledger.intact, [f.line() for f in shards.findings + ledger.findings]
    assert "group:0 journal:1: the chain starts at seq 13; the 12 event(s) before it were written before" \
           " the audit chain (not covered)" in shards.notes
    assert ledger.notes == ["desk: 4 payments were recorded before the audit chain and not changed since"
                            " (not covered)"]
    # the pre-chain payment changed after the upgrade is covered now: an edit of it shows
    written.sql(written.t("UPDATE {payments} SET amount_paise = 7 WHERE payment_id = 'pay_5'"))
    assert "payment pay_5" in _only(written.verify_desk()).detail



def test_a_postgresql_database_at_store_schema_1_migrates_and_its_chains_start_after_it(
    pg_dsn: str,
) -> None:
    from storage.postgres import STORE_MIGRATIONS
    from storage.postgres_schema import CLUSTER_MIGRATIONS, migrate

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a database as jodo before the chain left it
        migrate(conn, "cluster", CLUSTER_MIGRATIONS)
        migrate(conn, "store", STORE_MIGRATIONS[:1])
        conn.execute("INSERT INTO jodo_journal_segments (grp, shard, first_seq, last_seq, upto_at, events)"
                     " VALUES (0, 5, 1, 1, 10, %s)",
                     (msgpack.packb([["acct-5", "PaymentApplied", "p", 10, b""]]),))
        conn.execute("INSERT INTO jodo_shard_heads (grp, shard, last_seq, upto_at) VALUES (0, 5, 1, 10)")
        conn.execute("INSERT INTO jodo_payments (payment_id, gateway, account, amount_paise, channel,"
                     " paid_at, received_at, committed_at, receipt_seq, status, body)"
                     " VALUES ('old', 'g', 'acct-5', 100, 'upi', 1, 1, 1, nextval('jodo_receipt_seq'),"
                     " 'pending', '\\x7b7d')")
    db = Db("postgresql", pg_dsn)
    with db.backend.open_shard_store(pg_dsn, GROUP) as store:
        store.commit([NewEvent(shard=5, account="acct-5", kind="RelayCommandIssued", ref="c", at=11,
                               body=b"")])
    with db.backend.open_desk_store(pg_dsn) as desk:
        desk.record_payments([_pay(1)], at=12)
    shards, ledger = db.verify_shards(), db.verify_desk()
    assert shards.intact and ledger.intact, [f.line() for f in shards.findings + ledger.findings]
    assert [(h.chain, h.seq, h.first_seq) for h in shards.heads] == [("journal:5", 2, 2)]
    assert shards.notes == ["group:0 journal:5: the chain starts at seq 2; the 1 event(s) before it were"
                            " written before the audit chain (not covered)"]
    assert ledger.notes == ["desk: 1 payments were recorded before the audit chain and not changed since"
                            " (not covered)"]
