"""Three real nodes over one PostgreSQL: kill, pause and restart them under signed-webhook load.

Each test counts against the shared ledger and the simulated head-end: every payment answered 200
is applied exactly once (its meter's dues are 0, never negative), and the simulator executed exactly
one connect per paid meter. Each prints the failover time it saw (the bench measures it properly).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jodo.localcluster import Cluster, Node, eventually, serial
from jodo.pglocal import LocalPostgres
from protocols.headend import HesControlState

pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path, pg_dsn: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, pg_dsn)
    try:
        c.start()
        c.register_meters()
        yield c
    finally:
        c.stop()


class Load:
    """A payment gateway: one payment per meter, spread over the live nodes, each retried (as a
    gateway retries) until some node answers 200. Records every answer's status and when."""

    def __init__(self, cluster: Cluster, meters: range, *, per_s: float = 20.0, prefix: str = "pay",
                 nodes: list[Node] | None = None) -> None:
        self.cluster, self.meters, self.per_s, self.prefix = cluster, meters, per_s, prefix
        self.nodes = nodes  # None: whichever nodes are alive
        self.answers: list[tuple[float, int]] = []
        self.accepted: dict[int, str] = {}
        self.refused_for: dict[int, float] = {}  # meter -> seconds from its first refusal to its 200
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self.thread.start()
        return self

    def _run(self) -> None:
        for k, i in enumerate(self.meters):
            payment_id = f"{self.prefix}-{i}"
            deadline = time.monotonic() + 60
            refused_at: float | None = None
            while time.monotonic() < deadline:
                live = self.nodes if self.nodes is not None else self.cluster.live()
                node: Node = live[k % len(live)] if live else self.cluster.nodes[0]
                try:
                    status = self.cluster.pay(node, payment_id, i)
                except OSError:
                    status = 599  # connection refused/reset: the node is down
                now = time.monotonic()
                self.answers.append((now, status))
                if status == 200:
                    self.accepted[i] = payment_id
                    if refused_at is not None:
                        self.refused_for[i] = now - refused_at
                    break
                refused_at = now if refused_at is None else refused_at
                time.sleep(0.05)
            time.sleep(1 / self.per_s)

    def join(self, timeout: float = 120) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the load did not finish"


def assert_exactly_once(cluster: Cluster, paid: dict[int, str]) -> None:
    """Every accepted payment applied once; every paid meter connected by exactly one connect."""
    eventually(lambda: all(cluster.relay(i) == HesControlState.CONNECTED for i in paid), timeout=90,
               what="every paid meter's relay connected at the simulator")
    ledger = eventually(lambda: (lambda led: led if all(led.get(p, ("", ""))[1] == "applied"
                                                         for p in paid.values()) else None)(cluster.ledger()),
                        timeout=60, what="every accepted payment applied in the ledger")
    assert len(ledger) == len(paid), "a payment recorded twice, or one we never sent"
    for i in paid:
        meter = cluster.meter(i)
        assert meter["dues_paise"] == 0, (i, meter)  # credited twice would leave -DUES
    ran = cluster.executed()
    twice = {m: n for m, n in ran.items() if n != 1}
    assert not twice, f"switching commands run more than once: {twice}"
    assert set(ran) == {serial(i) for i in paid}


