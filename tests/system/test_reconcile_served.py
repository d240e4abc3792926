"""Reconciliation in a real node: `jodo serve` (front door, actor processes, built-in simulated
head-end) pulls a fake Razorpay API (real HTTP on 127.0.0.1, the real SDK as client) every second.

A payment whose webhook was lost is credited by reconciliation and the meter's relay closes at the
simulator; a payment that came both ways (webhook and reconciliation, in either order) is credited
once; `jodo reconcile` reports the window.
"""

from __future__ import annotations

import functools
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from headend.sim.control import inspect_meters
from protocols.headend import HesControlState
from tests.razorpay_fake import KEY_ID, KEY_SECRET, FakeRazorpay, entity
from tests.system import jodo_fixtures
from tests.system.conftest import free_port
from tests.system.jodo_fixtures import account, serial

pytestmark = pytest.mark.system

METERS = 6
DUES = 150_000
ADMIN = "admin-token-for-reconcile-0123456"
RZP_SECRET = "rzp-webhook-secret-for-reconcile"
ROOT = Path(__file__).resolve().parents[2]


# the nodes here pull a gateway every second: a minute is the deadline of a whole pull-and-credit round
eventually = functools.partial(jodo_fixtures.eventually, timeout=60.0)


@dataclass
class Node:
    url: str
    sim_port: int
    api: FakeRazorpay
    config: Path
    env: dict[str, str]
    workdir: Path

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = ADMIN,
    ) -> tuple[int, Any]:
        all_headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        req = urllib.request.Request(self.url + path, data=body, headers=all_headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, path: str) -> Any:
        status, doc = self.call("GET", path)
        assert status == 200, (path, status, doc)
        return doc

    def relay(self, i: int) -> HesControlState | None:
        return inspect_meters("127.0.0.1", self.sim_port, [serial(i)])[0].control_state

    def webhook(self, payment: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(
            {"entity": "event", "event": "payment.captured", "payload": {"payment": {"entity": payment}}}
        ).encode()
        mac = hmac.new(RZP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return self.call(
            "POST",
            "/v1/webhooks/razorpay",
            body,
            {
                "Content-Type": "application/json",
                "X-Razorpay-Signature": mac,
                "X-Razorpay-Event-Id": f"evt_{payment['id']}",
            },
            token=None,
        )

    def jodo(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jodo.cli", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            cwd=self.workdir,
        )

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as r:
            lines = r.read().decode().splitlines()
        return sum(float(line.split()[-1]) for line in lines if line.startswith(name + " "))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    work = tmp_path_factory.mktemp("reconcile")
    sim_port = free_port()
    (work / "rzp.key").write_text(KEY_SECRET + "\n")
    with FakeRazorpay() as api:
        config = work / "jodo.toml"
        config.write_text(f"""
[node]
data_dir = "data"
admin_port = {free_port()}

[http]
port = 0
batch_window_ms = 5.0

[[head_ends]]
name = "hes-sim"
kind = "sim"
port = {sim_port}

[gateways.razorpay]
format = "razorpay"
secret = "{RZP_SECRET}"

[gateways.razorpay.reconcile]
every_s = 1.0
window_s = 3600.0
settle_s = 0.0
key_id = "{KEY_ID}"
key_secret_file = "rzp.key"
base_url = "{api.url}"

[tokens]
admin = "{ADMIN}"
""")
        port_file = work / "http.port"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
        env["PYTHONPATH"] = str(ROOT)
        out = (work / "serve.out").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jodo.cli",
                "--config",
                str(config),
                "serve",
                "--port-file",
                str(port_file),
                "--sim-meters",
                str(METERS),
                "--sim-disconnected-fraction",
                "1.0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
            start_new_session=True,
        )
        try:
            eventually(lambda: port_file.exists() or proc.poll() is not None, what="the port file")
            assert proc.poll() is None, (work / "serve.out").read_text()
            n = Node(f"http://127.0.0.1:{int(port_file.read_text())}", sim_port, api, config, env, work)
            env["JODO_URL"] = n.url
            eventually(lambda: n.call("GET", "/readyz", token=None)[0] == 200, what="readyz 200")
            commands = [
                {
                    "type": "RegisterMeter",
                    "fields": {
                        "account": account(i),
                        "serial": serial(i),
                        "head_end": "hes-sim",
                        "install_year": 2022,
                        "relay_capable": True,
                        "control_mode": 2,
                        "relay": "disconnected",
                        "opening_dues_paise": DUES,
                    },
                }
                for i in range(METERS)
            ]
            status, answer = n.call(
                "POST",
                "/v1/admin/meter-commands",
                json.dumps(commands).encode(),
                {"Content-Type": "application/json"},
            )
            assert (status, answer["accepted"]) == (200, METERS)
            yield n
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(10)
            out.close()
            log = (work / "serve.out").read_text()
            assert code == 0, log
            assert (
                KEY_SECRET not in log and KEY_SECRET not in (work / "data" / "logs" / "jodo.log").read_text()
            )


def captured(payment_id: str, i: int, *, ago: int = 30) -> dict[str, Any]:
    return entity(payment_id, account=account(i), amount=DUES, created_at=int(time.time()) - ago)


def _meter(node: Node, i: int) -> dict[str, Any]:
    return dict(node.get(f"/v1/meters/{account(i)}"))


def test_a_payment_whose_webhook_was_lost_is_credited_and_the_relay_closes(node: Node) -> None:
    assert node.relay(0) == HesControlState.DISCONNECTED
    before = node.metric('jodo_reconcile_credited_total{gateway="razorpay"}')
    node.api.payments.append(captured("pay_lost_0", 0))  # captured at Razorpay; no webhook ever comes
    eventually(lambda: node.relay(0) == HesControlState.CONNECTED, what="the relay closed at the simulator")
    trace = node.get("/v1/payments/pay_lost_0")
    assert (trace["gateway"], trace["account"], trace["amount_paise"]) == ("razorpay", account(0), DUES)
    assert _meter(node, 0)["dues_paise"] == 0
    assert node.metric('jodo_reconcile_credited_total{gateway="razorpay"}') == before + 1
    assert node.metric('jodo_reconcile_enabled{gateway="razorpay"}') == 1


def test_a_payment_both_notified_and_listed_is_credited_once_in_either_order(node: Node) -> None:
    first_webhook = captured("pay_both_1", 1)
    status, answer = node.webhook(first_webhook)
    assert (status, answer["result"]) == (200, "accepted")
    node.api.payments.append(first_webhook)  # the next pulls list it: it is in the ledger already

    node.api.payments.append(captured("pay_both_2", 2))  # listed first; its webhook comes late
    eventually(lambda: node.call("GET", "/v1/payments/pay_both_2")[0] == 200, what="reconciliation's credit")
    status, answer = node.webhook(captured("pay_both_2", 2))
    assert (status, answer["result"]) == (200, "duplicate")

    for i in (1, 2):
        eventually(lambda i=i: node.relay(i) == HesControlState.CONNECTED, what=f"meter {i}'s relay closed")
        eventually(lambda i=i: _meter(node, i)["dues_paise"] == 0, what=f"meter {i} credited once")
    # several pulls later, still once: dues would be negative (a credit balance) after a second credit
    pulls = len(node.api.requests)
    eventually(lambda: len(node.api.requests) >= pulls + 2, what="two more pulls")
    assert [_meter(node, i)["dues_paise"] for i in (1, 2)] == [0, 0]


def test_jodo_reconcile_reports_the_window_and_a_dry_run_credits_nothing(node: Node) -> None:
    now = int(time.time())
    status, answer = node.webhook(
        entity("pay_cli_amount", account=account(3), amount=DUES, created_at=now - 20)
    )
    assert (status, answer["result"]) == (200, "accepted")
    # the gateway's own list says another amount (webhook first: else a periodic pull would credit it)
    node.api.payments.append(
        entity("pay_cli_amount", account=account(3), amount=DUES + 1, created_at=now - 20)
    )
    result = node.jodo(
        "reconcile",
        "--gateway",
        "razorpay",
        "--from",
        str(now - 600),
        "--to",
        str(now),
        "--dry-run",
        "--json",
    )
    assert result.returncode == 1, result.stderr  # a mismatch: not clean
    (report,) = json.loads(result.stdout)["reports"]
    assert report["complete"] and report["dry_run"]
    assert report["mismatches"]["amount_differs"] == 1
    assert any(
        f["payment_id"] == "pay_cli_amount" and f["kind"] == "amount_differs" for f in report["findings"]
    )
    human = node.jodo("reconcile", "--from", str(now - 600), "--to", str(now))
    assert human.returncode == 1 and "amount_differs" in human.stdout and "pay_cli_amount" in human.stdout
    bad = node.jodo("reconcile", "--gateway", "paytm", "--from", str(now - 600), "--to", str(now))
    assert bad.returncode == 4 and "paytm" in bad.stderr
