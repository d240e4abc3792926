"""The README's lab walk-through, run exactly as written: `jodo serve --lab-clock` as a real process, then
each `jodo ...` line of the block after ``<!-- walkthrough -->`` through the real CLI, in order.

The only thing the test adds is ``JODO_CONFIG``: a config with free loopback ports and a temporary data
dir (the README's node uses the embedded defaults, port 8080). A line with ``# expect: WORDS`` must print
those words (whitespace between them free); read-only lines (`meter show`, `meter history`) are polled
with a deadline until they do, since a relay command takes a moment to come back.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system.serving import serving

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


def _shows(expect: str, output: str) -> bool:
    return re.search(r"\s+".join(map(re.escape, expect.split())), output) is not None


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    serve, *steps = walkthrough()
    with serving(tmp_path, serve.argv) as node:
        assert "lab clock at 2026-11-02 10:00 IST" in node.log.read_text()
        for step in steps:
            deadline = time.monotonic() + (30 if step.polled else 0)
            while True:
                done = node.jodo(*step.argv)
                assert done.returncode == 0, f"{step.line}: {done.returncode}\n{done.stdout}{done.stderr}"
                if step.expect is None or _shows(step.expect, done.stdout):
                    break
                assert time.monotonic() < deadline, f"{step.line}\nwanted {step.expect!r} in:\n{done.stdout}"
                time.sleep(0.1)


def test_a_node_on_the_wall_clock_refuses_to_be_moved(tmp_path: Path) -> None:
    """The same CLI line against a node without --lab-clock: 409 wall_clock, exit 3; a bad duration 422."""
    with serving(tmp_path, ["serve", "--sim-meters", "1"]) as node:
        done = node.jodo("inject", "clock", "+16d")
        assert done.returncode == 3, done
        assert "wall_clock" in done.stderr + done.stdout
        bad = node.jodo("inject", "clock", "+16 days")
        assert bad.returncode == 3 and "not a duration" in bad.stderr + bad.stdout, bad
