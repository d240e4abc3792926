"""A node on multiprocTCPBase: real processes, real ports, real SIGKILLs."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable

import pytest

from actors.facade import RuntimeConfig
from domain.supervision import ChildSpec, ChildType, Strategy, SupervisorFlags
from jodo.node import Node, NodeSetup, NodeStartError, TreeStatus
from protocols.control import ChildState, ChildStatus, SupervisorInit
from supervisors.processes import ProcessRef, is_alive, process_group_members, process_ref
from supervisors.testing import (
    SampleBlock,
    SamplePing,
    SamplePong,
    SampleRecorderQuery,
    SampleRecorderReport,
)

pytestmark = pytest.mark.system

WORKER = "supervisors.testing.CrashableWorker"
RECORDER = "supervisors.testing.AddressRecorder"
SUPERVISOR = "supervisors.supervisor.Supervisor"
StartNode = Callable[..., Node]  # the start_node fixture (tests/system/conftest.py)


def _poll(node: Node, done: Callable[[TreeStatus], bool], timeout: float = 10.0) -> TreeStatus:
    deadline = time.monotonic() + timeout
    while True:
        tree = node.status()
        if done(tree):
            return tree
        assert time.monotonic() < deadline, f"condition not met in {timeout} s: {tree}"
        time.sleep(0.01)


def _replaced(path: str, old: ChildStatus) -> Callable[[TreeStatus], bool]:
    def check(tree: TreeStatus) -> bool:
        now = tree.child(path)
        return now.state is ChildState.RUNNING and now.pid is not None and now.pid != old.pid

    return check


def _kill(pid: int | None) -> ProcessRef:
    """SIGKILL an actor process and return once the kernel has it dead (a zombie at most)."""
    assert pid is not None and pid != os.getpid()
    ref = process_ref(pid)
    assert ref is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while is_alive(ref):
        assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
        time.sleep(0.001)
    return ref


def test_a_sigkilled_child_comes_back_with_a_new_pid_and_address_that_subscribers_learn(
    start_node: StartNode, record_property: Callable[[str, object], None]
) -> None:
    node = start_node((ChildSpec(id="rec", start=RECORDER), ChildSpec(id="w", start=WORKER)))
    old = node.status().child("w")
    assert old.pid not in (None, os.getpid())

    began = time.monotonic()
    killed = _kill(old.pid)
    tree = _poll(node, _replaced("w", old))
    record_property("restart_latency_s", round(time.monotonic() - began, 4))

    new = tree.child("w")
    assert not is_alive(killed)
    assert new.address != old.address and new.restarts == 1
    assert dict(tree.root.status.restarts_by_kind) == {"CrashableWorker": 1}
    assert tree.child("rec").restarts == 0
    recorder = tree.child("rec").address
    assert recorder is not None and new.address is not None
    report = node.runtime.ask(recorder, SampleRecorderQuery(request_id="q"), SampleRecorderReport, 5)
    assert {cid: (addr, gen) for cid, addr, gen in report.entries}["w"] == (new.address, 1)
    pong = node.runtime.ask(new.address, SamplePing(request_id="p"), SamplePong, 5)
    assert pong.pid == new.pid


def test_every_listening_socket_of_the_node_is_on_loopback(start_node: StartNode) -> None:
    node = start_node((ChildSpec(id="w1", start=WORKER), ChildSpec(id="w2", start=WORKER)))
    tree = node.status()
    listeners = node.listening_sockets()
    owners = {sock.pid for sock in listeners}
    # the admin (root's parent), the root and every child hold a listener of their own
    assert {tree.root.status.ppid, *tree.pids()} <= owners
    assert node.config.runtime.admin_port in {sock.port for sock in listeners}
    assert {sock.host for sock in listeners} == {"127.0.0.1"}, listeners


def test_shutdown_leaves_no_process_of_the_system_behind(start_node: StartNode) -> None:
    node = start_node((ChildSpec(id="w", start=WORKER),))
    pgid = node.status().root.status.pgid
    known = node.known_processes()
    assert len(known) >= 4  # admin, logger, root, worker
    report = node.shutdown()
    assert report.tree_stopped and report.killed == () and report.survivors == ()
    assert not [ref.pid for ref in known if is_alive(ref)]
    assert process_group_members(pgid) == []


def test_a_sigkilled_supervisor_takes_its_subtree_down_and_comes_back_whole(
    start_node: StartNode,
) -> None:
    sub = SupervisorInit(
        supervisor_id="sub", flags=SupervisorFlags(), children=(ChildSpec(id="s1", start=WORKER),)
    )
    node = start_node(
        (ChildSpec(id="sub", start=SUPERVISOR, type=ChildType.SUPERVISOR, init=sub),)
    )
    before = node.status()
    leaf_ref = process_ref(before.child("sub/s1").pid or 0)
    assert leaf_ref is not None
    old_sub = _kill(before.child("sub").pid)

    tree = _poll(node, lambda t: _replaced("sub", before.child("sub"))(t) and t.ready)
    assert not is_alive(old_sub)
    assert not is_alive(leaf_ref), "the old subtree outlived its supervisor"
    assert tree.child("sub/s1").pid not in (None, leaf_ref.pid)
    assert tree.child("sub").restarts == 1


def test_a_child_stuck_past_its_shutdown_time_is_killed_for_a_restart(
    start_node: StartNode,
) -> None:
    children = (
        ChildSpec(id="stuck", start=WORKER, shutdown=0.3),
        ChildSpec(id="w", start=WORKER),
    )
    node = start_node(children, SupervisorFlags(strategy=Strategy.ONE_FOR_ALL, intensity=5))
    before = node.status()
    stuck = before.child("stuck")
    assert stuck.address is not None
    node.runtime.tell(stuck.address, SampleBlock(seconds=60))
    stuck_ref = process_ref(stuck.pid or 0)
    assert stuck_ref is not None

    began = time.monotonic()
    _kill(before.child("w").pid)
    tree = _poll(node, lambda t: _replaced("stuck", stuck)(t) and t.ready)
    assert time.monotonic() - began < 5.0
    assert not is_alive(stuck_ref)
    assert tree.child("w").restarts == 1 and tree.child("stuck").restarts == 1


def test_a_node_refuses_an_admin_port_someone_else_listens_on(
    port_factory: Callable[[], int],
) -> None:
    port = port_factory()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        node = Node(NodeSetup(runtime=RuntimeConfig(admin_port=port)))
        with pytest.raises(NodeStartError, match="taken"):
            node.start()
