"""Tables of the session-8 A/B files (runtime-*-ab.txt, webhooks-ab.txt): one row per invocation.

    python bench/results/issue13-s8/summarize.py bench/results/issue13-s8
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def runtime(path: Path) -> None:
    label = load = ""
    for line in path.read_text().splitlines():
        if line.startswith("== end"):
            continue
        if line.startswith("== "):
            m = re.match(r"== (\S+) (\S+) load (\S+) (\S+) (\S+) (\S+)", line)
            assert m is not None
            label, load = f"{m[1]} {m[2]}", m[3]
            continue
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r["stage"] == "throughput_cpu_us_per_payment":
            cpu = {k: v for k, v in r.items() if k != "stage"}
        elif r["stage"] == "throughput":
            thr = r
        elif r["stage"] == "latency":
            lat = r
            print(f"| {label} | {load} | {cpu['total']} | "
                  + " / ".join(f"{k} {v}" for k, v in cpu.items() if k != "total")
                  + f" | {thr['payments_per_s']} ({', '.join(map(str, thr['runs']))}) | "
                  f"{lat['to_command_ms']['p50']} / {lat['to_command_ms']['p99']} | "
                  f"{lat['to_connected_ms']['p99']} |")


def webhooks(path: Path) -> None:
    label = load = ""
    for line in path.read_text().splitlines():
        if line.startswith("== end"):
            continue
        if line.startswith("== "):
            m = re.match(r"== (\S+) (\S+) load (\S+)", line)
            assert m is not None
            label, load = f"{m[1]} {m[2]}", m[3]
        elif line.startswith("CPU per webhook"):
            cpu = line.split(":", 1)[1].split(";")[0].strip()
        elif line.startswith("median of"):
            print(f"| {label} | {load} | {cpu} | {line.split(':', 1)[1].strip()} |")


def main() -> None:
    root = Path(sys.argv[1])
    for name in ("runtime-sqlite-ab.txt", "runtime-postgresql-ab.txt"):
        if (root / name).exists():
            print(f"\n{name}\n| invocation | load | CPU µs/payment | per process | payments/s (runs) | "
                  "500/s → command p50 / p99 ms | → connected p99 ms |")
            runtime(root / name)
    if (root / "webhooks-ab.txt").exists():
        print("\nwebhooks-ab.txt\n| invocation | load | CPU µs per webhook | rate, latency |")
        webhooks(root / "webhooks-ab.txt")


if __name__ == "__main__":
    main()
