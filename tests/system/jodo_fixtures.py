"""A whole jodo node for system tests: simulator thread + node tree + client, and polling helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from actors.deadletters import DATA_DIR_ENV
from domain.commands import RegisterMeter
from domain.enums import RelayState
from headend.sim.config import SimConfig
from headend.sim.server import SimulatorThread
from jodo.client import NodeClient
from jodo.node import Node
from jodo.ports import free_port
from jodo.tree import HeadEnd, TreeOptions, jodo_tree, root_flags
from protocols.payments import PaymentReceived

T = TypeVar("T")
HEAD_END = "hes-1"
STORED_SINK = "actors.deadletters:stored_sink"


def eventually(check: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def serial(i: int) -> str:
    return f"MPW{i:08d}"


def account(i: int) -> str:
    return f"N{i:010d}"


def register(n: int, *, relay: RelayState = RelayState.DISCONNECTED, dues: int = 150_000,
             install_year: int = 2022, mode: int = 2) -> list[RegisterMeter]:
    return [
        RegisterMeter(account=account(i), serial=serial(i), head_end=HEAD_END, install_year=install_year,
                      relay_capable=True, control_mode=mode, relay=relay, opening_dues_paise=dues)
        for i in range(n)
    ]


def payment(
    i: int, *, amount: int = 150_000, pid: str | None = None, now: int | None = None
) -> PaymentReceived:
    t = now or int(time.time())
    return PaymentReceived(payment_id=pid or f"pay_{i}", account=account(i), amount_paise=amount,
                           channel="upi", gateway="razorpay", paid_at=t, received_at=t)


@dataclass
class Jodo:
    node: Node
    client: NodeClient
    sim: SimulatorThread
    options: TreeOptions


@contextmanager
def running_jodo(
    start_node: Callable[..., Node], tmp_path: Path, *, meters: int, groups: int = 2,
    sim: SimConfig | None = None, **options: object,
) -> Iterator[Jodo]:
    """A simulator whose first ``meters`` meters start disconnected, and a node wired to it.

    The node starts first and the simulator after it, on a port chosen beforehand: actor processes are
    forked from the node's starter and inherit every descriptor it has open, so a simulator started
    before would have its listening socket held open by every actor (an outage could not refuse
    connections, and the simulator could not listen again after it).
    """
    config = sim or SimConfig(meters=meters, disconnected_fraction=1.0, seed=1)
    port = free_port()
    opts = TreeOptions(
        data_dir=str(tmp_path / "data"), groups=groups, synchronous="normal",
        head_ends=(HeadEnd(name=HEAD_END, host="127.0.0.1", port=port, command_timeout=10.0),),
        **options,  # type: ignore[arg-type]
    )
    previous = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = opts.data_dir  # the root's dead-letter sink finds the store by it
    try:
        node = start_node(jodo_tree(opts), root_flags(), dead_letter_sink=STORED_SINK)
    finally:
        if previous is None:
            os.environ.pop(DATA_DIR_ENV, None)
        else:
            os.environ[DATA_DIR_ENV] = previous
    with SimulatorThread(config, port=port).start() as thread:
        client = NodeClient(node, groups=groups)
        yield Jodo(node=node, client=client, sim=thread, options=opts)
