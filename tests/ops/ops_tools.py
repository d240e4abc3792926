"""Helpers for the ops tier: checks of deploy/ with the real tools (promtool, systemd-analyze).

A missing tool fails the test (never a skip): install them with ``bash scripts/install-ops-tools.sh``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "bash scripts/install-ops-tools.sh"


def _find(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `{INSTALL_HINT}` (Debian packages)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """``tool("promtool")`` → its path, or the test fails naming the install script."""
    return _find


def run(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)
