"""A day's prepaid reads from the head-end against the same reads sent as meter commands (issue 16).

    python -m bench.bench_headend_reads --meters 20000 --runs 3

Each run starts `jodo serve --lab-clock 2026-11-02T10:00` as a process (built-in simulator of ``--meters``
meters, every one registered and switched to prepaid through ``POST /v1/admin/meter-commands``), then:

* ``headend``: ``POST /v1/admin/clock`` to 00:30 the next day; the simulator sends every meter's read of 2
  November (`HesReads`), the gateway asks the shard groups for the serials and sends the `ReportConsumption`
  batches;
* ``commands`` (the baseline: what `jodo import reads` does): the node runs with ``--sim-daily-reads off``;
  the clock is moved the same way, then the same reads are posted to ``/v1/admin/meter-commands`` in
  batches of 5 000.

Timed from the clock request to ``jodo_prepaid_reads_total{outcome="debited"}`` reaching ``--meters``. The
two modes alternate. JSON lines; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

from bench.common import emit
from headend.sim.load import daily_wh, read_id
from jodo.ports import free_port

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 2)


def _post(url: str, token: str, path: str, body: Any, timeout: float = 300) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(url + path, method="POST", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _debited(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('jodo_prepaid_reads_total{outcome="debited"}'))


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def one_run(work: Path, meters: int, mode: str) -> dict[str, Any]:
    port = free_port()
    (work / "jodo.toml").write_text(f"""
[node]
data_dir = "{work / 'data'}"
admin_port = {free_port()}

[http]
port = {port}

[[head_ends]]
name = "hes-sim"
kind = "sim"
port = {free_port()}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env |= {"PYTHONPATH": str(ROOT), "JODO_CONFIG": str(work / "jodo.toml")}
    argv = [sys.executable, "-m", "jodo.cli", "serve", "--sim-meters", str(meters), "--sim-seed", "1",
            "--lab-clock", "2026-11-02T10:00", "--sim-daily-reads", "on" if mode == "headend" else "off"]
    url = f"http://127.0.0.1:{port}"
    with (work / "serve.out").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((work / "serve.out").read_text())
            time.sleep(0.2)
        token = (work / "data" / "admin.token").read_text().strip()
        serials = [f"MPW{i:08d}" for i in range(meters)]
        for k in range(0, meters, 5_000):
            chunk = range(k, min(meters, k + 5_000))
            _post(url, token, "/v1/admin/meter-commands", [
                {"type": "RegisterMeter", "fields": {"account": f"N{i:010d}", "serial": serials[i],
                                                      "head_end": "hes-sim", "install_year": 2022,
                                                      "relay_capable": True, "control_mode": 2}}
                for i in chunk])
            _post(url, token, "/v1/admin/meter-commands", [
                {"type": "SetBillingMode", "fields": {"account": f"N{i:010d}", "mode": "prepaid",
                                                       "opening_balance_paise": 100_000,
                                                       "request_id": f"b{i}"}}
                for i in chunk])
        started = time.perf_counter()
        _post(url, token, "/v1/admin/clock", {"to": "2026-11-03T00:30"})
        if mode == "commands":
            for k in range(0, meters, 5_000):
                _post(url, token, "/v1/admin/meter-commands", [
                    {"type": "ReportConsumption", "fields": {
                        "account": f"N{i:010d}", "read_id": read_id(serials[i], DAY),
                        "read_date": DAY.isoformat(), "energy_wh": daily_wh(1, serials[i], DAY),
                        "source": "import"}}
                    for i in range(k, min(meters, k + 5_000))])
        deadline = time.monotonic() + 600
        while _debited(url) < meters:
            if time.monotonic() > deadline:
                raise SystemExit(f"{mode}: only {_debited(url)} of {meters} debited in 600 s")
            time.sleep(0.1)
        seconds = time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return {"mode": mode, "meters": meters, "seconds": round(seconds, 2),
            "reads_per_s": round(meters / seconds), "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_headend_reads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode, alternated (default 3)")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"headend": [], "commands": []}
    for _ in range(args.runs):
        for mode in ("headend", "commands"):
            work = Path(tempfile.mkdtemp(prefix="bench-hesreads-"))
            try:
                result = one_run(work, args.meters, mode)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            seconds[mode].append(result["seconds"])
            emit(**result)
    emit(summary=True, meters=args.meters, runs=args.runs,
         median_s={m: statistics.median(v) for m, v in seconds.items() if v})


if __name__ == "__main__":
    main()
