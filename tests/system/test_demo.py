"""`jodo demo` as a new user runs it (smaller fleet): it finishes, prints its summary, leaves nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from supervisors.processes import process_ref

pytestmark = [pytest.mark.system, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_a_month_end_to_end_and_prints_its_summary(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env["PYTHONPATH"] = str(ROOT)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "jodo.cli", "demo", "--meters", "2000", "--json"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert "jodo demo: summary" in done.stderr and "payment -> connected" in done.stderr
    assert summary["ok"] and summary["shutdown"] == "clean"
    assert summary["node_processes"] and summary["node_processes_left"] == []
    assert all(process_ref(pid) is None for pid in summary["node_processes"])  # none reused or left
    # the month happened as the rules say
    assert summary["paid_early"] > 1000
    assert summary["notices"]["disconnection_notice"] > 0
    assert list(summary["disconnected_by_hour"]) == ["Mon 17 Aug 08:00-09:00"]  # not Sat (holiday), not Sun
    # the mass-disconnect guard held the morning's bill run past 10 % of the fleet; the operator approved it
    (wave,) = summary["guard_waves_approved"]
    assert wave["kept"] > 0 and "max_per_hour" in wave["reason"] and wave["approved_by"] == ["demo-operator"]
    assert "mass-disconnect guard held wave" in done.stderr
    assert summary["work_orders"].get("open:disconnect", 0) > 0
    # the night's webhooks
    hooks = summary["webhooks"]
    assert hooks["accepted"] > 0 and hooks["duplicate"] > 0 and hooks["bad_signature_401"] > 0
    assert summary["reconnected"] + summary["awaiting_button"] == hooks["accepted"]
    assert summary["forged_payments_that_reconnected"] == 0
    assert summary["ledger"]["duplicates"] == hooks["duplicate"]
    assert summary["ledger"]["suspense"] == hooks["unknown_account_accepted"] == 10
    assert summary["paid_but_disconnected"] == 0
    latency = summary["payment_to_connected_seconds"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert took < 120, f"the demo took {took:.0f} s for 2 000 meters"


def _head_end_demo(tmp_path: Path, head_end: str, meters: int = 600) -> tuple[dict[str, Any], str]:
    """`jodo demo --head-end HEAD_END --json`: its summary (checked to be whole and clean) and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "jodo.cli", "demo", "--head-end", head_end,
                           "--meters", str(meters), "--json"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    summary: dict[str, Any] = json.loads(done.stdout)
    assert summary["ok"] and summary["shutdown"] == "clean" and summary["node_processes_left"] == []
    assert summary["head_end"]["kind"] == head_end
    assert summary["disconnected"] > 0 and summary["reconnected"] > 0
    assert summary["reconnected"] + summary["awaiting_button"] == summary["webhooks"]["accepted"]
    assert summary["paid_but_disconnected"] == 0 and summary["forged_payments_that_reconnected"] == 0
    return summary, done.stderr


def test_the_demo_runs_the_same_month_through_the_dlms_adapter_and_gurux_meters(tmp_path: Path) -> None:
    summary, stderr = _head_end_demo(tmp_path, "dlms")
    head_end = summary["head_end"]
    assert "DLMS/COSEM" in stderr
    # every relay switched that month went through a class 70 ACTION at the Gurux server and was read back
    switched = summary["disconnected"] + summary["reconnected"] + summary["awaiting_button"]
    assert head_end["actions"] == switched and head_end["reads"] >= switched
    assert head_end["associations"] > 0 and head_end["refused"] == 0


def test_the_demo_runs_the_same_month_through_the_cim_adapter_and_its_simulator(tmp_path: Path) -> None:
    summary, stderr = _head_end_demo(tmp_path, "cim")
    assert "IEC 61968-9" in stderr and summary["head_end"]["requests"] > 0


