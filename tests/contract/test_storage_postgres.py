"""The storage contract against PostgreSQL (a throwaway server, a fresh database per test), and
what only a shared database adds: fenced writes, several desks on one ledger, schema versions,
errors that never leak psycopg or the DSN's password."""

from __future__ import annotations

import random
import threading
from collections import Counter

import psycopg
import pytest
from storage_contract import DeskStoreContract, ShardStoreContract, ack, event, payment, snapshot

from storage import (
    AckResult,
    NewPayment,
    PaymentStatus,
    PostgresBackend,
    RecordOutcome,
    StorageBackend,
    StorageUnavailable,
    WriteRejected,
    backend,
)
from storage.errors import Fenced, SchemaTooNew
from storage.postgres import STORE_MIGRATIONS
from storage.postgres_schema import Fence, migrate


class _Postgres:
    @pytest.fixture
    def backend(self) -> StorageBackend:
        return PostgresBackend()

    @pytest.fixture
    def location(self, pg_dsn: str) -> str:  # type: ignore[override]
        return pg_dsn


class TestPostgresShardStore(_Postgres, ShardStoreContract):
    pass


class TestPostgresDeskStore(_Postgres, DeskStoreContract):
    pass


def _sql(dsn: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description is not None else []


def test_the_backend_is_registered_by_name() -> None:
    assert isinstance(backend("postgresql"), PostgresBackend)
    assert backend("postgresql").name == "postgresql"


# ---------------------------------------------------------------- fencing


@pytest.fixture
def lease_at_epoch_1(pg_dsn: str) -> str:
    """The lease row of group 3, owned by node-a at epoch 1 for a minute (the stores create the table)."""
    PostgresBackend().open_shard_store(pg_dsn, 3).close()
    _sql(pg_dsn, "INSERT INTO jodo_leases (resource, owner, epoch, expires_at) VALUES"
                 " ('group:3', 'node-a', 1, clock_timestamp() + interval '60 seconds')")
    return pg_dsn


NODE_A = Fence(resource="group:3", owner="node-a", epoch=1)


def test_a_fenced_store_writes_while_its_lease_holds(lease_at_epoch_1: str) -> None:
    with PostgresBackend().open_shard_store(lease_at_epoch_1, 3, fence=NODE_A) as store:
        assert store.commit([event(1, "a"), event(1, "b")]).seqs == (1, 2)
        store.save_snapshots([snapshot(1, 1)])
        assert store.prune_journal(1, 1) == 0  # the one segment holds seq 2 as well
        assert store.heads() == {1: 2}


def test_after_a_take_over_every_write_is_refused_and_applies_nothing(lease_at_epoch_1: str) -> None:
    dsn = lease_at_epoch_1
    with PostgresBackend().open_shard_store(dsn, 3, fence=NODE_A) as store:
        store.commit([event(1, "a")], outbox=[])
        store.save_snapshots([snapshot(1, 1, b"one")])
        _sql(dsn, "UPDATE jodo_leases SET owner = 'node-b', epoch = 2 WHERE resource = 'group:3'")
        with pytest.raises(Fenced) as refused:
            store.commit([event(1, "late"), event(2, "late")])
        assert (refused.value.owner, refused.value.epoch) == ("node-a", 1)
        assert (refused.value.found_owner, refused.value.found_epoch) == ("node-b", 2)
        with pytest.raises(Fenced):
            store.save_snapshots([snapshot(1, 1, b"overwritten")])
        with pytest.raises(Fenced):
            store.prune_journal(1, 1)
        assert [e.account for e in store.journal(1)] == ["a"]
        assert store.heads() == {1: 1}
        latest = store.latest_snapshot(1)
        assert latest is not None and latest.body == b"one"
    with PostgresBackend().open_shard_store(dsn, 3, fence=Fence(resource="group:3", owner="node-b",
                                                                  epoch=2)) as taker:
        assert taker.commit([event(1, "b")]).seqs == (2,)


def test_an_expired_lease_refuses_writes_even_before_another_node_takes_it(lease_at_epoch_1: str) -> None:
    dsn = lease_at_epoch_1
    _sql(dsn, "UPDATE jodo_leases SET expires_at = clock_timestamp() - interval '1 second'")
    with PostgresBackend().open_shard_store(dsn, 3, fence=NODE_A) as store:
        with pytest.raises(Fenced) as refused:
            store.commit([event(1, "a")])
        assert refused.value.found_epoch is None  # expired
        assert store.heads() == {}


def test_a_fence_naming_a_lease_that_does_not_exist_refuses(pg_dsn: str) -> None:
    ghost = Fence(resource="group:9", owner="node-a", epoch=1)
    with PostgresBackend().open_shard_store(pg_dsn, 9, fence=ghost) as store, pytest.raises(Fenced):
        store.commit([event(1, "a")])


# ---------------------------------------------------------------- shared tables


def test_groups_share_tables_but_see_only_their_own_rows(pg_dsn: str) -> None:
    pg = PostgresBackend()
    with pg.open_shard_store(pg_dsn, 1) as one, pg.open_shard_store(pg_dsn, 2) as two:
        one.commit([event(5, "a")], outbox=[])
        two.commit([event(5, "b"), event(6, "c")])
        two.save_snapshots([snapshot(6, 1)])
        assert one.heads() == {5: 1} and two.heads() == {5: 1, 6: 1}
        assert [s.shard for s in one.recover() if not hasattr(s, "seq")] == []
        assert [e.account for e in one.journal(5)] == ["a"]
        assert one.latest_snapshot(6) is None
    rows = _sql(pg_dsn, "SELECT grp, count(*) FROM jodo_journal_segments GROUP BY grp ORDER BY grp")
    assert rows == [(1, 1), (2, 2)]


def test_two_handles_racing_on_new_shards_share_one_gap_free_sequence(pg_dsn: str) -> None:
    stores = [PostgresBackend().open_shard_store(pg_dsn, 4) for _ in range(2)]
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(30):  # every commit touches shards nobody has written yet
                stores[n].commit([event(shard, f"w{n}-{i}") for shard in (i, i + 1, 100)])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert [e.seq for e in stores[0].journal(100)] == list(range(1, 61))
    assert stores[1].head(15) == 4  # shards i and i+1 of both writers: 14, 15 and 15, 16
    for store in stores:
        store.close()


# ---------------------------------------------------------------- several desks, one ledger


def _batches(seed: int) -> list[list[NewPayment]]:
    """Overlapping batches of p0 … p499 (each payment in two to three batches), shuffled."""
    rng = random.Random(seed)
    batches = []
    for lo in range(0, 500, 40):
        batch = [payment(f"p{i}", account=f"a{i}", event_id=f"e{i}", shard=i % 8)
                 for i in range(lo, min(lo + 70, 500))]
        rng.shuffle(batch)
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def test_two_desks_recording_and_crediting_overlapping_batches_at_once_keep_one_ledger(pg_dsn: str) -> None:
    pg = PostgresBackend()
    desks = [pg.open_desk_store(pg_dsn), pg.open_desk_store(pg_dsn)]
    recorded: list[list[str]] = [[], []]
    marked: list[list[AckResult]] = [[], []]
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            for batch in _batches(seed=n):
                results = desks[n].record_payments(batch, at=1)
                recorded[n] += [r.payment_id for r in results if r.outcome is RecordOutcome.NEW]
                # both desks credit what they just saw, so most payments are marked twice at once
                acks = [ack(p.payment_id, account=p.account) for p in batch[::2]]
                marked[n] += desks[n].mark_credited(acks)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    new = recorded[0] + recorded[1]
    assert sorted(new) == sorted(f"p{i}" for i in range(500))  # each payment NEW exactly once
    rows = _sql(pg_dsn, "SELECT count(*), count(DISTINCT receipt_seq), count(*) FILTER (WHERE status ="
                        " 'applied') FROM jodo_payments")
    (total, distinct_seqs, applied), = rows
    assert (total, distinct_seqs) == (500, 500)
    recorded_acks = Counter(marked[0] + marked[1])[AckResult.RECORDED]
    assert recorded_acks == applied  # a payment two desks marked at once counts once
    submitted = sum(len(b) for n in (0, 1) for b in _batches(seed=n))
    for desk in desks:
        counts = desk.payment_counts()
        assert (counts.pending, counts.applied, counts.suspense) == (500 - applied, applied, 0)
        assert counts.duplicates == submitted - 500
    pending = {p.payment_id for p in desks[0].unacknowledged()}
    assert len(pending) == 500 - applied
    mine = list(desks[1].unacknowledged(shards=[3]))
    assert {p.shard for p in mine} <= {3} and len(mine) == sum(int(p[1:]) % 8 == 3 for p in pending)
    for desk in desks:
        desk.close()


def test_a_duplicate_within_one_batch_is_a_duplicate_of_the_new_one(pg_dsn: str) -> None:
    with PostgresBackend().open_desk_store(pg_dsn) as desk:
        results = desk.record_payments(
            [payment("p1", event_id="e1"), payment("p2", event_id="e1"), payment("p1")], at=5)
        assert [(r.outcome, r.stored_payment_id, r.receipt_seq) for r in results] == [
            (RecordOutcome.NEW, "p1", 1),
            (RecordOutcome.DUPLICATE, "p1", 1),
            (RecordOutcome.DUPLICATE, "p1", 1),
        ]
        stored = desk.payment("p1")
        assert stored is not None and stored.status is PaymentStatus.PENDING


# ---------------------------------------------------------------- schema


def test_a_database_written_by_a_newer_jodo_is_refused_untouched(pg_dsn: str) -> None:
    PostgresBackend().open_desk_store(pg_dsn).close()
    _sql(pg_dsn, "UPDATE jodo_schema SET version = 99 WHERE component = 'store'")
    with pytest.raises(SchemaTooNew) as refused:
        PostgresBackend().open_desk_store(pg_dsn)
    assert (refused.value.found, refused.value.supported) == (99, len(STORE_MIGRATIONS))
    with pytest.raises(SchemaTooNew):
        PostgresBackend().open_shard_store(pg_dsn, 0)
    assert _sql(pg_dsn, "SELECT version FROM jodo_schema WHERE component = 'store'") == [(99,)]


def test_two_connections_migrating_at_once_apply_each_step_once(pg_dsn: str) -> None:
    barrier = threading.Barrier(2)
    versions: list[int] = []

    def run() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            barrier.wait()
            versions.append(migrate(conn, "store", STORE_MIGRATIONS))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert versions == [len(STORE_MIGRATIONS)] * 2
    assert _sql(pg_dsn, "SELECT component, version FROM jodo_schema") == [("store", len(STORE_MIGRATIONS))]
    with PostgresBackend().open_desk_store(pg_dsn) as desk:  # and a store opens on top of it
        assert desk.record_payments([payment("p1")], at=1)[0].outcome is RecordOutcome.NEW


def test_opening_creates_both_the_store_and_the_cluster_schemas(pg_dsn: str) -> None:
    PostgresBackend().open_shard_store(pg_dsn, 0).close()
    rows = _sql(pg_dsn, "SELECT component FROM jodo_schema ORDER BY component")
    assert rows == [("cluster",), ("store",)]


# ---------------------------------------------------------------- errors


def _password(dsn: str) -> str:
    return next(part for part in dsn.split() if part.startswith("password=")).split("=", 1)[1]


SECRET_DSN = "host=127.0.0.1 port=1 dbname=x user=jodo password=hunter2-secret connect_timeout=1"


def test_an_unreachable_server_is_unavailable_and_the_password_never_shows() -> None:
    for opening in (lambda: PostgresBackend().open_desk_store(SECRET_DSN),
                    lambda: PostgresBackend().open_shard_store(SECRET_DSN, 0)):
        with pytest.raises(StorageUnavailable) as exc:
            opening()
        assert "hunter2-secret" not in str(exc.value)
        assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_a_wrong_password_is_unavailable_without_the_password(pg_dsn: str) -> None:
    wrong = pg_dsn.replace("password=", "password=wrong-")
    with pytest.raises(StorageUnavailable) as exc:
        PostgresBackend().open_desk_store(wrong)
    assert "wrong-" not in str(exc.value) and _password(pg_dsn) not in str(exc.value)


def test_a_lost_connection_is_unavailable_once_then_the_store_reconnects(pg_dsn: str) -> None:
    with PostgresBackend().open_shard_store(pg_dsn, 0) as store:
        store.commit([event(1, "a")])
        _sql(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(StorageUnavailable):
            store.commit([event(1, "b")])
        assert store.commit([event(1, "c")]).seqs == (2,)


def test_a_value_postgresql_cannot_store_is_a_rejected_write_and_stores_nothing(pg_dsn: str) -> None:
    with PostgresBackend().open_desk_store(pg_dsn) as desk:
        with pytest.raises(WriteRejected) as exc:
            desk.record_payments([payment("p1"), payment("p2", account="nul\x00byte")], at=1)
        assert _password(pg_dsn) not in str(exc.value)
        assert desk.payment("p1") is None
        assert desk.payment_counts().pending == 0


def test_a_location_that_is_not_a_dsn_string_is_refused() -> None:
    from pathlib import Path

    with pytest.raises(WriteRejected):
        PostgresBackend().open_desk_store(Path("/tmp/data"))


def test_looking_up_a_batch_in_the_ledger_can_use_the_indexes_alone(pg_dsn: str) -> None:
    from storage.postgres_desk import LOOKUP_SQL

    PostgresBackend().open_desk_store(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # whatever the table's size: can it avoid a scan?
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN " + LOOKUP_SQL, (["p1", "p2"], ["razorpay"], ["e1"])).fetchall())
    # an OR of the two keys left a sequential scan of the whole ledger on every batch
    assert "Seq Scan on jodo_payments" not in plan, plan
