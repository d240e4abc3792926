"""A real Prometheus scrapes jodo's /metrics exposition, loads the alert and recording rules, and answers
every dashboard query with data: the names, labels and PromQL of deploy/ checked for real.

Everything listens on 127.0.0.1 only; Prometheus is started by this test and stopped at its end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ops_tools import ROOT

from jodo import metrics

pytestmark = pytest.mark.system

RULES = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "jodo.json"
SCRAPE_SECONDS = 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _record_a_little_of_everything() -> None:
    """What a busy node does between two scrapes, through the helpers actors will call."""
    metrics.payment_received("razorpay", "accepted")
    metrics.payment_received("razorpay", "duplicate")
    metrics.payment_reconnected("hes-a", 3.0)
    metrics.payment_reconnected("hes-a", 400.0)
    metrics.relay_command_attempted("hes-a", "connect")
    metrics.relay_command_finished("connect", "confirmed")
    metrics.headend_roundtrip("hes-a", 0.4)
    metrics.set_relay_commands_pending("hes-a", 3)
    metrics.set_breaker_state("hes-a", "closed")
    metrics.set_meters_by_relay_state({"connected": 700, "disconnected": 20, "awaiting_button": 1})
    metrics.set_paid_but_disconnected(auto=0, field=2)
    metrics.set_work_orders_open("reconnect", 2)
    metrics.actor_restarted("meter_shard")
    metrics.dead_letter("payment_desk")
    metrics.batches_in_flight("desk_to_shard", 2)
    metrics.desk_saturated()
    metrics.set_payments_unapplied(5)
    metrics.journal_commit("meter_shard", 0.003)
    metrics.recovered("meter_shard", 0.8)
    metrics.notice_sent("payment_received")
    metrics.webhook_rejected("razorpay", 401)
    metrics.process_started("meter_shard")


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        _record_a_little_of_everything()
        body = metrics.render()
        self.send_response(200)
        self.send_header("Content-Type", metrics.CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def front_door() -> Iterator[int]:
    metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-a"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def prometheus(tool: Callable[[str], str], front_door: int, tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: {SCRAPE_SECONDS}s
  evaluation_interval: {SCRAPE_SECONDS}s
rule_files:
  - {RULES / "jodo-recording.yml"}
  - {RULES / "jodo-alerts.yml"}
scrape_configs:
  - job_name: jodo
    static_configs:
      - targets: ["127.0.0.1:{front_door}"]
""",
        encoding="utf-8",
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        _until("prometheus to be ready", ready)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def _query(base: str, expr: str) -> list[Any]:
    answer = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert answer["status"] == "success", (expr, answer)
    result: list[Any] = answer["data"]["result"]
    return result


def _dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"].replace("$instance", ".*").replace("$__rate_interval", "20s"))
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def test_prometheus_scrapes_evaluates_the_rules_and_answers_every_dashboard_query(prometheus: str) -> None:
    _until(
        "a few scrapes",
        lambda: (
            len(_query(prometheus, "count_over_time(up[1m])")) == 1
            and float(_query(prometheus, "count_over_time(up[1m])")[0]["value"][1]) >= 6
        ),
        timeout=60,
    )
    assert _query(prometheus, 'up{job="jodo"}')[0]["value"][1] == "1"

    rules = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    loaded = [rule for group in rules for rule in group["rules"]]
    assert len(loaded) == 14  # 4 recording + 10 alerting
    _until(
        "every rule evaluated",
        lambda: all(
            r["health"] == "ok"
            for g in _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
            for r in g["rules"]
        ),
    )

    empty = []
    for title, expr in _dashboard_queries():
        if not _query(prometheus, expr):
            empty.append((title, expr))
    assert not empty, f"dashboard queries with no data: {empty}"

    # The SLO recording rules have data too (half of the reconnections above took 400 s).
    ratio = _query(prometheus, "jodo:payment_to_relay_connected:slow_ratio_rate5m")
    assert ratio and 0.3 < float(ratio[0]["value"][1]) < 0.7
