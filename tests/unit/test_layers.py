"""The layers' arrows point down: the runtime (domain, protocols, storage, telemetry, headend, actors,
supervisors) never imports the application (jodo/), not even lazily inside a function; telemetry stands
on domain.enums alone; jodo/errors.py is a leaf of the application (it imports no jodo module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("domain", "protocols", "storage", "telemetry", "headend", "actors", "supervisors")


def imported(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement anywhere in ``path`` names (top level or nested)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", RUNTIME)
def test_the_runtime_never_imports_the_application(package: str) -> None:
    ups = [f"{path.relative_to(ROOT)}:{line} imports {name}"
           for path in sorted((ROOT / package).rglob("*.py")) for line, name in imported(path)
           if name == "jodo" or name.startswith("jodo.")]
    assert not ups, "\n".join(ups)


def test_telemetry_stands_on_domain_enums_alone() -> None:
    ours = {name.split(".")[0] for path in (ROOT / "telemetry").rglob("*.py") for _, name in imported(path)}
    assert ours & {"jodo", "actors", "supervisors", "storage", "protocols", "headend"} == set()


def test_jodo_errors_imports_no_jodo_module() -> None:
    names = [name for _, name in imported(ROOT / "jodo" / "errors.py")]
    assert not [n for n in names if n.startswith("jodo")], names
