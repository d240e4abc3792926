"""actors/sendpatch.py against real Thespian processes (multiprocTCPBase), started as a node starts
them: from a thread that is not the starter's main thread (the node's actor thread)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
out = {"patched": apply_send_patch()}
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
    done = subprocess.run(
        [sys.executable, "-c", STARTER, str(_free_port()), str(ROOT), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=150, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["patched"] is True
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
