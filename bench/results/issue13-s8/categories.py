"""Shares of py-spy raw profiles by category (inclusive, % of the process's samples).

py-spy (without --idle) samples a thread unless it sleeps: time waiting in fdatasync under SQLite's COMMIT
and time runnable but waiting for a core are counted. Each file is shown twice: all samples, and without
the samples inside SQLite's COMMIT (closer to the CPU shares).

    python bench/results/issue13-s8/categories.py FILE...
"""

from __future__ import annotations

import gzip
import sys
from collections import Counter
from pathlib import Path

PATTERNS = {
    "actor handlers": ("ActorManager._handleOneMessage",),
    "  Actor.send inside handlers (tell)": ("Actor.send",),
    "  group commit: journal + store (ShardService._commit / DeskService commit)": (
        "ShardService._commit", "DeskService.flush", "DeskService._commit"),
    "  SQLite COMMIT (SqliteFile._write)": ("SqliteFile._write",),
    "  PostgreSQL round trips (psycopg execute/commit)": (
        "Cursor.execute", "Connection.commit", "executemany"),
    "  meter core: MeterHost.step": ("MeterHost.step",),
    "  meter core: MeterHost.assign": ("MeterHost.assign",),
    "  codec (encode/decode)": ("codec.py",),
    "  metrics (JodoActor.metric)": ("JodoActor.metric",),
    "  notices to the outbox files (_deliver_notices)": ("_deliver_notices",),
    "  desk ledger: record_payments": ("record_payments",),
    "  desk: mark_credited": ("mark_credited",),
    "  head-end driver (socket, adapter core)": ("HeadEndSocketDriver.", "HeadEndAdapterCore."),
    "  aiohttp request handling": ("web_protocol.py", "web_app.py"),
    "Thespian loop outside handlers (select, receive, transmit steps)": ("TCPTransport._runWithExpiry",),
    "  poll / select": ("_PollPass.select", "EpollSelector.select"),
    "  transport sends (socket.send of messages and acks)": ("_next_XMIT_2", "_addedDataToIncoming"),
    "  pickle (loads/dumps)": ("_pickle", "pickle"),
    "gc_collect": ("gc_collect",),
}


def shares(path: Path, without_commit: bool = False) -> str:
    total = 0
    counts: Counter[str] = Counter()
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        if "SqliteFile._write" in stack and without_commit:
            continue
        total += count
        # an actor process is forked inside its parent's handler: read only its own frames
        own = stack.rsplit("startChild (", 1)[-1]
        stack = own
        handler = "ActorManager._handleOneMessage" in stack
        for name, pats in PATTERNS.items():
            if name.startswith("Thespian loop"):
                if not handler and any(p in stack for p in pats):
                    counts[name] += count
            elif any(p in stack for p in pats):
                counts[name] += count
    what = " without the samples in SQLite's COMMIT (fdatasync waits)" if without_commit else ""
    lines = [f"{path.parent.name}/{path.name}: {total} samples{what}"]
    lines += [f"  {100 * counts[k] / total:5.1f} %  {k}" for k in PATTERNS if counts[k]]
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(shares(Path(arg)), end="\n\n")
        print(shares(Path(arg), without_commit=True), end="\n\n")
