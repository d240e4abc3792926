"""Webhooks/s and time-to-2xx against a real node: ``python -m bench.bench_webhooks [--meters N ...]``.

A child process runs a whole node (`jodo.serve.Stack`: the built-in simulated head-end, the actor tree
with SQLite journals and ledger at ``synchronous=full``, the front door on 127.0.0.1) with the demo's
fleet loaded: ``--meters`` meters registered disconnected with Rs 1 500 of dues. This process is the
load generator (asyncio + aiohttp, ``--concurrency`` keep-alive connections): every request is a
distinct signed payment of a distinct account's full dues, so each one is committed to the ledger,
credited by a shard and reconnects a relay at the simulator while the load runs. Signatures are made
before the clock starts. Prints webhooks/s, p50/p99 time-to-2xx per run and the median of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.bench_http import RunResult, _load
from bench.common import note_pids

SECRETS = {"razorpay": "bench-razorpay-secret-0123", "bbps": "bench-bbps-secret-0123456"}
DUES = 150_000


def _start_simulator(meters: int, data_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    """The head-end simulator in a process of its own, as in production (``jodo hes-sim``)."""
    port_file = Path(data_dir) / "hes-sim.port"
    out = (Path(data_dir) / "hes-sim.out").open("wb")
    sim = subprocess.Popen(
        [sys.executable, "-m", "headend.sim", "--port", "0", "--port-file", str(port_file), "--meters",
         str(meters), "--disconnected-fraction", "1.0", "--seed", "1"], stdout=out, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if sim.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the simulator did not start; see hes-sim.out")
        time.sleep(0.02)
    return sim, int(port_file.read_text())


def _serve(
    conn: Connection, meters: int, window_ms: float, batches: int, data_dir: str, own_sim: bool
) -> None:
    """Child: a node with ``meters`` disconnected meters and the front door, until told to stop."""
    import socket

    from headend.sim.config import SimConfig
    from jodo.config import load_config
    from jodo.serve import Stack, StackOptions

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    sim_process, sim_port = _start_simulator(meters, data_dir) if own_sim else (None, free())
    if sim_process is not None:
        os.environ["BENCH_SIM_PID"] = str(sim_process.pid)
    env = {
        "JODO_NODE__DATA_DIR": data_dir, "JODO_NODE__ADMIN_PORT": str(free()), "JODO_HTTP__PORT": "0",
        "JODO_HTTP__BATCH_WINDOW_MS": str(window_ms), "JODO_HTTP__MAX_BATCHES_IN_FLIGHT": str(batches),
        "JODO_HEAD_ENDS__0__PORT": str(sim_port), "JODO_LOGGING__LEVEL": "WARNING",
        "JODO_HEAD_ENDS__0__KIND": "reference" if own_sim else "sim",
        "JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay", "JODO_GATEWAYS__RAZORPAY__SECRET": SECRETS["razorpay"],
        "JODO_GATEWAYS__BBPS__FORMAT": "jodo", "JODO_GATEWAYS__BBPS__SECRET": SECRETS["bbps"],
    }
    config = load_config(env=env)
    sim = SimConfig(meters=meters, disconnected_fraction=1.0, seed=1)
    stack = Stack(config, StackOptions(sim=sim, rate_limit=None, ask_timeout=60.0))
    try:
        stack.start()
        _serve_node(conn, config, stack, meters)
    finally:
        report = stack.close()
        if report is not None and report.survivors:
            print(f"bench server: processes left running: {report.survivors}")
        if sim_process is not None:
            sim_process.terminate()
            sim_process.wait(30)


def _serve_node(conn: Connection, config: Any, stack: Any, meters: int) -> None:
    from domain.commands import RegisterMeter
    from domain.enums import RelayState
    from jodo.frontdoor import BATCHER, build_app, start_site
    from telemetry import metrics

    backend = stack.backend
    head_end = config.head_ends[0].name
    started = time.monotonic()
    for start in range(0, meters, 10_000):
        part = [RegisterMeter(account=f"N{i:010d}", serial=f"MPW{i:08d}", head_end=head_end,
                              install_year=2022, relay_capable=True, control_mode=2,
                              relay=RelayState.DISCONNECTED, opening_dues_paise=DUES)
                for i in range(start, min(meters, start + 10_000))]
        rejected = backend.run(partial(_register, part), timeout=120.0)
        assert not rejected, rejected[:3]
    loaded = time.monotonic() - started
    tree = backend.run(lambda c: c.node.status())
    processes = {str(os.getpid()): "front door"}  # pid -> what runs there (CPU accounted per kind)
    if os.environ.get("BENCH_SIM_PID"):
        processes[os.environ["BENCH_SIM_PID"]] = "simulator"
    for view in tree.supervisors():
        processes[str(view.status.pid)] = "supervisors"
        for child in view.status.children:
            if child.pid and child.type.value == "worker":
                processes[str(child.pid)] = child.kind.rsplit(".", 1)[-1]

    note_pids(processes)

    def observe(gateway: str, status: int) -> None:
        if status >= 400:
            metrics.webhook_rejected(gateway, status)

    async def main() -> None:
        app = build_app(config, backend, on_webhook=observe)
        runner, port = await start_site(app, "127.0.0.1", 0)
        conn.send({"port": port, "load_seconds": loaded, "pid": os.getpid(), "processes": processes})
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, conn.recv)) == "cpu":
            conn.send(time.process_time())
        stats = app[BATCHER].stats
        counters = backend.counters
        conn.send({"batches": stats.batches, "items": stats.items, "largest": stats.largest,
                   "desk_batches": counters.desk_batches, "largest_desk_batch": counters.largest_desk_batch,
                   "payment_requests": counters.payment_requests})
        await runner.cleanup()

    asyncio.run(main())


def _register(part: list[Any], client: Any) -> list[tuple[int, str]]:
    return client.send(part)  # type: ignore[no-any-return]


def _requests(accounts: list[int], fmt: str, tag: str) -> list[tuple[str, bytes, dict[str, str]]]:
    from jodo.webhooks import sign_jodo, sign_razorpay

    now = int(time.time())
    out = []
    for n, i in enumerate(accounts):
        use = fmt if fmt != "mixed" else ("razorpay" if n % 2 else "jodo")
        if use == "jodo":
            doc: dict[str, Any] = {"payment_id": f"B{tag}-{i}", "account": f"N{i:010d}",
                                   "amount_paise": DUES, "channel": "upi", "paid_at": now - 5}
            body = json.dumps(doc).encode()
            headers = {"Content-Type": "application/json",
                       "Jodo-Signature": sign_jodo(SECRETS["bbps"], body, now)}
            out.append(("bbps", body, headers))
        else:
            entity = {"id": f"pay_B{tag}{i}", "amount": DUES, "currency": "INR", "method": "upi",
                      "status": "captured", "notes": {"account": f"N{i:010d}"}, "created_at": now - 5}
            event = {"event": "payment.captured", "payload": {"payment": {"entity": entity}}}
            body = json.dumps(event).encode()
            headers = {"Content-Type": "application/json", "X-Razorpay-Event-Id": f"evt_B{tag}{i}",
                       "X-Razorpay-Signature": sign_razorpay(SECRETS["razorpay"], body)}
            out.append(("razorpay", body, headers))
    return out


async def _load_mixed(
    base: str, requests: list[tuple[str, bytes, dict[str, str]]], concurrency: int
) -> RunResult:
    by_gateway: dict[str, list[tuple[bytes, dict[str, str]]]] = {}
    for gateway, body, headers in requests:
        by_gateway.setdefault(gateway, []).append((body, headers))
    if len(by_gateway) == 1:
        (gateway, items), = by_gateway.items()
        return await _load(f"{base}/v1/webhooks/{gateway}", items, concurrency)
    # two gateways at once: half the connections each, results combined
    parts = await asyncio.gather(*(_load(f"{base}/v1/webhooks/{g}", items, max(1, concurrency // 2))
                                   for g, items in by_gateway.items()))
    wall = max(p.wall_s for p in parts)
    done = sum(p.per_s * p.wall_s for p in parts)
    return RunResult(per_s=done / wall, p50_ms=max(p.p50_ms for p in parts),
                     p99_ms=max(p.p99_ms for p in parts), errors=sum(p.errors for p in parts), wall_s=wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_webhooks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--meters", type=int, default=100_000,
                        help="fleet loaded in the node (default 100000)")
    parser.add_argument("--requests", type=int, default=20_000, help="webhooks per run (default 20000)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    parser.add_argument("--window-ms", type=float, default=2.0, help="[http] batch_window_ms (default 2)")
    parser.add_argument("--batches", type=int, default=4, help="[http] max_batches_in_flight (default 4)")
    parser.add_argument("--format", choices=["jodo", "razorpay", "mixed"], default="jodo")
    parser.add_argument("--generator", choices=["aiohttp", "wrk"], default="aiohttp",
                        help="load generator: this process (asyncio + aiohttp), or wrk (apt-get install wrk; "
                             "C, so it leaves more of a small machine's CPU to the node)")
    parser.add_argument("--duration", type=float, default=15.0,
                        help="wrk: seconds per run; --requests must exceed what it sends (default 15)")
    parser.add_argument("--sim-in-node", action="store_true",
                        help="run the simulated head-end as a thread of the node's process (jodo serve's "
                             "built-in one) instead of a process of its own")
    parser.add_argument("--json", action="store_true", help="also print a JSON line with the medians")
    args = parser.parse_args(argv)
    if args.requests * (args.runs + 1) > args.meters:
        parser.error("--meters must cover (--runs + 1) x --requests distinct accounts")

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    with tempfile.TemporaryDirectory(prefix="jodo-bench-") as data_dir:
        server = ctx.Process(target=_serve, args=(child, args.meters, args.window_ms, args.batches, data_dir,
                                                  not args.sim_in_node))
        server.start()
        hello = parent.recv()
        base = f"http://127.0.0.1:{hello['port']}"
        print(f"node pid {hello['pid']} with {args.meters:,} meters loaded in {hello['load_seconds']:.1f} s;"
              f" front door {base}; load generator pid {os.getpid()}; {args.requests} {args.format} webhooks"
              f" x {args.runs} runs, {args.concurrency} connections, window {args.window_ms:g} ms")
        accounts = list(range(args.meters))
        random.Random(1).shuffle(accounts)
        results: list[RunResult] = []
        cpu_us: list[float] = []
        per_kind: list[dict[str, float]] = []
        stats: dict[str, Any] = {}
        try:
            warm = _requests(accounts[: min(1000, args.requests)], args.format, "w")
            asyncio.run(_load_mixed(base, warm, args.concurrency))
            for run in range(args.runs):
                chunk = accounts[(run + 1) * args.requests : (run + 2) * args.requests]
                requests = _requests(chunk, args.format, f"r{run}")
                server_cpu = _cpu(parent)
                node_cpu = _proc_cpu(hello["processes"])
                if args.generator == "wrk":
                    result, sent = _wrk(base, requests, args, Path(data_dir) / f"run{run}")
                else:
                    result, sent = asyncio.run(_load_mixed(base, requests, args.concurrency)), len(requests)
                server_cpu = _cpu(parent) - server_cpu
                used = {k: v - node_cpu.get(k, 0.0) for k, v in _proc_cpu(hello["processes"]).items()}
                per_kind.append({k: 1e6 * v / sent for k, v in used.items()})
                results.append(result)
                cpu_us.append(1e6 * server_cpu / sent)
                print(f"  run {run + 1}: {result.per_s:8.0f} webhooks/s  p50 {result.p50_ms:6.2f} ms  "
                      f"p99 {result.p99_ms:6.2f} ms  non-2xx {result.errors}  front-door process CPU "
                      f"{cpu_us[-1]:.0f} us/webhook")
        finally:
            parent.send("stop")
            stats = parent.recv() if parent.poll(30) else {}
            server.join(120)
    if per_kind:
        kinds = sorted(per_kind[0], key=lambda k: -per_kind[0][k])
        medians = {k: statistics.median(run.get(k, 0.0) for run in per_kind) for k in kinds}
        total = sum(medians.values())
        print(f"CPU per webhook, all node processes (median of runs): {total:.0f} us = "
              + ", ".join(f"{k} {v:.0f}" for k, v in medians.items())
              + f"; on {os.cpu_count()} cores at most ~{(os.cpu_count() or 1) * 1e6 / total:.0f} webhooks/s")
    print(f"median of {len(results)}: {statistics.median(r.per_s for r in results):.0f} webhooks/s, "
          f"p50 {statistics.median(r.p50_ms for r in results):.2f} ms, "
          f"p99 {statistics.median(r.p99_ms for r in results):.2f} ms")
    if args.json and results:
        print(json.dumps({
            "bench": "webhooks", "figure": "webhooks", "meters": args.meters, "requests": args.requests,
            "runs": len(results), "concurrency": args.concurrency, "format": args.format,
            "generator": args.generator,
            "webhooks_per_s": round(statistics.median(r.per_s for r in results)),
            "p50_ms": round(statistics.median(r.p50_ms for r in results), 2),
            "p99_ms": round(statistics.median(r.p99_ms for r in results), 2),
            "non_2xx": sum(r.errors for r in results),
            "runs_webhooks_per_s": [round(r.per_s) for r in results],
        }), flush=True)
    if stats:
        print(f"batching: {stats['items']} webhooks in {stats['batches']} front-door batches (largest "
              f"{stats['largest']}); {stats['payment_requests']} submissions in {stats['desk_batches']} "
              f"desk requests (largest {stats['largest_desk_batch']} payments)")
    return 0


_WRK_SCRIPT = """
-- jodo webhooks for wrk: each thread sends its own share of pre-signed requests, each once.
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local requests, n = {}, 0
function init(args)
  local i = 0
  for line in io.lines(args[1]) do
    if i % tonumber(args[2]) == id then
      local path, h1, v1, h2, v2, body = line:match("^(.-)\t(.-)\t(.-)\t(.-)\t(.-)\t(.*)$")
      local headers = {["Content-Type"] = "application/json", [h1] = v1}
      if h2 ~= "" then headers[h2] = v2 end
      requests[#requests + 1] = wrk.format("POST", path, headers, body)
    end
    i = i + 1
  end
end
function request()
  n = n + 1
  return requests[(n - 1) % #requests + 1]
end
"""


def _wrk(base: str, requests: list[tuple[str, bytes, dict[str, str]]], args: argparse.Namespace,
         work: Path) -> tuple[RunResult, int]:
    """One wrk run over pre-signed requests (file lines: path, two headers, body, tab-separated)."""
    work.mkdir(parents=True, exist_ok=True)
    with (work / "requests.tsv").open("w") as f:
        for gateway, body, headers in requests:
            extra = [(k, v) for k, v in headers.items() if k != "Content-Type"] + [("", "")]
            (h1, v1), (h2, v2) = extra[0], extra[1]
            f.write(f"/v1/webhooks/{gateway}\t{h1}\t{v1}\t{h2}\t{v2}\t{body.decode()}\n")
    (work / "jodo.lua").write_text(_WRK_SCRIPT)
    threads = 2
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{args.concurrency}", f"-d{args.duration:g}s", "--latency",
         "--timeout", "10s", "-s", str(work / "jodo.lua"), base, "--", str(work / "requests.tsv"),
         str(threads)],
        capture_output=True, text=True, timeout=args.duration + 60, check=True,
    )
    out = done.stdout
    sent = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if sent > len(requests):
        print(f"  warning: wrk sent {sent} requests but only {len(requests)} distinct: raise --requests")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return RunResult(per_s=per_s, p50_ms=_wrk_ms(out, "50%"), p99_ms=_wrk_ms(out, "99%"),
                     errors=int(errors.group(1)) if errors else 0, wall_s=args.duration), sent


def _wrk_ms(out: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _proc_cpu(processes: dict[str, str]) -> dict[str, float]:
    """CPU seconds (user + system) used so far, summed per kind of process (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid, kind in processes.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[kind] = used.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def _cpu(conn: Connection) -> float:
    conn.send("cpu")
    return float(conn.recv())


if __name__ == "__main__":
    raise SystemExit(main())
