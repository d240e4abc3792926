"""Command line of the head-end simulator: `jodo hes-sim` and `python -m headend.sim`.

`add_arguments(parser)` declares every knob (its help text is the reference for what the knob does);
`run(args)` serves until SIGINT/SIGTERM and returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
import time
from pathlib import Path

from headend.sim.config import DailyReadsMode, LatencySpec, OutageMode, SimConfig, parse_pairs
from headend.sim.server import HeadEndSimulator

__all__ = ["add_arguments", "config_from_args", "run"]

_D = SimConfig()  # the defaults (a slotted class has no class-level default values)


def _latency(text: str) -> LatencySpec:
    try:
        return LatencySpec.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _modes(text: str) -> tuple[tuple[int, float], ...]:
    try:
        return tuple((int(k), w) for k, w in parse_pairs(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"modes: {e}") from None


def _mix(text: str) -> tuple[tuple[str, float], ...]:
    try:
        return parse_pairs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"failure mix: {e}") from None


def _outage(text: str) -> tuple[float, float]:
    start, sep, duration = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(start), float(duration)
    except ValueError:
        raise argparse.ArgumentTypeError(f"outage wants START:DURATION seconds, got {text!r}") from None


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the simulator's options on `parser` (a subcommand's or a standalone one)."""
    parser.add_argument("--protocol", choices=["reference", "dlms", "cim"], default="reference",
                        help="reference (framed msgpack); dlms: DLMS/COSEM meters on Gurux's server stack, "
                        "TCP wrapper, one logical device per meter (needs the sim-dlms extra); cim: an IEC "
                        "61968-9 head-end over SOAP/HTTP that calls back EndDeviceEvents (the cim extra)")
    cim = parser.add_argument_group("cim (--protocol cim)")
    cim.add_argument("--cim-delay", type=float, default=0.01, help="reply → callback seconds (%(default)s)")
    cim.add_argument("--cim-fail-rate", type=_fraction, default=0.0,
                     help="events ERROR (relay_stuck / no_communication)")
    cim.add_argument("--cim-silent-rate", type=_fraction, default=0.0, help="controls never called back")
    cim.add_argument("--cim-duplicate-rate", type=_fraction, default=0.0, help="events sent twice")
    cim.add_argument("--cim-reply-fail-rate", type=_fraction, default=0.0, help="requests answered FAILED")
    cim.add_argument("--cim-token-file", type=Path, help="file holding the token sent with callbacks")
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    net.add_argument(
        "--port", type=int, default=4059, help="TCP port; 0 picks a free one (default %(default)s)"
    )
    net.add_argument(
        "--port-file",
        type=Path,
        help="write the bound port to this file once listening (useful with --port 0)",
    )
    net.add_argument(
        "--max-frame-bytes",
        type=int,
        default=_D.max_frame_bytes,
        help="largest frame body accepted; a bigger length prefix gets a fatal error frame and the "
        "connection is closed (default %(default)s)",
    )
    net.add_argument(
        "--max-batch",
        type=int,
        default=_D.max_batch,
        help="most commands per submit frame; a bigger batch is rejected as malformed "
        "(default %(default)s)",
    )

    fleet = parser.add_argument_group("fleet")
    fleet.add_argument(
        "--meters",
        type=int,
        default=_D.meters,
        help="number of meters; state is 3 bytes per meter (default %(default)s, MPWZ phase 1)",
    )
    fleet.add_argument(
        "--serial-prefix",
        default=_D.serial_prefix,
        help="meter serials are PREFIX + zero-padded index, e.g. MPW00000042 (default %(default)s)",
    )
    fleet.add_argument(
        "--serial-width", type=int, default=_D.serial_width, help="digits after the prefix"
    )
    fleet.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    fleet.add_argument(
        "--daily-reads",
        choices=[m.value for m in DailyReadsMode if m is not DailyReadsMode.LAB],
        default=DailyReadsMode.WALL.value,
        help="wall: when midnight IST passes, send every meter's read of the day that ended "
        "(HesReads frames, energy from headend/sim/load.py, read id SERIAL:DAY); off: never "
        "(default %(default)s)",
    )
    fleet.add_argument(
        "--load-seed", type=int, default=None, help="seed of the daily load profiles (default: --seed)"
    )
    fleet.add_argument(
        "--modes",
        type=_modes,
        default=_D.modes,
        help="DLMS class-70 control_mode cohorts as MODE=WEIGHT pairs, e.g. 2=0.9,1=0.1. Modes 2 and "
        "4 reconnect remotely straight to connected; 1, 3, 5, 6 stop at ready_for_reconnection until "
        "the consumer presses the button; 0 is always connected and refuses disconnects "
        "(default 2=1: every meter reconnects directly)",
    )
    fleet.add_argument(
        "--disconnected-fraction",
        type=_fraction,
        default=0.0,
        help="fraction of meters (not mode 0) that start disconnected, chosen by the seed (default 0)",
    )

    faults = parser.add_argument_group("behaviour and faults (all seeded, per command id)")
    faults.add_argument(
        "--latency",
        type=_latency,
        default=LatencySpec(),
        help="time from acceptance to execution: fixed:S, uniform:A,B, exp:MEAN or "
        "lognormal:MEDIAN,SIGMA, in seconds (default fixed:0)",
    )
    faults.add_argument(
        "--failure-rate",
        type=_fraction,
        default=0.0,
        help="fraction of commands that fail; a failed command changes nothing (default 0)",
    )
    faults.add_argument(
        "--failure-mix",
        type=_mix,
        default=_D.failure_mix,
        help="relative weights of the error codes of failed commands: no_communication (meter "
        "unreachable; retryable), relay_stuck (needs a field visit; not retryable), "
        "load_side_voltage_present (backfeed, closing is unsafe; connect only; not retryable). "
        "Reads only ever fail with no_communication "
        "(default no_communication=0.8,relay_stuck=0.1,load_side_voltage_present=0.1)",
    )
    faults.add_argument(
        "--misreport-rate",
        type=_fraction,
        default=0.0,
        help="fraction of switching commands reported processed that did not run: only a read-back "
        "reveals them (default 0)",
    )
    faults.add_argument(
        "--drop-rate",
        type=_fraction,
        default=0.0,
        help="fraction of results never sent (the command did run) (default 0)",
    )
    faults.add_argument(
        "--duplicate-rate",
        type=_fraction,
        default=0.0,
        help="fraction of results sent twice, the copy up to --reorder-window later (default 0)",
    )
    faults.add_argument(
        "--reorder-rate",
        type=_fraction,
        default=0.0,
        help="fraction of results held back by a random delay up to --reorder-window, so results "
        "arrive out of order (default 0)",
    )
    faults.add_argument(
        "--reorder-window",
        type=float,
        default=_D.reorder_window,
        help="largest extra delay of a reordered or duplicated result, seconds (default %(default)s)",
    )
    faults.add_argument(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="START:DURATION",
        help="the head-end is down from START for DURATION seconds after start-up (repeatable). "
        "Open connections are closed; accepted commands still execute but their results are lost",
    )
    faults.add_argument(
        "--outage-mode",
        choices=[m.value for m in OutageMode],
        default=OutageMode.REFUSE.value,
        help="during an outage: refuse = stop listening (connects are refused); close = accept "
        "and close at once (default %(default)s)",
    )
    faults.add_argument(
        "--slow-start",
        type=float,
        default=0.0,
        help="warm-up seconds after start-up and after each outage: commands are accepted but none "
        "executes before it ends (default 0)",
    )

    limits = parser.add_argument_group("rate limits (per connection; 0 = unlimited)")
    limits.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="connect/disconnect commands per second; more are rejected rate_limited. Announced to "
        "clients in the welcome frame (default 0)",
    )
    limits.add_argument(
        "--read-rate-limit",
        type=float,
        default=0.0,
        help="read commands per second, counted apart from switching commands (default 0)",
    )
    limits.add_argument(
        "--rate-burst",
        type=float,
        default=_D.rate_burst,
        help="seconds of rate a token bucket holds, i.e. the burst allowed (default %(default)s)",
    )

    from headend.dlms_sim.cli import add_dlms_arguments  # argparse only: no Gurux import

    add_dlms_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument(
        "--stats-interval",
        type=float,
        default=0.0,
        help="print counters every this many seconds (default 0: only at exit)",
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        meters=args.meters,
        serial_prefix=args.serial_prefix,
        serial_width=args.serial_width,
        seed=args.seed,
        modes=args.modes,
        disconnected_fraction=args.disconnected_fraction,
        latency=args.latency,
        failure_rate=args.failure_rate,
        failure_mix=args.failure_mix,
        misreport_rate=args.misreport_rate,
        drop_rate=args.drop_rate,
        duplicate_rate=args.duplicate_rate,
        reorder_rate=args.reorder_rate,
        reorder_window=args.reorder_window,
        outages=tuple(args.outage),
        outage_mode=OutageMode(args.outage_mode),
        slow_start=args.slow_start,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        read_rate_limit=args.read_rate_limit,
        max_frame_bytes=args.max_frame_bytes,
        max_batch=args.max_batch,
        daily_reads=DailyReadsMode(args.daily_reads),
        load_seed=args.load_seed,
    )


