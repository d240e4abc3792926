"""Actor processes must not hold the starter's listening sockets (a front door, a simulated head-end).

They are forked from the node's starter: without care, every actor keeps those sockets open, so an
outage of the built-in simulator could not refuse connections and a restarted server could not bind.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from domain.supervision import ChildSpec
from jodo.node import Node
from supervisors.processes import listening_sockets

pytestmark = pytest.mark.system

WORKER = "supervisors.testing.CrashableWorker"


def test_actor_processes_do_not_inherit_the_starters_listening_sockets(
    start_node: Callable[..., Node],
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        node = start_node((ChildSpec(id="w1", start=WORKER), ChildSpec(id="w2", start=WORKER)))
        pids = sorted(node.status().pids() | {p.pid for p in node.known_processes()})
        assert len(pids) >= 3
        holders = [s.pid for s in listening_sockets(pids) if s.port == port]
        assert holders == [], f"actor processes {holders} hold the starter's port {port}"
