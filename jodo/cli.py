"""The `jodo` command line: one entry point for every operation.

    jodo serve                      a node: built-in simulated head-end, SQLite under ./data, front door
    jodo demo [--meters N]          a synthetic fleet end to end, self-contained
    jodo hes-sim [...]              the head-end simulator alone
    jodo import meters|bills|payments|reads FILE.csv [--skip-bad]
    jodo inject payment|message|crash|outage|clock ...
    jodo meter show|history ACCOUNT
    jodo trace PAYMENT_ID
    jodo status
    jodo top [--every S] [--once]
    jodo reconcile [--gateway G] --from T --to T [--dry-run]
    jodo config show

Commands that act on a running node talk to its front door (``--url``, default from ``[http]``) with
the admin token from the config (``[tokens] admin`` or ``JODO_TOKENS__ADMIN``); none opens an actor
system. Tables for people, ``--json`` for scripts. Exit status: see `ExitCode`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from jodo import cli_disconnects, localtoken, schema
from jodo.config import Config, ConfigError, load_config
from jodo.csvimport import (
    BillRecord,
    CsvImport,
    CsvRejected,
    ImportKind,
    MeterRecord,
    PaymentRecord,
    ReadRecord,
    Record,
)
from jodo.frontdoor.client import AdminClient, ApiRefused, NodeUnreachable, base_url
from jodo.values import BadValue, parse_datetime, parse_paise

__all__ = ["ExitCode", "build_parser", "main"]

IST = ZoneInfo("Asia/Kolkata")


class ExitCode(IntEnum):
    """What a `jodo` exit status means (scripts branch on these)."""

    OK = 0
    FAILED = 1  # the node answered with an error it should not have (5xx), or something broke
    USAGE = 2  # bad arguments or configuration
    REJECTED = 3  # the input was refused (bad CSV rows, 4xx); with --skip-bad: some rows were
    NOT_FOUND = 4  # no such meter or payment
    UNAVAILABLE = 5  # no node at that URL, or it is not ready (503): retry later


class CliError(Exception):
    """A command failed in a way it already explained; carries the exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jodo", description="Pay-to-reconnect smart-meter control on actors.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 ok, 1 failed, 2 usage, 3 input refused, 4 not found, 5 node unavailable",
    )
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML config file (default: $JODO_CONFIG, else the embedded defaults)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    remote = argparse.ArgumentParser(add_help=False, parents=[common])
    remote.add_argument("--url", default=None,
                        help="the node's front door (default: $JODO_URL, else [http] host and port)")
    remote.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run a node (front door + actors + simulator)")
    serve.add_argument("--port-file", type=Path,
                       help="write the front door's bound port here once it listens")
    serve.add_argument("--sim-meters", type=int, default=725_000,
                       help="meters of the built-in simulated head-end (default %(default)s)")
    serve.add_argument("--sim-disconnected-fraction", type=float, default=0.0,
                       help="fraction of simulated meters whose relay starts open (default 0)")
    serve.add_argument("--sim-seed", type=int, default=0, help="seed of the simulated fleet (default 0)")
    serve.add_argument("--sim-daily-reads", choices=["on", "off"], default="on",
                       help="on: the built-in simulator sends every meter's read of a day when the day ends "
                            "(midnight IST on the node's clock, the lab clock with --lab-clock); prepaid "
                            "meters are debited from them (default %(default)s)")
    serve.add_argument("--lab-clock", metavar="WHEN", default=None,
                       type=_typed("--lab-clock", parse_datetime, "2026-11-02T10:00"),
                       help="a lab node: its clock starts at WHEN (ISO date-time, IST without an offset, or "
                            "unix seconds) and moves only by `jodo inject clock`; never in production")

    from headend.sim.cli import add_arguments as sim_arguments

    sim_arguments(sub.add_parser("hes-sim", parents=[common], help="run the head-end simulator alone"))

    from jodo.demo import add_arguments as demo_arguments

    demo_arguments(sub.add_parser("demo", parents=[common], help="a synthetic fleet end to end"))

    imp = sub.add_parser("import", parents=[remote],
                         help="import meters, bills, payments or prepaid energy reads from CSV")
    imp.add_argument("kind", choices=[k.value for k in ImportKind])
    imp.add_argument("file", type=Path)
    imp.add_argument("--skip-bad", action="store_true",
                     help="apply the good rows and write the bad ones to a reject file (default: a file with "
                          "any bad row is rejected whole)")
    imp.add_argument("--reject-file", type=Path,
                     help="where --skip-bad writes bad rows (default FILE.rejects.csv)")
    imp.add_argument("--batch", type=int, default=5000, help="rows per request (default %(default)s)")
    imp.add_argument("--gateway", default="import",
                     help="payments: the gateway recorded (default %(default)s)")
    imp.add_argument("--cash", action="store_true",
                     help="payments: cash or cheque at a counter, so no cashless rebate (default: cashless)")

    inject = sub.add_parser("inject", help="inject a payment, any meter command, or a fault")
    kinds = inject.add_subparsers(dest="what", required=True, metavar="WHAT")
    pay = kinds.add_parser("payment", parents=[remote], help="a cleared payment, straight to the desk",
                           description="A cleared payment, recorded in the ledger like any other, then "
                                       "credited to its meter.",
                           epilog="example: jodo inject payment --account N0000000001 --amount-paise 150000")
    pay.add_argument("--account", required=True, help="the consumer account, e.g. N0000000001")
    pay.add_argument("--amount-paise", type=_typed("--amount-paise", parse_paise, "150000"), required=True,
                     help="integer paise: 150000 is Rs 1,500.00")
    pay.add_argument("--payment-id", default=None, help="default: inject-<unix time in ms>")
    pay.add_argument("--channel", default="counter", help="default %(default)s")
    pay.add_argument("--gateway", default="operator", help="default %(default)s")
    pay.add_argument("--paid-at", type=_typed("--paid-at", parse_datetime, "2026-12-07T10:30"), default=None,
                     help="unix seconds or ISO date-time, IST without an offset (default now)")
    pay.add_argument("--cash", action="store_true", help="not cashless (no rebate)")
    msg = kinds.add_parser("message", parents=[remote], add_help=False,
                           help="any meter command or payment by type and fields (--list; TYPE --help)",
                           description="Send one message by its type and FIELD=VALUE pairs. --list names "
                                       "them; TYPE --help shows a message's fields, types, defaults and "
                                       "an example.")
    msg.add_argument("-h", "--help", action="store_true", help="this help; with TYPE, the message's fields")
    msg.add_argument("--list", action="store_true", help="the messages that can be injected")
    msg.add_argument("type", nargs="?", help="message type, e.g. RegisterMeter, PostBill, EngineerOverride")
    msg.add_argument("fields", nargs="*", metavar="FIELD=VALUE",
                     help="as a person writes them: money integer paise, booleans true/false/yes/no/1/0, "
                          "dates ISO or unix seconds, date-times without an offset are IST")
    msg.set_defaults(message_parser=msg)
    crash = kinds.add_parser("crash", parents=[remote], help="kill an actor (its supervisor restarts it)")
    crash.add_argument("target", help="desk, shard-<group> or gateway-<head-end>")
    outage = kinds.add_parser("outage", parents=[remote], help="built-in simulated head-end down/up")
    outage.add_argument("head_end")
    outage.add_argument("state", choices=["on", "off"])
    clock = kinds.add_parser("clock", parents=[remote], help="move a lab node's clock (serve --lab-clock)",
                             description="Move the clock of a node started with `jodo serve --lab-clock`: "
                                         "every meter runs what came due (notices, disconnections, retries) "
                                         "before the answer. Forward only.",
                             epilog="examples: jodo inject clock +16d; jodo inject clock 2026-11-26T10:00")
    clock.add_argument("when", metavar="WHEN",
                       help="+DURATION (+90s, +30m, +12h, +16d) or a date-time (ISO, IST without an offset, "
                            "or unix seconds)")

    meter = sub.add_parser("meter", help="one meter: its state or its journal")
    views = meter.add_subparsers(dest="view", required=True, metavar="VIEW")
    show = views.add_parser("show", parents=[remote], help="the meter's current state")
    show.add_argument("account")
    history = views.add_parser("history", parents=[remote], help="the meter's latest events, newest first")
    history.add_argument("account")
    history.add_argument("--limit", type=int, default=50)

    trace = sub.add_parser("trace", parents=[remote], help="where a payment went, hop by hop")
    trace.add_argument("payment_id")
    sub.add_parser("status", parents=[remote], help="the node: actors, restarts, shards, queues")
    top = sub.add_parser("top", parents=[remote], help="a live view of the node (q quits)",
                         description="Payments/s and webhooks/s, relay states, pending commands and breaker "
                                     "per head-end, restarts, p99 payment to connected, the last errors; "
                                     "from the node's /metrics and /v1/status. q quits.")
    top.add_argument("--every", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true", help="print one frame and exit (no live screen)")
    cluster = sub.add_parser("cluster", help="the cluster: members, leases, hand-overs").add_subparsers(
        dest="cluster_command", required=True, metavar="ACTION")
    cluster.add_parser("status", parents=[remote],
                       help="members (heartbeat age, draining), leases (owner, epoch, expiry), "
                            "unowned groups")
    drain = cluster.add_parser("drain", parents=[remote],
                               help="hand every group of NODE over to the others (before maintenance)")
    drain.add_argument("node", help="the member's node id ([cluster] node_id)")
    drain.add_argument("--undo", action="store_true", help="let NODE take groups again")
    from jodo.reconcile.cli import add_arguments as reconcile_arguments

    reconcile_arguments(sub.add_parser("reconcile", parents=[remote],
                                       help="compare a window with the gateways' lists, credit lost ones"))
    cli_disconnects.add_parser(sub, remote)
    config = sub.add_parser("config", help="the configuration")
    config_views = config.add_subparsers(dest="view", required=True, metavar="VIEW")
    cshow = config_views.add_parser("show", parents=[common], help="the merged config, secrets as ***")
    cshow.add_argument("--json", action="store_true", help="JSON instead of TOML")
    from jodo import audit_cli

    audit_cli.add_arguments(sub, common)
    return parser


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0) if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"jodo: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        return int(_COMMANDS[args.command](args, config))
    except CliError as exc:
        if str(exc):
            print(f"jodo {args.command}: {exc}", file=sys.stderr)
        return int(exc.code)
    except NodeUnreachable as exc:
        print(f"jodo {args.command}: {exc.detail} (is `jodo serve` running? --url to point elsewhere)",
              file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except ApiRefused as exc:
        print(f"jodo {args.command}: the node refused: {exc.status} {exc.code}: {exc.detail}",
              file=sys.stderr)
        return _exit_for(exc.status)
    except KeyboardInterrupt:
        return 130


def _exit_for(status: int) -> ExitCode:
    if status == 404:
        return ExitCode.NOT_FOUND
    if status == 503:
        return ExitCode.UNAVAILABLE
    if 400 <= status < 500:
        return ExitCode.REJECTED
    return ExitCode.FAILED


def _client(args: argparse.Namespace, config: Config) -> AdminClient:
    try:
        admin = localtoken.admin_token(config)
    except OSError as exc:
        raise CliError(ExitCode.USAGE, f"the local admin token: {exc}") from None
    payments = config.tokens.payments.reveal() if config.tokens.payments else None
    return AdminClient(args.url or os.environ.get("JODO_URL") or base_url(config), admin, payments)


def _out(args: argparse.Namespace, doc: Any, human: Callable[[Any], str]) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False) if getattr(args, "json", False) else human(doc))


