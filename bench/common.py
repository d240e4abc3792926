"""What the benches share: JSON-line output, a free loopback port, polling with a deadline, and the
few /proc readings they report (RSS, PSS, status fields, CPU seconds). Every reading answers 0 once
the process is gone, so a sampler never dies with the process it watches."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from jodo.ports import free_port as free_port  # re-exported for the benches


def emit(**fields: object) -> None:
    """One JSON record per line on stdout (what `python -m bench` collects)."""
    print(json.dumps(fields), flush=True)


def note_pids(roles: dict[str, str]) -> None:
    """Write pid → role as JSON to ``$JODO_BENCH_PIDS`` when it is set (for a profiler run alongside,
    e.g. ``bench/results/issue13-s8/profile.py``); nothing otherwise."""
    target = os.environ.get("JODO_BENCH_PIDS")
    if target:
        Path(target).write_text(json.dumps(roles))


def wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; seconds it took. `TimeoutError` naming ``what`` at the deadline."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(what)
        time.sleep(0.02)
    return time.perf_counter() - start


def _kib_line(path: str, key: str) -> int:
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, RssAnon) in bytes."""
    return _kib_line(f"/proc/{pid}/status", key) * 1024


def rss_bytes(pid: int) -> int:
    return proc_status(pid, "VmRSS")


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages split between the processes that share them."""
    return _kib_line(f"/proc/{pid}/smaps_rollup", "Pss") * 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
