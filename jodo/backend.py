"""`ActorBackend`: the front door's `Backend` over a running node, through one thread that owns Thespian.

    backend = ActorBackend(lambda: Node(setup).start(), groups=2).start()   # node up, tree ready
    app = build_app(config, backend)
    ...
    backend.drain()          # readyz 503, webhooks 503 (stop intake)
    report = backend.close() # the node's shutdown, on the same thread that started it

Threading. A Thespian endpoint must not be shared between threads and its ``ask`` blocks, so the
event loop never calls it: every request becomes a job on a queue, run by one worker thread that
starts the node, owns its `NodeClient` and finally shuts it down; results come back through
``concurrent.futures.Future`` objects the loop awaits (`asyncio.wrap_future`). A job whose caller
gave up (its future cancelled) before it started is skipped. Payment batches waiting on the queue
are merged into one desk request (group commit across HTTP requests), each caller getting its own
slice of the per-item results. Between jobs, at most every ``health_every_s``, the worker asks the
tree for its status: `ActorBackend.ready` follows it (False while a child restarts or recovers),
and the client re-learns addresses after a restart.

"unmatched" is never answered here: the desk cannot know at intake that no meter has the account
(the shard tells it later and the payment moves to suspense), so such a payment is "accepted".
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from actors.facade import ActorRuntimeError
from domain.commands import MeterCommand
from headend.sim.server import SimulatorThread
from jodo.client import NodeClient
from jodo.client import Saturated as DeskFull
from jodo.errors import RequestRefused
from jodo.forward import Forwarder, merge_rejections
from jodo.frontdoor.backend import Saturated
from jodo.frontdoor.views import event_view, meter_view, pairs, plain, trace_view, tree_view
from jodo.node import Node, ShutdownReport, TreeStatus
from protocols import codec
from protocols.payments import PaymentItemResult, PaymentReceived
from protocols.runtime import CrashActor
from telemetry import metrics

__all__ = ["FAULT_KINDS", "ActorBackend"]

log = logging.getLogger("jodo.backend")
T = TypeVar("T")
FAULT_KINDS = ("crash", "outage")
METER_COMMANDS: tuple[type[Any], ...] = typing.get_args(MeterCommand)
_TRACE_HISTORY = 200  # journal events searched for a payment's hops


#: How long /readyz waits for a crashed child to run again before the tree alone decides.
_RESTART_WAIT_S = 30.0


@dataclass(slots=True)
class _Job:
    kind: str  # "pay" jobs may be merged; anything else runs alone, in order
    run: Callable[[NodeClient], Any]
    future: concurrent.futures.Future[Any]
    payments: Sequence[PaymentReceived] = ()
    timeout: float | None = None  # the client's ask timeout for this job (None: the default)


@dataclass(slots=True)
class _Counters:
    jobs: int = 0
    payment_requests: int = 0
    desk_batches: int = 0
    largest_desk_batch: int = 0
    failures: int = 0
    health_checks: int = 0
    refreshes: int = 0


class ActorBackend:
    """The node behind the front door. `start` it, hand it to `jodo.frontdoor.build_app`, `close` it."""

    def __init__(
        self,
        start_node: Callable[[], Node],
        *,
        groups: int,
        shards: int = 256,
        simulators: Mapping[str, SimulatorThread] | None = None,
        ask_timeout: float = 5.0,
        health_every_s: float = 1.0,
        max_merged_items: int = 10_000,
        admin_token: str | None = None,
        manual_clock: bool = False,
    ) -> None:
        self._start_node = start_node
        self.manual_clock = manual_clock  # a lab node: its clock moves only by `set_clock`
        self.groups = groups
        self.shards = shards
        self.simulators = dict(simulators or {})
        self.ask_timeout = ask_timeout
        self.health_every_s = health_every_s
        self.max_merged_items = max_merged_items
        self.counters = _Counters()
        self.forwarder = Forwarder(admin_token)  # cluster: meters another node serves
        self.report: ShutdownReport | None = None
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._ready = False
        self._draining = False
        self._stale = False
        # an injected crash: (child id, its pid then, give up waiting at): not ready until that child
        # runs again under another pid, whatever a health check between crash and restart saw
        self._restarting: tuple[str, int | None, float] | None = None
        self._node: Node | None = None
        self._thread: threading.Thread | None = None
        self._last_health = 0.0

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 180.0) -> ActorBackend:
        """Start the worker thread, which starts the node; return once the tree is ready.

        Raises what the node's start raised (`jodo.node.NodeStartError`), or TimeoutError.
        """
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(started,), name="jodo-actors", daemon=True)
        self._thread.start()
        try:
            started.result(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def drain(self) -> None:
        """Stop intake: `ready` is False from now on (readyz and webhooks answer 503)."""
        self._draining = True

    def hand_over(self, timeout: float = 20.0) -> int | None:
        """Cluster: drain this node (its groups move to the other members by hand-over: stop,
        flush, release, acquire) and wait until it holds none. Returns how many groups it still
        holds at the deadline, or None on a single node. Call after `drain`, before `close`."""
        try:
            body = self.run(lambda client: client.set_draining(True), timeout=5)
        except Exception as exc:
            log.warning("hand-over: could not drain: %s", exc)
            return -1
        if body is None:
            return None
        deadline = time.monotonic() + timeout
        while True:
            held = len(body.get("held") or {}) + len(body.get("releasing") or [])  # type: ignore[arg-type]
            if held == 0 or time.monotonic() > deadline:
                return held
            time.sleep(0.05)
            try:
                body = self.run(lambda client: client.cluster_status() or {}, timeout=5)
            except Exception as exc:
                log.warning("hand-over: no status: %s", exc)
                return -1

    def close(self, timeout: float = 120.0) -> ShutdownReport | None:
        """Run what is queued, shut the node down (on the worker thread) and join it."""
        self._draining = True
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the actor thread did not finish within %.0f s", timeout)
            self._thread = None
        return self.report

    @property
    def node(self) -> Node | None:
        return self._node

    # ------------------------------------------------------------ jobs

    def submit(
        self, run: Callable[[NodeClient], T], *, timeout: float | None = None
    ) -> concurrent.futures.Future[T]:
        """Queue ``run(client)`` for the worker thread; its result (or exception) lands in the future."""
        return self._put(_Job("call", run, concurrent.futures.Future(), timeout=timeout))

    async def call(self, run: Callable[[NodeClient], T], *, timeout: float | None = None) -> T:
        """``run(client)`` on the worker thread, awaited from the event loop."""
        return await asyncio.wrap_future(self.submit(run, timeout=timeout))

    def run(self, run: Callable[[NodeClient], T], *, timeout: float | None = None) -> T:
        """``run(client)`` on the worker thread, from any other thread (blocks; never on the loop)."""
        wait = None if timeout is None else timeout + self.ask_timeout
        return self.submit(run, timeout=timeout).result(wait)

    def _put(self, job: _Job) -> concurrent.futures.Future[Any]:
        with self._cond:
            if self._stop:
                job.future.set_exception(RequestRefused(503, "unavailable", "the node is shutting down"))
                return job.future
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def _main(self, started: concurrent.futures.Future[None]) -> None:
        try:
            node = self._start_node()
            self._node = node
            client = NodeClient(node, groups=self.groups, shards=self.shards, timeout=self.ask_timeout)
        except BaseException as exc:
            started.set_exception(exc)
            if self._node is not None:
                self.report = self._node.shutdown()
            return
        self._ready = True
        self._last_health = time.monotonic()
        started.set_result(None)
        try:
            self._serve(client)
        finally:
            self._ready = False
            self._fail_queued()
            try:
                self.report = node.shutdown()
            except Exception:
                log.exception("node shutdown failed")

    def _serve(self, client: NodeClient) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stop:
                    every = self.health_every_s if self._restarting is None else min(self.health_every_s, 0.1)
                    wait = self._last_health + every - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if not self._jobs and self._stop:
                    return
                jobs = self._take() if self._jobs else []
            if jobs and jobs[0].kind == "pay":
                self._pay(client, jobs)
            elif jobs:
                self._run(client, jobs[0])
            every = self.health_every_s if self._restarting is None else min(self.health_every_s, 0.1)
            if self._stale or time.monotonic() - self._last_health >= every:
                self._health(client)

    def _take(self) -> list[_Job]:
        """The next job, or every queued payment job (up to the merge limit) if the next one pays."""
        first = self._jobs.popleft()
        if first.kind != "pay":
            return [first]
        taken, rest, items = [first], collections.deque[_Job](), len(first.payments)
        while self._jobs:
            job = self._jobs.popleft()
            if job.kind == "pay" and items + len(job.payments) <= self.max_merged_items:
                taken.append(job)
                items += len(job.payments)
            else:
                rest.append(job)
        self._jobs = rest
        return taken

    def _run(self, client: NodeClient, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        self.counters.jobs += 1
        client.timeout = job.timeout or self.ask_timeout
        try:
            job.future.set_result(job.run(client))
        except BaseException as exc:
            self._failed(exc)
            job.future.set_exception(exc)
        finally:
            client.timeout = self.ask_timeout

    def _pay(self, client: NodeClient, jobs: list[_Job]) -> None:
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        payments = [p for job in live for p in job.payments]
        self.counters.payment_requests += len(live)
        self.counters.desk_batches += 1
        self.counters.largest_desk_batch = max(self.counters.largest_desk_batch, len(payments))
        try:
            outcome = client.pay(payments)
        except BaseException as exc:
            self._failed(exc)
            for job in live:
                job.future.set_exception(exc)
            return
        if isinstance(outcome, DeskFull):
            for job in live:
                job.future.set_result(Saturated(outcome.retry_after_s, "the payment desk is saturated"))
            return
        by_index = {r.index: r for r in outcome}
        offset = 0
        for job in live:
            mine = [by_index.get(offset + i) for i in range(len(job.payments))]
            offset += len(job.payments)
            job.future.set_result(
                [dataclasses.replace(r, index=i) for i, r in enumerate(mine) if r is not None]
            )

    def _failed(self, exc: BaseException) -> None:
        self.counters.failures += 1
        if isinstance(exc, ActorRuntimeError | KeyError | AssertionError):
            self._stale = True  # an actor may have restarted: look its address up again

    def _health(self, client: NodeClient) -> None:
        self._last_health = time.monotonic()
        self.counters.health_checks += 1
        try:
            tree = client.node.status()
        except Exception as exc:
            log.warning("tree status failed: %s", exc)
            self._ready = False
            return
        if self._stale or _addresses_moved(client, tree):
            client.refresh(tree)
            self.counters.refreshes += 1
            self._stale = False
        self._ready = tree.ready and not self._still_restarting(tree)

    def _still_restarting(self, tree: Any) -> bool:
        """Is the child of an injected crash not yet running again under a new pid (for at most
        `_RESTART_WAIT_S`, after which the tree's own readiness decides)?"""
        if self._restarting is None:
            return False
        child_id, old_pid, give_up_at = self._restarting
        for view in tree.supervisors():
            for child in view.status.children:
                if child.id == child_id and child.address is not None and child.pid != old_pid:
                    self._restarting = None
                    return False
        if time.monotonic() >= give_up_at:
            log.warning("%s did not run again within %g s of an injected crash", child_id, _RESTART_WAIT_S)
            self._restarting = None
            return False
        return True

    def _fail_queued(self) -> None:
        with self._cond:
            jobs, self._jobs = list(self._jobs), collections.deque()
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(RequestRefused(503, "unavailable", "the node is shutting down"))

    # ------------------------------------------------------------ Backend

    def ready(self) -> bool:
        return self._ready and not self._draining

    async def submit_payments(
        self, payments: Sequence[PaymentReceived]
    ) -> Sequence[PaymentItemResult] | Saturated:
        future = self._put(_Job("pay", _never, concurrent.futures.Future(), payments=list(payments)))
        result: Sequence[PaymentItemResult] | Saturated = await asyncio.wrap_future(future)
        return result

    async def meter(self, account: str) -> Mapping[str, Any] | None:
        def run(client: NodeClient) -> Mapping[str, Any] | bool | None:
            if not client.serves(account):
                return False
            m = client.meter(account)
            return None if m is None else meter_view(m)

        found = await self.call(run)
        if found is False:
            return await self._forward(account, "GET", f"/v1/meters/{account}")  # type: ignore[no-any-return]
        return found  # type: ignore[return-value]

    async def meter_history(self, account: str, *, limit: int) -> Sequence[Mapping[str, Any]] | None:
        def run(client: NodeClient) -> Sequence[Mapping[str, Any]] | bool | None:
            if not client.serves(account):
                return False
            if client.meter(account) is None:
                return None
            return [event_view(e) for e in client.history(account, limit)]

        found = await self.call(run)
        if found is False:
            doc = await self._forward(account, "GET", f"/v1/meters/{account}/history?limit={limit}")
            return None if doc is None else list(doc.get("events", []))
        return found  # type: ignore[return-value]

    async def _forward(self, account: str, method: str, path: str, body: bytes | None = None,
                       content_type: str = "application/json") -> Any:
        view = await self.cluster()
        return await self.forwarder.request(view, _group(self, account), method, path, body=body,
                                            content_type=content_type)

    async def payment_trace(self, payment_id: str) -> Mapping[str, Any] | None:
        def run(client: NodeClient) -> Mapping[str, Any] | None:
            record = client.trace(payment_id)
            if record is None:
                return None
            account = str(record.get("account", ""))
            history = client.history(account, _TRACE_HISTORY) if account else []
            return trace_view(record, history)

        return await self.call(run)

    async def inject(self, message: Any) -> Mapping[str, Any]:
        if isinstance(message, PaymentReceived):
            outcome = await self.submit_payments([message])
            if isinstance(outcome, Saturated):
                raise RequestRefused(503, "unavailable", outcome.reason)
            result = outcome[0]
            return {"result": str(result.code), "reason": result.reason, "routed_to": "desk"}
        if isinstance(message, METER_COMMANDS):
            rejected = await self.send_commands([message])
            routed = f"shard-{_group(self, message.account)}"
            if rejected:
                return {"result": "rejected", "reason": rejected[0][1], "routed_to": routed}
            return {"result": "delivered", "routed_to": routed}
        names = ", ".join(["PaymentReceived", *(c.__name__ for c in METER_COMMANDS)])
        raise RequestRefused(
            409, "not_injectable", f"{type(message).__name__} cannot be injected; injectable: {names}"
        )

    async def send_commands(self, commands: Sequence[Any]) -> Sequence[tuple[int, str]]:
        """Meter commands to their shards, after each shard's journal commit; (index, reason) refusals."""
        for i, command in enumerate(commands):
            if not isinstance(command, METER_COMMANDS):
                raise RequestRefused(422, "not_a_meter_command", f"[{i}]: {type(command).__name__}")
        # a big registration batch takes seconds to journal: allow it more than a query
        timeout = max(self.ask_timeout, 30.0 + len(commands) / 1000)
        rejected, unserved = await self.call(lambda client: client.send_split(commands), timeout=timeout)
        if not unserved:
            return rejected
        # cluster: the commands of groups other nodes serve go to those nodes, one batch per group
        view = await self.cluster()
        remote: dict[int, tuple[Sequence[int], Any]] = {}
        for group, indexes in unserved.items():
            body = codec.encode_many(commands[i] for i in indexes)
            try:
                answer = await self.forwarder.request(view, group, "POST", "/v1/admin/meter-commands",
                                                      body=body, content_type="application/msgpack")
            except RequestRefused as exc:
                rejected = [*rejected, *((i, f"{exc.code}: {exc.detail}") for i in indexes)]
                continue
            remote[group] = (indexes, answer)
        return merge_rejections(rejected, remote)

    async def fault(self, kind: str, target: str, on: bool) -> Mapping[str, Any]:
        if kind == "crash":
            if not on:
                raise RequestRefused(
                    400, "bad_fault", "a crash cannot be switched off; send on: true", where="body.on"
                )
            return await self.call(lambda client: self._crash(client, target))
        if kind == "outage":
            sim = self.simulators.get(target)
            if sim is None:
                raise RequestRefused(
                    404, "not_found",
                    f"no built-in simulated head-end {target!r} (have: {sorted(self.simulators) or 'none'})",
                )
            await asyncio.get_running_loop().run_in_executor(None, sim.begin_outage if on else sim.end_outage)
            return {"kind": kind, "target": target, "on": on}
        raise RequestRefused(
            400, "unknown_fault", f"fault kind must be one of {list(FAULT_KINDS)}", where="body.kind"
        )

    def _crash(self, client: NodeClient, target: str) -> Mapping[str, Any]:
        tree = client.node.status()
        child_id = _child_id(target)
        for view in tree.supervisors():
            for child in view.status.children:
                if child.id == child_id and child.address is not None:
                    client.runtime.tell(child.address, CrashActor(reason=f"injected by operator ({target})"))
                    self._restarting = (child_id, child.pid, time.monotonic() + _RESTART_WAIT_S)
                    self._ready = False  # /readyz answers 503 until the child runs again
                    self._stale = True
                    return {"kind": "crash", "target": child_id, "pid": child.pid, "on": True}
        known = sorted(c.id for v in tree.supervisors() for c in v.status.children)
        raise RequestRefused(
            404, "not_found", f"no running actor {child_id!r}; known: {known}", where="body.target"
        )

    async def status(self) -> Mapping[str, Any]:
        return await self.call(self._status)

    async def set_clock(self, to: int | None = None, *, by: int | None = None) -> Mapping[str, Any]:
        """A lab node's clock (``jodo serve --lab-clock``): to ``to`` (unix seconds), or forward ``by``
        seconds; every shard runs what came due (notices, disconnections, retries) before this answers.
        Refused on a node that runs the wall clock, and backwards (a journal never goes back in time)."""
        if not self.manual_clock:
            raise RequestRefused(409, "wall_clock", "this node runs the wall clock; only a node started "
                                 "with `jodo serve --lab-clock WHEN` can be moved", where="node")

        def run(client: NodeClient) -> Mapping[str, Any]:
            was = max(client.shard_status(group).now for group in range(self.groups))
            now = was + (by or 0) if to is None else to
            if now < was:
                raise RequestRefused(409, "clock_backwards", f"the clock is at {was}; {now} is earlier "
                                     "and a lab clock only moves forward", where="body")
            client.set_clock(now)
            # built-in simulators in lab mode report the days that ended (after the shards moved:
            # a read is never dated after the meter's today)
            days = {name: sim.lab_clock(was, now) for name, sim in self.simulators.items()}
            return {"clock": now, "was": was, "moved_s": now - was,
                    **({"read_days": days} if any(days.values()) else {})}

        return await self.call(run, timeout=120.0)

    async def cluster(self, *, drain: str | None = None, draining: bool = True) -> Mapping[str, Any]:
        def run(client: NodeClient) -> Mapping[str, Any]:
            if client.keeper is None:
                client.refresh()
            body = client.cluster_status() if drain is None else client.set_draining(draining, drain)
            if body is None:
                raise RequestRefused(409, "not_a_cluster",
                                     "this node is not a cluster member ([cluster] enabled = false)")
            view: Mapping[str, Any] = plain(body)
            return view

        return await self.call(run)

    def _status(self, client: NodeClient) -> Mapping[str, Any]:
        tree = client.node.status()
        if _addresses_moved(client, tree):
            client.refresh(tree)
        client.timeout = min(self.ask_timeout, 1.0)  # one restarting actor must not hide the rest
        shards: list[dict[str, Any]] = []
        for group in range(self.groups):
            try:
                s = client.shard_status(group)
            except (ActorRuntimeError, KeyError) as exc:
                shards.append({"group": group, "error": f"no answer ({type(exc).__name__}): restarting?"})
                continue
            shards.append({
                "group": s.group, "pid": s.pid, "meters": s.meters, "relay": pairs(s.relay_counts),
                "paid_but_disconnected": s.paid_but_disconnected, "pending_commands": s.pending_commands,
                "clock": s.now, "recovery_seconds": round(s.recovery_seconds, 3),
                "serving": s.serving, "epoch": s.epoch,
            })
        desk: dict[str, Any]
        try:
            d = client.desk_status()
            desk = {"pid": d.pid, "queued": d.queued, "saturated": d.saturated, "payments": pairs(d.counts),
                    "in_flight_batches": {str(g): n for g, n in d.in_flight_batches}}
        except (ActorRuntimeError, AssertionError) as exc:
            desk = {"error": f"no answer ({type(exc).__name__}): restarting?"}
        head_ends = []
        for name in sorted(client.gateway):
            item: dict[str, Any] = {"head_end": name}
            try:
                g = client.gateway_status(name)
                item |= {"pid": g.pid, "breaker": g.breaker, "pending": g.pending, "in_flight": g.in_flight,
                         "outcomes": pairs(g.outcomes)}
            except (ActorRuntimeError, KeyError) as exc:
                item["error"] = f"no answer ({type(exc).__name__}): restarting?"
            sim = self.simulators.get(name)
            if sim is not None:
                item["simulator"] = plain(sim.stats())
            head_ends.append(item)
        restarts = sum(c.restarts for v in tree.supervisors() for c in v.status.children)
        cluster: dict[str, Any] | None = None
        if client.keeper is not None:
            try:
                cluster = plain(client.cluster_status())
            except ActorRuntimeError as exc:
                cluster = {"error": f"no answer ({type(exc).__name__}): restarting?"}
        return {
            "ready": self.ready(), "tree_ready": tree.ready, "draining": self._draining,
            "pid": os.getpid(), "restarts": restarts, "tree": tree_view(tree.root),
            "shards": shards, "desk": desk, "head_ends": head_ends,
            "backend": plain(self.counters), **({"cluster": cluster} if cluster is not None else {}),
        }

    def metrics(self) -> tuple[bytes, str]:
        return metrics.render(), metrics.CONTENT_TYPE


def _never(client: NodeClient) -> None:
    raise AssertionError("payment jobs are run by the merger")


def _group(backend: ActorBackend, account: str) -> int:
    from domain.sharding import group_of, logical_shard

    return group_of(logical_shard(account, backend.shards), backend.groups)


def _child_id(target: str) -> str:
    """``desk``, ``shard-0`` / ``shard:0`` / ``shard/0``, ``gateway-hes-sim`` / ``gateway:hes-sim``."""
    for sep in (":", "/"):
        kind, found, rest = target.partition(sep)
        if found and kind in ("shard", "gateway"):
            return f"{kind}-{rest}"
    return target


def _addresses_moved(client: NodeClient, tree: TreeStatus) -> bool:
    """Whether the tree's desk, shard and gateway addresses differ from the client's (moved, or now
    known where the client has none)."""
    shards: dict[int, Any] = {}
    gateways: dict[str, Any] = {}
    desk: Any = None
    for view in tree.supervisors():
        for child in view.status.children:
            if child.address is None:
                continue
            if child.id == "desk":
                desk = child.address
            elif child.id.startswith("shard-"):
                shards[int(child.id.removeprefix("shard-"))] = child.address
            elif child.id.startswith("gateway-"):
                gateways[child.id.removeprefix("gateway-")] = child.address
    return desk != client.desk or shards != client.shard or gateways != client.gateway
