"""deploy/systemd and deploy/cluster units: ``systemd-analyze verify`` finds nothing, ``security
--offline`` rates them OK, and the stop behaviour is the one the drain (and the cluster's hand-over)
needs. A template unit (``jodo@.service``) is checked as the instance ``jodo@node1.service``.

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

DEPLOY = ROOT / "deploy"
UNIT_DIRS = ("systemd", "cluster")
INSTALLED_BIN = "/opt/jodo/.venv/bin/"
MAX_EXPOSURE = 20  # systemd-analyze's threshold unit is 0.1: 2.0 and below is rated "OK"
INSTANCE = "node1"  # a template unit is verified as this instance


def _unit_names() -> list[str]:
    """Units as ``<dir>/<file>`` under deploy/."""
    return sorted(f"{d}/{p.name}" for d in UNIT_DIRS for p in (DEPLOY / d).glob("*.service"))


def _local_copy(name: str, into: Path) -> Path:
    """A copy of unit ``name`` in ``into`` with this checkout's .venv; the path to check (for a
    template, its instance ``INSTANCE``, which systemd loads from the template beside it)."""
    text = (DEPLOY / name).read_text(encoding="utf-8")
    assert INSTALLED_BIN in text, "ExecStart must use the documented install path"
    local_bin = ROOT / ".venv" / "bin"
    assert (local_bin / "jodo").exists(), "pip install -e . first (scripts/setup.sh)"
    copy = into / Path(name).name
    copy.write_text(text.replace(INSTALLED_BIN, f"{local_bin}/"), encoding="utf-8")
    if copy.name.endswith("@.service"):
        return into / copy.name.replace("@.service", f"@{INSTANCE}.service")
    return copy


def _directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / name).read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def test_the_units_are_shipped() -> None:
    assert _unit_names() == ["cluster/jodo@.service", "systemd/jodo-hes-sim.service", "systemd/jodo.service"]


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
    directives = _directives("systemd/jodo.service")
    assert directives["KillMode"] == ["mixed"]
    seconds = int(directives["TimeoutStopSec"][0].removesuffix("s"))
    # Thespian gives up shutdown after 10 s; webhooks wait up to [http] submit_timeout_s (5 s).
    assert 20 <= seconds <= 90
    assert directives["Restart"] == ["on-failure"]
    assert directives["RuntimeDirectory"] == ["jodo"], "the metrics directory lives in /run/jodo"


def test_a_cluster_node_hands_its_groups_over_before_it_is_killed() -> None:
    directives = _directives("cluster/jodo@.service")
    assert directives["KillMode"] == ["mixed"] and directives["KillSignal"] == ["SIGTERM"]
    seconds = int(directives["TimeoutStopSec"][0].removesuffix("s"))
    # jodo serve waits up to 3 x lease_ttl_s + 10 s (19 s at the default 3 s) for the hand-over, then
    # Thespian may take 10 s to shut down: systemd must not SIGKILL before both.
    assert 3 * 3.0 + 10 + 10 <= seconds <= 90
    assert directives["Restart"] == ["on-failure"]


def test_a_cluster_instance_reads_its_own_config_and_directories() -> None:
    directives = _directives("cluster/jodo@.service")
    environment = directives["Environment"]
    assert "JODO_CONFIG=/etc/jodo/%i.toml" in environment
    assert "JODO_NODE__DATA_DIR=/var/lib/jodo/%i" in environment
    for key in ("StateDirectory", "RuntimeDirectory", "LogsDirectory"):
        assert directives[key] == ["jodo/%i"], key
    assert directives["ExecStart"] == ["/opt/jodo/.venv/bin/jodo serve"]
    # The database password stays in the DSN file jodo reads itself, never in the unit.
    text = (DEPLOY / "cluster" / "jodo@.service").read_text(encoding="utf-8")
    assert "postgresql://" not in text and "PGPASSWORD" not in text
