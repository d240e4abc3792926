"""Members and leases on a real PostgreSQL (storage/postgres_cluster.py), fencing included."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from jodo.pglocal import LocalPostgres
from storage.errors import Fenced, StorageUnavailable, StoreClosed
from storage.postgres_cluster import ClusterStore, Lease, redact
from storage.postgres_schema import check_fence

R = "group:0"


@pytest.fixture
def store(pg_dsn: str) -> ClusterStore:
    s = ClusterStore(pg_dsn)
    s.ensure_resources([R, "group:1"])
    return s


def wait_expired(store: ClusterStore, resource: str) -> None:
    deadline = time.monotonic() + 10
    while next(v for v in store.leases() if v.resource == resource).expires_in_s > 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_acquire_bumps_the_epoch_and_a_held_lease_cannot_be_taken(store: ClusterStore) -> None:
    a = store.acquire(R, "node-a", 5.0)
    assert a is not None and a.epoch == 1
    assert store.acquire(R, "node-b", 5.0) is None
    view = next(v for v in store.leases("group:") if v.resource == R)
    assert (view.owner, view.epoch) == ("node-a", 1) and 4.0 < view.expires_in_s <= 5.0


def test_an_expired_lease_goes_to_exactly_one_of_two_racing_nodes(store: ClusterStore, pg_dsn: str) -> None:
    first = store.acquire(R, "node-a", 0.2)
    assert first is not None
    wait_expired(store, R)
    won: list[object] = []
    barrier = threading.Barrier(2)

    def race(node: str) -> None:
        mine = ClusterStore(pg_dsn)
        barrier.wait()
        won.append(mine.acquire(R, node, 5.0))
        mine.close()

    threads = [threading.Thread(target=race, args=(n,)) for n in ("node-b", "node-c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [w for w in won if isinstance(w, Lease)]
    assert len(won) == 2 and len(winners) == 1 and winners[0].epoch == 2
    row = next(v for v in store.leases() if v.resource == R)
    assert (row.owner, row.epoch) == (winners[0].owner, 2)  # bumped once, by the winner


def test_renew_extends_only_leases_still_held(store: ClusterStore) -> None:
    a0 = store.acquire(R, "node-a", 0.3)
    a1 = store.acquire("group:1", "node-a", 5.0)
    assert a0 is not None and a1 is not None
    wait_expired(store, R)
    assert store.renew([a0, a1], 5.0) == {"group:1"}  # an expired lease is not revived
    b = store.acquire(R, "node-b", 5.0)
    assert b is not None and b.epoch == 2
    assert store.renew([a0], 5.0) == set()  # taken by another: not ours to renew


def test_release_lets_the_next_owner_in_at_once_with_a_higher_epoch(store: ClusterStore) -> None:
    a = store.acquire(R, "node-a", 60.0)
    assert a is not None and store.release(a)
    assert not store.release(a)  # twice: nothing to release
    b = store.acquire(R, "node-b", 60.0)
    assert b is not None and b.epoch == a.epoch + 1


def test_a_write_fenced_with_the_old_epoch_is_refused_after_a_take_over(
    store: ClusterStore, pg_dsn: str
) -> None:
    old = store.acquire(R, "node-a", 0.3)
    assert old is not None
    with psycopg.connect(pg_dsn) as conn, conn.transaction(), conn.cursor() as cur:
        check_fence(cur, old.fence())  # holds now
    wait_expired(store, R)
    with psycopg.connect(pg_dsn) as conn, conn.transaction(), conn.cursor() as cur, pytest.raises(Fenced):
        check_fence(cur, old.fence())  # expired: refused even before anyone takes it
    new = store.acquire(R, "node-b", 5.0)
    assert new is not None
    with psycopg.connect(pg_dsn) as conn, conn.transaction(), conn.cursor() as cur:
        with pytest.raises(Fenced) as refused:
            check_fence(cur, old.fence())
        assert (refused.value.found_owner, refused.value.found_epoch) == ("node-b", 2)
        check_fence(cur, new.fence())


def test_members_heartbeat_age_grows_and_live_flips(store: ClusterStore) -> None:
    first = store.join("node-a", advertise="127.0.0.11", http_url="http://127.0.0.11:1", roles=("front",))
    assert first.incarnation == 1 and first.live(1.0) and first.roles == ("front",)
    assert store.join("node-a", advertise="127.0.0.11", http_url="http://127.0.0.11:2").incarnation == 2
    ages = [next(m for m in store.members() if m.node_id == "node-a").heartbeat_age_s]
    deadline = time.monotonic() + 10
    while next(m for m in store.members() if m.node_id == "node-a").live(0.2):
        ages.append(next(m for m in store.members() if m.node_id == "node-a").heartbeat_age_s)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    store.heartbeat("node-a", {"groups": [1]})
    back = next(m for m in store.members() if m.node_id == "node-a")
    assert back.live(0.2) and back.load == {"groups": [1]}
    assert ages == sorted(ages) and ages[-1] > ages[0]  # by the database's clock, it only grows
    again = store.join("node-a", advertise="127.0.0.11", http_url="http://127.0.0.11:2")
    assert again.incarnation == 3 and again.load == {} and again.heartbeat_age_s < 0.2


def test_leave_and_draining(store: ClusterStore) -> None:
    store.join("node-a", advertise="a", http_url="http://a")
    assert store.set_draining("node-a", True) and not store.set_draining("node-z", True)
    store.leave("node-a")
    m = next(m for m in store.members() if m.node_id == "node-a")
    assert m.draining and m.left and not m.live(60.0)
    assert not store.join("node-a", advertise="a", http_url="http://a").draining  # a new start


def test_a_database_restart_raises_unavailable_once_then_the_store_reconnects() -> None:
    with LocalPostgres(fsync=False) as pg:
        dsn = pg.create_database("restart")
        store = ClusterStore(dsn, connect_timeout_s=2)
        store.ensure_resources([R])
        assert store.acquire(R, "node-a", 30.0) is not None
        pg.restart(mode="immediate")
        try:
            store.leases()
        except StorageUnavailable as exc:
            assert pg.password not in str(exc)
        assert next(v for v in store.leases() if v.resource == R).owner == "node-a"
        store.close()


def test_an_unreachable_database_is_unavailable_and_the_password_never_shows() -> None:
    dsn = "host=127.0.0.1 port=1 dbname=x user=jodo password=s3cret-pw connect_timeout=1"
    with pytest.raises(StorageUnavailable) as exc:
        ClusterStore(dsn)
    assert "s3cret-pw" not in str(exc.value)
    assert redact("postgresql://jodo:s3cret-pw@h/db") == "postgresql://jodo:***@h/db"
    assert redact(r"host=h password='s3 c\'ret' user=jodo") == "host=h password=*** user=jodo"


def test_a_writer_paused_inside_its_transaction_does_not_hold_up_a_take_over(
    store: ClusterStore, pg_dsn: str
) -> None:
    from storage.api import DEFAULT_OPTIONS
    from storage.postgres_base import IDLE_IN_TRANSACTION_MS, connect

    old = store.acquire(R, "node-a", 0.3)
    assert old is not None
    paused = connect(pg_dsn, DEFAULT_OPTIONS, "paused writer")  # the settings every store uses
    paused.execute("BEGIN")
    check_fence(paused.cursor(), old.fence())  # share lock on the lease row, then the process stops
    wait_expired(store, R)
    started = time.monotonic()
    deadline = started + 10
    taken = None
    while taken is None:
        try:
            taken = store.acquire(R, "node-b", 5.0)  # waits on the lock, then the server ends the pause
        except StorageUnavailable:
            pass  # the keeper's statement timeout: it tries again on its next tick
        assert time.monotonic() < deadline
    assert taken.epoch == 2
    assert time.monotonic() - started < IDLE_IN_TRANSACTION_MS / 1000 + 6
    paused.close()


def test_leases_by_prefix_take_the_prefix_literally(store: ClusterStore) -> None:
    store.ensure_resources(["head_end:x", "headXend:y", "a\\b", "a%b"])
    assert [v.resource for v in store.leases("head_end:")] == ["head_end:x"]
    assert [v.resource for v in store.leases("a\\")] == ["a\\b"]
    assert [v.resource for v in store.leases("a%")] == ["a%b"]
    assert {v.resource for v in store.leases("group:")} == {R, "group:1"}
    fresh = next(v for v in store.leases("group:1"))
    assert (fresh.owner, fresh.epoch, fresh.acquired_at) == (None, 0, None) and fresh.expires_in_s < 0


def test_a_lease_acquired_is_stamped_by_the_database_clock(store: ClusterStore) -> None:
    before = store.now()
    lease = store.acquire(R, "node-a", 5.0)
    after = store.now()
    row = next(v for v in store.leases() if v.resource == R)
    assert lease is not None and row.acquired_at is not None and before <= row.acquired_at <= after
    assert store.acquire("group:unknown", "node-a", 5.0) is None  # no row: ensure_resources first


def test_a_ttl_out_of_range_is_refused_before_any_write(store: ClusterStore) -> None:
    for bad in (0.0, -1.0, float("nan"), 1e9):
        with pytest.raises(ValueError):
            store.acquire(R, "node-a", bad)
    assert next(v for v in store.leases() if v.resource == R).epoch == 0


def test_a_closed_store_refuses_every_call(store: ClusterStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreClosed):
        store.leases()
