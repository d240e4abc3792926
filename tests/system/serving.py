"""`jodo serve` as a real process for system tests: a config with free loopback ports and a temporary
data dir (passed as ``JODO_CONFIG``, so CLI lines run exactly as a person types them), readiness polled
with a deadline, SIGTERM at the end with an exit status of 0 and no process of its group left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from supervisors.processes import process_group_members
from tests.system.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass(frozen=True)
class Serving:
    url: str
    env: dict[str, str]
    workdir: Path
    log: Path

    def jodo(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "jodo.cli", *argv], capture_output=True, text=True,
                              timeout=timeout, env=self.env, cwd=self.workdir)

    def inject(self, *argv: str) -> str:
        """`jodo inject ...`, which must succeed; its output."""
        done = self.jodo("inject", *argv)
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done.stdout

    def show(self, account: str) -> dict[str, Any]:
        """`jodo meter show ACCOUNT --json`."""
        done = self.jodo("meter", "show", account, "--json")
        assert done.returncode == 0, done
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def metric(self, name: str) -> float:
        """The sum of the node's /metrics samples whose line starts with ``name`` (labels included)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def until(what: str, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Poll ``probe`` until ``ok`` holds for its value (returned); fail with ``what`` and the last
    value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if ok(got):
            return got
        assert time.monotonic() < deadline, f"{what}: {got!r}"
        time.sleep(0.1)


def lab_env(workdir: Path, head_ends: str | None = None, extra: str = "") -> tuple[dict[str, str], int]:
    """The environment of a node and its CLI lines, and the node's front door port. ``head_ends``: the
    ``[[head_ends]]`` tables instead of the built-in simulator's; ``extra``: more TOML at the end."""
    port = free_port()
    config = workdir / "jodo.toml"
    if head_ends is None:
        head_ends = f"""
[[head_ends]]
name = "hes-sim"
kind = "sim"
port = {free_port()}
"""
    config.write_text(f"""
[node]
data_dir = "{workdir / 'data'}"
admin_port = {free_port()}

[http]
port = {port}
{head_ends}
{extra}""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env["PYTHONPATH"] = str(ROOT)
    env["JODO_CONFIG"] = str(config)
    return env, port


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serving(workdir: Path, serve_argv: list[str], head_ends: str | None = None,
            extra: str = "") -> Iterator[Serving]:
    """``jodo <serve_argv>`` (``serve ...``) until the block ends (config: `lab_env`)."""
    env, port = lab_env(workdir, head_ends, extra)
    log = workdir / "serve.out"
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "jodo.cli", *serve_argv], stdout=out,
                            stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
    served = Serving(f"http://127.0.0.1:{port}", env, workdir, log)
    try:
        deadline = time.monotonic() + 60
        while not _ready(served.url):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"node not ready in 60 s:\n{log.read_text()}"
            time.sleep(0.1)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(10)
        out.close()
    text = log.read_text()
    assert code == 0, text
    assert "tree stopped in order: yes" in text, text
    assert not process_group_members(proc.pid), f"processes of the node outlived it:\n{text}"
