"""The storage contract against PostgreSQL (a throwaway server, a fresh database per test), and
what only a shared database adds: fenced writes, several desks on one ledger, schema versions."""

from __future__ import annotations

import threading

import psycopg
import pytest
from storage_contract import DeskStoreContract, ShardStoreContract, event, payment

from storage import PostgresBackend, StorageBackend
from storage.errors import Fenced, SchemaTooNew, StorageUnavailable
from storage.postgres_cluster import ClusterStore
from storage.postgres_schema import Fence


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


def test_a_fenced_store_commits_while_its_lease_holds_and_is_refused_after_a_take_over(pg_dsn: str) -> None:
    leases = ClusterStore(pg_dsn)
    leases.ensure_resources(["group:3"])
    mine = leases.acquire("group:3", "node-a", 30.0)
    assert mine is not None
    store = PostgresBackend().open_shard_store(pg_dsn, 3, fence=mine.fence())
    store.commit([event(1, "acct-1")])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # node-b takes it over
        conn.execute("UPDATE jodo_leases SET owner = 'node-b', epoch = epoch + 1 WHERE resource = 'group:3'")
    with pytest.raises(Fenced) as refused:
        store.commit([event(1, "acct-1", kind="Late")])
    assert (refused.value.found_owner, refused.value.found_epoch) == ("node-b", 2)
    assert [e.kind for e in store.journal(1)] == ["Noted"]  # nothing of the refused commit
    with pytest.raises(Fenced):
        store.prune_journal(1, 1)
    store.close()
    unfenced_reader = PostgresBackend().open_shard_store(pg_dsn, 3)
    assert unfenced_reader.head(1) == 1
    unfenced_reader.close()


def test_an_expired_lease_refuses_writes_even_before_another_node_takes_it(pg_dsn: str) -> None:
    leases = ClusterStore(pg_dsn)
    leases.ensure_resources(["group:0"])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE jodo_leases SET owner = 'node-a', epoch = 4, expires_at = clock_timestamp()"
                     " - interval '1 second' WHERE resource = 'group:0'")
    store = PostgresBackend().open_shard_store(pg_dsn, 0, fence=Fence(resource="group:0", owner="node-a",
                                                                      epoch=4))
    with pytest.raises(Fenced):
        store.commit([event(0, "acct-1")])
    store.close()


def test_two_desks_recording_overlapping_batches_at_once_store_each_payment_once(pg_dsn: str) -> None:
    backend = PostgresBackend()
    desks = [backend.open_desk_store(pg_dsn), backend.open_desk_store(pg_dsn)]
    outcomes: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def record(n: int) -> None:
        barrier.wait()
        for lo in range(0, 400, 40):
            batch = [payment(f"p{i}", account=f"a{i}", event_id=f"e{i}") for i in range(lo, lo + 60)]
            outcomes[n] += [r.outcome.value for r in desks[n].record_payments(batch, at=1)]

    threads = [threading.Thread(target=record, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    new = sum(o.count("new") for o in outcomes)
    assert new == 420  # p0 … p419, each once
    seqs = sorted(p.receipt_seq for p in desks[0].unacknowledged())
    assert seqs == list(range(1, 421))  # gap-free across writers
    counts = desks[1].payment_counts()
    assert (counts.pending, counts.duplicates) == (420, 1200 - 420)
    for desk in desks:
        desk.close()


def test_a_database_written_by_a_newer_jodo_is_refused_untouched(pg_dsn: str) -> None:
    PostgresBackend().open_desk_store(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE jodo_schema SET version = 99 WHERE component = 'store'")
    with pytest.raises(SchemaTooNew):
        PostgresBackend().open_desk_store(pg_dsn)


def test_an_unreachable_server_is_unavailable_and_the_password_never_shows() -> None:
    dsn = "host=127.0.0.1 port=1 dbname=x user=jodo password=hunter2-secret connect_timeout=1"
    with pytest.raises(StorageUnavailable) as exc:
        PostgresBackend().open_desk_store(dsn)
    assert "hunter2-secret" not in str(exc.value)
