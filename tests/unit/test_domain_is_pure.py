"""domain/ must stay pure: no thespian, no sockets, no clock reads."""

from __future__ import annotations

import ast
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "domain"
FORBIDDEN_MODULES = {"thespian", "socket", "asyncio", "sqlite3", "storage", "actors", "protocols"}
FORBIDDEN_CALLS = {"time.time", "time.monotonic", "datetime.now", "datetime.utcnow", "date.today"}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _calls(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value
            if isinstance(value, ast.Name):
                found.add(f"{value.id}.{node.func.attr}")
            elif isinstance(value, ast.Attribute):
                found.add(f"{value.attr}.{node.func.attr}")
    return found


def test_domain_imports_no_runtime_and_reads_no_clock() -> None:
    files = sorted(DOMAIN.rglob("*.py"))
    assert files, "domain/ has no modules"
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        bad_imports = _imports(tree) & FORBIDDEN_MODULES
        assert not bad_imports, f"{path.name} imports {sorted(bad_imports)}"
        bad_calls = _calls(tree) & FORBIDDEN_CALLS
        assert not bad_calls, f"{path.name} reads the clock via {sorted(bad_calls)}"
