"""`CimHttpDriver`: the CIM adapter as a `HeadEndDriver` — `CimCore`, an HTTP client, a callback listener.

Where the callback endpoint lives: in the gateway process, owned by this driver. The driver runs one
asyncio loop in a thread; on it an aiohttp client POSTs `create EndDeviceControls` to the head-end
and a small aiohttp listener on `callback_host:callback_port` (loopback or a configured interface)
takes the head-end's `created EndDeviceEvents`. Keeping it here rather than in the front door means
the events reach the one place that holds the correlation state (the core) without another hop, a
forwarded message or shared state between processes; the gateway's actor sees only the
`HeadEndDriver` surface. The loop hands finished outcomes over through a socketpair whose read end
is `fileno()` (what the actor watches with `ThespianWatch`).

The callback is authenticated by a shared token in `X-Jodo-Token` (constant-time compare, refused
with 401 and counted). A malformed body is refused with 400, an event the core does not know
(unknown / duplicate / late) is acknowledged with 200 and counted (the head-end must not resend it).
All core calls run on the loop thread, so the core needs no lock.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from headend.cim.core import CimCore, CimCoreConfig, CimRequest
from headend.cim.messages import TOKEN_HEADER, CimMessageError, parse_events, parse_reply, soap_wrap
from headend.outcome import HeadEndOutcome
from protocols.headend import HesCommand

__all__ = ["CimHttpDriver", "CimSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CimSettings:
    url: str  # the head-end's EndDeviceControls endpoint
    callback_host: str = "127.0.0.1"
    callback_port: int = 0  # 0 = any free port (tests)
    callback_path: str = "/cim/events"
    callback_url: str | None = None  # what the head-end is told (ReplyAddress); default from host/port
    token: str = ""  # shared secret for the callback (from env/file; never logged)
    request_timeout: float = 10.0
    max_concurrent: int = 16  # requests in flight
    core: CimCoreConfig = dataclasses.field(default_factory=CimCoreConfig)

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"CimSettings(url={self.url!r}, callback={self.callback_host}:{self.callback_port})"


class CimHttpDriver:
    connecting = False

    def __init__(self, settings: CimSettings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._rx, self._tx = socket.socketpair()
        self._rx.setblocking(False)
        self._tx.setblocking(False)
        self._done: collections.deque[HeadEndOutcome] = collections.deque()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None
        self.core: CimCore | None = None
        self.callback_port = 0
        self._thread = threading.Thread(target=self._loop.run_forever, name="cim-driver", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        s = self.settings
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(s.callback_path, self._on_callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, s.callback_host, s.callback_port).start()
        self.callback_port = self._runner.addresses[0][1]
        url = s.callback_url or f"http://{s.callback_host}:{self.callback_port}{s.callback_path}"
        self.core = CimCore(dataclasses.replace(s.core, reply_address=url), token=s.token)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.request_timeout))
        self._sem = asyncio.Semaphore(s.max_concurrent)
        self._loop.call_later(0.05, self._tick)

    # --- the HeadEndDriver surface (called from the actor's thread) ----------------------------------

    def fileno(self) -> int | None:
        return self._rx.fileno()

    def submit(self, commands: Iterable[HesCommand]) -> list[HeadEndOutcome]:
        batch = list(commands)
        self._loop.call_soon_threadsafe(self._send, batch)
        return self._drain()

    def on_readable(self) -> list[HeadEndOutcome]:
        return self._drain()

    def on_tick(self) -> list[HeadEndOutcome]:
        return self._drain()

    def wants_write(self) -> bool:
        return False

    def on_writable(self) -> list[HeadEndOutcome]:
        return self._drain()

    def take_events(self) -> list[tuple[str, int]]:
        core = self.core
        if core is None:
            return []
        return asyncio.run_coroutine_threadsafe(self._take(core), self._loop).result(5)

    @staticmethod
    async def _take(core: CimCore) -> list[tuple[str, int]]:
        return core.take_events()

    def next_tick_in(self, poll_io: bool = True) -> float | None:
        return 0.5

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._rx.close()
        self._tx.close()

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _drain(self) -> list[HeadEndOutcome]:
        try:
            while self._rx.recv(4096):
                pass
        except BlockingIOError:
            pass
        out = []
        done = self._done
        while done:
            out.append(done.popleft())
        return out

    # --- on the loop thread --------------------------------------------------------------------------

    def _emit(self, outcomes: list[HeadEndOutcome]) -> None:
        if outcomes:
            self._done.extend(outcomes)
            try:
                self._tx.send(b"!")
            except BlockingIOError:
                pass  # already readable

    def _send(self, commands: list[HesCommand]) -> None:
        assert self.core is not None
        requests, outcomes = self.core.prepare(commands, time.time())
        self._emit(outcomes)
        for r in requests:
            self._loop.create_task(self._post(r))

    async def _post(self, r: CimRequest) -> None:
        assert self.core is not None and self._session is not None and self._sem is not None
        core, sent, status = self.core, False, None
        async with self._sem:
            try:
                async with self._session.post(self.settings.url, data=soap_wrap(r.body),
                                              headers={"Content-Type": "text/xml"}) as resp:
                    sent = True
                    body = await resp.read()
                    if resp.status == 200:
                        self._emit(core.on_reply(r.correlation_id, parse_reply(body), time.time()))
                        return
                    status = resp.status
            except aiohttp.ClientConnectorError:
                sent = False
            except (TimeoutError, aiohttp.ClientError, OSError, CimMessageError):
                sent = True
        self._emit(core.on_transport_error(r.correlation_id, sent, status, time.time()))

    async def _on_callback(self, request: web.Request) -> web.Response:
        assert self.core is not None
        if not self.core.authentic(request.headers.get(TOKEN_HEADER)):
            return web.Response(status=401, text="bad or missing token")
        try:
            message = parse_events(await request.read())
        except CimMessageError as e:
            self.core.stats.refused_malformed += 1
            return web.Response(status=400, text=str(e))
        outcomes, refused = self.core.on_events(message, time.time())
        self._emit(outcomes)
        return web.Response(text=f"ok; {len(outcomes)} ended, {refused} refused")

    def _tick(self) -> None:
        assert self.core is not None
        self._emit(self.core.on_tick(time.time()))
        self._loop.call_later(0.05, self._tick)
