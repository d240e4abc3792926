"""Front-door webhook throughput and time-to-2xx: ``python -m bench.bench_http [--requests N ...]``.

The app (`jodo.frontdoor.build_app` over the in-memory `FakeBackend`, so the ledger costs nothing)
serves on 127.0.0.1 in a child process; this process is the load generator: asyncio + aiohttp, a
fixed number of concurrent connections, every request a distinct signed payment (bodies and
signatures made before the clock starts). Prints webhooks/s and p50/p99 time-to-2xx per run and the
median of the runs. Asserts nothing: numbers for the README and for regressions, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

SECRET = "bench-signing-secret"
ADMIN = "bench-admin-token-0123456789"


def _serve(conn: Connection, window_ms: float, batch_max: int, fmt: str) -> None:
    """Child process: serve the front door until the parent says stop, then report batching stats."""
    from jodo.config import load_config
    from jodo.frontdoor import FakeBackend, build_app, start_site

    env = {
        "JODO_HTTP__PORT": "0",
        "JODO_HTTP__BATCH_WINDOW_MS": str(window_ms),
        "JODO_HTTP__BATCH_MAX_ITEMS": str(batch_max),
        "JODO_GATEWAYS__BENCH__FORMAT": fmt,
        "JODO_GATEWAYS__BENCH__SECRET": SECRET,
        "JODO_TOKENS__ADMIN": ADMIN,
    }
    config = load_config(env=env)

    async def main() -> None:
        backend = FakeBackend()
        runner, port = await start_site(build_app(config, backend), "127.0.0.1", 0)
        conn.send(port)
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, conn.recv)) == "cpu":
            conn.send(time.process_time())
        batches = backend.batches
        conn.send({"batches": len(batches), "items": sum(batches), "largest": max(batches, default=0),
                   "mean": sum(batches) / len(batches) if batches else 0.0})
        await runner.cleanup()

    asyncio.run(main())


@dataclass(frozen=True, slots=True)
class RunResult:
    per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    wall_s: float = 0.0


def _server_cpu(conn: Connection) -> float:
    conn.send("cpu")
    return float(conn.recv())


def _requests(prefix: str, n: int, fmt: str) -> list[tuple[bytes, dict[str, str]]]:
    from jodo.webhooks import sign_jodo, sign_razorpay

    now = int(time.time())
    out = []
    for i in range(n):
        account, amount = f"N{3400000000 + i % 725_000}", 50_000 + i % 997
        if fmt == "jodo":
            doc: dict[str, Any] = {"payment_id": f"{prefix}-{i}", "account": account, "amount_paise": amount,
                                   "channel": "upi", "paid_at": now - 5}
            body = json.dumps(doc).encode()
            headers = {"Content-Type": "application/json", "Jodo-Signature": sign_jodo(SECRET, body, now)}
        else:
            entity = {"id": f"pay_{prefix}{i}", "amount": amount, "currency": "INR", "method": "upi",
                      "status": "captured", "notes": {"account": account}, "created_at": now - 5}
            doc = {"event": "payment.captured", "payload": {"payment": {"entity": entity}}}
            body = json.dumps(doc).encode()
            headers = {"Content-Type": "application/json",
                       "X-Razorpay-Signature": sign_razorpay(SECRET, body)}
        out.append((body, headers))
    return out


async def _load(url: str, requests: list[tuple[bytes, dict[str, str]]], concurrency: int) -> RunResult:
    latencies: list[float] = []
    errors = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_index, errors
            while next_index < len(requests):
                body, headers = requests[next_index]
                next_index += 1
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    if not latencies:
        return RunResult(0.0, float("nan"), float("nan"), errors)
    return RunResult(
        per_s=len(latencies) / elapsed,
        p50_ms=1000 * latencies[len(latencies) // 2],
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        errors=errors,
        wall_s=elapsed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_http", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="webhooks per run (default 20000)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    parser.add_argument("--window-ms", type=float, default=2.0, help="[http] batch_window_ms (default 2)")
    parser.add_argument("--batch-max", type=int, default=256, help="[http] batch_max_items (default 256)")
    parser.add_argument("--format", choices=["jodo", "razorpay"], default="jodo")
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server_args = (child, args.window_ms, args.batch_max, args.format)
    server = ctx.Process(target=_serve, args=server_args, daemon=True)
    server.start()
    port = parent.recv()
    url = f"http://127.0.0.1:{port}/v1/webhooks/bench"
    print(f"front door pid {server.pid} on 127.0.0.1:{port}; load generator pid {mp.current_process().pid}; "
          f"{args.requests} {args.format} webhooks x {args.runs} runs, {args.concurrency} connections, "
          f"window {args.window_ms:g} ms, batch max {args.batch_max}")
    results: list[RunResult] = []
    cpu_us: list[float] = []  # server CPU per webhook: robust to a busy machine, unlike webhooks/s
    try:
        asyncio.run(_load(url, _requests("warm", min(1000, args.requests), args.format), args.concurrency))
        for run in range(args.runs):
            requests = _requests(f"r{run}", args.requests, args.format)
            server_cpu, client_cpu = _server_cpu(parent), time.process_time()
            result = asyncio.run(_load(url, requests, args.concurrency))
            server_cpu, client_cpu = _server_cpu(parent) - server_cpu, time.process_time() - client_cpu
            results.append(result)
            cpu_us.append(1e6 * server_cpu / len(requests))
            print(f"  run {run + 1}: {result.per_s:8.0f} webhooks/s  p50 {result.p50_ms:6.2f} ms  "
                  f"p99 {result.p99_ms:6.2f} ms  non-2xx {result.errors}  CPU busy: server "
                  f"{server_cpu / result.wall_s:4.0%}, load generator {client_cpu / result.wall_s:4.0%}; "
                  f"server CPU {cpu_us[-1]:.0f} us/webhook")
    finally:
        parent.send("stop")
        stats: dict[str, Any] = parent.recv() if parent.poll(10) else {}
        server.join(10)
    print(f"median of {len(results)}: {statistics.median(r.per_s for r in results):.0f} webhooks/s, "
          f"p50 {statistics.median(r.p50_ms for r in results):.2f} ms, "
          f"p99 {statistics.median(r.p99_ms for r in results):.2f} ms; server CPU "
          f"{statistics.median(cpu_us):.0f} us/webhook (one core: ~{1e6 / statistics.median(cpu_us):.0f}/s)")
    if stats:
        print(f"server batching: {stats['items']} items in {stats['batches']} batches "
              f"(mean {stats['mean']:.1f}, largest {stats['largest']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
