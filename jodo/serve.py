"""`jodo serve`: one node — simulated head-ends, the actor tree, the front door — until SIGTERM/SIGINT.

    config = load_config()                                  # embedded defaults work with no file
    with Stack(config, StackOptions()).start() as stack:    # simulators, metrics dir, node (tree ready)
        stack.backend                                       # the front door's Backend
    # or, all of it plus the HTTP server and signals:
    exit_code = serve(config, ServeOptions(port_file=...))

Order at start: metrics labels and the multiprocess directory (before any actor process is forked),
built-in simulators for head-ends of kind ``sim`` (bound on their configured host/port), the front
door (``/healthz`` 200, ``/readyz`` 503 while the node starts), then the node on its own thread
(`jodo.backend.ActorBackend`). On SIGTERM or SIGINT: ``/readyz`` and webhooks answer 503, the HTTP
server stops taking connections and answers what is in flight, the node shuts down in order
(`jodo.node.Node.shutdown`), the simulators stop, exit status 0.

Files under the data dir: ``logs/jodo.log`` (this process), ``logs/actors.log`` (the actor system),
``metrics/`` (Prometheus multiprocess files, or ``$RUNTIME_DIRECTORY/metrics`` under systemd), the
SQLite journals and ledger, ``outbox/`` (consumer notices and field work orders as JSON lines), and
``admin.token`` when no admin token is configured and the front door binds only loopback
(`jodo.localtoken`: created mode 0600, found there by the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from actors.deadletters import DATA_DIR_ENV
from actors.facade import RuntimeConfig
from actors.stores import BACKEND_ENV, DSN_ENV
from headend.sim.config import SimConfig
from headend.sim.server import SimulatorThread
from jodo import audit, localtoken, logs
from jodo.backend import ActorBackend
from jodo.config import Config
from jodo.frontdoor import build_app, start_site
from jodo.node import Node, NodeSetup, ShutdownReport
from jodo.tree import HeadEnd, TreeOptions, jodo_tree, root_flags
from jodo.values import IST
from protocols.cluster import KeeperInit
from telemetry import metrics

__all__ = ["ServeOptions", "Stack", "StackOptions", "serve"]

log = logging.getLogger("jodo.serve")
DEAD_LETTER_SINK = "actors.deadletters:stored_sink"


@dataclass(frozen=True, slots=True, kw_only=True)
class StackOptions:
    """What the config file does not say: the simulators' fleet and the clock (the demo's month)."""

    sim: SimConfig = field(default_factory=SimConfig)
    manual_clock: bool = False
    start_at: int = 0
    synchronous: str = "full"  # "normal" for throwaway data (the demo)
    rate_limit: float | None = -1.0  # relay commands/s per head-end; -1: the config's; None: unlimited
    command_timeout: float = 60.0
    ask_timeout: float = 5.0
    metrics_dir: Path | None = None  # default: $RUNTIME_DIRECTORY/metrics, else <data_dir>/metrics
    log_file: Path | None = None  # this process's log; default <data_dir>/logs/jodo.log
    configure_logging: bool = True


class Stack:
    """Simulators + node + `ActorBackend`, started and stopped together. A context manager."""

    def __init__(self, config: Config, options: StackOptions | None = None) -> None:
        self.config = config
        self.options = options or StackOptions()
        self.data_dir = config.node.data_dir.resolve()
        self.simulators: dict[str, SimulatorThread] = {}
        self.backend: ActorBackend | None = None
        self.report: ShutdownReport | None = None
        self.http_port = config.http.port  # the front door's bound port, once it listens
        self.checkpointer: audit.Checkpointer | None = None  # signed audit checkpoints (jodo/audit.py)

    @property
    def log_file(self) -> Path:
        return self.options.log_file or self.data_dir / "logs" / "jodo.log"

    def prepare(self) -> None:
        """Data dir, logging, metrics and simulators: everything but the node."""
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        if self.options.configure_logging:
            logs.configure(self.config.logging.level, self.config.logging.format, self.log_file)
        metrics.configure_labels(gateways=list(self.config.gateways),
                                 head_ends=[h.name for h in self.config.head_ends])
        runtime_dir = os.environ.get("RUNTIME_DIRECTORY")
        default = Path(runtime_dir) / "metrics" if runtime_dir else self.data_dir / "metrics"
        metrics.setup_multiproc_dir(self.options.metrics_dir or default)
        for head_end in self.config.head_ends:
            if head_end.kind == "sim":
                sim = SimulatorThread(self.options.sim, host=head_end.host, port=head_end.port)
                self.simulators[head_end.name] = sim.start()
                log.info("built-in simulator %s on %s:%d (%d meters)", head_end.name, sim.host, sim.port,
                         self.options.sim.meters)
        self.checkpointer = audit.Checkpointer(self.config).start()

    def tree_options(self) -> TreeOptions:
        o = self.options
        head_ends = []
        for h in self.config.head_ends:
            sim = self.simulators.get(h.name)
            rate = h.rate_limit_per_s if o.rate_limit == -1.0 else o.rate_limit
            head_ends.append(HeadEnd(name=h.name, host=sim.host if sim else h.host,
                                     port=sim.port if sim else h.port, rate_limit=rate,
                                     command_timeout=o.command_timeout, dlms=h.dlms_options(),
                                     cim=h.cim_options()))
        return TreeOptions(
            data_dir=str(self.data_dir), head_ends=tuple(head_ends), groups=self.config.shards.groups,
            shards=self.config.shards.logical, policy_text=self.config.policy.text or "",
            manual_clock=o.manual_clock, start_at=o.start_at, synchronous=o.synchronous,
            keeper=self.keeper_init(), guard=self.config.disconnects.policy_json(),
        )

    def keeper_init(self) -> KeeperInit | None:
        c = self.config.cluster
        if not c.enabled:
            return None
        host = c.advertise or self.config.http.host
        return KeeperInit(
            node_id=c.node_id, advertise=host, http_url=f"http://{host}:{self.http_port}",
            groups=self.config.shards.groups, shards=self.config.shards.logical, lease_ttl_s=c.lease_ttl_s,
            renew_every_s=c.renew_every_s, suspect_after_s=c.suspect_after_s,
            head_ends=tuple(h.name for h in self.config.head_ends), max_moves=c.max_moves,
        )

    def node_factory(self) -> Callable[[], Node]:
        runtime = RuntimeConfig(
            ip=self.config.node.bind, admin_port=self.config.node.admin_port,
            log_level=self.config.logging.level, log_file=self.data_dir / "logs" / "actors.log",
        )
        storage = self.config.storage

        def start() -> Node:
            # the tree is built here: in cluster mode it carries the front door's bound port
            setup = NodeSetup(runtime=runtime, root_flags=root_flags(),
                              children=jodo_tree(self.tree_options()), dead_letter_sink=DEAD_LETTER_SINK,
                              ready_timeout=self.config.node.start_timeout_s)
            os.environ[DATA_DIR_ENV] = str(self.data_dir)  # the root's dead-letter sink finds the store
            # where the actors' stores are (they inherit this process's environment when forked)
            os.environ[BACKEND_ENV] = storage.backend
            if storage.backend == "postgresql":
                os.environ[DSN_ENV] = storage.resolved_dsn() or ""
            else:
                os.environ.pop(DSN_ENV, None)
            return Node(setup).start()

        return start

    def make_backend(self) -> ActorBackend:
        self.backend = ActorBackend(
            self.node_factory(), groups=self.config.shards.groups, shards=self.config.shards.logical,
            simulators=self.simulators, ask_timeout=self.options.ask_timeout,
            admin_token=self.config.tokens.admin.reveal() if self.config.tokens.admin else None,
            manual_clock=self.options.manual_clock,
        )
        return self.backend

    def start(self) -> Stack:
        """Prepare, then start the node and wait until its tree is ready."""
        try:
            self.prepare()
            self.make_backend().start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> ShutdownReport | None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        if self.backend is not None:
            self.report = self.backend.close()
        for sim in self.simulators.values():
            sim.stop()
        self.simulators.clear()
        return self.report

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    stack: StackOptions = field(default_factory=StackOptions)
    port_file: Path | None = None  # the front door's bound port is written here once it listens
    say: Callable[[str], None] = field(default=lambda text: print(f"jodo serve: {text}", file=sys.stderr,
                                                                  flush=True))


def serve(config: Config, options: ServeOptions | None = None) -> int:
    """Run a node until SIGTERM/SIGINT. Exit status: 0 after a clean stop, 1 if it could not start."""
    return asyncio.run(_serve(config, options or ServeOptions()))


async def _serve(config: Config, options: ServeOptions) -> int:
    say = options.say
    try:
        config, token_note = localtoken.with_local_admin_token(config)
    except OSError as exc:
        say(f"cannot start: the local admin token: {exc}")
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stack = Stack(config, options.stack)
    started = time.monotonic()
    try:
        stack.prepare()
    except Exception as exc:
        say(f"cannot start: {exc}")
        stack.close()
        return 1
    backend = stack.make_backend()
    say(f"data dir {stack.data_dir}; logs {stack.log_file} and {stack.data_dir / 'logs' / 'actors.log'}")
    if options.stack.manual_clock:
        at = datetime.fromtimestamp(options.stack.start_at, IST).strftime("%Y-%m-%d %H:%M IST")
        say(f"lab clock at {at}: it moves only by `jodo inject clock WHEN` (never use this in production)")
    for name, sim in stack.simulators.items():
        meters = options.stack.sim.meters
        say(f"head-end {name}: built-in simulator on {sim.host}:{sim.port} ({meters} meters)")

    def observe(gateway: str, status: int) -> None:
        metrics.webhook_answered(gateway, status)
        if status >= 400:
            metrics.webhook_rejected(gateway, status)

    app = build_app(config, backend, on_webhook=observe)
    try:
        runner, port = await start_site(app, config.http.host, config.http.port)
    except OSError as exc:
        say(f"cannot listen on {config.http.host}:{config.http.port}: {exc}")
        stack.close()
        return 1
    stack.http_port = port
    if options.port_file is not None:
        tmp = options.port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(options.port_file)  # atomic: a poller never reads half a number
    gateways = ", ".join(config.gateways) or "none configured"
    say(f"front door on http://{config.http.host}:{port} (readyz 503 until the node is up; "
        f"webhook gateways: {gateways})")
    say(token_note)
    code = 0
    try:
        node_up: asyncio.Future[ActorBackend] = loop.run_in_executor(None, backend.start)
        stopping: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
        waiting: list[asyncio.Future[Any]] = [node_up, stopping]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if node_up.done():
            node_up.result()  # raises if the node could not start
            node = backend.node
            count = len(node.live_processes()) if node is not None else 0
            say(f"node ready in {time.monotonic() - started:.1f} s: {count} actor-system processes, "
                f"admin port {config.node.admin_port}; ready for payments")
            await stopping
        stopping.cancel()
        say("stopping: readyz 503, no new payments; answering requests in flight")
    except Exception as exc:
        say(f"node did not start: {exc}")
        code = 1
    finally:
        backend.drain()
        if config.cluster.enabled and backend.node is not None:
            began = time.monotonic()
            left = await loop.run_in_executor(None, backend.hand_over, config.cluster.lease_ttl_s * 3 + 10)
            say(f"handed shard groups over to the other members in {time.monotonic() - began:.1f} s"
                + (f" ({left} still held: they expire within {config.cluster.lease_ttl_s} s)"
                   if left else ""))
        with contextlib.suppress(Exception):
            await runner.cleanup()
        began = time.monotonic()
        report = await loop.run_in_executor(None, stack.close)
        if report is not None:
            say(f"node stopped in {time.monotonic() - began:.1f} s (tree stopped in order: "
                f"{'yes' if report.tree_stopped else 'NO'}; processes killed: {len(report.killed)}; "
                f"left running: {len(report.survivors)})")
            if report.survivors:
                code = 1
    return code
