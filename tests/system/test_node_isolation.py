"""Why the bind patch and the stdio detaching exist, shown on real systems in child processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from thespian.system.transport import IPBase

from actors import netpatch
from domain.supervision import ChildSpec
from supervisors.processes import kill_process, process_group_members

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]

# Starts a bare thespian system (patched or not), prints its processes' listeners as JSON, stops it.
_LISTENERS = """
import json, os, sys
os.environ["THESPIAN_BASE_IPADDR"] = "127.0.0.1"
from thespian.actors import ActorSystem
from supervisors.processes import listening_sockets, process_group_members
from supervisors.testing import SamplePing, SamplePong
port, patched = int(sys.argv[1]), sys.argv[2] == "1"
if patched:
    from actors.netpatch import apply_bind_patch
    apply_bind_patch()
system = ActorSystem("multiprocTCPBase", capabilities={"Admin Port": port},
                     logDefs={"version": 1, "disable_existing_loggers": False}, transientUnique=True)
try:
    worker = system.createActor("supervisors.testing.CrashableWorker")
    pong = system.ask(worker, SamplePing(request_id="p"), 10)
    pgid = os.getpgid(pong.pid)
    pids = [ref.pid for ref in process_group_members(pgid)]
    hosts = sorted({sock.host for sock in listening_sockets(pids)})
    print(json.dumps({"pgid": pgid, "hosts": hosts}))
finally:
    system.shutdown()
"""

# Starts a node, then dies without shutting it down: the system outlives its starter.
_NODE_THEN_CRASH = """
import os
from actors.facade import RuntimeConfig
from domain.supervision import ChildSpec
from jodo.node import Node, NodeSetup
from jodo.ports import free_port
port = free_port()
config = NodeSetup(runtime=RuntimeConfig(admin_port=port),
                    children=(ChildSpec(id="w", start="supervisors.testing.CrashableWorker"),))
node = Node(config).start()
print("pgid", node.status().root.status.pgid, flush=True)
os._exit(0)
"""


def _wait_group_empty(pgid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while process_group_members(pgid):
        assert time.monotonic() < deadline, f"processes of group {pgid} outlived their system"
        time.sleep(0.02)


def _listener_hosts(tmp_path: Path, port: int, patched: bool) -> list[str]:
    out = tmp_path / f"listeners-{int(patched)}.json"
    with out.open("w") as sink:  # a file, never a pipe: the admin would hold a pipe open forever
        subprocess.run(
            [sys.executable, "-c", _LISTENERS, str(port), "1" if patched else "0"],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=True,
        )
    result = json.loads(out.read_text().strip().splitlines()[-1])
    _wait_group_empty(result["pgid"])
    return list(result["hosts"])


def test_unpatched_thespian_listens_on_every_interface_despite_base_ipaddr(
    tmp_path: Path, port_factory: Callable[[], int]
) -> None:
    assert "0.0.0.0" in _listener_hosts(tmp_path, port_factory(), patched=False)


def test_patched_thespian_listens_on_loopback_only(
    tmp_path: Path, port_factory: Callable[[], int]
) -> None:
    assert _listener_hosts(tmp_path, port_factory(), patched=True) == ["127.0.0.1"]


def test_a_system_outliving_its_starter_does_not_hold_the_starters_pipes() -> None:
    # capture_output waits for EOF on the pipes: without the node pointing the admin's stdio away
    # from them, this run never returns (checked by disabling it: TimeoutExpired).
    done = subprocess.run(
        [sys.executable, "-c", _NODE_THEN_CRASH],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pgid = int(done.stdout.split()[1])
    orphans = process_group_members(pgid)
    assert orphans, "the system should have outlived its starter"
    for ref in orphans:
        kill_process(ref)
    _wait_group_empty(pgid)


def test_the_patch_refuses_another_thespian_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netpatch, "metadata", types.SimpleNamespace(version=lambda _: "4.0.2"))
    with pytest.raises(netpatch.BindPatchError, match=r"4\.0\.2"):
        netpatch.verify_thespian()


def test_the_patch_refuses_a_changed_ipactoraddress(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = property(lambda self: ((self.sockname[0], 0),))
    monkeypatch.setattr(IPBase.IPActorAddress, "_jodo_original_bindArgs", changed, raising=False)
    with pytest.raises(netpatch.BindPatchError, match="re-verify"):
        netpatch.verify_thespian()


def test_the_installed_thespian_is_the_verified_one() -> None:
    netpatch.verify_thespian()


def _peer_verdict(port: int, source: str) -> str:
    """Connect to 127.0.0.1:port from `source`: "closed" if the far end hung up within 0.5 s (an
    allowed peer's connection stays open that long: it may still send its message), else "open"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
        conn.bind((source, 0))
        conn.connect(("127.0.0.1", port))
        conn.settimeout(0.05)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                if conn.recv(1) == b"":
                    return "closed"
            except TimeoutError:
                continue
            except ConnectionResetError:
                return "closed"
        return "open"


def test_an_actor_socket_closes_a_connection_from_an_address_not_on_its_allowlist(start_node: Any) -> None:
    node = start_node((ChildSpec(id="w", start="supervisors.testing.CrashableWorker"),))
    admin = node.config.runtime.admin_port
    assert netpatch.peer_allowlist() == frozenset({"127.0.0.1"})
    assert _peer_verdict(admin, "127.0.0.7") == "closed"  # another machine, as far as the node knows
    assert node.status().ready  # the refused connection cost the node nothing
    assert _peer_verdict(admin, "127.0.0.1") == "open"  # itself
