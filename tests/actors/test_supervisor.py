"""The Supervisor actor on simpleSystemBase: OTP restarts, escalation, dead letters, status, stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.facade import RuntimeConfig, SystemBaseName
from domain.supervision import (
    ChildSpec,
    ChildType,
    InitFactory,
    Restart,
    Strategy,
    SupervisorFlags,
)
from jodo.node import Node, NodeSetup, NodeStartError, TreeStatus
from protocols.control import ChildState, SupervisorInit, SupervisorState
from supervisors import testing
from supervisors.deadletters import DeadLetterKind
from supervisors.testing import (
    SampleCrash,
    SampleCrashMode,
    SamplePing,
    SamplePong,
    SampleRecorderQuery,
    SampleRecorderReport,
)

WORKER = "supervisors.testing.CrashableWorker"
RECORDER = "supervisors.testing.AddressRecorder"
SUPERVISOR = "supervisors.supervisor.Supervisor"


@pytest.fixture(autouse=True)
def _clean_records() -> Iterator[None]:
    testing.IN_PROCESS_EVENTS.clear()
    testing.RECORDED_LETTERS.clear()
    yield


def _workers(*ids: str, restart: Restart = Restart.PERMANENT) -> tuple[ChildSpec, ...]:
    return tuple(ChildSpec(id=cid, start=WORKER, restart=restart) for cid in ids)


def _node(
    children: tuple[ChildSpec, ...],
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: int = 5,
) -> Node:
    config = NodeSetup(
        runtime=RuntimeConfig(base=SystemBaseName.SIMPLE),
        root_flags=SupervisorFlags(strategy=strategy, intensity=intensity, period=60.0),
        children=children,
        dead_letter_sink="supervisors.testing:recording_sink",
        seed=1,
        ready_timeout=5.0,
    )
    return Node(config)


def _addresses(tree: TreeStatus) -> dict[str, str]:
    return {
        c.id: c.address.actorAddressString if c.address else ""
        for c in tree.root.status.children
    }


def _crash(node: Node, path: str, mode: SampleCrashMode = SampleCrashMode.EXIT) -> None:
    address = node.status().child(path).address
    assert address is not None
    node.runtime.tell(address, SampleCrash(mode=mode))


def test_a_tree_starts_with_every_child_running_and_reporting_its_pid() -> None:
    with _node(_workers("w1", "w2")).start() as node:
        tree = node.status()
        root = tree.root.status
        assert root.state is SupervisorState.RUNNING and root.ready
        assert [(c.id, c.state, c.restarts) for c in root.children] == [
            ("w1", ChildState.RUNNING, 0),
            ("w2", ChildState.RUNNING, 0),
        ]
        assert all(c.pid is not None for c in root.children)
        assert testing.IN_PROCESS_EVENTS == [("start", "w1"), ("start", "w2")]


def test_one_for_one_restarts_only_the_crashed_child() -> None:
    with _node(_workers("w1", "w2", "w3")).start() as node:
        before = _addresses(node.status())
        _crash(node, "w2")
        tree = node.wait_ready(5.0)
        after = _addresses(tree)
        assert after["w1"] == before["w1"] and after["w3"] == before["w3"]
        assert after["w2"] != before["w2"]
        assert [c.restarts for c in tree.root.status.children] == [0, 1, 0]


def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it() -> None:
    with _node(_workers("w1", "w2", "w3"), Strategy.REST_FOR_ONE).start() as node:
        before = _addresses(node.status())
        testing.IN_PROCESS_EVENTS.clear()
        _crash(node, "w2")
        tree = node.wait_ready(5.0)
        after = _addresses(tree)
        assert after["w1"] == before["w1"]
        assert after["w2"] != before["w2"] and after["w3"] != before["w3"]
        assert testing.IN_PROCESS_EVENTS == [
            ("stop", "w2"),  # the crash itself
            ("stop", "w3"),
            ("start", "w2"),
            ("start", "w3"),
        ]


def test_one_for_all_stops_in_reverse_start_order_and_restarts_in_start_order() -> None:
    with _node(_workers("w1", "w2", "w3"), Strategy.ONE_FOR_ALL).start() as node:
        before = _addresses(node.status())
        testing.IN_PROCESS_EVENTS.clear()
        _crash(node, "w2")
        tree = node.wait_ready(5.0)
        assert all(_addresses(tree)[cid] != before[cid] for cid in before)
        assert testing.IN_PROCESS_EVENTS == [
            ("stop", "w2"),
            ("stop", "w3"),
            ("stop", "w1"),
            ("start", "w1"),
            ("start", "w2"),
            ("start", "w3"),
        ]
        assert dict(tree.root.status.restarts_by_kind) == {"CrashableWorker": 3}


def test_a_transient_child_ending_normally_is_not_restarted() -> None:
    with _node(_workers("t", restart=Restart.TRANSIENT)).start() as node:
        _crash(node, "t", SampleCrashMode.NORMAL)
        child = node.wait_ready(5.0).child("t")
        assert (child.state, child.restarts, child.address) == (ChildState.ENDED, 0, None)


def test_a_transient_child_that_crashes_is_restarted() -> None:
    with _node(_workers("t", restart=Restart.TRANSIENT)).start() as node:
        _crash(node, "t", SampleCrashMode.EXIT)
        child = node.wait_ready(5.0).child("t")
        assert (child.state, child.restarts) == (ChildState.RUNNING, 1)


def test_a_temporary_child_is_never_restarted() -> None:
    with _node(_workers("tmp", restart=Restart.TEMPORARY)).start() as node:
        _crash(node, "tmp", SampleCrashMode.EXIT)
        child = node.wait_ready(5.0).child("tmp")
        assert (child.state, child.restarts) == (ChildState.ENDED, 0)


def test_a_permanent_child_ending_normally_is_still_restarted() -> None:
    with _node(_workers("p")).start() as node:
        _crash(node, "p", SampleCrashMode.NORMAL)
        assert node.wait_ready(5.0).child("p").restarts == 1


def test_exceeding_intensity_escalates_to_the_parent_which_restarts_the_subtree() -> None:
    sub = SupervisorInit(
        supervisor_id="sub",
        flags=SupervisorFlags(intensity=1, period=60.0),
        children=_workers("s1", "s2"),
    )
    tree_spec = (
        ChildSpec(id="sub", start=SUPERVISOR, type=ChildType.SUPERVISOR, init=sub),
        *_workers("w"),
    )
    with _node(tree_spec).start() as node:
        sub_before = node.status().child("sub")
        _crash(node, "sub/s1")  # restart 1 of 1: fine
        assert node.wait_ready(5.0).child("sub/s1").restarts == 1
        _crash(node, "sub/s1")  # restart 2 of 1 within the period: sub escalates
        tree = node.wait_ready(5.0)
        sub_after = tree.child("sub")
        assert sub_after.restarts == 1 and sub_after.address != sub_before.address
        # a fresh subtree: its children start over
        assert [(c.id, c.restarts) for c in tree.root.subtrees[0].status.children] == [
            ("s1", 0),
            ("s2", 0),
        ]
        assert tree.child("w").restarts == 0  # one_for_one at the root
        assert dict(tree.root.status.restarts_by_kind) == {"Supervisor": 1}


def test_the_root_escalates_by_stopping_its_tree_and_reporting_it() -> None:
    with _node(_workers("w1", "w2"), intensity=0).start() as node:
        _crash(node, "w1")
        root = node.status().root.status
        assert root.state is SupervisorState.ESCALATED and not root.ready
        assert [c.state for c in root.children] == [ChildState.ENDED, ChildState.ENDED]


def test_a_child_failing_its_init_is_a_poison_message_for_the_sink_and_a_restart() -> None:
    spec = ChildSpec(
        id="w", start=WORKER, init=InitFactory(path="supervisors.testing:sample_init_failing_first")
    )
    with _node((spec,)).start() as node:
        tree = node.wait_ready(5.0)
        assert tree.child("w").restarts == 1
        letters = [letter for letter in testing.RECORDED_LETTERS if letter.kind is DeadLetterKind.POISON]
        assert [letter.message_type for letter in letters] == ["SampleInit"]
        assert "told to fail on init" in letters[0].details
        assert tree.root.status.dead_letters == len(testing.RECORDED_LETTERS)


def test_a_message_to_a_dead_child_reaches_the_sink_as_undeliverable() -> None:
    with _node(_workers("w")).start() as node:
        old = node.status().child("w").address
        assert old is not None
        _crash(node, "w")
        node.wait_ready(5.0)
        node.runtime.tell(old, SamplePing(request_id="late"))
        node.status()
        kinds = [(letter.kind, letter.message_type) for letter in testing.RECORDED_LETTERS]
        assert (DeadLetterKind.UNDELIVERABLE, "SamplePing") in kinds


def test_subscribers_learn_the_new_address_of_a_restarted_child() -> None:
    tree_spec = (ChildSpec(id="rec", start=RECORDER), *_workers("w"))
    with _node(tree_spec).start() as node:
        _crash(node, "w")
        tree = node.wait_ready(5.0)
        recorder = tree.child("rec").address
        assert recorder is not None
        report = node.runtime.ask(
            recorder, SampleRecorderQuery(request_id="q"), SampleRecorderReport, 5.0
        )
        book = {cid: (addr, gen) for cid, addr, gen in report.entries}
        assert book["w"] == (tree.child("w").address, 1)
        pong = node.runtime.ask(book["w"][0], SamplePing(request_id="p"), SamplePong, 5.0)
        assert pong.name == "w"


def test_a_stopped_tree_stops_children_in_reverse_start_order() -> None:
    node = _node(_workers("w1", "w2", "w3")).start()
    testing.IN_PROCESS_EVENTS.clear()
    report = node.shutdown()
    assert report.tree_stopped
    assert testing.IN_PROCESS_EVENTS == [("stop", "w3"), ("stop", "w2"), ("stop", "w1")]


def test_a_child_class_that_does_not_exist_fails_the_start() -> None:
    bad = ChildSpec(id="x", start="supervisors.testing.NoSuchActor")
    with pytest.raises(NodeStartError, match="escalated"):
        _node((bad,)).start()


def test_ask_drops_a_late_reply_to_an_earlier_request() -> None:
    with _node(_workers("w")).start() as node:
        worker = node.status().child("w").address
        assert worker is not None
        node.runtime.tell(worker, SamplePing(request_id="earlier"))  # its reply is never read
        dropped = node.runtime.discarded_replies
        pong = node.runtime.ask(worker, SamplePing(request_id="now"), SamplePong, 5.0)
        assert pong.request_id == "now"
        assert node.runtime.discarded_replies == dropped + 1


def test_a_restart_waits_out_its_backoff_then_happens() -> None:
    config = NodeSetup(
        runtime=RuntimeConfig(base=SystemBaseName.SIMPLE),
        root_flags=SupervisorFlags(intensity=5, period=60.0, backoff_base=0.2, backoff_cap=1.0),
        children=_workers("w"),
        seed=3,
        ready_timeout=5.0,
    )
    with Node(config).start() as node:
        _crash(node, "w")
        pending = node.status()
        assert pending.child("w").state is ChildState.RESTART_PENDING
        assert pending.root.status.state is SupervisorState.RESTARTING
        child = node.wait_ready(5.0).child("w")
        assert (child.state, child.restarts) == (ChildState.RUNNING, 1)
