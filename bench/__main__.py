"""Every bench, one command: `python -m bench [--quick] [--out DIR] [--only a,b] [--doc PATH]`.

Runs each bench as a subprocess (`python -m bench.<name> ...`, one after the other so they do not
share the two cores), collects the JSON lines each prints, and writes

- ``DIR/latest.json`` (default ``bench/results/latest.json``): machine, command lines, every record;
- ``docs/benchmarks.md``: machine description, the exact command lines, one table per bench, and
  jodo's end-to-end payments/s (bench_runtime) as a ratio to the ceiling and to the naive design;
- ``DIR/payments_per_s.png`` if matplotlib is installed (the ``bench`` extra); a note otherwise.

Asserts nothing. ``--quick`` uses small sizes (under 2 minutes on a 2-core machine); the numbers it
gives are for smoke-testing, and the doc says which mode produced it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    what: str
    timeout_full: float = 1800.0


BENCHES: tuple[Bench, ...] = (
    Bench("ceiling", "bench.bench_ceiling",
          ("--meters", "725000", "--payments", "100000", "--runs", "3", "--batches", "1000,10000"),
          ("--meters", "725000", "--payments", "5000", "--runs", "3", "--batches", "1000,10000"),
          "one process, no actors: decode → MeterHost.step → durable commit (synchronous=full) → "
          "assign → encode relay commands"),
    Bench("naive", "bench.bench_naive",
          ("--cap", "300", "--seconds", "60", "--rounds", "3"),
          ("--cap", "40", "--seconds", "15", "--rounds", "3", "--timeout", "20"),
          "one Thespian actor per meter (multiprocTCPBase, loopback)"),
    Bench("runtime", "bench.bench_runtime",
          ("--meters", "725000", "--throughput-payments", "100000", "--batch", "5000", "--runs", "3",
           "--rates", "100,500,2000"),
          ("--meters", "30000", "--throughput-payments", "10000", "--batch", "5000", "--rate-seconds", "3",
           "--rates", "100,500,2000"),
          "jodo end to end through the actors: payment in → connected (simulated head-end, zero latency)"),
    Bench("fleet", "bench.bench_fleet",
          ("--meters", "725000", "--groups", "2", "--runs", "3", "--json"),
          ("--quick", "--json"),
          "7.25 lakh meters resident on one node (generated without the actors, then a real node): bytes "
          "per meter, node RSS, cold start, one shard group's recovery after SIGKILL"),
    Bench("fleet_crore", "bench.bench_fleet",
          ("--meters", "10000000", "--groups", "2", "--runs", "1", "--json"),
          (),  # not in quick mode: generating 1 crore meters alone takes 4-6 minutes
          "1 crore meters resident on one node: the same measurements at a whole state's fleet",
          timeout_full=3600.0),
    Bench("storm", "bench.bench_storm",
          ("--meters", "150000", "--payments", "100000", "--rate-limit", "2000"),
          ("--meters", "8000", "--payments", "4000", "--rate-limit", "2000", "--verify-sample", "200"),
          "month-end storm through the whole node: 100 000 payments in a burst (unlimited head-end), then "
          "the same under a head-end rate limit; drain time, peak memory, nothing lost, exactly-once"),
    Bench("domain", "bench.bench_domain",
          ("--meters", "1000000", "--runs", "3"),
          ("--meters", "30000", "--runs", "1", "--apply-sample", "10000", "--trace-sample", "5000"),
          "meter core in one process: register, bill, pay, replay; bytes per meter"),
    Bench("storage", "bench.bench_storage", ("--json",), ("--json", "--quick", "--scale", "100"),
          "SQLite journal, WAL, payments ledger, snapshots, recovery, audit queries"),
    Bench("headend", "bench.bench_headend", ("--json",), ("--json", "--quick", "--gc-young", "0"),
          "head-end adapter against the simulator: commands/s, rate-limited mass reconnect"),
    Bench("cluster", "bench.bench_cluster", (), ("--quick",),
          "the cluster: one node on SQLite vs PostgreSQL in the same run, failover after SIGKILL of one of "
          "three nodes (seconds, payment→connected across it, nothing lost or doubled), CPU per payment of "
          "three nodes + PostgreSQL"),
    Bench("webhooks", "bench.bench_webhooks", ("--json",),
          ("--json", "--meters", "6000", "--requests", "2000", "--runs", "1"),
          "signed webhooks over HTTP into a node (aiohttp load generator on loopback)"),
)


# ------------------------------------------------------------------ machine


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mhz = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                if line.startswith("cpu MHz")), "")
    mem_kb = 0
    if Path("/proc/meminfo").exists():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpu_model": model,
        "cpu_mhz": mhz,
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gib": round(mem_kb / 2**20, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_start": list(os.getloadavg()),
    }


# ------------------------------------------------------------------ running


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
    return out


def run_bench(bench: Bench, quick: bool, out_dir: Path) -> dict[str, Any]:
    args = bench.quick if quick else bench.full
    command = [sys.executable, "-m", bench.module, *args]
    shown = "python -m " + bench.module + (" " + shlex.join(args) if args else "")
    print(f"== {bench.name}: {shown}", flush=True)
    load = list(os.getloadavg())
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=300 if quick else bench.timeout_full)
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc = -1
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = (exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")) + "\nTIMEOUT"
    seconds = time.perf_counter() - started
    (out_dir / f"{bench.name}.stdout.txt").write_text(stdout)
    (out_dir / f"{bench.name}.stderr.txt").write_text(stderr)
    records = json_lines(stdout)
    print(f"   rc={rc}, {seconds:.1f} s, {len(records)} JSON records", flush=True)
    if rc != 0:
        print("   " + "\n   ".join(stderr.strip().splitlines()[-5:]), flush=True)
    return {"command": shown, "what": bench.what, "rc": rc, "seconds": round(seconds, 1),
            "loadavg_before": load, "records": records,
            "stderr_tail": stderr.strip().splitlines()[-10:]}


# ------------------------------------------------------------------ summary


def find(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ceiling = {r["batch"]: r["payments_per_s"] for r in find(results.get("ceiling", {}).get("records", []),
                                                             stage="ceiling")}
    naive = find(results.get("naive", {}).get("records", []), stage="naive")
    runtime = find(results.get("runtime", {}).get("records", []), stage="throughput")
    if ceiling:
        out["ceiling_payments_per_s"] = {str(k): v for k, v in ceiling.items()}
    if naive:
        keys = ("actors", "actors_per_s", "rss_per_meter_kb", "pss_per_meter_kb", "payments_per_s")
        out["naive"] = {k: naive[0][k] for k in keys}
    if runtime:
        jodo = runtime[0]["payments_per_s"]
        out["jodo_payments_per_s"] = jodo
        out["jodo_batch"] = runtime[0].get("batch")
        out["jodo_runs"] = runtime[0].get("runs", [jodo])
        if ceiling:
            out["jodo_to_ceiling"] = {str(k): round(jodo / v, 3) for k, v in ceiling.items() if v}
        if naive and naive[0]["payments_per_s"]:
            out["jodo_to_naive"] = round(jodo / naive[0]["payments_per_s"], 1)
    return out


# ------------------------------------------------------------------ the goals of issue 7


@dataclass(frozen=True)
class Goal:
    what: str
    aim: float
    higher_is_better: bool
    unit: str


GOALS: dict[str, Goal] = {
    "e2e": Goal("payments/s end to end, batch path, durable (mark 100 000)", 50_000, True, "payments/s"),
    "ratio": Goal("jodo / ceiling, end to end", 0.15, True, "of the ceiling"),
    "webhooks": Goal("signed webhooks/s over HTTP", 3_000, True, "webhooks/s"),
    "p99": Goal("p99 payment → relay command at 500 payments/s", 100, False, "ms"),
    "bytes": Goal("bytes per resident meter (the biggest fleet measured)", 250, False, "B"),
    "bytes_lakh": Goal("bytes per resident meter (7.25 lakh fleet)", 250, False, "B"),
    "crore": Goal("meters resident on one node", 10_000_000, True, "meters"),
    "cold": Goal("cold start of 1 crore meters", 30, False, "s"),
    "recovery": Goal("one shard group back after SIGKILL (7.25 lakh fleet, from snapshots)", 3, False, "s"),
    "recovery_tail": Goal("one shard group back after SIGKILL (7.25 lakh, after the runtime bench's "
                          "registrations and payments: snapshot + journal tail)", 3, False, "s"),
    "recovery_crore": Goal("one shard group back after SIGKILL (1 crore fleet)", 3, False, "s"),
}


def _records(report: dict[str, Any], bench: str) -> list[dict[str, Any]]:
    return list(report["benches"].get(bench, {}).get("records", []))


def measured(report: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """The figure each goal is judged on, with where it comes from (record kinds of each bench)."""
    out: dict[str, tuple[float, str]] = {}
    s = report.get("summary", {})
    if "jodo_payments_per_s" in s:
        out["e2e"] = (float(s["jodo_payments_per_s"]), "runtime: throughput")
    if s.get("jodo_to_ceiling"):
        ratio = min(float(v) for v in s["jodo_to_ceiling"].values())
        out["ratio"] = (ratio, "runtime / ceiling (the ceiling's better batch size)")
    hooks = [r for r in _records(report, "webhooks") if "webhooks_per_s" in r]
    if hooks:
        out["webhooks"] = (max(float(r["webhooks_per_s"]) for r in hooks), "webhooks: best configuration")
    lat = [r for r in _records(report, "runtime")
           if r.get("stage") == "latency" and float(r.get("offered_per_s", 0)) == 500.0]
    if lat:
        p99s = sorted(float(r["to_command_ms"]["p99"]) for r in lat)
        out["p99"] = (p99s[len(p99s) // 2], "runtime: latency at 500/s" + (f" (median of {len(p99s)})"
                                                                            if len(p99s) > 1 else ""))
    fleets = [r for name in ("fleet", "fleet_crore") for r in _records(report, name)
              if r.get("stage") == "summary"]
    lakh = [r for r in fleets if int(r.get("meters", 0)) < 10_000_000]
    crore = [r for r in fleets if int(r.get("meters", 0)) >= 10_000_000]
    if fleets:
        biggest = max(fleets, key=lambda r: int(r.get("meters", 0)))
        out["bytes"] = (float(biggest["bytes_per_meter"]),
                        f"fleet: shard RSS less an empty group's / meters, {int(biggest['meters']):,} meters")
    else:
        reg = [r for r in _records(report, "runtime") if r.get("stage") == "register"]
        if reg:
            out["bytes"] = (float(reg[0]["bytes_per_meter"]), "runtime: shard RSS delta / meters")
    if lakh:
        out["bytes_lakh"] = (float(lakh[0]["bytes_per_meter"]),
                             f"fleet: shard RSS less an empty group's / meters, {int(lakh[0]['meters']):,}")
    if crore:
        c = crore[0]
        out["crore"] = (float(c["meters"]), f"fleet_crore: every meter answering after a cold start, "
                                            f"{c.get('groups')} groups")
        out["cold"] = (float(c["cold_start_s"]), f"fleet_crore: median of {c.get('runs')} cold starts")
        out["recovery_crore"] = (float(c["shard_recovery_s"]),
                                 f"fleet_crore: group of {int(c['meters']) // int(c['groups']):,} meters")
    rec = [r for r in _records(report, "runtime") if r.get("stage") == "recovery" and "restart_seconds" in r]
    if lakh:
        f = lakh[0]
        out["recovery"] = (float(f["shard_recovery_s"]), f"fleet: median of {f.get('runs')}, group of "
                                                        f"{int(f['meters']) // int(f['groups']):,} meters")
    if rec:
        out["recovery_tail"] = (float(rec[0]["restart_seconds"]),
                           f"runtime: SIGKILL of a group of {int(rec[0].get('meters', 0)):,} meters")
    return out


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs (e.g. ``--only`` parts of one full run) as one report: full-mode runs only unless
    there is nothing else; a later run's bench replaces an earlier run's bench of the same name."""
    chosen = [r for r in runs if r.get("mode") == "full"] or runs
    benches: dict[str, Any] = {}
    for report in chosen:
        benches.update({name: {**b, "command": b["command"]} for name, b in report["benches"].items()})
    out = {"mode": chosen[-1].get("mode", "full") if chosen else "full", "benches": benches}
    out["summary"] = summary(benches)
    return out