# ---------------------------------------------------------------- serve, hes-sim, demo


def _serve(args: argparse.Namespace, config: Config) -> int:
    from headend.sim.config import DailyReadsMode, SimConfig
    from jodo.serve import ServeOptions, StackOptions, serve

    reads = (DailyReadsMode.OFF if args.sim_daily_reads == "off"
             else DailyReadsMode.LAB if args.lab_clock is not None else DailyReadsMode.WALL)
    try:
        sim = SimConfig(meters=args.sim_meters, disconnected_fraction=args.sim_disconnected_fraction,
                        seed=args.sim_seed, daily_reads=reads)
    except ValueError as exc:
        raise CliError(ExitCode.USAGE, str(exc)) from None
    if args.lab_clock is not None and config.cluster.enabled:
        raise CliError(ExitCode.USAGE, "--lab-clock: a cluster member runs the wall clock")
    stack = StackOptions(sim=sim, manual_clock=args.lab_clock is not None, start_at=args.lab_clock or 0)
    return serve(config, ServeOptions(stack=stack, port_file=args.port_file))


def _hes_sim(args: argparse.Namespace, config: Config) -> int:
    from headend.sim.cli import run

    return run(args)


def _demo(args: argparse.Namespace, config: Config) -> int:
    from jodo.demo import run

    return run(args)


