"""Free loopback ports for servers that jodo's tools start themselves (demos, throwaway PostgreSQL,
simulators) and for the tests.

A port chosen by binding port 0 comes from the kernel's ephemeral range, the same range every outgoing
connection takes its source port from. Between choosing it and the server binding it, the port can be
taken: by any outgoing connection (a node's actors talk to each other over TCP, many at a time), or — while
nobody listens on it yet — by a client connecting to it, which Linux may self-connect (source port =
destination port). Seen: "address already in use" when a head-end simulator started after the node it
serves (2 tests of 1 626 in one clean-clone CI run, session 7). So the port is chosen below that range,
where no connection's source port ever falls, at random, and never handed out twice by this process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 12_000  # ports below the ephemeral range to pick from
_given: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` nobody listens on now, outside the ephemeral range (see the module)."""
    low = _ephemeral_low()
    first = max(1_024, low - _SPAN)
    for _ in range(500):
        port = random.randrange(first, low)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # that span is full: any port
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
