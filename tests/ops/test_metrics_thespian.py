"""Metrics and logs across real Thespian actor processes (multiprocTCPBase), as a node runs them.

The starter sets up the metrics directory and passes jodo.logs' dict as ``logDefs``; actors forked
by Thespian then count into the node's /metrics, a SIGKILLed actor's counts survive it and its gauges
vanish once marked dead, and an actor's log line reaches the logger process as one JSON object with
its context, its own pid and the secret redacted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ops_tools import ROOT
from prometheus_client.parser import text_string_to_metric_families

from jodo.ports import free_port as _free_port

pytestmark = pytest.mark.system

STARTER = """
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[4])
os.environ["THESPIAN_BASE_IPADDR"] = "127.0.0.1"
from actors.netpatch import apply_bind_patch
from jodo import logs
from telemetry import metrics
from thespian.actors import ActorSystem

directory, port, log_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-a"])
metrics.setup_multiproc_dir(directory)
apply_bind_patch()
system = ActorSystem("multiprocTCPBase", capabilities={"Admin Port": port},
                     logDefs=logs.logging_dict("INFO", "json", log_file), transientUnique=True)
out = {}
try:
    first = system.createActor("metrics_probe_actor.MetricsProbe")
    out["first"] = system.ask(first, "count", 20)
    # Its log record travels on its own to the logger process; a kill before it left would lose it.
    deadline = time.monotonic() + 10
    while f'"pid":{out["first"]}' not in open(log_file).read() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(out["first"], signal.SIGKILL)
    while True:  # reaped by its parent (the admin); the pid is gone
        try:
            os.kill(out["first"], 0)
            time.sleep(0.01)
        except ProcessLookupError:
            break
    out["after_kill"] = metrics.render().decode()
    metrics.mark_dead(out["first"])  # what the supervisor does on ChildActorExited
    second = system.createActor("metrics_probe_actor.MetricsProbe")
    out["second"] = system.ask(second, "count", 20)
    out["after_restart"] = metrics.render().decode()
finally:
    system.shutdown()
print(json.dumps(out))
"""


def _value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_actor_processes_count_into_the_node_and_log_json(tmp_path: Path) -> None:
    out_file, log_file = tmp_path / "out.json", tmp_path / "jodo.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with out_file.open("w") as sink:  # a file, never a pipe: Thespian's admin would hold a pipe open
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                STARTER,
                str(tmp_path / "metrics"),
                str(_free_port()),
                str(log_file),
                str(Path(__file__).parent),
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    output = out_file.read_text()
    assert result.returncode == 0, output
    out = json.loads(output.strip().splitlines()[-1])
    first, second = out["first"], out["second"]
    assert first != second and first != os.getpid()

    paid = ("jodo_payments_received_total", {"gateway": "razorpay", "outcome": "accepted"})
    assert _value(out["after_kill"], paid[0], **paid[1]) == 1
    assert _value(out["after_kill"], "jodo_relay_commands_pending", head_end="hes-a") == 5
    assert _value(out["after_restart"], paid[0], **paid[1]) == 2, "the killed actor's count is kept, once"
    assert _value(out["after_restart"], "jodo_relay_commands_pending", head_end="hes-a") == 5, "live only"
    assert _value(out["after_restart"], "jodo_actor_processes", kind="meter_shard") == 1

    lines = [json.loads(line) for line in log_file.read_text().splitlines() if '"jodo.probe"' in line]
    assert [line["pid"] for line in lines] == [first, second], "pid: the actor's, not the logger's"
    for line in lines:
        assert line["payment_id"] == "pay_1" and line["actor"] == "probe" and line["level"] == "INFO"
        assert "tok_live_secret" not in json.dumps(line) and "actor_address" in line
