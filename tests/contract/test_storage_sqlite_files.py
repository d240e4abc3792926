"""What only the SQLite backend promises: file layout, WAL, schema versions, type checks."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from storage import (
    NewEvent,
    NewOutboxEntry,
    NotAStore,
    SchemaTooNew,
    StoreOptions,
    WriteRejected,
    WrongStoreKind,
    open_desk_store,
    open_shard_store,
)
from storage.sqlite import desk_path, shard_group_path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stores_live_in_one_file_each_under_the_data_dir(tmp_path: Path) -> None:
    with open_desk_store(tmp_path), open_shard_store(tmp_path, 0), open_shard_store(tmp_path, 12):
        pass
    assert desk_path(tmp_path) == tmp_path / "desk.sqlite3"
    assert shard_group_path(tmp_path, 12) == tmp_path / "shards" / "group-0012.sqlite3"
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.sqlite3"))
    assert files == ["desk.sqlite3", "shards/group-0000.sqlite3", "shards/group-0012.sqlite3"]


@pytest.mark.parametrize(("synchronous", "level"), [("full", 2), ("normal", 1)])
def test_files_are_in_wal_mode_with_the_chosen_synchronous_level(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    options = StoreOptions(synchronous=synchronous)  # type: ignore[arg-type]
    with open_shard_store(tmp_path, 0, options) as store:
        connection = store._db()
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == level


def test_a_file_with_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = shard_group_path(tmp_path, 0)
    with open_shard_store(tmp_path, 0) as store:
        store.commit([NewEvent(shard=1, account="a", kind="k", ref=None, at=1, body=b"")])
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE schema_version SET version = 99")
    raw.close()
    before = _digest(path)
    with pytest.raises(SchemaTooNew) as raised:
        open_shard_store(tmp_path, 0)
    assert (raised.value.found, raised.value.supported) == (99, 2)
    assert str(path) in str(raised.value)
    assert _digest(path) == before


def test_a_desk_file_cannot_be_opened_as_a_shard_group(tmp_path: Path) -> None:
    with open_desk_store(tmp_path):
        pass
    target = shard_group_path(tmp_path, 1)
    target.parent.mkdir(parents=True)
    shutil.copy(desk_path(tmp_path), target)
    with pytest.raises(WrongStoreKind):
        open_shard_store(tmp_path, 1)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    desk_path(tmp_path).write_bytes(b"not a database, just some bytes" * 200)
    with pytest.raises(NotAStore):
        open_desk_store(tmp_path)


def test_another_programs_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    raw = sqlite3.connect(desk_path(tmp_path))
    with raw:
        raw.execute("CREATE TABLE accounts (id TEXT)")
    raw.close()
    before = _digest(desk_path(tmp_path))
    with pytest.raises(NotAStore):
        open_desk_store(tmp_path)
    assert _digest(desk_path(tmp_path)) == before
    raw = sqlite3.connect(desk_path(tmp_path))
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    raw.close()


def test_a_value_of_the_wrong_type_rolls_back_the_whole_commit(tmp_path: Path) -> None:
    with open_shard_store(tmp_path, 0) as store:
        good = NewOutboxEntry(id="c1", shard=1, kind="relay", account="a", at=1, body=b"")
        bad = NewOutboxEntry(id="c2", shard=1, kind="relay", account="a", at=1, body=b"")
        object.__setattr__(bad, "body", "text, not bytes")  # as if built past its checks
        event = NewEvent(shard=1, account="a", kind="k", ref=None, at=1, body=b"")
        with pytest.raises(WriteRejected):
            store.commit([event], outbox=[good, bad])
        assert store.heads() == {}
        assert store.outbox_entry("c1") is None


def test_a_desk_file_of_schema_version_1_is_migrated_and_keeps_its_payments(tmp_path: Path) -> None:
    from storage import NewPayment

    def pay(pid: str, shard: int | None = None) -> NewPayment:
        return NewPayment(payment_id=pid, gateway="g", event_id=None, account="a", amount_paise=1,
                          channel="upi", paid_at=1, received_at=1, body=b"x", shard=shard)

    with open_desk_store(tmp_path) as desk:
        desk.record_payments([pay("old")], at=5)
    with sqlite3.connect(desk_path(tmp_path)) as db:  # what jodo before the cluster wrote
        db.execute("DROP INDEX payments_pending_by_shard")
        db.execute("ALTER TABLE payments DROP COLUMN shard")
        for column in ("body_digest", "audit_version"):  # and before the audit chain
            db.execute(f"ALTER TABLE payments DROP COLUMN {column}")
        for table in ("audit_links", "audit_heads", "audit_meta", "audit_checkpoints"):
            db.execute(f"DROP TABLE {table}")
        db.execute("UPDATE schema_version SET version = 1")
    with open_desk_store(tmp_path) as desk:
        desk.record_payments([pay("new", shard=3)], at=6)
        assert [(p.payment_id, p.shard) for p in desk.unacknowledged()] == [("old", None), ("new", 3)]
        assert [p.payment_id for p in desk.unacknowledged(shards=[3])] == ["new"]
    with sqlite3.connect(desk_path(tmp_path)) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (3,)


def test_a_shard_file_of_schema_version_1_is_migrated_and_its_chain_starts_after_it(tmp_path: Path) -> None:
    with open_shard_store(tmp_path, 0) as store:
        store.commit([NewEvent(shard=1, account="a", kind="k", ref=None, at=1, body=b"old")] * 3)
    with sqlite3.connect(shard_group_path(tmp_path, 0)) as db:  # what jodo before the audit chain wrote
        for table, column in (("shard_heads", "chain_hash"), ("journal_segments", "prev_hash"),
                              ("journal_segments", "chain_hash")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("UPDATE schema_version SET version = 1")
    with open_shard_store(tmp_path, 0) as store:
        store.commit([NewEvent(shard=1, account="a", kind="k", ref=None, at=2, body=b"new")])
        assert [e.body for e in store.journal(1)] == [b"old"] * 3 + [b"new"]
        verdict = store.audit_verify()
    assert verdict.intact and [(h.chain, h.seq, h.links, h.first_seq) for h in verdict.heads] == [
        ("journal:1", 4, 1, 4)]
    assert verdict.notes == ["group:0 journal:1: the chain starts at seq 4; the 3 event(s) before it"
                             " were written before the audit chain (not covered)"]
    with sqlite3.connect(shard_group_path(tmp_path, 0)) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (2,)


def test_opening_a_current_store_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    # the front door opens the guard store per admin request while gateways write it: opening a file
    # already at this schema must not take the write lock (it once did: BEGIN IMMEDIATE on every open)
    from storage.errors import StorageUnavailable
    from storage.sqlite_guard import GuardStore

    GuardStore.in_dir(tmp_path).close()
    writer = sqlite3.connect(tmp_path / "guard.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with GuardStore.in_dir(tmp_path, StoreOptions(busy_timeout_ms=0)) as store:
            assert store.switch().paused is False
            with pytest.raises(StorageUnavailable, match="locked"):  # the lock is really held
                store.set_paused(True, by="x", at=1.0)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_guard_file_of_schema_version_1_gains_the_member_index(tmp_path: Path) -> None:
    from domain.guard import Kept
    from storage.sqlite_guard import GuardStore

    with GuardStore.in_dir(tmp_path) as store:
        store.save_step("he", 1.0, kept=[(Kept("a1", "c1", 0), "he.1")])
    with sqlite3.connect(tmp_path / "guard.sqlite3") as db:  # what jodo before the index wrote
        db.execute("DROP INDEX guard_members_by_command")
        db.execute("UPDATE schema_version SET version = 1")
    with GuardStore.in_dir(tmp_path) as store:
        store.save_step("he", 2.0, released=[Kept("a1", "c1", 0)])
    with sqlite3.connect(tmp_path / "guard.sqlite3") as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (2,)
        assert db.execute("SELECT state FROM guard_members WHERE account='a1'").fetchone() == ("released",)
        plan = db.execute("EXPLAIN QUERY PLAN UPDATE guard_members SET state='released' "
                          "WHERE account='a1' AND command_id='c1' AND state='kept'").fetchall()
        assert "guard_members_by_command" in str(plan)  # found by key, not by scanning the kept ones
