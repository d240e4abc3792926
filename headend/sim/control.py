"""Inspect a simulator running in another process: its meters' true relay states, button presses.

Blocking and short-lived (one connection per call, a timeout on every step): for tests, the CLI and
operators, never for an actor's mailbox.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

from protocols.headend import (
    HesFrame,
    HesFrameReader,
    HesInspect,
    HesInspection,
    HesMeterState,
    HesPressButton,
    encode_frame,
)

__all__ = ["inspect_meters", "press_buttons"]


def _ask(host: str, port: int, frame: HesInspect | HesPressButton, timeout: float) -> HesInspection:
    deadline = time.monotonic() + timeout
    reader = HesFrameReader()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(encode_frame(frame))
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("simulator closed the connection")
            reader.feed(data)
            reply: HesFrame | None
            while (reply := reader.next_frame()) is not None:
                if isinstance(reply, HesInspection) and reply.query_id == frame.query_id:
                    return reply


def inspect_meters(
    host: str, port: int, meters: Sequence[str], *, timeout: float = 5.0
) -> list[HesMeterState]:
    """The true relay state of each meter, in order (all-None fields for an unknown serial)."""
    return list(_ask(host, port, HesInspect(query_id=1, meters=tuple(meters)), timeout).states)


def press_buttons(
    host: str, port: int, meters: Sequence[str], *, timeout: float = 5.0
) -> list[HesMeterState]:
    """Press each meter's button (consumer at the meter); returns the states after."""
    return list(_ask(host, port, HesPressButton(query_id=1, meters=tuple(meters)), timeout).states)
