"""deploy/systemd units: ``systemd-analyze verify`` finds nothing, ``security --offline`` rates them OK,
and the stop behaviour is the one the drain needs.

verify checks that ExecStart's program exists; the units name the install path /opt/jodo/.venv, so the
check runs on a copy whose program path points at this checkout's .venv instead (nothing else is
changed). This container has no systemd as PID 1: the units are checked, not started.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from ops_tools import ROOT, run

UNITS = ROOT / "deploy" / "systemd"
INSTALLED_BIN = "/opt/jodo/.venv/bin/"
MAX_EXPOSURE = 20  # systemd-analyze's threshold unit is 0.1: 2.0 and below is rated "OK"


def _unit_names() -> list[str]:
    return sorted(p.name for p in UNITS.glob("*.service"))


def _local_copy(name: str, into: Path) -> Path:
    text = (UNITS / name).read_text(encoding="utf-8")
    assert INSTALLED_BIN in text, "ExecStart must use the documented install path"
    local_bin = ROOT / ".venv" / "bin"
    assert (local_bin / "jodo").exists(), "pip install -e . first (scripts/setup.sh)"
    copy = into / name
    copy.write_text(text.replace(INSTALLED_BIN, f"{local_bin}/"), encoding="utf-8")
    return copy


def _directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def test_both_units_are_shipped() -> None:
    assert _unit_names() == ["jodo-hes-sim.service", "jodo.service"]


@pytest.mark.parametrize("name", _unit_names())
def test_systemd_analyze_verify_finds_nothing(name: str, tool: Callable[[str], str], tmp_path: Path) -> None:
    copy = _local_copy(name, tmp_path)
    result = run(tool("systemd-analyze"), "verify", "--man=no", str(copy))
    # Unknown keys and bad values are only warnings (exit 0): any output at all is a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


@pytest.mark.parametrize("name", _unit_names())
def test_units_are_hardened(name: str, tool: Callable[[str], str], tmp_path: Path) -> None:
    copy = _local_copy(name, tmp_path)
    result = run(
        tool("systemd-analyze"),
        "security",
        "--offline=yes",
        f"--threshold={MAX_EXPOSURE}",
        "--no-pager",
        str(copy),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    directives = _directives(name)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert directives.get(key) == [value], (name, key)


def test_the_node_stops_with_a_drain_then_kills_what_is_left() -> None:
    directives = _directives("jodo.service")
    assert directives["KillMode"] == ["mixed"]
    seconds = int(directives["TimeoutStopSec"][0].removesuffix("s"))
    # Thespian gives up shutdown after 10 s; webhooks wait up to [http] submit_timeout_s (5 s).
    assert 20 <= seconds <= 90
    assert directives["Restart"] == ["on-failure"]
    assert directives["RuntimeDirectory"] == ["jodo"], "the metrics directory lives in /run/jodo"