# ---------------------------------------------------------------- import


def _import(args: argparse.Namespace, config: Config) -> int:
    kind = ImportKind(args.kind)
    if args.batch < 1:
        raise CliError(ExitCode.USAGE, "--batch must be at least 1")
    client = _client(args, config)
    if kind is ImportKind.PAYMENTS and client.payments_token is None:
        raise CliError(ExitCode.USAGE,
                       "importing payments needs [tokens] payments (or JODO_TOKENS__PAYMENTS)")
    head_ends = [h.name for h in config.head_ends] if kind is ImportKind.METERS else None
    job = CsvImport(args.file, kind, skip_bad=args.skip_bad, reject_path=args.reject_file,
                    head_ends=head_ends)
    total = _data_lines(args.file)
    progress = Progress(f"import {kind}", total)
    refused: list[dict[str, Any]] = []
    applied = duplicates = 0
    started = time.monotonic()
    try:
        for batch in job.batches(args.batch):
            answer, seen = _send_records(client, kind, batch, args.gateway, cashless=not args.cash)
            for i, reason in answer:
                refused.append({"record": _record_key(batch[i]) if 0 <= i < len(batch) else "?",
                                "reason": reason})
            applied += len(batch) - len(answer) - seen
            duplicates += seen
            progress.update(job.report.rows)
    except CsvRejected as exc:
        progress.done()
        report = exc.report
        doc = {"kind": str(kind), "file": str(args.file), "applied": 0, "rejected_rows": report.rejected,
               "errors": [str(e) for e in report.errors], "more_errors": report.errors_dropped}
        _out(args, doc, lambda d: _rejected_text(d, args.skip_bad))
        raise CliError(ExitCode.REJECTED, "") from None
    progress.done()
    report = job.report
    doc = {
        "kind": str(kind), "file": str(args.file), "rows": report.rows, "applied": applied,
        "duplicates": duplicates, "refused_by_node": refused, "rejected_rows": report.rejected,
        "reject_file": str(report.reject_path) if report.reject_path else None,
        "errors": [str(e) for e in report.errors], "seconds": round(time.monotonic() - started, 2),
    }
    _out(args, doc, _imported_text)
    return ExitCode.REJECTED if refused or report.rejected else ExitCode.OK


