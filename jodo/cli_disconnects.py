"""``jodo disconnects list|show|approve|pause|resume``: the mass-disconnect guard from the shell.

Each talks to the node's admin API (jodo/frontdoor/guard_routes.py) with the local admin token.
Who approves or pauses is ``--by`` (default: the login name, ``$USER``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["add_parser", "run"]


def _login() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return ""


def add_parser(sub: Any, remote: argparse.ArgumentParser) -> None:
    guard = sub.add_parser(
        "disconnects", help="the mass-disconnect guard: waves, approvals, the kill switch"
    ).add_subparsers(dest="disconnects_command", required=True, metavar="ACTION")
    lst = guard.add_parser("list", parents=[remote], help="the kill switch and the latest waves")
    lst.add_argument("--status", choices=("held", "approved", "released"), default=None)
    lst.add_argument("--limit", type=int, default=50)
    show = guard.add_parser("show", parents=[remote], help="one wave: why held, approvals, members kept")
    show.add_argument("wave", help="the wave id, e.g. hes-sim.3 (jodo disconnects list)")
    approve = guard.add_parser("approve", parents=[remote],
                               help="approve a held wave (audited: who, when)")
    approve.add_argument("wave")
    approve.add_argument("--by", default=None, help="who approves (default: $USER)")
    for name, what in (("pause", "stop every automatic disconnection (kill switch; survives restarts)"),
                       ("resume", "let automatic disconnections leave again")):
        p = guard.add_parser(name, parents=[remote], help=what)
        p.add_argument("--by", default=None, help="who (default: $USER)")
        p.add_argument("--reason", default="", help="why, for the audit log")


Out = Callable[[argparse.Namespace, Any, Callable[[Any], str]], None]


def run(args: argparse.Namespace, client: Any, out: Out, table: Callable[..., str]) -> int:
    action = args.disconnects_command
    if action == "list":
        query = f"?limit={args.limit}" + (f"&status={args.status}" if args.status else "")
        out(args, client.get(f"/v1/disconnects{query}"), lambda d: _list_text(d, table))
    elif action == "show":
        out(args, client.get(f"/v1/disconnects/waves/{args.wave}"), _wave_text)
    elif action == "approve":
        doc = client.post_json(f"/v1/disconnects/waves/{args.wave}/approve",
                               {"approver": args.by or _login()})
        out(args, doc, lambda d: f"{args.wave}: {d['outcome']} ({d['detail']})")
    else:
        doc = client.post_json(f"/v1/disconnects/{action}",
                               {"by": args.by or _login(), "reason": args.reason})
        out(args, doc, lambda d: f"automatic disconnections {'paused' if d['paused'] else 'resumed'} "
                                 f"by {d['by']} at {_when(d['at'])}")
    return 0


def _when(t: Any) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(t)))


def _list_text(d: dict[str, Any], table: Callable[..., str]) -> str:
    s = d["switch"]
    head = ("kill switch: PAUSED by " + f"{s['by']} at {_when(s['at'])} ({s['reason'] or 'no reason given'})"
            if s["paused"] else "kill switch: off (disconnections flow)")
    if not d["guard"]:
        head += "\nguard: off ([disconnects] guard = false): disconnections are never paced or held"
    rows = [(w["wave_id"], w["status"], str(w["size"]), str(w["kept"]), str(w["left"]), str(w["cancelled"]),
             ",".join(w["approvers"]) or "-", _when(w["opened_at"]), w["reason"]) for w in d["waves"]]
    return head + "\n" + table(("WAVE", "STATUS", "SIZE", "KEPT", "LEFT", "CANCELLED", "APPROVERS", "OPENED",
                                "WHY"), rows)


def _wave_text(w: dict[str, Any]) -> str:
    lines = [f"wave {w['wave_id']} at {w['head_end']}: {w['status']}",
             f"  why: {w['reason']}",
             f"  size {w['size']}, kept {w['kept']}, left {w['left']}, cancelled {w['cancelled']}",
             f"  opened {_when(w['opened_at'])}, closed {_when(w['closed_at'])}"]
    lines += [f"  approved by {a['approver']} at {_when(a['at'])} via {a['via']}" for a in w["approvals"]]
    if w["members_kept"]:
        lines.append("  kept (first): " + ", ".join(m["account"] for m in w["members_kept"]))
    return "\n".join(lines)