def test_sigkill_of_a_node_under_load_loses_nothing_and_its_groups_serve_again(cluster: Cluster) -> None:
    victim = cluster.nodes[1]
    orphans = victim.serving()
    assert orphans, "the victim served no group: nothing would be tested"
    load = Load(cluster, range(cluster.meters), per_s=15).start()
    eventually(lambda: len(load.accepted) >= cluster.meters // 4, timeout=60, what="a quarter paid")

    killed = time.monotonic()
    victim.kill()
    served_again = cluster.wait_served(timeout=30, without=[victim.node_id])
    failover = served_again - killed
    print(f"\nfailover after SIGKILL of {victim.node_id} (groups {sorted(orphans)}): {failover:.2f} s")

    load.join()
    assert len(load.accepted) == cluster.meters
    assert_exactly_once(cluster, load.accepted)
    # the bench holds the 5 s objective; here only a bound that a loaded CI box still meets
    assert failover < cluster.lease_ttl_s + 15


def _counter(node: Node, name: str) -> float:
    """Sum of a counter's samples on the node's /metrics."""
    import urllib.request

    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_a_paused_owner_is_fenced_and_never_writes_after_the_take_over(cluster: Cluster) -> None:
    sleeper = cluster.nodes[2]
    others = [n for n in cluster.nodes if n is not sleeper]
    its_groups = sleeper.serving()
    assert its_groups
    sleeper.signal_group(signal.SIGSTOP)
    paused = time.monotonic()
    try:
        # the paused node cannot answer: watch the others take its groups
        eventually(lambda: its_groups <= set().union(*(n.serving() for n in others)), timeout=30,
                   what="the paused node's groups taken by the others", every=0.02)
        print(f"\ntake-over after SIGSTOP of {sleeper.node_id}: {time.monotonic() - paused:.2f} s")
        load = Load(cluster, range(cluster.meters), per_s=40, prefix="fence", nodes=others).start()
        load.join()
    finally:
        sleeper.signal_group(signal.SIGCONT)
    # awake again: its leases did not renew, so it dropped them (and any write it tried under the old
    # epoch was refused); the cluster settles with one owner per group, the sleeper among them again
    cluster.wait_served(timeout=60)
    lost = _counter(sleeper, 'jodo_cluster_lease_losses_total{reason="expired"}') + _counter(
        sleeper, 'jodo_cluster_lease_losses_total{reason="fenced"}')
    assert lost >= 1, "the paused node never noticed it had lost its leases"
    assert_exactly_once(cluster, load.accepted)


def test_a_restarted_node_takes_groups_back_by_hand_over(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    before = node.serving()
    assert node.terminate() == 0, node.log.read_text()[-3000:]
    cluster.wait_served(timeout=30, without=[node.node_id])
    node.start()
    eventually(node.ready, timeout=60, what="the restarted node ready")
    # groups spread evenly again: the newcomer takes its share by hand-over, not by expiry
    eventually(lambda: len(node.serving()) >= cluster.groups // len(cluster.nodes), timeout=60,
               what="the restarted node serving its share again")
    cluster.wait_served(timeout=30)
    assert before  # it had groups before the restart
    load = Load(cluster, range(cluster.meters), per_s=30, prefix="after").start()
    load.join()
    assert_exactly_once(cluster, load.accepted)


def test_a_rolling_restart_of_every_node_under_load_refuses_no_payment_for_long(cluster: Cluster) -> None:
    load = Load(cluster, range(cluster.meters), per_s=6, prefix="roll").start()
    for node in cluster.nodes:
        assert node.terminate() == 0, node.log.read_text()[-3000:]  # SIGTERM: hands its groups over
        cluster.wait_served(timeout=30, without=[node.node_id])
        node.start()
        cluster.wait_ready(timeout=60)
    load.join()
    worst = max(load.refused_for.values(), default=0.0)
    print(f"\nrolling restart: {len(load.refused_for)} payments refused at first, longest {worst:.2f} s "
          f"until a node took them")
    # A hand-over must refuse a payment for less than a crash would: after a crash no node may take the
    # group before its lease (lease_ttl_s) runs out. A fixed 2 s bound failed here at load 4-12 with the
    # nodes CPU-starved (0.5-1.7 s on a quiet box); the figure itself is bench_cluster's business.
    assert worst < cluster.lease_ttl_s, sorted(load.refused_for.items(), key=lambda kv: -kv[1])[:5]
    assert_exactly_once(cluster, load.accepted)


def test_a_postgresql_restart_stalls_intake_and_then_everything_resumes(tmp_path: Path) -> None:
    with LocalPostgres(fsync=False) as pg:
        c = Cluster(tmp_path / "nodes", pg.create_database("restart"))
        try:
            c.start()
            c.register_meters()
            first = Load(c, range(0, 20), per_s=20, prefix="before").start()
            first.join()
            pg.stop(mode="immediate")  # like a crash: no checkpoint
            down = c.pay(c.nodes[0], "during-1", 20)
            assert down == 503  # refused, nothing stored: the gateway retries
            pg.start()
            # the gateway retries the refused one; it may have been committed meanwhile (the 503 came
            # when the desk did not answer in time): a retry is then a duplicate, never a second credit
            retried = eventually(lambda: c.pay(c.nodes[1], "during-1", 20) == 200, timeout=60,
                                 what="the refused payment accepted on retry")
            later = Load(c, range(21, c.meters), per_s=20, prefix="after").start()
            later.join(timeout=180)
            c.wait_served(timeout=60)
            assert retried
            assert_exactly_once(c, {**first.accepted, 20: "during-1", **later.accepted})
        finally:
            c.stop()


class _Partition:
    """nftables on this machine's output hook: drop one node's traffic to the database and to its
    front door (a table of our own, deleted afterwards; loopback addresses only)."""

    TABLE = "jodo_partition_test"

    def __init__(self, rules: list[str]) -> None:
        self.rules = rules

    def _nft(self, *args: str) -> None:
        subprocess.run(["nft", *args], check=True, capture_output=True, text=True, timeout=10)

    def __enter__(self) -> _Partition:
        self._nft("add", "table", "ip", self.TABLE)
        self._nft("add", "chain", "ip", self.TABLE, "out", "{ type filter hook output priority 0 ; }")
        for rule in self.rules:
            self._nft("add", "rule", "ip", self.TABLE, "out", *rule.split())
        return self

    def heal(self) -> None:
        subprocess.run(["nft", "delete", "table", "ip", self.TABLE], capture_output=True, timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.heal()


def test_a_partitioned_node_loses_its_groups_and_never_writes_after_the_take_over(tmp_path: Path) -> None:
    # node3 reaches the database on an address of its own, so its traffic alone can be dropped
    addresses = {"node1": "127.0.0.21", "node2": "127.0.0.22", "node3": "127.0.0.23"}
    listen = ",".join(["127.0.0.1", *addresses.values()])
    with LocalPostgres(fsync=False, extra_settings={"listen_addresses": f"'{listen}'"}) as pg:
        dsn = pg.create_database("partition")
        c = Cluster(tmp_path / "nodes", dsn,
                    dsn_for=lambda node: dsn.replace(f"host={pg.host}", f"host={addresses[node]}"))
        try:
            c.start()
            c.register_meters()
            cut = c.nodes[2]
            its_groups = cut.serving()
            assert its_groups
            port = cut.url.rsplit(":", 1)[1]
            others = c.nodes[:2]
            with _Partition([f"ip daddr {addresses['node3']} tcp dport {pg.port} drop",
                             f"ip daddr {cut.ip} tcp dport {port} drop"]) as partition:
                cut_at = time.monotonic()
                eventually(lambda: its_groups <= set().union(*(n.serving() for n in others)), timeout=30,
                           what="the partitioned node's groups taken by the others", every=0.02)
                print(f"\ntake-over after partitioning {cut.node_id}: {time.monotonic() - cut_at:.2f} s")
                load = Load(c, range(c.meters), per_s=30, prefix="part", nodes=others).start()
                load.join()
                partition.heal()
            c.wait_served(timeout=60)
            lost = sum(_counter(cut, f'jodo_cluster_lease_losses_total{{reason="{r}"}}')
                       for r in ("expired", "fenced", "unreachable"))
            assert lost >= 1, "the partitioned node never gave up its leases"
            assert_exactly_once(c, load.accepted)
        finally:
            c.stop()