def _data_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)
    except OSError:
        return 0


def _send_records(
    client: AdminClient, kind: ImportKind, batch: list[Record], gateway: str, *, cashless: bool
) -> tuple[list[tuple[int, str]], int]:
    """Send one batch; (refused: (index, reason), how many were duplicates of earlier payments)."""
    if kind is ImportKind.PAYMENTS:
        items = [{"payment_id": r.payment_id, "account": r.account, "amount_paise": r.amount_paise,
                  "channel": r.channel, "paid_at": r.paid_at, "gateway": gateway, "cashless": cashless}
                 for r in batch if isinstance(r, PaymentRecord)]
        answer = client.post_json("/v1/payments", items, payments=True)
        refused = [(item["index"], f"{item.get('error', 'rejected')}: {item.get('detail', '')}")
                   for item in answer["results"] if item["result"] == "rejected"]
        return refused, int(answer.get("duplicate", 0))
    commands = [_command(r) for r in batch]
    answer = client.post_json("/v1/admin/meter-commands", commands)
    return [(item["index"], item["reason"]) for item in answer["rejected"]], 0


def _command(record: Record) -> dict[str, Any]:
    if isinstance(record, ReadRecord):
        return _read_command(record)
    if isinstance(record, MeterRecord):
        fields = {"account": record.account, "serial": record.serial, "head_end": record.head_end,
                  "install_year": record.install_year, "relay_capable": record.relay_capable,
                  "control_mode": record.control_mode, "protected": record.protected}
        return {"type": "RegisterMeter", "fields": fields}
    assert isinstance(record, BillRecord)
    return {"type": "PostBill", "fields": {"account": record.account, "bill_id": record.bill_id,
                                           "amount_paise": record.amount_paise,
                                           "due_date": record.due_date.isoformat(),
                                           "issued_at": record.issued_at}}


def _read_command(record: ReadRecord) -> dict[str, Any]:
    """One daily read as a ``ReportConsumption`` meter command (debited once per read_id by the shard)."""
    return {"type": "ReportConsumption", "fields": {"account": record.account, "read_id": record.read_id,
                                                    "read_date": record.read_date.isoformat(),
                                                    "energy_wh": record.energy_wh, "source": "import"}}


def _record_key(record: Record) -> str:
    if isinstance(record, ReadRecord):
        return f"read {record.read_id}"
    if isinstance(record, BillRecord):
        return f"bill {record.bill_id}"
    if isinstance(record, PaymentRecord):
        return f"payment {record.payment_id}"
    return f"meter {record.account}"


def _rejected_text(doc: dict[str, Any], skip_bad: bool) -> str:
    lines = [f"{doc['file']}: rejected whole, nothing applied: {doc['rejected_rows']} bad row(s)"
             + ("" if skip_bad else " (use --skip-bad to apply the good rows and write the bad ones aside)")]
    lines += [f"  {e}" for e in doc["errors"][:50]]
    if len(doc["errors"]) > 50 or doc["more_errors"]:
        lines.append(f"  ... and {len(doc['errors']) - 50 + doc['more_errors']} more")
    return "\n".join(lines)


def _imported_text(doc: dict[str, Any]) -> str:
    lines = [f"{doc['file']}: {doc['applied']} of {doc['rows']} rows applied in {doc['seconds']} s"]
    if doc["duplicates"]:
        lines.append(f"  {doc['duplicates']} payment(s) already in the ledger: credited once, not again")
    if doc["rejected_rows"]:
        lines.append(f"  {doc['rejected_rows']} bad row(s) skipped, written to {doc['reject_file']}")
        lines += [f"  {e}" for e in doc["errors"][:20]]
    for item in doc["refused_by_node"][:20]:
        lines.append(f"  refused by the node: {item['record']}: {item['reason']}")
    return "\n".join(lines)


class Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise (logs stay clean)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.live or now - self.last < 0.1:
            return
        self.last = now
        width = 30
        filled = int(width * done / self.total) if self.total else 0
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{self.total:,}")
        self.stream.flush()

    def done(self) -> None:
        if self.live and self.last:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------- inject


def _inject(args: argparse.Namespace, config: Config) -> int:
    if args.what == "message" and (args.help or args.list or not args.type):
        return _describe(args, config)
    client = _client(args, config)
    if args.what == "payment":
        now = int(time.time())
        fields = {"payment_id": args.payment_id or f"inject-{int(time.time() * 1000)}",
                  "account": args.account, "amount_paise": args.amount_paise, "channel": args.channel,
                  "gateway": args.gateway, "paid_at": args.paid_at or now, "received_at": now,
                  "cashless": not args.cash}
        answer = client.post_json("/v1/admin/inject", {"type": "PaymentReceived", "fields": fields})
        answer["payment_id"] = fields["payment_id"]
    elif args.what == "message":
        answer = client.post_json("/v1/admin/inject", {"type": args.type, "fields": _fields(args.fields)})
    elif args.what == "crash":
        answer = client.post_json("/v1/admin/fault", {"kind": "crash", "target": args.target, "on": True})
    elif args.what == "clock":
        by = args.when.startswith("+")
        answer = client.post_json("/v1/admin/clock", {"by": args.when[1:]} if by else {"to": args.when})
    else:
        answer = client.post_json("/v1/admin/fault", {"kind": "outage", "target": args.head_end,
                                                      "on": args.state == "on"})
    _out(args, answer, _injected_text)
    return ExitCode.REJECTED if answer.get("result") == "rejected" else ExitCode.OK


def _injected_text(d: dict[str, Any]) -> str:
    if "moved_s" in d:  # inject clock
        at = datetime.fromtimestamp(d["clock"], IST).strftime("%Y-%m-%d %H:%M IST")
        days, rest = divmod(int(d["moved_s"]), 86_400)
        return f"clock {at} (moved {days} d {rest // 3600} h {rest % 3600 // 60} min); what came due has run"
    if "injected" not in d:
        return "  ".join(f"{k}: {v}" for k, v in d.items() if v not in ("", None))
    where = f" ({'routed to ' + d['routed_to']})" if d.get("routed_to") else ""
    line = f"{d['injected']}: {d.get('result', 'sent')}{where}"
    if d.get("reason"):
        line += f": {d['reason']}"
    if d.get("payment_id"):
        line += f"; payment_id {d['payment_id']}"
    if d.get("defaults_used"):
        used = ", ".join(f"{u['field']}={_value_text(u['value'])} ({u['source']})"
                         for u in d["defaults_used"])
        line += f"\ndefaults used: {used}"
    return line


def _value_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _describe(args: argparse.Namespace, config: Config) -> int:
    """``inject message --list``, ``inject message TYPE --help``: from the message registry (no node)."""
    head_ends = [h.name for h in config.head_ends]
    if args.type:
        try:
            found = schema.message_schema(args.type, head_ends=head_ends)
        except schema.FieldError as exc:
            raise CliError(ExitCode.USAGE, str(exc)) from None
        if getattr(args, "json", False):
            print(json.dumps({**found.to_json(), "values": schema.VALUE_RULES}, indent=2, ensure_ascii=False))
        else:
            print(_schema_text(found))
        return ExitCode.OK
    if args.list:
        schemas = schema.injectable_schemas(head_ends=head_ends)
        if getattr(args, "json", False):
            print(json.dumps({"messages": [s.to_json() for s in schemas], "values": schema.VALUE_RULES},
                             indent=2, ensure_ascii=False))
        else:
            rows = [(s.type, s.routed_to.split(" (")[0], _short(s.summary, 70)) for s in schemas]
            print(table(("message", "goes to", "what it is"), rows))
            print("\n`jodo inject message TYPE --help` shows a message's fields, defaults and an example.")
        return ExitCode.OK
    print(args.message_parser.format_help(), end="")
    return ExitCode.OK if args.help else ExitCode.USAGE


def _short(text: str, width: int) -> str:
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 3].rstrip() + "..."


