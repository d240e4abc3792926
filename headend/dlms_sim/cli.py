"""`jodo hes-sim --protocol dlms`: the Gurux-based DLMS meter fleet on one TCP port, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["add_dlms_arguments", "run_dlms"]


def add_dlms_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("DLMS (with --protocol dlms)")
    g.add_argument("--password-file", type=Path,
                   help="LLS password the meters require, read from this file (default: no authentication)")
    g.add_argument("--wport-base", type=int, default=256,
                   help="meter i is the logical device at wPort BASE+i (default %(default)s)")
    for flag, what in (("--refuse", "reject the association of"), ("--mute", "never answer requests to"),
                       ("--stick", "answer success and move nothing for"),
                       ("--unreachable", "hang up on")):
        g.add_argument(flag, action="append", default=[], metavar="SERIAL",
                       help=f"{what} this meter (repeatable)")


def run_dlms(args: argparse.Namespace) -> int:
    from headend.dlms_sim.server import DlmsSimulatorThread

    password = args.password_file.read_text().strip().encode() if args.password_file else None
    sim = DlmsSimulatorThread(args.meters, host=args.host, port=args.port, password=password,
                              wport_base=args.wport_base, modes=args.modes)
    try:
        sim.start()
    except OSError as e:
        print(f"hes-sim: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    fleet = sim.sim
    try:
        for serial in args.refuse:
            fleet.refuse(serial)
        for serial in args.mute:
            fleet.mute(serial)
        for serial in args.stick:
            fleet.stick(serial)
        for serial in args.unreachable:
            fleet.make_unreachable(serial)
    except KeyError as e:
        sim.stop()
        print(f"hes-sim: {e.args[0]}", file=sys.stderr)
        return 2
    print(f"hes-sim (DLMS, Gurux server) listening on {sim.host}:{sim.port} ({args.meters} meters, "
          f"wPort {args.wport_base}+i)", flush=True)
    if args.port_file is not None:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(f"{sim.port}\n")
        tmp.replace(args.port_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(args.stats_interval or 3600.0):
        if args.stats_interval:
            print(f"{time.strftime('%H:%M:%S')} {fleet.stats}", flush=True)
    sim.stop()
    print(f"hes-sim stopped: {fleet.stats}", flush=True)
    return 0
