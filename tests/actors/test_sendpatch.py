"""actors/sendpatch.py against real Thespian processes (multiprocTCPBase), started as a node starts
them: from a thread that is not the starter's main thread (the node's actor thread)."""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from actors import sendpatch
from jodo.ports import free_port as _free_port

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
STARTER = """
import json, os, sys, threading
sys.path.insert(0, sys.argv[2]); sys.path.insert(0, sys.argv[3])
os.environ["THESPIAN_BASE_IPADDR"] = "127.0.0.1"
from thespian.system.transport import TCPTransport as tcp
import sendpatch_probe_actor as probe
original = tcp.TCPTransport.interrupt_wait
def counted(self, *args, **kwargs):
    probe.COUNT[0] += 1
    return original(self, *args, **kwargs)
tcp.TCPTransport.interrupt_wait = counted
from actors.netpatch import apply_bind_patch
from actors.sendpatch import apply_send_patch
from thespian.actors import ActorSystem
apply_bind_patch()
out = {"patched": apply_send_patch(), "selector": tcp.selectors.DefaultSelector.__name__}
def run():
    system = ActorSystem("multiprocTCPBase", capabilities={"Admin Port": int(sys.argv[1])},
                         transientUnique=True)
    try:
        actor = system.createActor("sendpatch_probe_actor.SendPatchProbe")
        out["note"] = system.ask(actor, ("go", "note", 500), 30)
        out["other"] = system.ask(actor, ("go", "other", 50), 30)
    finally:
        system.shutdown()
thread = threading.Thread(target=run)
thread.start()
thread.join(120)
print(json.dumps(out))
"""


def test_notes_to_self_of_a_registered_type_open_no_wakeup_connection() -> None:
    # the selector patch is opt-in (actors/sendpatch.POLL_SELECTOR_ENV): this run takes it, so the
    # messages below go through `_PollPass`
    env = {**os.environ, "JODO_THESPIAN_POLL_SELECTOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", STARTER, str(_free_port()), str(ROOT), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=150, cwd=ROOT, env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["patched"] is True
    assert out["selector"] == "_PollPass"  # and the messages above went through it
    assert out["note"] == 0  # 500 notes (past the transport's limit of pending transmits), none connected
    assert out["other"] >= 50  # the counter works: Thespian's own path connects once a note


def test_identify_builds_the_same_text_only_when_formatted() -> None:
    from thespian.system.transport import ReceiveEnvelope, TransmitIntent

    assert sendpatch.apply_send_patch()
    envelope = ReceiveEnvelope("sender-address", "a message")
    text = envelope.identify()
    assert not isinstance(text, str)  # nothing built yet
    thesplog = "%s"  # formatted as thesplog and logging format it: msg % args
    expected = "ReceiveEnvelope(from: sender-address, <class 'str'> msg: a message)"
    assert thesplog % (text,) == str(envelope) == expected
    intent = TransmitIntent("target-address", "a message")
    assert "a message" in thesplog % (intent.identify(),) and str(intent).startswith("*************")


def _ready(selector: Any, reads: list[int], writes: list[int], timeout: float | None) -> set[tuple[int, int]]:
    for fd in reads:
        selector.register(fd, selectors.EVENT_READ)
    for fd in writes:
        selector.register(fd, selectors.EVENT_WRITE)
    try:
        return {(key.fd, event) for key, event in selector.select(timeout)}
    finally:
        selector.close()


def test_the_poll_selector_reports_what_the_default_selector_reports() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        cases = [([a.fileno(), c.fileno()], [], 0), ([a.fileno()], [b.fileno(), d.fileno()], 0),
                 ([], [], 0.01), ([a.fileno()], [], 0.01)]
        b.send(b"x")  # a readable; c not
        for reads, writes, timeout in cases:
            expected = _ready(selectors.DefaultSelector(), reads, writes, timeout)
            assert _ready(sendpatch._PollPass(), reads, writes, timeout) == expected
        assert (a.fileno(), selectors.EVENT_READ) in expected
        d.close()  # c sees the hang-up as readable, as epoll reports it
        assert _ready(sendpatch._PollPass(), [c.fileno()], [], 0) == {(c.fileno(), selectors.EVENT_READ)}
        poll = sendpatch._PollPass()
        poll.register(a.fileno(), selectors.EVENT_READ)
        with pytest.raises(KeyError):
            poll.register(a.fileno(), selectors.EVENT_WRITE)
        with pytest.raises(ValueError):
            sendpatch._PollPass().register(-1, selectors.EVENT_READ)
    finally:
        for s in (a, b, c, d):
            s.close()


def test_a_closed_descriptor_raises_ebadf_which_the_transport_recovers_from() -> None:
    # (epoll's register raises EBADF for it; the transport then looks for the bad descriptor)
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    with pytest.raises(OSError) as poll_error:
        _ready(sendpatch._PollPass(), [fd], [b.fileno()], 0)
    assert poll_error.value.errno == errno.EBADF
    b.close()
