"""The actors' metric calls match telemetry.metrics: a call by a name that does not exist, or with a label the
registry refuses, is only logged by the actor (metrics never raise), so it would go unnoticed.

The label values actors compute at run time are checked by the live test
(tests/system/test_metrics_prometheus_live.py, which fails on any "metric ... failed" log line); here,
what can be checked without running them: every helper name, every literal label, and the actor kinds
of the real supervision tree.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_tools import ROOT
from prometheus_client.parser import text_string_to_metric_families

from domain.supervision import ChildSpec
from jodo.tree import HeadEnd, TreeOptions, jodo_tree
from protocols.control import SupervisorInit
from telemetry import metrics

SOURCES = sorted((ROOT / "actors").glob("*.py")) + sorted((ROOT / "supervisors").glob("*.py"))


def _metric_calls() -> Iterator[tuple[str, str, list[object]]]:
    """(where, helper name, literal positional args or None for computed ones) of every metric call:
    ``self.metric("name", ...)``, ``_metric("name", ...)`` and ``metrics.name(...)``."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            func = node.func
            args: list[object] = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
            by_name = (isinstance(func, ast.Attribute) and func.attr == "metric") or (
                isinstance(func, ast.Name) and func.id == "_metric"
            )
            if by_name and args and isinstance(args[0], str):
                yield where, args[0], args[1:]
            elif (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "metrics"
            ):
                yield where, func.attr, args


# A valid call of each helper that takes positional arguments: a call's computed arguments are replaced
# by these, its literal ones kept, so the literal labels are checked by the helper itself.
SAMPLE_ARGS: dict[str, tuple[object, ...]] = {
    "set_prepaid_bands": ({"negative": 1, "500_plus": 2},),
    "prepaid_reads": ("duplicate", 1),
    "emergency_credit": ("recovered", 1),
    "prepaid_recharge_off_rule": ("multiple",),
    "prepaid_disconnection_held": (1,),
    "payment_received": ("razorpay", "accepted", 2),
    "payment_reconnected": ("hes-1", 1.0),
    "relay_command_attempted": ("hes-1", "connect", 2),
    "relay_command_finished": ("connect", "confirmed", 2),
    "headend_roundtrip": ("hes-1", 0.1),
    "headend_reads": ("hes-1", "forwarded", 2),
    "set_relay_commands_pending": ("hes-1", 0),
    "set_breaker_state": ("hes-1", "closed"),
    "set_meters_by_relay_state": ({"connected": 0},),
    "set_work_orders_open": ("reconnect", 0),
    "actor_restarted": ("meter_shard",),
    "dead_letter": ("meter_shard",),
    "batches_in_flight": ("desk_to_shard", 0),
    "set_payments_unapplied": (0,),
    "journal_commit": ("meter_shard", 0.001),
    "recovered": ("meter_shard", 0.1),
    "notice_sent": ("payment_received", 2),
    "process_started": ("meter_shard",),
    "sample_process_memory": ("meter_shard",),
    "mark_dead": (2**22 + 1,),  # no such pid
    "set_cluster_leases_held": (0,),
    "cluster_lease_acquired": ("free",),
    "cluster_lease_lost": ("released",),
    "fencing_refusal": ("group",),
    "cluster_failover": (1.0,),
    "set_disconnect_guard": ("hes-1", 0, 0, False),
    "disconnects_released": ("hes-1", 1),
    "disconnect_guard_failed": ("hes-1", 1),
    "dlms_events": ("hes-1", "refused", 1),
    "cim_events": ("hes-1", "refused_late", 1),
    "meter_credit_updates": ("hes-1", "applied", 1),
}
CALLS = list(_metric_calls())


def _others() -> float:
    """Everything counted under kind=other so far (an actor kind the registry does not know)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.labels.get("kind") == metrics.OTHER and not sample.name.endswith("_bucket")
    )


def test_the_actors_call_metrics_at_all() -> None:
    names = {name for _, name, _ in CALLS}
    assert {"payment_received", "payment_reconnected", "relay_command_finished", "actor_restarted",
            "mark_dead", "set_meters_by_relay_state", "set_breaker_state"} <= names, names


@pytest.mark.parametrize(("where", "name", "args"), CALLS, ids=[where for where, _, _ in CALLS])
def test_every_metric_call_names_a_helper_and_its_literal_labels_are_accepted(
    where: str, name: str, args: list[object]
) -> None:
    assert name in metrics.__all__ and callable(getattr(metrics, name, None)), (
        f"{where}: telemetry.metrics has no helper {name!r}"
    )
    if not args:
        return
    assert name in SAMPLE_ARGS, f"{where}: add a valid call of {name} to SAMPLE_ARGS"
    sample = SAMPLE_ARGS[name]
    assert len(args) <= len(sample), f"{where}: {name} called with {len(args)} arguments"
    call = [sample[i] if a is None else a for i, a in enumerate(args)]
    metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-1"])
    before = _others()
    getattr(metrics, name)(*call)  # ValueError: a label the registry refuses
    assert _others() == before, f"{where}: {name}{tuple(call)!r} is counted as kind={metrics.OTHER}"


def _kinds(specs: tuple[ChildSpec, ...]) -> Iterator[str]:
    for spec in specs:
        yield spec.kind
        if isinstance(spec.init, SupervisorInit):
            yield from _kinds(spec.init.children)


def test_every_actor_kind_of_the_real_tree_has_its_own_label(tmp_path: Path) -> None:
    tree = jodo_tree(TreeOptions(data_dir=str(tmp_path), head_ends=(HeadEnd(name="hes-1", host="127.0.0.1",
                                                                            port=1),)))
    kinds = set(_kinds(tree))
    assert {"MeterShard", "PaymentDesk", "HeadEndGateway", "Supervisor"} <= kinds, kinds
    metrics.configure_labels(gateways=[], head_ends=[])
    before = _others()
    for kind in kinds:
        metrics.actor_restarted(kind)
    assert _others() == before, f"some of {sorted(kinds)} are counted as kind={metrics.OTHER}"
