"""CPU per Thespian message between two actor processes, with and without the selector patch.

    python bench/results/issue13-s8/transport_cost.py [--messages 4000] [--size 2000] [--rounds 3]

Each round starts a fresh multiprocTCPBase system in a subprocess (the node's patches applied, the
selector patch then undone for "epoll"), bounces one message back and forth --messages times between
two actors and prints the CPU of both actor processes per message (one-way), alternating variants.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHILD = """
import json, os, selectors, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
os.environ["THESPIAN_BASE_IPADDR"] = "127.0.0.1"
from thespian.system.transport import TCPTransport as tcp
from actors.netpatch import apply_bind_patch
from actors.sendpatch import apply_send_patch
from thespian.actors import ActorSystem
from jodo.ports import free_port
apply_bind_patch(); apply_send_patch()
if sys.argv[3] == "epoll":
    tcp.selectors = selectors
system = ActorSystem("multiprocTCPBase", capabilities={"Admin Port": free_port()}, transientUnique=True)
try:
    ping = system.createActor("pingpong_actor.Ping")
    pong = system.createActor("pingpong_actor.Pong")
    system.ask(ping, ("go", pong, 200, int(sys.argv[5])), 60)  # warm up
    if len(sys.argv) > 6:  # profile the pong process: py-spy raw output to this file
        import subprocess
        pid = system.ask(pong, "pid", 10)
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                                "--pid", str(pid), "--rate", "250", "--duration", "8", "--format", "raw",
                                "--output", sys.argv[6], "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu, wall = system.ask(ping, ("go", pong, int(sys.argv[4]), int(sys.argv[5])), 120)
finally:
    system.shutdown()
print(json.dumps({"cpu_us_per_message": cpu * 1e6 / int(sys.argv[4]),
                  "wall_us_per_message": wall * 1e6 / int(sys.argv[4])}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default="", help="py-spy the pong actor into PREFIX-<variant>.txt")
    args = ap.parse_args()
    here = Path(__file__).parent / "transport"
    for r in range(args.rounds):
        for variant in ("poll", "epoll") if r % 2 == 0 else ("epoll", "poll"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(here), variant,
                                  str(args.messages), str(args.size)]
                                 + ([f"{args.profile}-{variant}.txt"] if args.profile else []),
                                 capture_output=True, text=True, timeout=300, cwd=ROOT)
            line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
            load = Path("/proc/loadavg").read_text().split()[:3]
            print(json.dumps({"round": r + 1, "variant": variant, "load": load, **json.loads(line)}),
                  flush=True)


if __name__ == "__main__":
    main()