def _schema_text(s: schema.MessageSchema) -> str:
    lines = [f"{s.type}: {s.summary}", f"goes to {s.routed_to}", "", "fields:"]
    width = max(len(f.name) for f in s.fields)
    indent = " " * (width + 4)
    for f in s.fields:
        kind = f"{f.kind} ({f.unit})" if f.unit and f.kind is not schema.FieldKind.DATETIME else str(f.kind)
        if f.lo is not None or f.hi is not None:
            kind += f" {'' if f.lo is None else f.lo}..{'' if f.hi is None else f.hi}"
        if f.nullable:
            kind += " or null"
        if f.required:
            need = "required"
        else:
            source = "" if f.default_source == "message" else f" ({f.default_source})"
            need = f"default {_value_text(f.default)}{source}"
        lines.append(f"  {f.name:<{width}}  {kind}; {need}")
        notes = [f.description] if f.description else []
        if f.allowed and f.kind is not schema.FieldKind.BOOLEAN:
            notes.append("one of " + ", ".join(f.allowed))
        if f.default_why:
            notes.append(f"default {_value_text(f.default)}: {f.default_why}")
        for note in notes:
            lines += textwrap.wrap(note, 108, initial_indent=indent, subsequent_indent=indent)
    lines += ["", "values:"]
    lines += [f"  {kind:<9}  {rule}" for kind, rule in schema.VALUE_RULES.items()]
    lines += ["", "example:", f"  {s.example}"]
    return "\n".join(lines)


