"""A real Prometheus scrapes jodo's /metrics exposition, loads the alert and recording rules, and answers
every dashboard query with data: the names, labels and PromQL of deploy/ checked for real.

Everything listens on 127.0.0.1 only; Prometheus is started by this test and stopped at its end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ops_tools import ROOT, Prometheus, running_prometheus, serving_metrics, until

from telemetry import metrics

pytestmark = pytest.mark.system

RULES = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "jodo.json"
SCRAPE_SECONDS = 1


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
    metrics.set_cluster_view(members=3, live=2, unowned=0)
    metrics.set_cluster_leases_held(2)
    metrics.cluster_lease_acquired("orphan")
    metrics.cluster_lease_lost("released")
    metrics.fencing_refusal("group")
    metrics.cluster_failover(2.5)
    metrics.cluster_store_error()
    metrics.set_disconnect_guard("hes-a", 1, 40, False)  # (the gateway sets these at its start)
    metrics.disconnects_released("hes-a", 10)
    metrics.disconnect_approval("approved")
    metrics.disconnect_switch("pause")

    class _Head:
        chain, seq = "journal:3", 12

    metrics.audit_checkpoint_written(1_700_000_000, [_Head()])
    metrics.audit_checkpoint_failed()


def _render() -> bytes:
    _record_a_little_of_everything()
    return metrics.render()


@pytest.fixture
def prometheus(tool: Callable[[str], str], tmp_path: Path) -> Iterator[Prometheus]:
    metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-a"])
    with (
        serving_metrics(_render, metrics.CONTENT_TYPE) as target,
        running_prometheus(
            tool("prometheus"), tmp_path / "prometheus", target,
            rule_files=[RULES / "jodo-recording.yml", RULES / "jodo-alerts.yml"],
            scrape_seconds=SCRAPE_SECONDS,
        ) as api,
    ):
        yield api


def _dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"].replace("$instance", ".*").replace("$__rate_interval", "20s"))
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def test_prometheus_scrapes_evaluates_the_rules_and_answers_every_dashboard_query(
    prometheus: Prometheus,
) -> None:
    until(
        "a few scrapes",
        lambda: (prometheus.value("count_over_time(up[1m])") or 0) >= 6,
        timeout=60,
    )
    assert prometheus.value('up{job="jodo"}') == 1

    assert len(prometheus.rules()) == 28  # 4 recording + 24 alerting
    until("every rule evaluated", lambda: all(r["health"] == "ok" for r in prometheus.rules()))

    empty = []
    for title, expr in _dashboard_queries():
        if not prometheus.query(expr):
            empty.append((title, expr))
    assert not empty, f"dashboard queries with no data: {empty}"

    # The SLO recording rules have data too (half of the reconnections above took 400 s).
    ratio = prometheus.value("jodo:payment_to_relay_connected:slow_ratio_rate5m")
    assert ratio is not None and 0.3 < ratio < 0.7