def test_dlms_demo_refuses_a_fleet_larger_than_its_wrapper_ports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "jodo.cli", "demo", "--head-end", "dlms",
                           "--meters", "70000"], capture_output=True, text=True, timeout=60, env=env,
                          cwd=tmp_path)
    assert done.returncode == 2 and "between 10 and 65,000" in done.stderr


def test_the_cluster_demo_kills_a_node_and_every_paid_meter_reconnects_anyway(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env["PYTHONPATH"] = str(ROOT)
    out = tmp_path / "demo.out"
    with out.open("w") as sink:  # a file, not a pipe: no process of the demo may hold our stdout
        done = subprocess.run([sys.executable, "-m", "jodo.cli", "demo", "--cluster", "--meters", "90"],
                              stdout=sink, stderr=subprocess.STDOUT, timeout=240, env=env, cwd=tmp_path)
    text = out.read_text()
    assert done.returncode == 0, text[-4000:]
    assert "SIGKILL of node2" in text and "failover: every group served again" in text
    assert "ledger: 90 payments, 90 applied" in text and "0 meters switched twice -> OK" in text


def test_the_prepaid_demo_runs_a_month_of_reads_held_cuts_and_recharges(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "jodo.cli", "demo", "--prepaid", "--meters", "400",
                           "--json"], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    s: dict[str, Any] = json.loads(done.stdout)
    assert "jodo demo --prepaid: summary" in done.stderr and "recharge -> connected" in done.stderr
    assert s["ok"] and s["shutdown"] == "clean" and s["node_processes_left"] == []
    assert s["prepaid"] == s["meters"] == 400
    # every day's read of every meter debited once
    assert s["reads"]["sent"] == 400 * 30 == s["reads"]["debited"] and s["reads"]["rejected"] == 0
    notices = s["low_balance_notices"]
    assert notices["used_75pc"] > 0 and notices["days_left_3"] > 0 and notices["zero"] > 0
    # reads arrive at 01:00, inside the friendly hours: every zero balance was held first, then either cut
    # in the morning or spared by emergency credit that lifted the balance above zero
    assert s["held"] > 0 and sum(s["held_by_night"].values()) == s["held"]
    credit = s["emergency_credit"]
    assert credit["granted"] > 0 and credit["granted"] == credit["metric"]["granted"]
    assert credit["granted_balance_above_zero"] == credit["granted"]
    assert s["held"] == s["cuts"] + credit["granted_balance_above_zero"]
    assert credit.get("refused_409", 0) == credit.get("refused_once_a_month", 0) + credit.get(
        "refused_outstanding", 0)
    # no relay opened inside a window: every opening, at the head-end, in a lab-clock step that allows it
    assert s["cuts_inside_a_window"] == 0 and s["cuts"] > 0
    opened = [step for step in s["relay_steps"] if step["opened"]]
    assert opened and all(step["allowed"] and step["what"] == "cuts" for step in opened)
    assert not any(at.startswith("Sun") for at in s["cuts_by_morning"])  # Sunday is a day off
    assert all(at.endswith("08:00") for at in s["cuts_by_morning"])  # the first allowed minute
    # every recharge of a cut meter reconnected it, duplicates credited once, the head-end's relays add up
    recharges = s["recharges"]
    assert recharges["from_off"] == recharges["accepted"] == s["reconnected"] > 0
    assert s["reconnected"] == s["reconnected_at_head_end"] and s["awaiting_button"] == 0
    assert s["ledger"]["applied"] == recharges["accepted"]
    assert s["ledger"]["duplicates"] == recharges["duplicate"]
    assert s["cuts"] - s["reconnected"] == s["off_at_end"] == s["relays"].get("disconnected", 0)
    assert s["on_at_or_below_zero_at_end"]["meters"] == s["on_at_or_below_zero_at_end"]["protected"]
    assert s["work_orders"] == {} and s["paid_but_disconnected"] == 0
    latency = s["recharge_to_connected_seconds"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