def goal_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One table over every rendered run (see `combined`)."""
    got = measured(combined(runs))
    lines = ["| goal | aim | measured | verdict | from (record of which bench) |", "|---|---|---|---|---|"]
    for key, g in GOALS.items():
        aim = f"{'≥' if g.higher_is_better else '≤'} {cell(g.aim)} {g.unit}"
        if key not in got:
            lines.append(f"| {g.what} | {aim} | not measured by the runs below | — | |")
            continue
        value, source = got[key]
        met = value >= g.aim if g.higher_is_better else value <= g.aim
        factor = (g.aim / value if g.higher_is_better else value / g.aim) if value else float("inf")
        verdict = "met" if met else f"MISSED by {factor:.1f} times"
        lines.append(f"| {g.what} | {aim} | {cell(value)} {g.unit} | {verdict} | {source} |")
    return [*lines, ""]


# ------------------------------------------------------------------ the document


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    return str(value).replace("|", "\\|")


def table(records: list[dict[str, Any]]) -> list[str]:
    """One markdown table per kind of record (its "stage" or "figure"), each with its own columns."""
    records = [r for r in records if r.get("stage") != "series"]  # raw samples: plotted, not tabled
    if not records:
        return ["(no machine-readable records)"]
    skip = {"bench", "dir", "cpus", "python", "admin_port", "stage", "figure"}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r.get("stage") or r.get("figure") or "results"), []).append(r)
    lines: list[str] = []
    for kind, rows in groups.items():
        columns: list[str] = []
        for r in rows:
            for k in r:
                if k not in skip and k not in columns:
                    columns.append(k)
        if not columns:
            continue
        lines += [f"**{kind}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in rows:
            lines.append("| " + " | ".join(cell(r[k]) if k in r else "" for k in columns) + " |")
        lines.append("")
    return lines


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def summary_lines(s: dict[str, Any]) -> list[str]:
    if not s:
        return ["(this run did not include the benches compared here)", ""]
    lines = ["| figure | value |", "|---|---|"]
    for k, v in s.get("ceiling_payments_per_s", {}).items():
        lines.append(f"| ceiling, batch {int(k):,} (payments/s, median of 3) | {cell(v)} |")
    if "naive" in s:
        n = s["naive"]
        lines += [f"| naive: meter actors reached | {cell(n['actors'])} |",
                  f"| naive: creation rate (actors/s) | {cell(n['actors_per_s'])} |",
                  "| naive: RSS per meter actor (KiB, sum of VmRSS / actors) | "
                  f"{cell(n['rss_per_meter_kb'])} |",
                  "| naive: PSS per meter actor (KiB, shared pages split) | "
                  f"{cell(n['pss_per_meter_kb'])} |",
                  f"| naive: round-trip payments/s (median of 3 rounds) | {cell(n['payments_per_s'])} |"]
    if "jodo_payments_per_s" in s:
        runs = s.get("jodo_runs", [s["jodo_payments_per_s"]])
        how = f"median of {len(runs)} runs: {cell(runs)}" if len(runs) > 1 else "one run"
        lines.append(f"| jodo end to end, batch {cell(s.get('jodo_batch'))} (payments/s, {how}) | "
                     f"{cell(s['jodo_payments_per_s'])} |")
    for k, v in s.get("jodo_to_ceiling", {}).items():
        lines.append(f"| jodo / ceiling (batch {int(k):,}) | {v} |")
    if "jodo_to_naive" in s:
        lines.append(f"| jodo / naive | {s['jodo_to_naive']} |")
    return [*lines, ""]


def run_section(report: dict[str, Any], json_path: Path) -> list[str]:
    load = report["machine"]["loadavg_start"]
    shared = load[0] > 1 or any(b["loadavg_before"][0] > 1 for b in report["benches"].values())
    lines = [
        f"## Run: `{report['command']}`",
        "",
        f"{report['mode']} mode, {report['started']}, {report['seconds']:.0f} s wall; raw records in "
        f"`{rel(json_path)}` (and each bench's stdout next to it). Load average at start "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"
        + (" — **the machine was shared** (load > 1 at the start of the run or of a bench): treat "
           "absolute figures as ±50 %." if shared else "."),
        "",
    ]
    if report["mode"] == "quick":
        lines += ["**Quick mode**: small sizes, to check the benches run. The ceiling still holds 725 000 "
                  "meters but pays a few thousand; bench_runtime runs a 30 000-meter fleet; storage totals "
                  "are divided by 100; the fleet is 100 000 meters and the 1 crore fleet is skipped. Do not "
                  "quote these as jodo's capacity.", ""]
    lines += ["### Summary: jodo against its two references", "", *summary_lines(report["summary"])]
    lines += ["### Command lines", ""]
    for name, b in report["benches"].items():
        lines.append(f"- {name}: `{b['command']}` — exit {b['rc']}, {b['seconds']} s, load average before "
                     f"{b['loadavg_before'][0]:.2f}")
    lines.append("")
    for name, b in report["benches"].items():
        lines += [f"### {name}", "", b["what"] + ".", ""]
        lines += table(b["records"])
        if b["rc"] != 0:
            lines += ["", f"Exit status {b['rc']}; last lines of stderr:", "", "```",
                      *b["stderr_tail"], "```"]
        lines.append("")
    if report.get("plot_note"):
        lines += [report["plot_note"], ""]
    return lines


def write_doc(path: Path, runs: list[tuple[dict[str, Any], Path]]) -> None:
    m = runs[0][0]["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Every number below was printed by one of the runs named in the `## Run:` headings (rendered "
        "from their JSON records by `python -m bench --render ...`); reproduce a section with its command. "
        "Benches assert nothing. Figures are medians of runs where the record says so.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']} ({m['cpu_mhz']} MHz), nproc {m['nproc']} (affinity {m['affinity']})",
        f"- memory: {m['mem_total_gib']} GiB; Python {m['python']}; {m['platform']}",
        "",
        "## What the two references are",
        "",
        "- **ceiling** (`bench_ceiling`): one payment's shard-side work in one process, no actors — codec "
        "decode of the batch (validated), `ClearPayment` per payment, `MeterHost.step` with the default "
        "policy, one SQLite `ShardStore.commit` per batch (events encoded with protocols.codec, "
        "synchronous=full), `assign`, codec encode of the relay commands. 725 000 meters held, loaded "
        "the way a snapshot load does. No ledger write, no head-end: jodo does more per payment (desk "
        "ledger, process hops, the simulator, the read-back), and can only beat it through parallelism "
        "(two shard groups on two cores).",
        "- **naive design** (`bench_naive`): one Thespian actor (OS process) per meter on multiprocTCPBase, "
        "loopback only. Created from outside until a cap or a time budget; each payment is one round trip "
        "(tell → `handle` in the meter's actor → reply with the encoded relay command). Its payments are "
        "not journaled (which flatters it).",
        "",
    ]
    reports = [report for report, _ in runs]
    lines += ["## Issue 7's goals on this machine", "",
              "Judged on the figures of the runs below (full-mode runs; quick runs only if there is no "
              "full one); each bench's command line is in its run's section.",
              "", *goal_lines(reports)]
    lines += ["## jodo against its two references (all runs below)", "",
              *summary_lines(combined(reports)["summary"])]
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():  # hand-written reading of the runs below, kept across re-renders
        lines += [notes.read_text().rstrip(), ""]
    for report, json_path in runs:
        lines += run_section(report, json_path)
    path.write_text("\n".join(lines))


def series(report: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """Every ``{"stage": "series", "kind": kind, ...}`` record of the run, labelled by its bench."""
    out = []
    for name, b in report["benches"].items():
        for r in b["records"]:
            if r.get("stage") == "series" and r.get("kind") == kind:
                out.append((f"{name}: {r.get('label', '')}", r))
    return out


def plot(report: dict[str, Any], out_dir: Path) -> str:
    """PNG plots next to the JSON: payments/s side by side, latency distributions, throughput and
    memory over time. Returns the markdown that shows them (or why there are none)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        note = "matplotlib is not installed (pip install -e '.[bench]'): no plots."
        print(note)
        return note
    shown: list[str] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        target = out_dir / name
        fig.savefig(target, dpi=90)
        plt.close(fig)
        shown.append(f"![{title}]({os.path.relpath(target, ROOT / 'docs')})")

    s = report["summary"]
    bars: list[tuple[str, float]] = []
    for k, v in s.get("ceiling_payments_per_s", {}).items():
        bars.append((f"ceiling\nbatch {k}", float(v)))
    if "jodo_payments_per_s" in s:
        bars.append(("jodo\nend to end", float(s["jodo_payments_per_s"])))
    if "naive" in s:
        bars.append(("naive\nactor/meter", float(s["naive"]["payments_per_s"])))
    if bars:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([b[0] for b in bars], [b[1] for b in bars])
        ax.set_ylabel("payments/s")
        ax.set_title(f"payments/s ({report['mode']} mode)")
        save(fig, "payments_per_s.png", "payments/s")

    latency = series(report, "latency")
    if latency:
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, r in latency:
            ms = sorted(float(x) for x in r.get("ms", []))
            if ms:
                ax.plot(ms, [100.0 * (i + 1) / len(ms) for i in range(len(ms))], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds (log scale)")
        ax.set_ylabel("percent of payments at or below")
        ax.axvline(100, color="grey", linestyle=":", linewidth=1)
        ax.set_title("latency distributions (CDF); dotted: the 100 ms aim")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        save(fig, "latency_cdf.png", "latency distributions")

    for kind, key, unit, name in (("throughput", "per_s", "per second", "throughput_over_time.png"),
                                  ("memory", "rss_mb", "RSS MiB", "memory_over_time.png")):
        lines = series(report, kind)
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, r in lines:
            ax.plot(r.get("t", []), r.get(key, []), label=label)
        ax.set_xlabel("seconds since the stage started")
        ax.set_ylabel(unit)
        ax.set_title(f"{kind} over time")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        save(fig, name, f"{kind} over time")
    return "\n\n".join(shown) if shown else "nothing to plot"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under 2 minutes on 2 cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    parser.add_argument("--only", default="", help="comma-separated bench names: "
                        + ",".join(b.name for b in BENCHES))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="where to write the markdown report")
    parser.add_argument("--render", type=Path, nargs="+", default=None, metavar="JSON",
                        help="run nothing: write --doc from these results files (a full and a quick run)")
    args = parser.parse_args(argv)
    if args.render:
        runs = [(json.loads(p.read_text()), p.resolve()) for p in args.render]
        write_doc(args.doc.resolve(), runs)
        print(f"wrote {args.doc} from {len(runs)} run(s)")
        return 0
    wanted = [w for w in args.only.split(",") if w]
    unknown = set(wanted) - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown bench(es): {sorted(unknown)}")
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": "python -m bench" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                        if (argv if argv is not None else sys.argv[1:]) else ""),
        "mode": "quick" if args.quick else "full",
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "benches": {},
    }
    started = time.perf_counter()
    for bench in BENCHES:
        if wanted and bench.name not in wanted:
            continue
        if args.quick and not bench.quick:
            continue  # a full-size-only bench
        report["benches"][bench.name] = run_bench(bench, args.quick, out_dir)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["summary"] = summary(report["benches"])
    report["plot_note"] = plot(report, out_dir)
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(report, indent=1))
    write_doc(args.doc.resolve(), [(report, json_path)])
    print(f"wrote {json_path} and {args.doc}; {report['seconds']:.0f} s in all")
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
