"""Head-end adapter benchmarks: `python -m bench.bench_headend [--quick]`. Prints; asserts nothing.

1. Throughput: commands/s through ONE adapter connection (threaded driver) to the simulator running
   in its own process with zero latency, every connect read back before it counts. Aim ≥ 50 000/s.
2. Mass reconnect: 100 000 disconnected meters reconnected under a 2 000 commands/s head-end rate
   limit (the floor is 50 s). Aim ≤ 55 s.
3. DLMS: relay operations/s through the DLMS adapter (dlms-cosem; one association per meter from a
   bounded pool, ACTION + GET-with-list read-back + RLRQ each) to the Gurux-server meter simulator
   (`python -m headend.sim --protocol dlms`) in its own process, one command per meter. Aim ≥ 1 000/s.
   Needs the dlms and sim-dlms extras; skipped (said so) without them.
4. CIM: commands/s through the CIM adapter (headend/cim: create EndDeviceControls over HTTP, 500
   controls a request, each ended by the simulator's EndDeviceEvents callback to the adapter's
   listener) against `python -m headend.sim --protocol cim` in its own process. Aim ≥ 2 000/s.

Each figure is the median of 3 runs (`--runs`). The simulator is a child process
(`python -m headend.sim --port 0 --port-file ...`) so it gets its own interpreter and core.
Throughput is shown with Python's default GC thresholds and with a larger young generation
(`--gc-young`, what a gateway process doing this all day should use: the adapter keeps every
pending command alive, so default thresholds re-scan them over and over). Each run also prints
the adapter process's CPU per command, which is what to compare on a busy machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from headend.adapter import AdapterConfig
from headend.threaded import LoopDriver, ThreadedHeadEndClient
from protocols.headend import HesAction, HesCommand


class SimProcess:
    """`python -m headend.sim` in a child process on an ephemeral 127.0.0.1 port."""

    def __init__(self, *args: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-hes-")
        port_file = Path(self._dir.name) / "port"
        self._log = open(Path(self._dir.name) / "sim.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headend.sim", "--host", "127.0.0.1", "--port", "0", "--port-file",
             str(port_file), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start: {self.log()}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def cpu_seconds(self) -> float:
        """CPU the simulator process has used so far (Linux /proc; 0.0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return (Path(self._dir.name) / "sim.log").read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._dir.cleanup()


def _commands(first: int, count: int, action: HesAction, tag: str) -> list[HesCommand]:
    expires = time.time() + 3600
    return [
        HesCommand(f"{tag}-{i}", f"MPW{i:08d}", action, expires) for i in range(first, first + count)
    ]


def _p99(client: ThreadedHeadEndClient, submitted_at: float) -> float:
    """p99 seconds from submit to outcome (`at` is on the adapter's wall clock)."""
    lat = sorted(o.at - submitted_at for o in client.outcomes())
    return lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")


def _drive(sim: SimProcess, commands: list[HesCommand], config: AdapterConfig, timeout: float,
           driver: LoopDriver | None = None) -> float:
    """Seconds from submit to the last outcome; prints the outcome kinds and both sides' CPU."""
    with ThreadedHeadEndClient("127.0.0.1", sim.port, config, driver=driver) as client:
        deadline = time.monotonic() + 30
        while client.inspect(lambda c: c.phase.value) != "ready":  # exclude connect/hello time
            if time.monotonic() > deadline:
                raise RuntimeError("adapter did not connect")
            time.sleep(0.01)
        start, cpu, sim_cpu = time.perf_counter(), time.process_time(), sim.cpu_seconds()
        submitted_at = time.time()
        client.submit(commands)
        done = client.wait_for_outcomes(len(commands), timeout)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        sim_cpu = sim.cpu_seconds() - sim_cpu
        kinds = Counter(o.kind.value for o in client.outcomes())
        stats = client.inspect(lambda c: c.stats)
        p99 = _p99(client, submitted_at)
    status = "" if done else " (TIMED OUT)"
    print(
        f"    {len(commands)} commands in {elapsed:.2f} s{status}: {dict(kinds)}; "
        f"frames {stats.frames_sent}, reads {stats.reads_sent}, rate-limited {stats.rate_limited}; "
        f"CPU µs/command: adapter {cpu / len(commands) * 1e6:.1f}, simulator "
        f"{sim_cpu / len(commands) * 1e6:.1f}; p99 submit→outcome {p99:.2f} s",
        flush=True,
    )
    LAST.update(p99_s=round(p99, 3), adapter_cpu_us=round(cpu / len(commands) * 1e6, 1),
                sim_cpu_us=round(sim_cpu / len(commands) * 1e6, 1), outcomes=dict(kinds))
    return elapsed


LAST: dict[str, object] = {}  # the last _drive's p99 and CPU, for the JSON line


JSON = False


def record(**fields: object) -> None:
    """One machine-readable result line (with --json), next to the lines for humans."""
    if JSON:
        print(json.dumps({"bench": "headend", **fields}), flush=True)


def bench_throughput(n: int, runs: int, young: int) -> None:
    gc_note = f"gen-0 threshold {young}" if young else "default GC thresholds"
    print(f"1. throughput: {n} connects (+{n} read-backs) per run, zero latency, one connection, "
          f"{gc_note}")
    saved = gc.get_threshold()
    if young:
        gc.set_threshold(young, 20, 100)
    sim = SimProcess("--meters", str(n * runs), "--disconnected-fraction", "1.0", "--max-batch", "10000")
    try:
        rates = []
        for r in range(runs):
            cmds = _commands(r * n, n, HesAction.CONNECT, f"t{r}")
            gc.collect()
            elapsed = _drive(sim, cmds, AdapterConfig(max_batch=10_000, max_in_flight=100_000), 120)
            rates.append(n / elapsed)
            del cmds
    finally:
        sim.stop()
        gc.set_threshold(*saved)
    print(f"   median {statistics.median(rates):,.0f} commands/s  (runs: "
          + ", ".join(f"{x:,.0f}" for x in rates) + ")  aim ≥ 50,000/s\n", flush=True)
    record(figure="throughput", commands=n, gc_young=young or 700, runs=runs,
           commands_per_s=round(statistics.median(rates)), runs_commands_per_s=[round(x) for x in rates])


def bench_rate_limited(n: int, rate: float, runs: int) -> None:
    floor = n / rate
    print(f"2. reconnect {n} meters under a {rate:,.0f} commands/s head-end rate limit "
          f"(floor {floor:.1f} s)")
    times = []
    for r in range(runs):
        sim = SimProcess(
            "--meters", str(n), "--disconnected-fraction", "1.0", "--rate-limit", str(rate)
        )
        try:
            cmds = _commands(0, n, HesAction.CONNECT, f"r{r}")
            times.append(_drive(sim, cmds, AdapterConfig(), floor * 3 + 30))
        finally:
            sim.stop()
    print(f"   median {statistics.median(times):.1f} s  (runs: "
          + ", ".join(f"{x:.1f}" for x in times) + f")  aim ≤ {floor * 1.1:.0f} s\n", flush=True)
    record(figure="rate_limited_reconnect", meters=n, rate_limit=rate, floor_s=round(floor, 1), runs=runs,
           seconds=round(statistics.median(times), 1), runs_seconds=[round(x, 1) for x in times])


def bench_dlms(n: int, runs: int, pool: int) -> None:
    try:
        from headend.dlms import DlmsSettings, DlmsSocketDriver
    except ImportError as e:
        print(f"3. DLMS: skipped ({e}; pip install -e '.[dlms,sim-dlms]')\n", flush=True)
        return
    print(f"3. DLMS: {n} disconnects per run, one per meter, pool of {pool} associations, LLS password")
    rates = []
    p99s = []
    for r in range(runs):
        with tempfile.NamedTemporaryFile("w", suffix=".pw") as pw:
            pw.write("bench-pw\n")
            pw.flush()
            sim = SimProcess("--protocol", "dlms", "--meters", str(n), "--password-file", pw.name)
        try:
            driver = DlmsSocketDriver(DlmsSettings(port=sim.port, password="bench-pw", pool_size=pool))
            cmds = _commands(0, n, HesAction.DISCONNECT, f"d{r}")
            elapsed = _drive(sim, cmds, AdapterConfig(), 300, driver=driver)
            rates.append(n / elapsed)
            p99s.append(float(LAST["p99_s"]))  # type: ignore[arg-type]
            stats = driver.bridge.stats
            print(f"    associations {stats.associations}, reused {stats.reused}, "
                  f"most open {stats.max_links}, "
                  f"response timeouts {stats.response_timeouts}, queue timeouts {stats.queue_timeouts}",
                  flush=True)
        finally:
            sim.stop()
    print(f"   median {statistics.median(rates):,.0f} relay operations/s, "
          f"p99 {statistics.median(p99s):.2f} s "
          "(runs: " + ", ".join(f"{x:,.0f}" for x in rates) + ")  aim ≥ 1,000/s\n", flush=True)
    record(figure="dlms_throughput", commands=n, pool=pool, runs=runs,
           commands_per_s=round(statistics.median(rates)), runs_commands_per_s=[round(x) for x in rates],
           p99_s=round(statistics.median(p99s), 3), adapter_cpu_us=LAST.get("adapter_cpu_us"),
           sim_cpu_us=LAST.get("sim_cpu_us"))


def bench_cim(n: int, runs: int) -> None:
    try:
        from headend.cim.driver import CimHttpDriver, CimSettings
    except ImportError as e:
        print(f"4. CIM: skipped ({e}; pip install -e '.[cim]')\n", flush=True)
        return
    print(f"4. CIM: {n} disconnects per run, one per meter, 500 controls a request, callbacks over HTTP")
    rates, p99s = [], []
    for r in range(runs):
        sim = SimProcess("--protocol", "cim", "--meters", str(n), "--cim-delay", "0")
        driver = CimHttpDriver(CimSettings(url=f"http://127.0.0.1:{sim.port}/cim/EndDeviceControls",
                                           token="sim-token", max_concurrent=8))
        try:
            cmds = _commands(0, n, HesAction.DISCONNECT, f"c{r}")
            cpu, sim_cpu = time.process_time(), sim.cpu_seconds()
            start, submitted_at = time.perf_counter(), time.time()
            outcomes = driver.submit(cmds)
            deadline = time.monotonic() + 300
            while len(outcomes) < n and time.monotonic() < deadline:
                select.select([driver.fileno()], [], [], 0.1)
                outcomes += driver.on_readable()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            sim_cpu = sim.cpu_seconds() - sim_cpu
            lat = sorted(o.at - submitted_at for o in outcomes)
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
            ids = Counter(o.command_id for o in outcomes)
            twice = sum(1 for v in ids.values() if v > 1)
            rates.append(n / elapsed)
            p99s.append(p99)
            print(f"    {len(outcomes)} outcomes of {n} in {elapsed:.2f} s: "
                  f"{dict(Counter(o.kind.value for o in outcomes))}; ended twice {twice}; CPU µs/command: "
                  f"adapter {cpu / n * 1e6:.1f}, simulator {sim_cpu / n * 1e6:.1f}; p99 {p99:.2f} s",
                  flush=True)
        finally:
            driver.close()
            sim.stop()
    print(f"   median {statistics.median(rates):,.0f} commands/s, p99 {statistics.median(p99s):.2f} s "
          "(runs: " + ", ".join(f"{x:,.0f}" for x in rates) + ")  aim ≥ 2,000/s\n", flush=True)
    record(figure="cim_throughput", commands=n, runs=runs, commands_per_s=round(statistics.median(rates)),
           runs_commands_per_s=[round(x) for x in rates], p99_s=round(statistics.median(p99s), 3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_headend", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is shown")
    parser.add_argument("--commands", type=int, default=200_000, help="commands per throughput run")
    parser.add_argument("--meters", type=int, default=100_000, help="meters in the mass reconnect")
    parser.add_argument("--rate", type=float, default=2_000, help="head-end rate limit, commands/s")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--only", choices=["throughput", "reconnect", "dlms", "cim"],
                        help="run one benchmark")
    parser.add_argument("--dlms-commands", type=int, default=10_000, help="commands per DLMS run")
    parser.add_argument("--dlms-pool", type=int, default=64, help="DLMS associations at most")
    parser.add_argument("--cim-commands", type=int, default=20_000, help="commands per CIM run")
    parser.add_argument("--json", action="store_true", help="also print a JSON line per figure")
    parser.add_argument(
        "--gc-young",
        type=int,
        default=50_000,
        help="gen-0 GC threshold for the adapter's process in the throughput runs, which are also "
        "run with Python's default (700); 0 = only the default (default %(default)s)",
    )
    args = parser.parse_args(argv)
    global JSON
    JSON = args.json
    if args.quick:
        args.commands, args.meters, args.runs, args.dlms_commands = 20_000, 4_000, 1, 2_000
        args.cim_commands = 2_000
    print(f"bench_headend: python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n", flush=True)
    if args.only in (None, "throughput"):
        bench_throughput(args.commands, args.runs, 0)
        if args.gc_young:
            bench_throughput(args.commands, args.runs, args.gc_young)
    if args.only in (None, "reconnect"):
        bench_rate_limited(args.meters, args.rate, args.runs)
    if args.only in (None, "dlms"):
        bench_dlms(args.dlms_commands, args.runs, args.dlms_pool)
    if args.only in (None, "cim"):
        bench_cim(args.cim_commands, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
