"""The dashboard and the Prometheus rules name only metrics and labels that telemetry/metrics.py defines.

A PromQL expression is reduced to its selectors' names by a small lexer (strings, label matchers,
ranges, grouping clauses, numbers and function calls removed); a later live-Prometheus test checks the
queries for real.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from telemetry import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "jodo.json"
RULES = ROOT / "deploy" / "prometheus" / "rules"

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"})
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_LABELS_ALWAYS = frozenset({"instance", "job", "le", "__name__"})


def _strip(expr: str) -> str:
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = _MATCHERS.sub(" ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = _GROUPING.sub(" ", expr)
    return re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]*", " ", expr)


def selector_names(expr: str) -> set[str]:
    """Metric (or recorded series) names a PromQL expression selects."""
    stripped = _strip(expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        if stripped[match.end() :].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def label_names(expr: str) -> set[str]:
    """Label names used in matchers and grouping clauses."""
    no_strings = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    labels: set[str] = set()
    for body in _MATCHERS.findall(no_strings):
        labels.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    for _, body in _GROUPING.findall(no_strings):
        labels.update(label.strip() for label in body.split(",") if label.strip())
    return labels


def _jodo_labels() -> frozenset[str]:
    return frozenset(label for metric in metrics._ALL for label in metric._labelnames) | _LABELS_ALWAYS


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["definition"]
            inner = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert inner, query
            yield f"variable {variable['name']}", inner.group(1) + "{" + inner.group(2) + '=""}'


def rule_exprs(path: Path) -> Iterator[tuple[str, str]]:
    """(alert or record name, expr) from one of our rule files (inline or ``|`` block exprs)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = ""
    for i, line in enumerate(lines):
        head = re.match(r"\s*- (?:alert|record): (\S+)", line)
        if head:
            name = head.group(1)
        expr = re.match(r"(\s*)expr: ?(.*)$", line)
        if not expr:
            continue
        if expr.group(2).strip() not in ("|", ">", "|-", ">-"):
            yield name, expr.group(2)
            continue
        indent = len(expr.group(1))
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following.strip())
        yield name, " ".join(body)


def _count_rules(path: Path) -> int:
    return len(re.findall(r"^\s*- (?:alert|record): ", path.read_text(encoding="utf-8"), re.MULTILINE))


def test_the_lexer_finds_names_and_skips_functions_labels_and_durations() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (kind, le) (rate(jodo_journal_commit_seconds_bucket{le=~"0.5",'
        ' instance=~"$instance"}[$__rate_interval]))) > 0.25 and on (kind) up offset 5m or vector(1e3)'
    )
    assert selector_names(expr) == {"jodo_journal_commit_seconds_bucket", "up"}
    assert label_names(expr) == {"kind", "le", "instance"}


def test_the_committed_dashboard_is_what_the_builder_makes() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", ROOT / "deploy/grafana/build_dashboard.py"
    )
    assert spec and spec.loader
    builder: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert DASHBOARD.read_text(encoding="utf-8") == builder.render(), "run deploy/grafana/build_dashboard.py"


def test_every_dashboard_query_names_only_jodo_metrics_and_labels() -> None:
    known, labels = metrics.metric_names(), _jodo_labels()
    exprs = list(_dashboard_exprs())
    assert len(exprs) > 20
    for title, expr in exprs:
        names = selector_names(expr)
        assert names, (title, expr)
        assert names <= known, (title, names - known)
        assert label_names(expr) <= labels, (title, label_names(expr) - labels)


def test_the_dashboard_has_the_eight_rows_and_every_row_has_panels() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert [r.split(":")[0].split(" ")[0] for r in rows] == ["The", "Flow", "Health", "Capacity", "Cluster",
                                                                  "Mass-disconnect", "Audit", "Prepaid"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("rule_file", ["jodo-alerts.yml", "jodo-recording.yml"])
def test_every_rule_names_only_jodo_metrics_recorded_series_or_up(rule_file: str) -> None:
    recorded = {name for name, _ in rule_exprs(RULES / "jodo-recording.yml")}
    known = metrics.metric_names() | recorded | {"up"}
    exprs = list(rule_exprs(RULES / rule_file))
    assert len(exprs) == _count_rules(RULES / rule_file)
    for name, expr in exprs:
        names = selector_names(expr)
        assert names and names <= known, (name, names - known)
        assert label_names(expr) <= _jodo_labels(), (name, label_names(expr) - _jodo_labels())


def test_the_slo_threshold_is_a_bucket_edge() -> None:
    text = (RULES / "jodo-recording.yml").read_text(encoding="utf-8") + DASHBOARD.read_text(encoding="utf-8")
    edges = {float(edge) for edge in re.findall(r'le=~\\*"(\d+(?:\.\d+)?)\(', text)}
    assert edges == {300.0}
    assert edges <= set(map(float, metrics.PAYMENT_TO_CONNECTED_BUCKETS))
