"""One pass of Thespian's transport loop's selector use, epoll (selectors.DefaultSelector) against the
poll-based `actors.sendpatch._PollPass`: build, register six sockets, select(0), close. CPU µs a pass.

    python bench/results/issue13-s8/selector_pass.py
"""

from __future__ import annotations

import selectors
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from actors.sendpatch import _PollPass


def main() -> None:
    pairs = [socket.socketpair() for _ in range(4)]
    fds = [a.fileno() for a, _ in pairs] + [b.fileno() for _, b in pairs[:2]]
    rounds = 20_000
    for name, cls in (("epoll", selectors.DefaultSelector), ("poll", _PollPass)) * 2:
        start = time.process_time()
        for _ in range(rounds):
            selector = cls()
            for fd in fds:
                selector.register(fd, selectors.EVENT_READ)
            selector.select(0)
            selector.close()
        print(name, round((time.process_time() - start) / rounds * 1e6, 2), "us per pass")


if __name__ == "__main__":
    main()
