"""A CIM head-end simulator (aiohttp) that behaves as Connexo's EndDeviceControls service call handler.

`POST /cim/EndDeviceControls` takes a (SOAP-wrapped or bare) `create EndDeviceControls`, answers at
once with a `reply` (OK, or PARTIAL with Error/code + Error/ID for the controls it refuses: unknown
meter), then, per control, after `delay` seconds, posts a `created EndDeviceEvents` to the request's
ReplyAddress with the same CorrelationID (domain.md §2: PROCESSED with "Contactor status" on success,
ERROR with a reason on failure, EXPIRED when scheduledInterval/end passed first). Faults, seeded:
`fail_rate` (ERROR relay_stuck / no_communication), `silent_rate` (never calls back),
`duplicate_rate` (calls back twice), `reply_fail_rate` (whole request FAILED, nothing runs).

A credit update (3.20.22.13, issue 16) is recorded, not run on the relay: ``credits[serial]`` is the
balance in paise its meter now holds and ``credit_log`` every one taken, in order (command id, serial,
paise); its event is 3.20.22.PROCESSED (no contactor), or EXPIRED / ERROR no_communication as above.

`GET /sim/credits` (simulator only) answers ``{"credits": {serial: paise}, "log": [[id, serial, paise]]}``.

`CimSimThread` runs it on 127.0.0.1 in a thread for tests and the bench. The callback carries the
shared token in `X-Jodo-Token` (`token`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from aiohttp import web

from headend.cim.messages import (
    CONTACTOR_OF,
    EVENT_PREFIX_OF,
    TOKEN_HEADER,
    CimEvent,
    CimMessageError,
    EventResult,
    build_events,
    build_reply,
    parse_request,
    soap_wrap,
)
from headend.sim.fleet import Fleet
from protocols.headend import HesAction, HesControlState, HesMeterState

T = TypeVar("T")

__all__ = ["TOKEN_HEADER", "CimSimConfig", "CimSimThread", "build_app"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CimSimConfig:
    meters: int = 1000  # serials MPW00000000 .. (`serial(i)`), as the reference simulator's
    serial_prefix: str = "MPW"
    serial_width: int = 8
    delay: float = 0.01  # reply → callback
    batch_window: float = 0.005  # events due within this window go out in one callback
    fail_rate: float = 0.0
    silent_rate: float = 0.0
    duplicate_rate: float = 0.0
    reply_fail_rate: float = 0.0
    token: str = "sim-token"
    seed: int = 0

    def serial(self, index: int) -> str:
        return f"{self.serial_prefix}{index:0{self.serial_width}d}"


class _Sim:
    def __init__(self, config: CimSimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        # the meters' class-70 state machines (transitions, control modes, the button): the reference
        # simulator's fleet, so both simulators agree on what a meter does
        self.fleet = Fleet(config.meters, prefix=config.serial_prefix, width=config.serial_width,
                           seed=config.seed)
        self.session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.credits: dict[str, int] = {}  # serial → the balance (paise) its last credit update set
        self.credit_log: list[tuple[str, str, int]] = []  # (command id, serial, paise), in arrival order
        self.callbacks_refused = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        try:
            mid, corr, reply_to, commands = parse_request(await request.read())
        except CimMessageError as e:
            return web.Response(status=400, text=str(e))
        self.requests += 1
        cfg, rng, now = self.config, self.rng, time.time()
        if rng.random() < cfg.reply_fail_rate:
            body = build_reply(corr, "FAILED", [("no_communication", None)], now=now, source="hes-sim",
                               message_id=f"{mid}-r")
            return web.Response(body=soap_wrap(body), content_type="text/xml")
        fleet = self.fleet
        unknown = [c.command_id for c in commands if fleet.index(c.meter) is None]
        events = []
        for c in commands:
            index = fleet.index(c.meter)
            if index is None or rng.random() < cfg.silent_rate:
                continue
            prefix = EVENT_PREFIX_OF[c.action]
            if c.expires_at <= now + cfg.delay:
                events.append(CimEvent(c.command_id, c.meter, EventResult.EXPIRED, None, None, prefix))
            elif c.action is HesAction.CREDIT:
                if rng.random() < cfg.fail_rate:
                    events.append(CimEvent(c.command_id, c.meter, EventResult.ERROR, None, "no_communication",
                                           prefix))
                else:
                    assert c.credit_paise is not None  # parse_request refuses a credit update without one
                    self.credits[c.meter] = c.credit_paise
                    self.credit_log.append((c.command_id, c.meter, c.credit_paise))
                    events.append(CimEvent(c.command_id, c.meter, EventResult.PROCESSED, None, None, prefix))
            elif rng.random() < cfg.fail_rate:
                why = rng.choice(("relay_stuck", "no_communication"))
                events.append(CimEvent(c.command_id, c.meter, EventResult.ERROR, None, why))
            else:
                state, error = fleet.apply(index, c.action)
                if error is not None:
                    events.append(CimEvent(c.command_id, c.meter, EventResult.ERROR, None, error))
                else:
                    events.append(CimEvent(c.command_id, c.meter, EventResult.PROCESSED,
                                           CONTACTOR_OF[HesControlState(state)], None))
            if rng.random() < cfg.duplicate_rate:
                events.append(events[-1])
        result = "PARTIAL" if unknown else "OK"
        body = build_reply(corr, result, [("unknown_meter", cid) for cid in unknown], now=now,
                           source="hes-sim", message_id=f"{mid}-r")
        if events:
            task = asyncio.get_running_loop().create_task(self.call_back(reply_to, corr, mid, events))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return web.Response(body=soap_wrap(body), content_type="text/xml")

    async def credits_view(self, request: web.Request) -> web.Response:
        """The credit updates taken (simulator only, like the reference simulator's inspection): each
        meter's balance in paise and every update in arrival order."""
        return web.json_response({"credits": self.credits, "log": self.credit_log})

    async def call_back(self, url: str, corr: str, mid: str, events: list[CimEvent]) -> None:
        await asyncio.sleep(self.config.delay)
        assert self.session is not None
        body = build_events(corr, events, now=time.time(), source="hes-sim", message_id=f"{mid}-e")
        try:
            async with self.session.post(url, data=soap_wrap(body), headers={
                    TOKEN_HEADER: self.config.token, "Content-Type": "text/xml"}) as resp:
                if resp.status >= 400:
                    self.callbacks_refused += 1
        except (aiohttp.ClientError, OSError):
            self.callbacks_refused += 1


def build_app(config: CimSimConfig) -> tuple[web.Application, _Sim]:
    sim = _Sim(config)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/cim/EndDeviceControls", sim.handle)
    app.router.add_get("/sim/credits", sim.credits_view)  # simulator only: what the meters were told

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        sim.session = aiohttp.ClientSession()
        yield
        for t in list(sim.tasks):
            t.cancel()
        await sim.session.close()

    app.cleanup_ctx.append(session)
    return app, sim


class CimSimThread:
    """The simulator on 127.0.0.1 (port 0 = any free one) in its own thread and event loop."""

    def __init__(self, config: CimSimConfig, port: int = 0, host: str = "127.0.0.1") -> None:
        self.config = config
        self.host = host
        self.app, self.sim = build_app(config)
        self._port = port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self.app, access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, name="cim-sim", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/cim/EndDeviceControls"

    def start(self) -> CimSimThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def call(self, fn: Callable[[_Sim], T], timeout: float = 10.0) -> T:
        """Run fn(simulator) on the simulator's loop (where its handlers change the fleet) and return
        what it returns: the same surface as `headend.sim.server.SimulatorThread.call`."""
        async def run() -> T:
            return fn(self.sim)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def relay_states(self, serials: list[str]) -> list[HesMeterState]:
        return self.call(lambda s: [s.fleet.state(x) for x in serials])

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def run_cim(args: argparse.Namespace) -> int:
    """`jodo hes-sim --protocol cim`: serve until SIGINT/SIGTERM."""
    token = args.cim_token_file.read_text().strip() if args.cim_token_file else "sim-token"
    config = CimSimConfig(meters=args.meters, delay=args.cim_delay, fail_rate=args.cim_fail_rate,
                          silent_rate=args.cim_silent_rate, duplicate_rate=args.cim_duplicate_rate,
                          reply_fail_rate=args.cim_reply_fail_rate, token=token, seed=args.seed)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before "listening": a caller may stop us right after it
        signal.signal(sig, lambda *_: stop.set())
    sim = CimSimThread(config, host=args.host, port=args.port)
    try:
        sim.start()
    except OSError as e:
        print(f"hes-sim: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    if args.port_file is not None:  # before "listening": a caller reads the file once it sees that line
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(f"{sim.port}\n")
        tmp.replace(args.port_file)
    print(f"hes-sim (CIM, IEC 61968-9) listening on {sim.url} ({args.meters} meters)", flush=True)
    stop.wait()
    sim.stop()
    print(f"hes-sim stopped: {sim.sim.requests} requests", flush=True)
    return 0
