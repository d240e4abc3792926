"""`jodo demo`: a month of an Indore-sized fleet, end to end, on this machine, in a few minutes.

Self-contained: a node with the embedded defaults and a manual clock, the built-in simulated head-end
and the real HTTP front door, all in this process and its actor processes, data in a temporary dir.

1. Build the fleet (``--meters``, default 100 000): registrations through the meter shards; 93 % are
   in the automatic-reconnection cohort (installed 2020-2024), the rest are not remotely switchable
   (field work orders); a few are protected (life support); 4 % reconnect only at the button (DLMS
   control mode 1).
2. Post bills on Mon 13 Jul 2026, due Wed 29 Jul. 60 % pay early, in BBPS batches to POST /v1/payments.
3. Walk the manual clock hour by hour: after the due date the rest get a surcharge and the s.56
   notice; 15 clear days later (Sat 15 Aug, a holiday; then a Sunday) the first lawful moment is Mon
   17 Aug 08:00, when the shards disconnect every overdue meter they may.
4. That night (22:00-23:30) consumers pay by signed webhooks — Razorpay and jodo formats, with
   duplicates, forged signatures and unknown accounts — and the demo watches relays close at the
   simulator: payment-to-connected is the wall time from the webhook's 2xx to the relay read closed.
5. A summary; everything is shut down; the data dir is removed (``--keep`` keeps it).

``--head-end dlms`` runs the same month through the DLMS/COSEM adapter (``[[head_ends]] kind = "dlms"``,
docs/dlms.md) against the Gurux-based meter simulator (`headend.dlms_sim`), one association per command:
the relays are switched by class 70 ACTIONs and read back by GETs, written by other people than the
reference protocol. Fewer meters by default (5 000; at most 65 000: one DLMS wrapper port per meter).
``--head-end cim`` runs it through the IEC 61968-9 adapter (``kind = "cim"``, docs/cim.md): create
EndDeviceControls over SOAP/HTTP to the Connexo-like simulator (`headend.cim.sim`), the results coming
back as EndDeviceEvents on the gateway's callback listener.
``--prepaid`` runs a month of prepaid meters instead (issue 16, jodo/demo_prepaid.py): daily reads debiting
the balances, low-balance notices, zero-balance cuts held through the friendly hours, emergency credit, and
recharges by signed webhook that reconnect at once (5 000 meters by default).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from domain.commands import PostBill, RegisterMeter
from domain.policy import load_policy
from domain.windows import due_at_for, next_allowed_at, notice_matures_at
from headend.cim.sim import CimSimConfig, CimSimThread
from headend.dlms_sim.server import DlmsSimulatorThread
from headend.sim.config import SimConfig
from jodo.client import NodeClient
from jodo.config import Config, load_config
from jodo.demo_guard import DemoGuard, guard_env
from jodo.frontdoor import build_app, start_site
from jodo.ports import free_port as _free_port
from jodo.serve import Stack, StackOptions
from jodo.webhooks import sign_jodo, sign_razorpay
from protocols.headend import HesControlState
from supervisors.processes import is_alive

__all__ = ["add_arguments", "run"]

IST = ZoneInfo("Asia/Kolkata")
HEAD_END = "hes-sim"
ISSUED = datetime(2026, 7, 13, 10, 0, tzinfo=IST)  # a Monday
DUE_DATE = "2026-07-29"
EARLY_PAY_AT = datetime(2026, 7, 20, 11, 0, tzinfo=IST)
NIGHT = datetime(2026, 8, 17, 23, 30, tzinfo=IST)
CHUNK = 10_000
DLMS_METERS = 5_000
DLMS_WPORT_BASE = 256  # [[head_ends]] dlms_wport_base's default: meter i answers on wrapper port 256 + i
DLMS_MAX_METERS = 65_000
PREPAID_METERS = 5_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meters", type=int, default=100_000, help="fleet size (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="seed of every random choice (default 7)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the node keeps its data (default: a temporary dir, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (its path is printed)")
    parser.add_argument("--pay-early", type=float, default=0.6,
                        help="fraction of consumers paying before the due date (default %(default)s)")
    parser.add_argument("--pay-at-night", type=float, default=0.7,
                        help="fraction of disconnected consumers paying by webhook (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="webhook connections at once (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--head-end", choices=["sim", "dlms", "cim"], default="sim",
                        help="sim: the built-in reference head-end (default); dlms: the DLMS/COSEM adapter "
                             "against the Gurux-based meter simulator (--meters defaults to 5 000 then); "
                             "cim: the IEC 61968-9 adapter against the Connexo-like CIM head-end simulator")
    parser.add_argument("--prepaid", action="store_true",
                        help="a month of prepaid meters instead: daily reads, low-balance notices, cuts "
                             "held in friendly hours, emergency credit, recharges (--meters defaults to "
                             "5 000 then)")
    parser.add_argument("--cluster", action="store_true",
                        help="three nodes over a throwaway PostgreSQL instead; one is killed mid-demo "
                             "(--meters defaults to 300 then)")


def run(args: argparse.Namespace) -> int:
    if args.cluster:
        from jodo.demo_cluster import run_cluster_demo

        meters = 300 if args.meters == 100_000 else args.meters
        return run_cluster_demo(meters, keep=args.keep)
    if args.head_end == "dlms":
        args.meters = DLMS_METERS if args.meters == 100_000 else args.meters
        if not 10 <= args.meters <= DLMS_MAX_METERS:
            print(f"jodo demo: --head-end dlms takes --meters between 10 and {DLMS_MAX_METERS:,} (one DLMS "
                  f"wrapper port per meter, from {DLMS_WPORT_BASE})", file=sys.stderr)
            return 2
    if args.meters < 10 or args.meters >= 10**8:
        print("jodo demo: --meters must be between 10 and 99 999 999", file=sys.stderr)
        return 2
    demo: type[Demo] = Demo
    if args.prepaid:
        from jodo.demo_prepaid import PrepaidDemo

        if args.head_end != "sim":
            print("jodo demo: --prepaid runs on the built-in head-end only", file=sys.stderr)
            return 2
        args.meters = PREPAID_METERS if args.meters == 100_000 else args.meters
        demo = PrepaidDemo
    keep = args.keep or args.data_dir is not None
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="jodo-demo-"))
    try:
        return asyncio.run(demo(args, data.resolve()).run())
    finally:
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
        else:
            print(f"data kept in {data}", file=sys.stderr)


def _ts(dt: datetime) -> int:
    return int(dt.timestamp())


def _local(t: float) -> str:
    return datetime.fromtimestamp(t, IST).strftime("%a %d %b %H:%M")


def account(i: int) -> str:
    return f"N{i:010d}"


def serial(i: int) -> str:
    return f"MPW{i:08d}"


@dataclass(frozen=True, slots=True)
class Consumer:
    index: int
    install_year: int
    mode: int
    protected: bool
    bill_paise: int
    pays_early: bool


@dataclass(slots=True)
class Request:
    key: float  # position in the stream
    what: str  # pay | duplicate | forged | unknown
    index: int  # consumer index (-1 for an unknown account)
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(slots=True)
class Tally:
    sent: int = 0
    results: Counter[str] = field(default_factory=Counter)  # accepted, duplicate, 401, ...
    answered_at: dict[int, float] = field(default_factory=dict)  # consumer index -> 2xx wall time
    closed_after: list[float] = field(default_factory=list)  # seconds, 2xx -> relay closed
    awaiting_button: int = 0


class Out:
    """Progress for people: phase lines (stdout, or stderr when stdout carries --json) and, on a
    terminal, a status line rewritten in place."""

    def __init__(self, to_stderr: bool) -> None:
        self.stream = sys.stderr if to_stderr else sys.stdout
        self.live = sys.stderr.isatty()
        self.last = 0.0

    def say(self, text: str) -> None:
        if self.live and self.last:
            sys.stderr.write("\r" + " " * 110 + "\r")
            self.last = 0.0
        print(text, file=self.stream, flush=True)

    def status(self, text: str, *, every: float = 0.2) -> None:
        now = time.monotonic()
        if self.live and now - self.last >= every:
            sys.stderr.write("\r" + text.ljust(110)[:110])
            sys.stderr.flush()
            self.last = now


class Demo:
    MODES: tuple[tuple[int, float], ...] = ((2, 0.96), (1, 0.04))  # DLMS control modes and their shares

    def __init__(self, args: argparse.Namespace, data: Path) -> None:
        self.args = args
        self.data = data
        self.n = args.meters
        self.rng = random.Random(args.seed)
        self.out = Out(to_stderr=args.json)
        self.clock = _ts(ISSUED)
        self.phases: list[tuple[str, float]] = []
        self.secrets = {"razorpay": secrets.token_hex(16), "bbps": secrets.token_hex(16)}
        self.payments_token = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(16)
        self.dlms_password = secrets.token_hex(8)  # the meters' LLS secret (8 bytes, as IS 15959 meters)
        self.cim_token = secrets.token_hex(16)  # the CIM head-end's callbacks carry it
        self.cim_port = _free_port()
        self.guard: DemoGuard | None = None
        self.config = self._config()
        self.consumers: list[Consumer] = []
        self.disconnected_hours: Counter[str] = Counter()
        self.tally = Tally()
        self.facts: dict[str, Any] = {}

    def _config(self) -> Config:
        env = {
            "JODO_NODE__DATA_DIR": str(self.data), "JODO_NODE__ADMIN_PORT": str(_free_port()),
            "JODO_HTTP__PORT": "0", "JODO_HTTP__MAX_IN_FLIGHT": "100000",
            "JODO_HEAD_ENDS__0__NAME": HEAD_END, "JODO_HEAD_ENDS__0__KIND": self.args.head_end,
            "JODO_HEAD_ENDS__0__HOST": "127.0.0.1", "JODO_HEAD_ENDS__0__PORT": str(_free_port()),
            "JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay",
            "JODO_GATEWAYS__RAZORPAY__SECRET": self.secrets["razorpay"],
            "JODO_GATEWAYS__BBPS__FORMAT": "jodo", "JODO_GATEWAYS__BBPS__SECRET": self.secrets["bbps"],
            "JODO_TOKENS__PAYMENTS": self.payments_token, "JODO_LOGGING__LEVEL": "WARNING",
            "JODO_TOKENS__ADMIN": self.admin_token, **self._guard_env(),
        }
        if self.args.head_end == "dlms":
            env["JODO_HEAD_ENDS__0__DLMS_PASSWORD"] = self.dlms_password
            env["JODO_HEAD_ENDS__0__DLMS_WPORT_BASE"] = str(DLMS_WPORT_BASE)
        if self.args.head_end == "cim":
            env["JODO_HEAD_ENDS__0__CIM_URL"] = f"http://127.0.0.1:{self.cim_port}/cim/EndDeviceControls"
            env["JODO_HEAD_ENDS__0__CIM_CALLBACK_PORT"] = str(_free_port())
            env["JODO_HEAD_ENDS__0__CIM_TOKEN"] = self.cim_token
        return load_config(env=env)

    # ------------------------------------------------------------ the run

    async def run(self) -> int:
        began = time.monotonic()
        self.out.say(self._title())
        modes = self.MODES
        sim = SimConfig(meters=self.n, seed=self.args.seed, modes=modes)
        options = StackOptions(sim=sim, manual_clock=True, start_at=self.clock, synchronous="normal",
                               rate_limit=None, ask_timeout=60.0)
        stack = Stack(self.config, options)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        await loop.run_in_executor(None, stack.start)
        self.stack = stack
        assert stack.backend is not None
        self.backend = stack.backend
        self.dlms: DlmsSimulatorThread | None = None
        self.cim: CimSimThread | None = None
        if self.args.head_end == "cim":
            # started after the node, as the DLMS one: forked actors must not inherit its socket
            self.cim = CimSimThread(CimSimConfig(meters=self.n, token=self.cim_token, seed=self.args.seed),
                                    port=self.cim_port).start()
            self.sim: Any = self.cim
        elif self.args.head_end == "dlms":
            # started after the node: forked actors would otherwise inherit its listening socket
            head_end = self.config.head_ends[0]
            self.dlms = DlmsSimulatorThread(
                self.n, host=head_end.host, port=head_end.port, password=self.dlms_password.encode(),
                wport_base=DLMS_WPORT_BASE, modes=modes, seed=self.args.seed).start()
            self.sim = self.dlms
        else:
            self.sim = stack.simulators[HEAD_END]
        app = build_app(self.config, self.backend, clock=lambda: float(self.clock))
        runner, port = await start_site(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"
        self.guard = DemoGuard(self.url, self.admin_token)
        self._phase("start the node, simulator and front door", started)
        node = self.backend.node
        processes = node.known_processes() if node is not None else ()
        try:
            await self._month()
            summary = await self._summary(time.monotonic() - began)
        finally:
            await runner.cleanup()
            report = await loop.run_in_executor(None, stack.close)
            if self.dlms is not None:
                self.dlms.stop()
            if self.cim is not None:
                self.cim.stop()
        processes = (*processes, *(node.known_processes() if node is not None else ()))
        left = sorted({ref.pid for ref in processes if is_alive(ref)})
        clean = report is not None and report.tree_stopped and not report.survivors and not left
        summary["shutdown"] = "clean" if clean else "NOT clean"
        summary["node_processes"] = sorted({ref.pid for ref in processes})
        summary["node_processes_left"] = left
        self._print(summary)
        return 0 if summary["ok"] and clean else 1

    def _guard_env(self) -> dict[str, str]:
        return guard_env(self.n)

    def _title(self) -> str:
        return f"jodo demo: {self.n:,} meters, a simulated month in Indore (IST); data in {self.data}"

    async def _month(self) -> None:
        await self._build_fleet()
        await self._post_bills()
        await self._walk(_ts(ISSUED) + 3600, _ts(EARLY_PAY_AT), "bills out, waiting for the early payers")
        await self._pay_early()
        await self._walk(self.clock + 3600, _ts(datetime(2026, 8, 17, 7, 0, tzinfo=IST)),
                         "due date, surcharge, s.56 notices, 15 clear days")
        self.before_cut = await self._relay_counts()
        await self._walk(self.clock + 3600, _ts(datetime(2026, 8, 17, 22, 0, tzinfo=IST)),
                         "the first lawful day: disconnections")
        await self._walk(self.clock + 1800, _ts(NIGHT), "night", step=1800)
        await self._pay_at_night()

    def _phase(self, what: str, started: float) -> None:
        took = time.monotonic() - started
        self.phases.append((what, took))
        self.out.say(f"  {what}: {took:.1f} s")

    # ------------------------------------------------------------ fleet and bills

    async def _build_fleet(self) -> None:
        started = time.monotonic()
        modes = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.sim.call(lambda s: bytes(s.fleet.control_mode)))
        rng = self.rng
        for i in range(self.n):
            small = rng.random() < 0.05
            self.consumers.append(Consumer(
                index=i,
                install_year=rng.randint(2020, 2024) if rng.random() < 0.93 else rng.randint(2015, 2019),
                mode=modes[i], protected=rng.random() < 0.005,
                bill_paise=rng.randint(10_000, 45_000) if small else rng.randint(60_000, 450_000),
                pays_early=rng.random() < self.args.pay_early,
            ))
        commands = [RegisterMeter(account=account(c.index), serial=serial(c.index), head_end=HEAD_END,
                                  install_year=c.install_year, relay_capable=True, control_mode=c.mode,
                                  protected=c.protected) for c in self.consumers]
        await self._send(commands, "register meters")
        self._phase(f"register {self.n:,} meters (through the shards' journals)", started)

    async def _post_bills(self) -> None:
        started = time.monotonic()
        commands = [PostBill(account=account(c.index), bill_id=f"B2607-{c.index}", amount_paise=c.bill_paise,
                             due_date=DUE_DATE, issued_at=self.clock) for c in self.consumers]
        await self._send(commands, "post bills")
        self._phase(f"post {self.n:,} bills (issued {_local(self.clock)}, due {DUE_DATE})", started)

    async def _send(self, commands: Sequence[Any], what: str) -> None:
        for start in range(0, len(commands), CHUNK):
            part = commands[start:start + CHUNK]
            rejected = await self.backend.call(partial(_send, part), timeout=120.0)
            if rejected:
                raise RuntimeError(f"{what}: the shards refused {len(rejected)}: {rejected[:3]}")
            self.out.status(f"  {what}: {start + len(part):,}/{len(commands):,}")

    async def _pay_early(self) -> None:
        started = time.monotonic()
        payers = [c for c in self.consumers if c.pays_early]
        headers = {"Authorization": f"Bearer {self.payments_token}", "Content-Type": "application/json"}
        accepted = 0
        async with aiohttp.ClientSession() as session:
            for start in range(0, len(payers), 5000):
                items = [{"payment_id": f"BBPS-2607-{c.index}", "account": account(c.index),
                          "amount_paise": c.bill_paise, "channel": "bbps", "gateway": "bbps",
                          "paid_at": self.clock - self.rng.randint(0, 5 * 86400)}
                         for c in payers[start:start + 5000]]
                url, data = f"{self.url}/v1/payments", json.dumps(items)
                async with session.post(url, data=data, headers=headers) as r:
                    body = await r.json()
                    if r.status != 200:
                        raise RuntimeError(f"POST /v1/payments answered {r.status}: {body}")
                    accepted += body["accepted"]
                self.out.status(f"  early payments: {accepted:,}/{len(payers):,}")
        await self._settle()
        self.facts["paid_early"] = accepted
        self._phase(f"{accepted:,} pay before the due date (BBPS batches, POST /v1/payments)", started)

    # ------------------------------------------------------------ the clock

    async def _relay_counts(self) -> Counter[str]:
        def read(c: NodeClient) -> Counter[str]:
            total: Counter[str] = Counter()
            for group in c.shard:
                total.update(dict(c.shard_status(group).relay_counts))
            return total

        return await self.backend.call(read)

    async def _settle(self) -> int:
        """Wait until no relay command is pending or queued for a gateway's credit window (the head-end
        answered what this hour sent)."""
        deadline = time.monotonic() + 300
        while True:
            pending = await self.backend.call(
                lambda c: sum(s.pending_commands + s.queued_commands for s in map(c.shard_status, c.shard)))
            if not pending or time.monotonic() > deadline:
                return int(pending)
            for w in await self.guard.approve_held(int(pending)) if self.guard else []:
                self.out.say(f"  mass-disconnect guard held wave {w['wave_id']}: {w['kept']:,} "
                             f"disconnections ({w['reason']}); approved by {', '.join(w['approved_by'])} "
                             "(admin API)")
            await asyncio.sleep(0.02)

    async def _walk(self, start: int, end: int, what: str, step: int = 3600) -> None:
        started = time.monotonic()
        opened_before = await self._sim_disconnected()
        for t in range(start, end + 1, step):
            self.clock = t
            await self.backend.call(partial(_set_clock, t), timeout=120.0)
            await self._settle()
            opened = await self._sim_disconnected()
            if opened > opened_before:  # this step's hour saw relays open
                self.disconnected_hours[_local(t) + "-" + _local(t + step)[-5:]] += opened - opened_before
                opened_before = opened
            self.out.status(f"  simulated {_local(t)} · relays open at the head-end {opened_before:,}")
        self._phase(f"{what} (to {_local(end)})", started)

    async def _sim_disconnected(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.sim.call(lambda s: s.fleet.count(HesControlState.DISCONNECTED)))

    # ------------------------------------------------------------ the night's webhooks

    def _disconnected_dues(self) -> dict[str, int]:
        """What each disconnected consumer was told to pay (the "disconnected" notice's dues)."""
        dues: dict[str, int] = {}
        for path in sorted((self.data / "outbox").glob("notices-*.jsonl")):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    notice = json.loads(line)
                    if notice["template"] == "disconnected" and notice.get("dues_paise"):
                        dues[notice["account"]] = int(notice["dues_paise"])
        return dues

    def _requests(self, dues: dict[str, int]) -> tuple[list[Request], list[int]]:
        rng = self.rng
        owing = sorted(int(a[1:]) for a in dues)
        payers = [i for i in owing if rng.random() < self.args.pay_at_night]
        payer_set = set(payers)
        stay_off = [i for i in owing if i not in payer_set]
        forged = rng.sample(stay_off, min(len(stay_off), max(1, len(payers) // 50)))
        night = _ts(NIGHT)
        requests: list[Request] = []
        for i in payers:
            paid_at = night - rng.randint(0, 90 * 60)
            req = self._webhook(i, dues[account(i)], paid_at, rng.random() < 0.5)
            requests.append(req)
            if rng.random() < 0.05:  # the gateway delivers it again (timeout on its side, a retry)
                requests.append(Request(req.key + rng.random() * (1 - req.key), "duplicate", i, req.path,
                                        req.body, req.headers))
        for i in forged:  # someone forges a payment: the signature cannot be right without the secret
            req = self._webhook(i, dues[account(i)], night, rng.random() < 0.5, secret="not-the-secret")
            req.what = "forged"
            requests.append(req)
        for k in range(10):  # a typo in the consumer number: accepted, then suspense
            req = self._webhook(-1, 50_000, night, False, acct=f"X{k:09d}")
            req.what = "unknown"
            requests.append(req)
        requests.sort(key=lambda r: r.key)
        return requests, forged

    def _webhook(self, i: int, amount: int, paid_at: int, razorpay: bool, *, secret: str | None = None,
                 acct: str | None = None) -> Request:
        acct = acct or account(i)
        pid = f"{'pay_' if razorpay else 'JODO-'}{secrets.token_hex(7)}"
        if razorpay:
            entity = {"id": pid, "amount": amount, "currency": "INR", "status": "captured",
                      "method": self.rng.choice(("upi", "card", "netbanking")), "notes": {"account": acct},
                      "created_at": paid_at}
            event = {"event": "payment.captured", "payload": {"payment": {"entity": entity}}}
            body = json.dumps(event).encode()
            headers = {"Content-Type": "application/json",
                       "X-Razorpay-Signature": sign_razorpay(secret or self.secrets["razorpay"], body),
                       "X-Razorpay-Event-Id": f"evt_{secrets.token_hex(7)}"}
            return Request(self.rng.random(), "pay", i, "/v1/webhooks/razorpay", body, headers)
        doc = {"payment_id": pid, "account": acct, "amount_paise": amount, "channel": "upi",
               "paid_at": paid_at}
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json",
                   "Jodo-Signature": sign_jodo(secret or self.secrets["bbps"], body, self.clock)}
        return Request(self.rng.random(), "pay", i, "/v1/webhooks/bbps", body, headers)

    async def _pay_at_night(self) -> None:
        started = time.monotonic()
        dues = self._disconnected_dues()
        requests, forged = self._requests(dues)
        self.facts["forged_targets"] = len(forged)
        self.out.say(f"  {_local(self.clock)}: {len(dues):,} consumers are disconnected; "
                     f"{sum(r.what == 'pay' for r in requests):,} pay now by webhook")
        waiting: dict[int, float] = {}  # consumer index -> 2xx time, relay not yet closed
        done = asyncio.Event()
        watcher = asyncio.create_task(self._watch(waiting, done))
        await self._post_webhooks(requests, waiting)
        self._phase(f"{self.tally.sent:,} webhooks sent at night ({_local(self.clock)})", started)
        waited = time.monotonic()
        done.set()
        await watcher
        self.forged_closed = await self._closed([i for i in forged])
        self._phase("the last relays closed, after the last 2xx", waited)

    async def _post_webhooks(self, requests: list[Request], waiting: dict[int, float]) -> None:
        """POST ``requests`` in order, ``--concurrency`` at once; tally the answers, and put each accepted
        payment's consumer in ``waiting`` with the time of its 2xx (for `_watch`)."""
        tally = self.tally
        queue = list(reversed(requests))
        connector = aiohttp.TCPConnector(limit=self.args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                while queue:
                    req = queue.pop()
                    async with session.post(self.url + req.path, data=req.body, headers=req.headers) as r:
                        answer = await r.json()
                        at = time.monotonic()
                    tally.sent += 1
                    word = answer.get("result", str(r.status)) if r.status == 200 else str(r.status)
                    tally.results[f"{req.what}:{word}"] += 1
                    if req.what == "pay" and word == "accepted":
                        tally.answered_at[req.index] = at
                        waiting[req.index] = at

            await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))

    async def _closed(self, indexes: list[int]) -> int:
        states = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.sim.relay_states([serial(i) for i in indexes]))
        return sum(s.control_state == HesControlState.CONNECTED for s in states)

    async def _watch(self, waiting: dict[int, float], done: asyncio.Event) -> None:
        """Poll the simulator for the relays of paid meters; record 2xx → closed seconds."""
        loop = asyncio.get_running_loop()
        tally = self.tally
        deadline: float | None = None
        while True:
            if done.is_set() and deadline is None:
                deadline = time.monotonic() + 120
            if waiting:
                indexes = list(waiting)
                states = await loop.run_in_executor(
                    None, self.sim.relay_states, [serial(i) for i in indexes])
                now = time.monotonic()
                for i, s in zip(indexes, states, strict=True):
                    if s.control_state == HesControlState.CONNECTED:
                        tally.closed_after.append(now - waiting.pop(i))
                    elif s.control_state == HesControlState.READY_FOR_RECONNECTION:
                        waiting.pop(i)
                        tally.awaiting_button += 1
            p50 = _pct(tally.closed_after, 0.5)
            self.out.status(f"  webhooks {tally.sent:,} · accepted {len(tally.answered_at):,} · relays "
                            f"closed {len(tally.closed_after):,} · awaiting button "
                            f"{tally.awaiting_button:,} · p50 {p50:.2f} s")
            if deadline is not None and (not waiting or time.monotonic() > deadline):
                return
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------ summary

    async def _summary(self, wall: float) -> dict[str, Any]:
        counts = await self._settled_counts()
        opened = self._work_orders()
        notices = Counter[str]()
        for path in (self.data / "outbox").glob("notices-*.jsonl"):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    notices[json.loads(line)["template"]] += 1
        t = self.tally
        results = t.results
        policy = load_policy()
        notice_at = due_at_for(DUE_DATE, policy)
        lawful = notice_matures_at(notice_at, policy)
        paying = sum(v for k, v in results.items() if k.startswith("pay:"))
        expected = results["pay:accepted"]
        ok = (len(t.closed_after) + t.awaiting_button == expected and self.forged_closed == 0
              and results["forged:401"] == self.facts["forged_targets"])
        return {
            "ok": ok,
            "meters": self.n,
            "wall_seconds": round(wall, 1),
            "phases": [{"phase": p, "seconds": round(s, 1)} for p, s in self.phases],
            "bills": self.n,
            "paid_early": self.facts.get("paid_early", 0),
            "notices": {"disconnection_notice": notices["disconnection_notice"],
                        "served": _local(notice_at), "lawful_from": _local(lawful),
                        "first_allowed": _local(next_allowed_at(lawful, policy))},
            "disconnected_by_hour": dict(self.disconnected_hours),
            "disconnected": sum(self.disconnected_hours.values()),
            "spared_protected": sum(1 for c in self.consumers if c.protected and not c.pays_early
                                    and c.bill_paise >= policy.disconnection_min_dues_paise),
            "spared_small_dues": sum(1 for c in self.consumers if not c.protected and not c.pays_early
                                     and c.bill_paise < policy.disconnection_min_dues_paise),
            "work_orders": {k: v for k, v in opened.items()},
            "webhooks": {"sent": t.sent, "payments": paying, "accepted": expected,
                         "duplicate": results["duplicate:duplicate"] + results["pay:duplicate"],
                         "bad_signature_401": results["forged:401"],
                         "unknown_account_accepted": results["unknown:accepted"],
                         "other": {k: v for k, v in results.items() if k not in (
                             "pay:accepted", "duplicate:duplicate", "pay:duplicate", "forged:401",
                             "unknown:accepted")}},
            "reconnected": len(t.closed_after), "awaiting_button": t.awaiting_button,
            "forged_payments_that_reconnected": self.forged_closed,
            "payment_to_connected_seconds": {"p50": round(_pct(t.closed_after, 0.5), 3),
                                             "p95": round(_pct(t.closed_after, 0.95), 3),
                                             "p99": round(_pct(t.closed_after, 0.99), 3),
                                             "max": round(max(t.closed_after, default=0.0), 3)},
            "ledger": counts["ledger"], "relays": counts["relays"],
            "paid_but_disconnected": counts["paid_but_disconnected"],
            "supply_restored_notices": notices["supply_restored"],
            "press_button_notices": notices["press_button"],
            "guard_waves_approved": self.guard.approved if self.guard else [],
            "head_end": self._head_end_facts(),
        }

    async def _settled_counts(self) -> dict[str, Any]:
        """`_counts` once the shards have read back what the simulator did and the desk has marked every
        acknowledged payment in the ledger (or 30 s have passed)."""
        await self._settle()
        deadline = time.monotonic() + 30
        while True:
            counts = await self.backend.call(_counts, timeout=60.0)
            if not counts["ledger"].get("pending") or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.05)

    def _work_orders(self) -> Counter[str]:
        """Field work orders written to the outbox, by "type:action"."""
        opened = Counter[str]()
        for path in (self.data / "outbox").glob("work-orders-*.jsonl"):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    order = json.loads(line)
                    opened[f"{order['type']}:{order.get('action', '')}"] += 1
        return opened

    def _head_end_facts(self) -> dict[str, Any]:
        if self.cim is not None:
            requests = self.cim.call(lambda sim: sim.requests)
            return {"kind": "cim", "protocol": "IEC 61968-9 create EndDeviceControls (SOAP/HTTP, callbacks)",
                    "requests": requests}
        if self.dlms is None:
            return {"kind": "sim", "protocol": "jodo reference (headend/sim)"}
        stats = self.dlms.call(lambda sim: dataclasses.asdict(sim.stats))
        return {"kind": "dlms", "protocol": "DLMS/COSEM class 70 (dlms-cosem client, Gurux server)", **stats}

    def _print(self, s: dict[str, Any]) -> None:
        """The summary table (stderr with --json, whose JSON goes to stdout for scripts)."""
        if self.args.json:
            print(json.dumps(s, indent=2), flush=True)
        out = sys.stderr if self.args.json else sys.stdout
        w = s["webhooks"]
        lat = s["payment_to_connected_seconds"]
        cut = ", ".join(f"{k}: {v:,}" for k, v in s["disconnected_by_hour"].items()) or "none"
        n = s["notices"]
        wo = s["work_orders"]
        rows = [
            ("meters / bills posted", f"{s['meters']:,} / {s['bills']:,} (due {DUE_DATE})"),
            ("paid before the due date", f"{s['paid_early']:,} (BBPS batches; cashless rebate)"),
            ("disconnection notices", f"{n['disconnection_notice']:,} served {n['served']}; 15 clear days to "
                                      f"{n['lawful_from']} (holiday), then Sunday"),
            ("disconnected (relay opened)", f"{s['disconnected']:,}: {cut}"),
            ("spared by the rules", f"protected {s['spared_protected']:,}, dues below the minimum "
                                    f"{s['spared_small_dues']:,}"),
            ("field work orders", ", ".join(f"{k.replace(':', ' ')} {v:,}" for k, v in wo.items()) or "0"),
            ("webhooks at night", f"{w['sent']:,} sent: {w['accepted']:,} accepted, {w['duplicate']:,} "
                                  f"duplicate (credited once), {w['bad_signature_401']:,} forged (401), "
                                  f"{w['unknown_account_accepted']} unknown account (accepted; suspense)"),
            ("reconnected", f"{s['reconnected']:,} relays closed; {s['awaiting_button']:,} awaiting the "
                            f"consumer's button press (notified)"),
            ("payment -> connected", f"p50 {lat['p50']:.3f} s  p95 {lat['p95']:.3f} s  p99 "
                                     f"{lat['p99']:.3f} s (wall clock: webhook 2xx -> relay closed at the "
                                     f"head-end, polled every 50 ms)"),
            ("ledger", ", ".join(f"{k} {v:,}" for k, v in s["ledger"].items())),
            ("forged payments credited", f"{s['forged_payments_that_reconnected']}"),
            ("mass-disconnect guard", "; ".join(
                f"wave {w['wave_id']} of {w['kept']:,} held, approved by {', '.join(w['approved_by'])}"
                for w in s["guard_waves_approved"]) or "no wave held"),
            ("head-end", _head_end_line(s["head_end"])),
            ("wall time", f"{s['wall_seconds']:.0f} s; shutdown {s['shutdown']}"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = ["", "jodo demo: summary", *(f"  {k:<{width}}  {v}" for k, v in rows)]
        if not s["ok"]:
            lines.append("  SOMETHING IS OFF: not every accepted payment reconnected, or a forged one did")
        print("\n".join(lines), file=out, flush=True)


def _head_end_line(h: dict[str, Any]) -> str:
    if h["kind"] == "cim":
        return f"{h['protocol']}: {h['requests']:,} requests to the CIM head-end"
    if h["kind"] != "dlms":
        return str(h["protocol"])
    return (f"{h['protocol']}: {h['associations']:,} associations, {h['actions']:,} ACTIONs, {h['reads']:,} "
            f"GETs, {h['refused']:,} refused, {h['releases']:,} released")


def _counts(c: NodeClient) -> dict[str, Any]:
    relays: Counter[str] = Counter()
    paid_off = 0
    for group in c.shard:
        status = c.shard_status(group)
        relays.update(dict(status.relay_counts))
        paid_off += status.paid_but_disconnected
    return {"ledger": dict(c.desk_status().counts), "relays": dict(relays), "paid_but_disconnected": paid_off}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _send(commands: Sequence[Any], client: NodeClient) -> list[tuple[int, str]]:
    return client.send(commands)


def _set_clock(t: int, client: NodeClient) -> None:
    client.set_clock(t)
