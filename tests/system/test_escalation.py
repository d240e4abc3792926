"""Restart intensity on the real tree: a shard that keeps crashing makes its supervisor give up, the
root restarts that whole kind (and, rest_for_one, the desk after it), and the node serves again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from actors.facade import AskTimeout
from jodo.node import Node
from protocols.headend import HesControlState
from protocols.runtime import CrashActor
from tests.system.jodo_fixtures import eventually, payment, register, running_jodo, serial

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_a_crash_looping_shard_escalates_to_the_root_and_the_node_recovers(
    start_node: Callable[..., Node], tmp_path: Path
) -> None:
    with running_jodo(start_node, tmp_path, meters=6, intensity=2, period=60.0) as j:
        j.client.send(register(6))
        shards_sup_pid = j.node.status().root.status.children[1].pid
        for n in range(3):  # intensity 2 in 60 s: the third crash is one too many
            address = j.node.status().child("shards/shard-0").address

            def crashed_and_back(old: object = address) -> bool:
                try:
                    child = j.node.status().child("shards/shard-0")
                    return child.address is not None and child.address != old and child.pid is not None
                except (StopIteration, AskTimeout):
                    return False

            j.node.runtime.tell(address, CrashActor(reason=f"test crash {n}"))
            eventually(crashed_and_back, timeout=30, what=f"shard-0 back after crash {n}")
        root = j.node.status().root.status
        assert dict(root.restarts_by_kind).get("Supervisor", 0) >= 1, root.restarts_by_kind
        assert root.children[1].pid != shards_sup_pid  # the shards supervisor itself is new
        j.client.refresh()
        assert isinstance(j.client.pay([payment(2)]), list)
        eventually(lambda: j.sim.relay_state(serial(2)).control_state == HesControlState.CONNECTED,
                   what="the node to serve again after escalation")
