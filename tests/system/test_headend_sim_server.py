"""The simulator's server over a raw socket on 127.0.0.1: what a peer sees on the wire."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from headend.sim.config import SimConfig
from headend.sim.server import SimulatorThread
from protocols.headend import (
    HesAction,
    HesBatchAccepted,
    HesCommand,
    HesError,
    HesFrame,
    HesFrameReader,
    HesHeartbeat,
    HesHello,
    HesResults,
    HesSubmit,
    HesWelcome,
    encode_frame,
)

pytestmark = pytest.mark.system


class Peer:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = HesFrameReader()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, timeout: float = 5.0) -> HesFrame | None:
        """The next frame, or None if the server closed the connection."""
        deadline = time.monotonic() + timeout
        while (frame := self.reader.next_frame()) is None:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                return None
            self.reader.feed(data)
        return frame


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig(meters=100, disconnected_fraction=1.0, max_frame_bytes=4096)) as s:
        yield s


def test_hello_submit_accepted_results_heartbeat(sim: SimulatorThread) -> None:
    peer = Peer(sim.port)
    peer.send(encode_frame(HesHello(client="raw")))
    assert isinstance(peer.next(), HesWelcome)
    cmd = HesCommand("c1", "MPW00000001", HesAction.CONNECT, time.time() + 60)
    peer.send(encode_frame(HesSubmit(batch_id=1, commands=(cmd,))) + encode_frame(HesHeartbeat(seq=4)))
    assert peer.next() == HesBatchAccepted(batch_id=1)  # the answer comes first; results any time after
    later = [peer.next(), peer.next()]
    assert HesHeartbeat(seq=4) in later
    (results,) = [f for f in later if isinstance(f, HesResults)]
    assert results.results[0].command_id == "c1"
    peer.sock.close()


def test_a_malformed_frame_gets_an_error_frame_and_the_connection_survives(sim: SimulatorThread) -> None:
    peer = Peer(sim.port)
    peer.send(b"\x00\x00\x00\x03\x92\x07\xc1")  # well framed, not msgpack inside
    error = peer.next()
    assert isinstance(error, HesError) and not error.fatal and error.code == "malformed"
    peer.send(encode_frame(HesHeartbeat(seq=1)))
    assert peer.next() == HesHeartbeat(seq=1)
    peer.sock.close()


def test_an_oversized_frame_gets_a_fatal_error_frame_and_the_connection_is_closed(
    sim: SimulatorThread,
) -> None:
    peer = Peer(sim.port)
    peer.send((1 << 20).to_bytes(4, "big") + b"x" * 100)
    error = peer.next()
    assert isinstance(error, HesError) and error.fatal and error.code == "too_large"
    assert peer.next() is None
    peer.sock.close()


def test_an_unknown_version_is_refused_and_the_connection_closed(sim: SimulatorThread) -> None:
    peer = Peer(sim.port)
    peer.send(encode_frame(HesHello(client="future", versions=(7,))))
    error = peer.next()
    assert isinstance(error, HesError) and error.code == "unsupported_version" and error.fatal
    assert peer.next() is None
    peer.sock.close()


def test_an_outage_refuses_connections_until_it_ends(sim: SimulatorThread) -> None:
    sim.begin_outage()
    deadline = time.monotonic() + 5
    refused = False
    while not refused and time.monotonic() < deadline:  # the pump closes the listener on its next run
        try:
            socket.create_connection(("127.0.0.1", sim.port), timeout=1).close()
        except ConnectionRefusedError:
            refused = True
        except TimeoutError:  # a loaded box: the listener, still open, had not accepted yet
            continue
    assert refused
    sim.end_outage()
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", sim.port), timeout=1).close()
            break
        except (ConnectionRefusedError, TimeoutError):  # not listening yet, or not accepting yet
            assert time.monotonic() < deadline, "the simulator did not listen again"
