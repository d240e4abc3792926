"""Three `jodo serve` processes as one cluster on this machine: `jodo demo --cluster`, the cluster
system tests and `bench/bench_cluster.py`.

Each node is a real `jodo serve` in its own session (process group), on its own loopback address
(127.0.0.11, .12, .13: the whole of 127/8 reaches `lo` on Linux, so every node has its own
interface for its front door and its actor system), all sharing one PostgreSQL database (a
throwaway server on 127.0.0.1) and one simulated head-end (a `SimulatorThread` in the test
process, so the test can count what it executed). Faults are done to whole nodes: SIGKILL of the
process group (power loss), SIGSTOP/SIGCONT (a pause past the lease), SIGTERM (a rolling restart).
Every process started is stopped at the end, and only those.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from headend.sim.config import SimConfig
from headend.sim.server import SimulatorThread
from jodo.ports import free_port
from protocols.headend import HesControlState
from supervisors.processes import ProcessRef, is_alive, kill_process, process_group_members

__all__ = ["Cluster", "Node", "account", "eventually", "http", "serial", "signed_payment"]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
ADMIN = "cluster-admin-token-0123456789"
PAYMENTS = "cluster-payments-token-0123456"
JODO_SECRET = "cluster-jodo-signing-secret"
DUES = 150_000


def account(i: int) -> str:
    return f"N{i:010d}"


def serial(i: int) -> str:
    return f"MPW{i:08d}"


def eventually(check: Callable[[], T | None], *, timeout: float = 60.0, what: str = "condition",
               every: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError, ValueError) as exc:  # a node restarting
            last = exc  # type: ignore[assignment]
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def http(url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         token: str | None = ADMIN, timeout: float = 10.0) -> tuple[int, Any]:
    all_headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    req = urllib.request.Request(url + path, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read() or b"{}"
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode("utf-8", "replace")}


def signed_payment(payment_id: str, i: int, amount: int = DUES) -> tuple[bytes, dict[str, str]]:
    """A `jodo`-format webhook, signed as the README documents."""
    t = int(time.time())
    body = json.dumps({"payment_id": payment_id, "account": account(i), "amount_paise": amount,
                       "channel": "upi", "paid_at": t - 5}).encode()
    mac = hmac.new(JODO_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "Jodo-Signature": f"t={t},v1={mac}"}


@dataclass
class Node:
    node_id: str
    ip: str
    workdir: Path
    config: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    pgid: int = 0
    tree_pgid: int = 0
    seen: list[ProcessRef] = field(default_factory=list)
    starts: int = 0

    @property
    def port_file(self) -> Path:
        return self.workdir / "http.port"

    @property
    def log(self) -> Path:
        return self.workdir / f"serve-{self.starts}.out"

    def start(self) -> None:
        self.port_file.unlink(missing_ok=True)
        self.tree_pgid = 0
        self.starts += 1
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jodo.cli", "--config", str(self.config), "serve",
                 "--port-file", str(self.port_file)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir, start_new_session=True,
            )
        self.pgid = self.proc.pid
        proc = self.proc
        eventually(lambda: self.port_file.exists() or proc.poll() is not None, what=f"{self.node_id}'s port")
        assert proc.poll() is None, self.log.read_text()
        self.url = f"http://{self.ip}:{int(self.port_file.read_text())}"

    def ready(self) -> bool:
        if not (self.alive() and http(self.url, "GET", "/readyz", token=None, timeout=2)[0] == 200):
            return False
        if not self.tree_pgid:  # the actor system runs in a process group of its own
            status, doc = http(self.url, "GET", "/v1/status", timeout=5)
            self.tree_pgid = int(doc["tree"]["pgid"]) if status == 200 else 0
        return bool(self.tree_pgid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def groups(self) -> list[int]:
        return [g for g in (self.pgid, self.tree_pgid) if g]

    def remember_processes(self) -> None:
        known = {r.pid for r in self.seen}
        for group in self.groups():
            self.seen += [r for r in process_group_members(group) if r.pid not in known]

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal every process of the node: `jodo serve` and its actor system (two process groups)."""
        self.remember_processes()
        for group in self.groups():
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """Power loss: SIGKILL every process of the node at once."""
        self.signal_group(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(30)
        eventually(lambda: not any(process_group_members(g) for g in self.groups()), timeout=30,
                   what=f"{self.node_id} gone")
        self.tree_pgid = 0

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM (systemd stop): hand groups over, stop in order; returns the exit status."""
        assert self.proc is not None
        self.remember_processes()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(10)
            return -9

    def cluster(self) -> dict[str, Any]:
        status, doc = http(self.url, "GET", "/v1/cluster", timeout=5)
        assert status == 200, (self.node_id, status, doc)
        return dict(doc)

    def serving(self) -> set[int]:
        held = self.cluster().get("held", {})
        return {int(r.removeprefix("group:")) for r, h in held.items() if h.get("serving")}

    def cleanup(self) -> None:
        if self.alive():
            self.signal_group(signal.SIGCONT)
            self.terminate(60)
        for ref in self.seen:
            if is_alive(ref):
                kill_process(ref)


class Cluster:
    """`n` nodes over one database and one simulated head-end."""

    def __init__(self, work: Path, dsn: str, *, nodes: int = 3, groups: int = 6, meters: int = 60,
                 lease_ttl_s: float = 3.0, renew_every_s: float = 1.0,
                 dsn_for: Callable[[str], str] | None = None) -> None:
        self.work = work
        self.dsn = dsn
        self.groups = groups
        self.meters = meters
        self.sim = SimulatorThread(SimConfig(meters=meters, disconnected_fraction=1.0), host="127.0.0.1",
                                   port=0)
        self.nodes: list[Node] = []
        self.lease_ttl_s = lease_ttl_s
        self.renew_every_s = renew_every_s
        self.count = nodes
        self.dsn_for = dsn_for  # node id -> its DSN (a partition test gives each node its own address)

    # ------------------------------------------------------------ life

    def start(self) -> Cluster:
        self.sim.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
        env["PYTHONPATH"] = str(ROOT)
        env["JODO_STORAGE__DSN"] = self.dsn  # the password never goes into a file here
        for n in range(1, self.count + 1):
            node_id, ip = f"node{n}", f"127.0.0.{10 + n}"
            workdir = self.work / node_id
            workdir.mkdir(parents=True, exist_ok=True)
            config = workdir / "jodo.toml"
            config.write_text(self._config(node_id, ip))
            node_env = dict(env)
            if self.dsn_for is not None:
                node_env["JODO_STORAGE__DSN"] = self.dsn_for(node_id)
            self.nodes.append(Node(node_id, ip, workdir, config, node_env))
        for node in self.nodes:
            node.start()
        self.wait_ready()
        return self

    def _config(self, node_id: str, ip: str) -> str:
        return f"""
[node]
data_dir = "data"
bind = "{ip}"
admin_port = {free_port(ip)}

[http]
host = "{ip}"
port = 0
batch_window_ms = 5.0

[shards]
groups = {self.groups}

[[head_ends]]
name = "hes-sim"
kind = "reference"
host = "127.0.0.1"
port = {self.sim.port}
rate_limit_per_s = 2000

[gateways.bbps]
format = "jodo"
secret = "{JODO_SECRET}"

[tokens]
admin = "{ADMIN}"
payments = "{PAYMENTS}"

[storage]
backend = "postgresql"

[cluster]
enabled = true
node_id = "{node_id}"
lease_ttl_s = {self.lease_ttl_s}
renew_every_s = {self.renew_every_s}
suspect_after_s = {self.lease_ttl_s}
"""

    def stop(self) -> None:
        try:
            for node in self.nodes:
                node.cleanup()
        finally:
            self.sim.stop()

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive()]

    def wait_ready(self, timeout: float = 90.0) -> None:
        eventually(lambda: all(n.ready() for n in self.live()), timeout=timeout, what="every node ready")
        self.wait_served(timeout=timeout, balanced=True)

    def served_by(self) -> dict[int, list[str]]:
        """Group → the live nodes serving it (exactly one each once the cluster is settled)."""
        out: dict[int, list[str]] = {g: [] for g in range(self.groups)}
        for node in self.live():
            for g in node.serving():
                out[g].append(node.node_id)
        return out

    def wait_served(
        self, *, timeout: float = 60.0, without: Iterable[str] = (), balanced: bool = False
    ) -> float:
        """Poll until every group is served by exactly one live node (and, if `balanced`, the live
        nodes' counts differ by at most one); returns when (monotonic)."""
        excluded = set(without)

        def settled() -> bool:
            owners = self.served_by()
            if not all(len(o) == 1 and o[0] not in excluded for o in owners.values()):
                return False
            counts = [sum(1 for o in owners.values() if o[0] == n.node_id)
                      for n in self.live() if n.node_id not in excluded]
            return not balanced or max(counts) - min(counts) <= 1

        eventually(settled, timeout=timeout, what="every group served by exactly one live node", every=0.02)
        return time.monotonic()

    # ------------------------------------------------------------ the fleet

    def register_meters(self) -> None:
        """Every meter disconnected for DUES, registered through node 1 (forwarded to the owners)."""
        commands = [{"type": "RegisterMeter", "fields": {
            "account": account(i), "serial": serial(i), "head_end": "hes-sim", "install_year": 2022,
            "relay_capable": True, "control_mode": 2, "relay": "disconnected", "opening_dues_paise": DUES}}
            for i in range(self.meters)]
        for lo in range(0, len(commands), 5_000):  # [http] max_batch_items is 10 000
            part = commands[lo:lo + 5_000]
            deadline = time.monotonic() + 120
            while part:  # a group moving between nodes refuses for a moment: send those again
                status, answer = http(self.nodes[0].url, "POST", "/v1/admin/meter-commands",
                                      json.dumps(part).encode(), {"Content-Type": "application/json"},
                                      timeout=120)
                assert status == 200, answer
                again = {r["index"] for r in answer["rejected"]}
                assert all("retry" in r["reason"] for r in answer["rejected"]), answer
                part = [c for i, c in enumerate(part) if i in again]
                assert time.monotonic() < deadline, answer
                time.sleep(0.2 if part else 0)

    def pay(self, node: Node, payment_id: str, i: int) -> int:
        body, headers = signed_payment(payment_id, i)
        status, _ = http(node.url, "POST", "/v1/webhooks/bbps", body, headers, token=None, timeout=10)
        return status

    def meter(self, i: int) -> dict[str, Any]:
        """The meter as its owner serves it (asked of any live node; a 503 while a group moves is
        retried, as the README tells a client to)."""
        def ask() -> dict[str, Any] | None:
            status, doc = http(self.live()[0].url, "GET", f"/v1/meters/{account(i)}", timeout=10)
            if status == 503:
                return None
            assert status == 200, (status, doc)
            return dict(doc)

        return eventually(ask, timeout=30, what=f"meter {account(i)}")

    def relay(self, i: int) -> HesControlState | None:
        return self.sim.relay_state(serial(i)).control_state

    def connected(self, meters: Iterable[int]) -> set[int]:
        """Which of `meters` have their relay connected at the head-end (one call for all)."""
        wanted = list(meters)
        states = self.sim.relay_states([serial(i) for i in wanted])
        on = HesControlState.CONNECTED
        return {i for i, st in zip(wanted, states, strict=True) if st.control_state == on}

    def applied_ledger(self, payments: int, timeout: float = 30.0) -> dict[str, tuple[str, str]]:
        """The ledger once `payments` of it are applied (the desks mark acknowledgements on their
        tick), or as it is at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            ledger = self.ledger()
            applied = sum(1 for _, s in ledger.values() if s == "applied")
            if applied >= payments or time.monotonic() > deadline:
                return ledger
            time.sleep(0.05)

    def executed(self) -> Counter[str]:
        """Switching commands the simulator ran, per meter serial (it remembers each by command id)."""
        return self.sim.call(lambda h: Counter(r.meter for r in h.core._ran.values()))

    def ledger(self) -> dict[str, tuple[str, str]]:
        """payment id → (account, status), read from the shared database."""
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute("SELECT payment_id, account, status FROM jodo_payments").fetchall()
        return {str(p): (str(a), str(s)) for p, a, s in rows}