async def _serve(sim: HeadEndSimulator, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await sim.start()
    print(
        f"hes-sim listening on {sim.host}:{sim.port} ({sim.config.meters} meters, seed {args.seed})",
        flush=True,
    )
    if args.port_file is not None:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(f"{sim.port}\n")
        tmp.replace(args.port_file)  # atomic: a poller never reads a half-written file
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.stats_interval or None)
            if args.stats_interval and not stop.is_set():
                print(f"{time.strftime('%H:%M:%S')} {sim.stats}", flush=True)
    finally:
        await sim.stop()
        print(f"hes-sim stopped: {sim.stats}", flush=True)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "protocol", "reference") == "cim":
        from headend.cim.sim import run_cim

        return run_cim(args)
    if getattr(args, "protocol", "reference") == "dlms":
        from headend.dlms_sim.cli import run_dlms

        return run_dlms(args)
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"hes-sim: {e}", file=sys.stderr)
        return 2
    sim = HeadEndSimulator(config, host=args.host, port=args.port)
    # the fleet is long-lived and the traffic is a flood of short-lived records: keep the fleet out
    # of collections and let the young generation grow before it is scanned
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        asyncio.run(_serve(sim, args))
    except OSError as e:
        print(f"hes-sim: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m headend.sim",
        description="Simulated smart-meter head-end (reference protocol, DLMS class-70 meters).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
