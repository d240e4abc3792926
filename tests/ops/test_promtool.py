"""promtool on deploy/prometheus and on what telemetry.metrics renders."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from ops_tools import ROOT, run

PROM = ROOT / "deploy" / "prometheus"

# A node with samples in every metric, recorded by forked "actors" (one killed), rendered for /metrics.
RECORD_AND_RENDER = textwrap.dedent(
    """
    import os, signal, sys
    from telemetry import metrics as m

    m.configure_labels(gateways=["razorpay", "jodo"], head_ends=["hes-a", "hes-b"])
    m.setup_multiproc_dir(sys.argv[1])

    def actor(kind, die):
        pid = os.fork()
        if pid:
            os.waitpid(pid, 0)
            return pid
        m.process_started(kind)
        m.payment_received("razorpay", "accepted")
        m.payment_received("unknown-gateway", "rejected")
        m.payment_reconnected("hes-a", 4.2)
        m.relay_command_attempted("hes-b", "connect")
        m.relay_command_finished("connect", "confirmed")
        m.headend_roundtrip("hes-a", 0.3)
        m.set_relay_commands_pending("hes-a", 3)
        m.set_breaker_state("hes-b", "half_open")
        m.set_meters_by_relay_state({"connected": 900, "disconnected": 12})
        m.set_paid_but_disconnected(auto=0, field=2)
        m.set_work_orders_open("reconnect", 2)
        m.actor_restarted("meter_shard")
        m.dead_letter("payment_desk")
        m.batches_in_flight("desk_to_shard", 4)
        m.desk_saturated()
        m.set_payments_unapplied(17)
        m.journal_commit("meter_shard", 0.004)
        m.recovered("meter_shard", 1.5)
        m.notice_sent("payment_received")
        m.webhook_rejected("jodo", 401)
        m.set_cluster_view(members=3, live=2, unowned=1)
        m.set_cluster_leases_held(2)
        m.cluster_lease_acquired("orphan")
        m.cluster_lease_lost("expired")
        m.fencing_refusal("group")
        m.cluster_failover(3.2)
        m.cluster_store_error()
        if die:
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(0)

    dead = actor("meter_shard", die=True)
    m.mark_dead(dead)
    actor("payment_desk", die=False)
    sys.stdout.write(m.render().decode())
    """
)


def test_prometheus_config_and_its_rule_files_are_valid(tool: Callable[[str], str]) -> None:
    result = run(tool("promtool"), "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_and_recording_rules_pass_promtool_check(tool: Callable[[str], str]) -> None:
    rules = sorted(str(p) for p in (PROM / "rules").glob("*.yml"))
    assert len(rules) == 2
    result = run(tool("promtool"), "check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass(tool: Callable[[str], str]) -> None:
    tests = sorted(str(p) for p in (PROM / "rules" / "tests").glob("*.yml"))
    assert tests
    result = run(tool("promtool"), "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_rendered_metrics_pass_promtool_check_metrics(tool: Callable[[str], str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    rendered = subprocess.run(
        [sys.executable, "-c", RECORD_AND_RENDER, str(tmp_path / "metrics")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    text = rendered.stdout
    for family in (
        "jodo_payments_received_total",
        "jodo_payment_to_relay_connected_seconds_bucket",
        "jodo_headend_breaker_state",
        "jodo_meters",
        "jodo_process_resident_memory_bytes",
        "jodo_cluster_members",
        "jodo_cluster_failover_seconds_bucket",
        "jodo_cluster_fencing_refusals_total",
    ):
        assert family in text, family
    result = run(tool("promtool"), "check", "metrics", stdin=text)
    # promtool prints lint problems (naming, units, help) and exits non-zero on any.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


def test_the_in_process_exposition_passes_too(tool: Callable[[str], str]) -> None:
    code = (
        "import sys; from telemetry import metrics as m; m.configure_labels(gateways=['razorpay'], "
        "head_ends=['hes-a']); m.payment_reconnected('hes-a', 1.0); m.set_breaker_state('hes-a', 'open'); "
        "sys.stdout.write(m.render().decode())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    text = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    result = run(tool("promtool"), "check", "metrics", stdin=text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )
