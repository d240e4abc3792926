"""py-spy every node process of a bench while it runs (issue 13, session 8).

    JODO_BENCH_PIDS=/tmp/pids.json python -m bench.bench_webhooks ... &
    python bench/results/issue13-s8/profile.py /tmp/pids.json OUTDIR --delay 20 --seconds 12

Waits for the bench to write its pid → role file (bench.common.note_pids), waits --delay seconds
(into the measured runs), records each process with py-spy (raw collapsed stacks, --rate Hz, no
--gil, so idle time is left out and native SQLite time counts as the Python frame that called it),
then prints each role's top functions by share of its samples: self and inclusive.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path


def shares(raw: Path, top: int) -> str:
    total = 0
    incl: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    text = gzip.decompress(raw.read_bytes()).decode() if raw.suffix == ".gz" else raw.read_text()
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"{raw.stem}: {total} samples"]
    out += ["  self   " + f"{100 * c / total:5.1f} %  {f}" for f, c in own.most_common(top)]
    inner = [(f, c) for f, c in incl.most_common() if c < 0.95 * total]  # not the bootstrap chain
    out += ["  incl   " + f"{100 * c / total:5.1f} %  {f}" for f, c in inner[: top * 2]]
    return "\n".join(out)


def main() -> None:
    if sys.argv[1:2] == ["--shares"]:  # re-read raw files: --shares FILE... [--top N]
        for raw in sys.argv[2:]:
            print(shares(Path(raw), 25), end="\n\n")
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("pids")
    ap.add_argument("out")
    ap.add_argument("--delay", type=float, default=20)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    pids_file, out = Path(args.pids), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 900
    while not pids_file.exists():
        if time.monotonic() > deadline:
            sys.exit("no pid file")
        time.sleep(0.5)
    time.sleep(0.5)
    roles: dict[str, str] = json.loads(pids_file.read_text())
    time.sleep(args.delay)
    procs = []
    spy = str(Path(sys.executable).with_name("py-spy"))
    for pid, role in roles.items():
        name = role.replace(" ", "_").replace("+", "_")
        raw = out / f"{name}-{pid}.txt"
        procs.append((raw, subprocess.Popen(
            [spy, "record", "--pid", pid, "--rate", str(args.rate), "--duration", str(args.seconds),
             "--format", "raw", "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    for _, p in procs:
        p.wait()
    report = "\n\n".join(shares(raw, args.top) for raw, _ in procs if raw.exists())
    (out / "shares.txt").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
