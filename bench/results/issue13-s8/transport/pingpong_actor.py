"""Two Thespian actors bouncing a small batch-sized message (transport_cost.py)."""

from __future__ import annotations

import os
import time
from typing import Any

from thespian.actors import Actor


class Ball:
    __slots__ = ("left", "payload")

    def __init__(self, left: int, payload: bytes) -> None:
        self.left, self.payload = left, payload

    def __str__(self) -> str:
        return "Ball"


class Ping(Actor):  # type: ignore[misc]
    """("go", peer, n, size): bounce a Ball n times with peer, then answer (cpu s of both, wall s)."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[0] == "go":
            self.asker, self.peer = sender, message[1]
            self.t0, self.c0 = time.perf_counter(), time.process_time()
            self.send(self.peer, Ball(message[2], b"x" * message[3]))
        elif isinstance(message, Ball):
            if message.left > 0:
                self.send(self.peer, Ball(message.left - 1, message.payload))
            else:
                self.send(self.peer, "cpu?")
        elif isinstance(message, float):
            self.send(self.asker, (time.process_time() - self.c0 + message, time.perf_counter() - self.t0))


class Pong(Actor):  # type: ignore[misc]
    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, Ball):
            if not hasattr(self, "c0"):
                self.c0 = time.process_time() - 0.0
            self.send(sender, Ball(message.left, message.payload))
        elif message == "cpu?":
            self.send(sender, time.process_time() - self.c0)
            del self.c0
        elif message == "pid":
            self.send(sender, os.getpid())
