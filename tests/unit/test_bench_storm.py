"""bench_storm at toy size: every record it prints has the keys the plots and the doc read, nothing is
lost in either scenario, and the node it started is gone afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.bench_storm import group_members

pytestmark = [pytest.mark.system, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_bench_storm_prints_every_record_and_loses_nothing(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.bench_storm", "--meters", "600", "--payments", "300",
               "--batch", "100", "--rate-limit", "400", "--verify-sample", "20", "--drain-timeout", "60",
               "--dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert all("stage" in r for r in records)
    assert records[-1]["stage"] == "done" and not [r for r in records if r["stage"] == "failed"]
    for scenario, label in (("burst", "storm burst"), ("rate-limited", "storm rate-limited")):
        mine = {(r["stage"], r.get("kind")): r for r in records if r.get("scenario") == scenario}
        assert {s for s, _ in mine} == {"start", "register", "processes", "storm", "cpu_us_per_payment",
                                        "memory", "queueing", "lost", "series"}
        storm = mine[("storm", None)]
        assert storm["drained"] is True and storm["connected"] == 300
        assert storm["desk_results"] == {"accepted": 300}
        assert set(storm["to_connected_s"]) == {"p50", "p99", "max"}
        lost = mine[("lost", None)]
        assert lost["nothing_lost"] is True, lost
        assert lost["sim_executed"] == 300 and lost["exactly_once"] is True
        assert lost["ledger"]["applied"] == 300 and lost["meters_checked"] == 20
        memory = mine[("memory", None)]
        assert memory["peak_sum_mb"] > 0 and {"desk", "shard-0", "shard-1"} <= set(memory["peak_rss_mb"])
        assert 0 < memory["peak_pss_sum_mb"] <= memory["peak_sum_mb"]
        for kind, values in (("throughput", "per_s"), ("memory", "rss_mb"), ("headend", "executed_per_s")):
            series = mine[("series", kind)]
            assert series["label"] == label
            assert len(series["t"]) == len(series[values]) > 0
            assert series["t"] == sorted(series["t"])
        if scenario == "rate-limited":
            assert storm["floor_seconds"] == 0.75
        # the node's processes (its own process group) are gone
        pgid = mine[("processes", None)]["node_pgid"]
        deadline = time.monotonic() + 15
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_members(pgid), f"node processes outlived the bench: {group_members(pgid)}"
