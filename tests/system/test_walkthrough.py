"""The README's lab walk-through, run exactly as written: `jodo serve --lab-clock` as a real process, then
each `jodo ...` line of the block after ``<!-- walkthrough -->`` through the real CLI, in order.

The only thing the test adds is ``JODO_CONFIG``: a config with free loopback ports and a temporary data
dir (the README's node uses the embedded defaults, port 8080). A line with ``# expect: WORDS`` must print
those words (whitespace between them free); read-only lines (`meter show`, `meter history`) are polled
with a deadline until they do, since a relay command takes a moment to come back.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from supervisors.processes import process_group_members
from tests.system.conftest import free_port

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
POLLED = ("meter show", "meter history")


@dataclass(frozen=True)
class Step:
    argv: list[str]  # without the leading "jodo"
    expect: str | None
    line: str

    @property
    def polled(self) -> bool:
        return " ".join(self.argv[:2]) in POLLED


def walkthrough() -> list[Step]:
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- walkthrough -->")
    block = re.search(r"```sh\n(.*?)```", text[marker:], re.S)
    assert block is not None, "no ```sh block after <!-- walkthrough -->"
    steps = []
    for line in block.group(1).splitlines():
        command, _, comment = line.partition("#")
        argv = shlex.split(command)
        assert argv and argv[0] == "jodo", f"README walk-through line is not a jodo command: {line!r}"
        expect = comment.split("expect:", 1)[1].strip() if "expect:" in comment else None
        steps.append(Step(argv[1:], expect, line))
    return steps


def test_the_readme_walkthrough_has_the_story() -> None:
    steps = walkthrough()
    assert steps[0].argv[0] == "serve" and "--lab-clock" in steps[0].argv
    joined = [" ".join(s.argv) for s in steps]
    assert any("--help" in j for j in joined)
    assert any(j.startswith("inject message RegisterMeter ") for j in joined)
    expects = [s.expect for s in steps if s.expect]
    assert "relay disconnected" in expects and expects[-2:] == ["relay connected", "RelayStateConfirmed"]


@pytest.fixture
def lab_config(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    config = tmp_path / "jodo.toml"
    config.write_text(f"""
[node]
data_dir = "{tmp_path / 'data'}"
admin_port = {free_port()}

[http]
port = {free_port()}

[[head_ends]]
name = "hes-sim"
kind = "sim"
port = {free_port()}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env["PYTHONPATH"] = str(ROOT)
    env["JODO_CONFIG"] = str(config)
    yield config, env


def _jodo(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jodo.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _shows(expect: str, output: str) -> bool:
    return re.search(r"\s+".join(map(re.escape, expect.split())), output) is not None


def test_the_readme_walkthrough_runs_as_written(lab_config: tuple[Path, dict[str, str]],
                                                tmp_path: Path) -> None:
    config, env = lab_config
    port = int(re.search(r"\[http\]\nport = (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    serve, *steps = walkthrough()
    out = (tmp_path / "serve.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "jodo.cli", *serve.argv], stdout=out,
                            stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    log = tmp_path / "serve.out"
    try:
        deadline = time.monotonic() + 60
        while not _ready(f"http://127.0.0.1:{port}"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"node not ready in 60 s:\n{log.read_text()}"
            time.sleep(0.1)
        assert "lab clock at 2026-11-02 10:00 IST" in log.read_text()
        for step in steps:
            deadline = time.monotonic() + (30 if step.polled else 0)
            while True:
                done = _jodo(step.argv, env, tmp_path)
                assert done.returncode == 0, f"{step.line}: {done.returncode}\n{done.stdout}{done.stderr}"
                if step.expect is None or _shows(step.expect, done.stdout):
                    break
                assert time.monotonic() < deadline, f"{step.line}\nwanted {step.expect!r} in:\n{done.stdout}"
                time.sleep(0.1)
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
    assert not process_group_members(proc.pid), f"processes of the lab node outlived it:\n{text}"


def test_a_node_on_the_wall_clock_refuses_to_be_moved(lab_config: tuple[Path, dict[str, str]],
                                                      tmp_path: Path) -> None:
    """The same CLI line against a node without --lab-clock: 409 wall_clock, exit 3, nothing moved."""
    config, env = lab_config
    port = int(re.search(r"\[http\]\nport = (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    out = (tmp_path / "serve.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "jodo.cli", "serve", "--sim-meters", "1"], stdout=out,
                            stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _ready(f"http://127.0.0.1:{port}"):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.out").read_text()
            time.sleep(0.1)
        done = _jodo(["inject", "clock", "+16d"], env, tmp_path)
        assert done.returncode == 3, done
        assert "wall_clock" in done.stderr + done.stdout
        bad = _jodo(["inject", "clock", "+16 days"], env, tmp_path)
        assert bad.returncode == 3 and "not a duration" in bad.stderr + bad.stdout, bad
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(90)
        out.close()
    assert code == 0, (tmp_path / "serve.out").read_text()
