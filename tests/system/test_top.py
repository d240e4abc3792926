"""`jodo top` against a real node, driven in a pseudo-terminal and read back as a VT100 screen (pyte):
it draws the node, follows a payment that reconnects a meter, lists an error as it happens, and quits
on ``q`` with exit status 0."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pyte
import pytest

from tests.system.serving import Serving, serving

pytestmark = pytest.mark.system

COLUMNS, LINES = 110, 32


class Terminal:
    """`jodo top` on the slave side of a pty; the master side feeds a pyte screen."""

    def __init__(self, node: Serving) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        env = {**node.env, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(LINES)}
        argv = [sys.executable, "-m", "jodo.cli", "top", "--every", "0.3"]
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=node.workdir,
                                     start_new_session=True)
        os.close(slave)
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def pump(self, seconds: float) -> None:
        ready, _, _ = select.select([self.master], [], [], seconds)
        if ready:
            try:
                self.stream.feed(os.read(self.master, 65536))
            except OSError:  # the child closed its side
                pass

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.05)
            if check(self.text()):
                return self.text()
            assert self.proc.poll() is None, f"jodo top exited {self.proc.returncode}:\n{self.text()}"
        raise AssertionError(f"the screen never showed {what} in {timeout} s:\n{self.text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


def test_jodo_top_shows_a_payment_reconnecting_a_meter_and_quits_on_q(tmp_path: Path) -> None:
    with serving(tmp_path, ["serve", "--sim-meters", "5"]) as node:
        term = Terminal(node)
        try:
            term.wait_for(lambda s: "payments/s" in s and "hes-sim" in s and "closed" in s, "the first frame")
            term.wait_for(lambda s: "no payment reconnected yet" in s, "an empty p99")
            registered = node.jodo("inject", "message", "RegisterMeter", "account=N0000000001",
                                   "serial=MPW00000001", "install_year=2022", "relay=disconnected",
                                   "opening_dues_paise=50000")
            assert registered.returncode == 0, registered
            paid = node.jodo("inject", "payment", "--account", "N0000000001", "--amount-paise", "50000")
            assert paid.returncode == 0, paid
            screen = term.wait_for(lambda s: "ms (" in s, "a p99 payment → connected")
            assert "connected" in screen
            unknown = node.jodo("inject", "payment", "--account", "N0000009999", "--amount-paise", "100")
            assert unknown.returncode == 0, unknown
            term.wait_for(lambda s: "payments to suspense" in s, "the suspense payment in the last errors")
            os.write(term.master, b"q")
            deadline = time.monotonic() + 15
            while term.proc.poll() is None and time.monotonic() < deadline:
                term.pump(0.05)
            assert term.proc.returncode == 0, term.text()
        finally:
            term.close()
