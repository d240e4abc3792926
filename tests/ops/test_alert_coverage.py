"""Every alert carries summary, description and a runbook that exists, and has promtool tests that see
it fire and see it stay quiet. (promtool itself runs them: test_promtool.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ops_tools import ROOT

ALERTS = ROOT / "deploy" / "prometheus" / "rules" / "jodo-alerts.yml"
TESTS = ROOT / "deploy" / "prometheus" / "rules" / "tests"
RUNBOOKS = ROOT / "deploy" / "runbooks"


def _alert_blocks() -> list[tuple[str, str]]:
    text = ALERTS.read_text(encoding="utf-8")
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"^\s*- alert: (\S+)$", text, re.MULTILINE)]
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return [(name, text[start:end]) for (start, name), end in zip(starts, ends, strict=True)]


def _alert_names() -> list[str]:
    return sorted({name for name, _ in _alert_blocks()})


def _test_outcomes() -> dict[str, set[str]]:
    """alertname → {"fires", "quiet"} from every alert_rule_test case."""
    outcomes: dict[str, set[str]] = {}
    for path in TESTS.glob("*.yml"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^\s*alertname: (\S+)$", line)
            if not match:
                continue
            following = lines[i + 1].strip()
            assert following.startswith("exp_alerts:"), (path.name, i + 2, following)
            outcomes.setdefault(match.group(1), set()).add("quiet" if following.endswith("[]") else "fires")
    return outcomes


def test_the_expected_alerts_exist() -> None:
    assert _alert_names() == sorted(
        [
            "JodoAuditCheckpointsStopped",
            "JodoBacklogGrowing",
            "JodoClusterFailoverSlow",
            "JodoClusterFencingRefusals",
            "JodoClusterGroupsUnowned",
            "JodoClusterLeaseChurn",
            "JodoClusterMemberLost",
            "JodoClusterStoreUnreachable",
            "JodoDeadLetters",
            "JodoDisconnectWaveHeld",
            "JodoDisconnectsPausedLong",
            "JodoHeadEndBreakerOpen",
            "JodoJournalSlow",
            "JodoMeterCreditUpdatesFailing",
            "JodoNodeDown",
            "JodoPaidButDisconnected",
            "JodoPrepaidReadsStopped",
            "JodoReconcileMismatch",
            "JodoReconcileStale",
            "JodoReconnectSLOBurn",
            "JodoRestartStorm",
            "JodoWebhooksLost",
        ]
    )


@pytest.mark.parametrize(("name", "block"), _alert_blocks())
def test_every_alert_rule_says_what_where_and_how(name: str, block: str) -> None:
    for key in ("summary", "description", "runbook_url"):
        assert re.search(rf"^\s+{key}: \S", block, re.MULTILINE), (name, key)
    assert re.search(r"^\s+severity: (critical|warning)$", block, re.MULTILINE), name
    [url] = re.findall(r"runbook_url: (\S+)", block)
    assert url.endswith(f"/deploy/runbooks/{name}.md"), url
    runbook = RUNBOOKS / f"{name}.md"
    assert runbook.exists(), runbook
    text = runbook.read_text(encoding="utf-8")
    assert text.startswith(f"# {name}\n")
    for section in ("What it means for the consumer", "First checks", "Commands", "Recovery"):
        assert f"## {section}" in text, (name, section)


@pytest.mark.parametrize("name", _alert_names())
def test_every_alert_is_tested_firing_and_quiet(name: str) -> None:
    assert _test_outcomes().get(name) == {"fires", "quiet"}, name


def test_no_runbook_is_orphaned() -> None:
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == set(_alert_names())
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    assert all(f"({name}.md)" in index for name in pages)


def test_every_test_file_loads_both_rule_files() -> None:
    for path in TESTS.glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        assert "../jodo-alerts.yml" in text and "../jodo-recording.yml" in text, path
    assert Path(ALERTS).exists()
