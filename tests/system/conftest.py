"""System tier fixtures: real nodes (multiprocTCPBase) on fresh loopback ports, and a ledger of every
process they started that fails the run if any of them survives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.facade import RuntimeConfig
from domain.supervision import ChildSpec, SupervisorFlags
from jodo.node import Node, NodeSetup
from jodo.ports import free_port
from supervisors.processes import ProcessRef, is_alive, kill_process

StartNode = Callable[..., Node]


@pytest.fixture
def port_factory() -> Callable[[], int]:
    """Hands out loopback ports nobody listens on right now (a fresh admin port per node)."""
    return free_port


@pytest.fixture(scope="session")
def node_process_ledger() -> Iterator[list[ProcessRef]]:
    """Every process any test's node started; at the end, none may still run."""
    ledger: list[ProcessRef] = []
    yield ledger
    survivors = [ref for ref in ledger if is_alive(ref)]
    for ref in survivors:
        kill_process(ref)  # fail loudly, but do not leave them running either
    assert not survivors, f"processes outlived their node: {[ref.pid for ref in survivors]}"


@pytest.fixture
def start_node(tmp_path: Path, node_process_ledger: list[ProcessRef]) -> Iterator[StartNode]:
    """Start a node on a fresh admin port; at teardown shut it down and check its processes are gone."""
    nodes: list[Node] = []

    def start(
        children: tuple[ChildSpec, ...],
        flags: SupervisorFlags | None = None,
        **config: object,
    ) -> Node:
        runtime = RuntimeConfig(
            admin_port=free_port(), log_file=tmp_path / f"node{len(nodes)}.log", log_level="INFO"
        )
        node = Node(
            NodeSetup(
                runtime=runtime,
                root_flags=flags or SupervisorFlags(intensity=5, period=10.0, backoff_base=0.02),
                children=children,
                seed=7,
                **config,  # type: ignore[arg-type]
            )
        )
        nodes.append(node)
        return node.start()

    yield start
    for node in nodes:
        node.shutdown()
        refs = node.known_processes()
        node_process_ledger.extend(refs)
        alive = [ref.pid for ref in refs if is_alive(ref)]
        assert not alive, f"still running after shutdown: {alive}"