def _typed(flag: str, parse: Callable[[str], Any], example: str) -> Callable[[str], Any]:
    """An argparse type from a `jodo.values` parser: its error names the flag and an accepted value."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except BadValue as exc:
            raise argparse.ArgumentTypeError(f"{exc} (accepted, e.g. {flag} {example})") from None

    return convert


def _fields(pairs: Sequence[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs, values as typed: the node parses them by the message's schema."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(ExitCode.USAGE, f"expected FIELD=VALUE, got {pair!r}")
        fields[key] = value
    return fields


# ---------------------------------------------------------------- meter, trace, status


def _meter(args: argparse.Namespace, config: Config) -> int:
    client = _client(args, config)
    if args.view == "show":
        doc = client.get(f"/v1/meters/{args.account}")
        if doc.get("billing_mode") == "prepaid":  # the balance's story: its recent reads and debits
            events = client.get(f"/v1/meters/{args.account}/history?limit=200")["events"]
            doc["recent_debits"] = [e for e in events if e["event"] in _PREPAID_EVENTS][:_RECENT_DEBITS]
        _out(args, doc, _meter_text)
    else:
        doc = client.get(f"/v1/meters/{args.account}/history?limit={args.limit}")
        _out(args, doc, _history_text)
    return ExitCode.OK


def _when(t: Any) -> str:
    if not isinstance(t, int | float) or not t:
        return "-"
    return datetime.fromtimestamp(t, IST).strftime("%Y-%m-%d %H:%M:%S")


def _rupees(paise: Any) -> str:
    if not isinstance(paise, int):
        return "-"
    sign = "-" if paise < 0 else ""
    return f"{sign}Rs {abs(paise) // 100:,}.{abs(paise) % 100:02d}"


_PREPAID_EVENTS = frozenset({"ConsumptionDebited", "EmergencyCreditGranted", "EmergencyCreditRecovered",
                             "LowBalanceNotified", "BillingModeSet", "PaymentApplied", "PaymentReconnect"})
_RECENT_DEBITS = 10


def _money_row(m: dict[str, Any]) -> tuple[str, str]:
    """Postpaid: the dues. Prepaid: the balance, which is minus the dues (docs/prepaid-contract.md)."""
    if m.get("billing_mode") != "prepaid":
        return "dues", _rupees(m["dues_paise"])
    balance = -m["dues_paise"] if isinstance(m.get("dues_paise"), int) else None
    emergency = m.get("emergency_credit_paise")
    owed = isinstance(emergency, int) and emergency > 0
    extra = f", emergency credit {_rupees(emergency)} outstanding" if owed else ""
    return "prepaid balance", f"{_rupees(balance)}{extra}"


def _meter_text(m: dict[str, Any]) -> str:
    rows = [
        ("account", m["account"]), ("serial", m["serial"]),
        ("relay", f"{m['relay']} (wanted: {m['desired']})"), _money_row(m),
        ("head-end", m["head_end"]),
        ("cohort", f"installed {m['install_year']}, relay {'yes' if m['relay_capable'] else 'no'}, "
                   f"control mode {m['control_mode']}"),
        ("protected / on hold", f"{'yes' if m['protected'] else 'no'} / {'yes' if m['on_hold'] else 'no'}"),
    ]
    if m.get("bill"):
        b = m["bill"]
        rows.append(("bill", f"{b['bill_id']} {_rupees(b['amount_paise'])}, "
                             f"overdue from {_when(b['due_at'])}"))
    if m.get("notice_at"):
        lawful = _when(m["switch_off_not_before"])
        rows.append(("notice served", f"{_when(m['notice_at'])}; disconnection lawful from {lawful}"))
    if m.get("pending_command"):
        p = m["pending_command"]
        rows.append(("pending command", f"{p['action']} {p['command_id']} attempt {p['attempt']} "
                                        f"(expires {_when(p['expires_at'])})"))
    if m.get("work_order"):
        rows.append(("work order", f"{m['work_order']['action']} {m['work_order']['work_order_id']}"))
    if m.get("meter_credit"):  # a meter that keeps its own credit: the last balance jodo sent it
        c = m["meter_credit"]
        why = f" ({c['error']})" if c.get("error") else ""
        rows.append(("meter's own credit", f"told {_rupees(c['sent_balance_paise'])} by {c['command_id']} "
                                           f"attempt {c['attempt']}: {c['outcome']}{why}"))
    text = _pairs(rows)
    if m.get("recent_debits"):
        text += "\n" + _history_text({"account": m["account"], "events": m["recent_debits"]},
                                      head="recent reads, debits and recharges, newest first")
    return text


_EVENT_KEYS = ("payment_id", "amount_paise", "dues_after_paise", "bill_id", "command_id", "action", "relay",
               "target", "reason", "not_before", "work_order_id", "outcome", "status", "error_code",
               # prepaid (docs/prepaid-contract.md)
               "mode", "read_id", "read_date", "energy_wh", "debit_paise", "estimated", "replaces",
               "balance_after_paise", "balance_paise", "threshold", "days_left", "period",
               "outstanding_after_paise")


def _history_text(doc: dict[str, Any], head: str | None = None) -> str:
    rows = []
    for e in doc["events"]:
        details = " ".join(f"{k}={_fmt(k, e[k])}" for k in _EVENT_KEYS
                           if e.get(k) is not None and e[k] != "" and e[k] is not False)
        rows.append((_when(e.get("at")), e["event"], details))
    title = f"{doc['account']}: {len(rows)} events, newest first" if head is None else head
    return title + "\n" + table(("time (IST)", "event", "details"), rows)


def _fmt(key: str, value: Any) -> str:
    if key.endswith("_paise"):
        return _rupees(value)
    if key == "energy_wh" and isinstance(value, int):
        return f"{value // 1000}.{value % 1000:03d}kWh"
    if key in ("not_before",):
        return _when(value)
    return str(value)


def _trace(args: argparse.Namespace, config: Config) -> int:
    _out(args, _client(args, config).get(f"/v1/payments/{args.payment_id}"), _trace_text)
    return ExitCode.OK


def _trace_text(t: dict[str, Any]) -> str:
    head = (f"payment {t['payment_id']}: {_rupees(t.get('amount_paise'))} for {t.get('account')} via "
            f"{t.get('gateway')} ({t.get('channel')}), ledger status {t.get('status')}")
    start = next((h["at"] for h in t["hops"] if h["hop"] == "received"), None)
    rows = []
    for h in t["hops"]:
        offset = f"+{h['at'] - start:.0f} s" if isinstance(start, int | float) else ""
        details = " ".join(f"{k}={_fmt(k, v)}" for k, v in h.items() if k not in ("hop", "at"))
        rows.append((h["hop"], _when(h["at"]), offset, details))
    return head + "\n" + table(("hop", "time (IST)", "after", "details"), rows)


def _status(args: argparse.Namespace, config: Config) -> int:
    _out(args, _client(args, config).get("/v1/status"), _status_text)
    return ExitCode.OK


def _top(args: argparse.Namespace, config: Config) -> int:
    from jodo import top

    client = dataclasses.replace(_client(args, config), timeout=10.0)
    client.get_text("/metrics")  # unreachable or refused: exit now with the usual status and message
    return top.run(client.url, client.get_text, client.get, every=args.every, once=args.once)


def _cluster(args: argparse.Namespace, config: Config) -> int:
    client = _client(args, config)
    if args.cluster_command == "drain":
        view = client.post_json("/v1/cluster/drain", {"node": args.node, "draining": not args.undo})
    else:
        view = client.get("/v1/cluster")
    _out(args, view, _cluster_text)
    return ExitCode.OK


def _cluster_text(c: dict[str, Any]) -> str:
    members = c.get("members", [])
    leases = c.get("leases", [])
    rows = [(m["node_id"], m.get("http_url", ""), f"{m.get('heartbeat_age_s', 0):.1f} s",
             "live" if m.get("live") else ("left" if m.get("left") else "SUSPECT"),
             "yes" if m.get("draining") else "no",
             str(sum(1 for x in leases if x.get("owner") == m["node_id"] and x.get("expires_in_s", 0) > 0)))
            for m in members]
    lines = [f"as seen by {c.get('node_id')} (lease renewed {c.get('renewed_ago_s', 0):.1f} s ago)", "",
             table(("member", "front door", "heartbeat", "state", "draining", "groups"), rows), ""]
    unowned = [x["resource"] for x in leases if not x.get("owner") or x.get("expires_in_s", 0) <= 0]
    lrows = [(x["resource"], x.get("owner") or "-", str(x.get("epoch", 0)),
              f"{x.get('expires_in_s', 0):.1f} s" if x.get("owner") else "-") for x in leases]
    lines += [table(("lease", "owner", "epoch", "expires in"), lrows), "",
              f"unowned groups: {', '.join(unowned) if unowned else 'none'}"]
    return "\n".join(lines)


def _status_text(s: dict[str, Any]) -> str:
    lines = [f"node {'READY' if s['ready'] else 'NOT READY'}: front door pid {s.get('pid')}, "
             f"restarts {s.get('restarts', 0)}", "", "supervision tree:"]
    rows: list[tuple[str, ...]] = []

    def walk(tree: dict[str, Any], depth: int) -> None:
        rows.append(("  " * depth + tree["supervisor"], "Supervisor", tree["state"], str(tree["pid"]), "",
                     str(tree.get("dead_letters", 0))))
        for child in tree["children"]:
            if "supervisor" in child:
                walk(child["supervisor"], depth + 1)
            else:
                name = "  " * (depth + 1) + child["id"]
                pid, restarts = str(child["pid"]), str(child["restarts"])
                rows.append((name, child["kind"], child["state"], pid, restarts, ""))

    walk(s["tree"], 0)
    lines.append(table(("actor", "kind", "state", "pid", "restarts", "dead letters"), rows))
    lines += ["", "meter shards:"]
    lines.append(table(("group", "pid", "meters", "relays", "pending", "paid, still off"), [
        (str(g["group"]), str(g["pid"]), f"{g['meters']:,}",
         " ".join(f"{k}={v:,}" for k, v in sorted(g["relay"].items())),
         str(g["pending_commands"]), str(g["paid_but_disconnected"])) for g in s["shards"]]))
    d = s["desk"]
    lines += ["", f"payment desk (pid {d['pid']}): queued {d['queued']}, saturated {d['saturated']}, ledger "
              + ", ".join(f"{k} {v:,}" for k, v in d["payments"].items())]
    lines += ["", "head-ends:"]
    lines.append(table(("head-end", "pid", "breaker", "pending", "in flight", "outcomes"), [
        (h["head_end"], str(h["pid"]), h["breaker"], str(h["pending"]), str(h["in_flight"]),
         " ".join(f"{k}={v:,}" for k, v in h["outcomes"].items())) for h in s["head_ends"]]))
    if "front_door" in s:
        f = s["front_door"]
        lines += ["", f"front door: {f['items']:,} webhooks in {f['batches']:,} batches (largest "
                      f"{f['largest_batch']}), queued {f.get('queued', 0)}, answered 503 {f['saturated']}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- config


def _config(args: argparse.Namespace, config: Config) -> int:
    doc = config.redacted()
    print(json.dumps(doc, indent=2) if args.json else to_toml(doc))
    return ExitCode.OK


def to_toml(doc: dict[str, Any]) -> str:
    """TOML for `jodo config show` (scalars, tables, tables of tables, arrays of tables; None commented)."""
    lines: list[str] = []

    def scalars(table_: dict[str, Any]) -> None:
        for key, value in table_.items():
            if value is None:
                lines.append(f"# {key} = (unset)")
            elif not isinstance(value, dict | list) or (isinstance(value, list) and not _tables(value)):
                lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")

    scalars(doc)
    for key, value in doc.items():
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()) and value:
            for name, inner in value.items():
                lines += ["", f"[{key}.{name}]"]
                scalars(inner)
                for sub_key, sub_table in inner.items():  # [gateways.<name>.reconcile]
                    if isinstance(sub_table, dict):
                        lines += ["", f"[{key}.{name}.{sub_key}]"]
                        scalars(sub_table)
        elif isinstance(value, dict):
            lines += ["", f"[{key}]"]
            scalars(value)
        elif isinstance(value, list) and _tables(value):
            for inner in value:
                lines += ["", f"[[{key}]]"]
                scalars(inner)
    return "\n".join(lines).strip() + "\n"


def _tables(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) for i in items)


# ---------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain aligned table (no colours: it goes into tickets and logs too)."""
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(out)


def _pairs(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _reconcile(args: argparse.Namespace, config: Config) -> int:
    from jodo.reconcile.cli import run

    return run(args, _client(args, config))


def _audit(args: argparse.Namespace, config: Config) -> int:
    from jodo import audit_cli

    return audit_cli.run(args, config)


_COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "serve": _serve, "hes-sim": _hes_sim, "demo": _demo, "import": _import, "inject": _inject,
    "meter": _meter, "trace": _trace, "status": _status, "config": _config, "cluster": _cluster,
    "audit": _audit,
    "top": _top,
    "reconcile": _reconcile,
    "disconnects": lambda args, config: cli_disconnects.run(args, _client(args, config), _out, table),
}

if __name__ == "__main__":
    sys.exit(main())
