"""``jodo reconcile``: ask the running node to reconcile a window with the gateways, print the report.

    jodo reconcile --from 2026-12-07T00:00 --to 2026-12-07T12:00            every gateway with API keys
    jodo reconcile --gateway razorpay --from 1765046400 --to 1765090000 --dry-run --json

Times are unix seconds or ISO 8601 (no offset: IST), as everywhere a person types one
(`jodo.values`). The node holds the API keys and the ledger, so the CLI only sends the window
(``POST /v1/admin/reconcile``, admin token). Exit status 0 only when every window was read to its
end, nothing mismatched and every missing payment was credited; 1 otherwise (the report says why).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from jodo.frontdoor.client import AdminClient
from jodo.reconcile.core import text
from jodo.values import BadValue, parse_datetime

__all__ = ["add_arguments", "run"]


def _when(flag: str) -> Any:
    def convert(value: str) -> int:
        try:
            return parse_datetime(value)
        except BadValue as exc:
            raise argparse.ArgumentTypeError(f"{exc} (accepted, e.g. {flag} 2026-12-07T10:30)") from None

    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", default=None,
                        help="one gateway (default: every gateway with payments API credentials)")
    parser.add_argument("--from", dest="start", type=_when("--from"), required=True,
                        help="window start: unix seconds or ISO 8601 (no offset: IST)")
    parser.add_argument("--to", dest="end", type=_when("--to"), required=True,
                        help="window end (inclusive), same forms")
    parser.add_argument("--dry-run", action="store_true",
                        help="report what would be credited; credit nothing")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds to wait for the node's answer (default %(default)s: rate limits "
                             "are slow)")


def run(args: argparse.Namespace, client: AdminClient) -> int:
    body: dict[str, Any] = {"from": args.start, "to": args.end, "dry_run": args.dry_run}
    if args.gateway is not None:
        body["gateway"] = args.gateway
    doc = dataclasses.replace(client, timeout=args.timeout).post_json("/v1/admin/reconcile", body)
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(text(report) for report in doc["reports"]))
    return 0 if doc.get("clean") else 1
