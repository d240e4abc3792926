"""A real Prometheus scrapes a running jodo node, and what it stores agrees with the simulated head-end.

The node runs in this test's process tree (``running_jodo``) with the metrics directory set up before it
starts, so every actor process it forks counts into one exposition, served from this process on a
loopback port (as the front door will). Prometheus (Debian's package) scrapes it every second. Under a
small payment load: the payment-to-connected histogram counts exactly the reconnects the simulator
executed; after a SIGKILLed shard is restarted, no counter went backwards or counted twice, the dead
process's gauges are gone and the replacement's are there. Everything listens on 127.0.0.1, and every
process and server the test starts is stopped at its end.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.facade import AskTimeout
from domain.commands import RegisterMeter
from domain.enums import RelayState
from headend.sim.config import LatencySpec, OutageMode, SimConfig
from headend.sim.server import HeadEndSimulator
from jodo.client import Saturated
from jodo.node import Node
from protocols.headend import HesControlState
from protocols.payments import PaymentReceived, PaymentResultCode
from telemetry import metrics
from tests.ops.ops_tools import ROOT, Prometheus, find_tool, running_prometheus, serving_metrics, until
from tests.system.jodo_fixtures import HEAD_END, Jodo, account, payment, register, running_jodo, serial

pytestmark = [pytest.mark.system, pytest.mark.slow]

REMOTE = 200  # relay-capable, disconnected for dues: paying reconnects them through the head-end
FIELD = 10  # not relay-capable: a paid one waits for a field crew (a work order), never a command
FIRST, SECOND, BATCH = 120, 40, 20  # remote meters paid before / after the shard is killed
DUES = 150_000
GATEWAY = "razorpay"
# CLOSE, not REFUSE: the node's processes are forked from this one after the simulator started
# listening, so they hold its listening socket too; REFUSE's re-listen then fails with EADDRINUSE.
SIM = SimConfig(meters=REMOTE + FIELD, disconnected_fraction=1.0, seed=1, outage_mode=OutageMode.CLOSE)
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "jodo.json"
RULES = [ROOT / "deploy" / "prometheus" / "rules" / f"jodo-{kind}.yml" for kind in ("recording", "alerts")]
TOTAL = "sum(jodo_payment_to_relay_connected_seconds_count)"
ACCEPTED = 'sum(jodo_payments_received_total{outcome="accepted"})'


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Iterator[Path]:
    """The node's metrics directory, set up in this process before the node forks its actors."""
    metrics.configure_labels(gateways=[GATEWAY], head_ends=[HEAD_END])
    directory = metrics.setup_multiproc_dir(tmp_path / "metrics")
    try:
        yield directory
    finally:
        metrics.stop_multiproc_dir()


def pay(j: Jodo, payments: list[PaymentReceived]) -> None:
    """Submit one batch until the desk has recorded it (a saturated desk or a lost reply: again;
    the ledger deduplicates, so an answered-but-lost first try comes back as duplicates)."""
    j.client.timeout = 5.0

    def recorded() -> bool:
        try:
            results = j.client.pay(payments)
        except AskTimeout:
            j.client.refresh()
            return False
        if isinstance(results, Saturated):
            return False
        return all(r.code in (PaymentResultCode.ACCEPTED, PaymentResultCode.DUPLICATE) for r in results)

    until("the desk to record a payment batch", recorded, timeout=30)


def pay_in_batches(j: Jodo, meters: range) -> None:
    ids = list(meters)
    for k in range(0, len(ids), BATCH):
        pay(j, [payment(i, amount=DUES) for i in ids[k : k + BATCH]])


def connected_at_simulator(j: Jodo) -> int:
    return j.sim.call(lambda s: s.fleet.count(HesControlState.CONNECTED))


def simulator_executed(j: Jodo) -> int:
    def executed(s: HeadEndSimulator) -> int:
        return s.stats.executed

    return j.sim.call(executed)


def field_meters() -> list[RegisterMeter]:
    return [
        RegisterMeter(account=account(i), serial=serial(i), head_end=HEAD_END, install_year=2022,
                      relay_capable=False, control_mode=2, relay=RelayState.DISCONNECTED,
                      opening_dues_paise=DUES)
        for i in range(REMOTE, REMOTE + FIELD)
    ]


def reaches(prom: Prometheus, expr: str, expected: float, timeout: float = 20.0) -> None:
    until(f"{expr} == {expected}", lambda: prom.value(expr) == expected, timeout=timeout)


def never_decreased(prom: Prometheus, expr: str, start: float) -> list[tuple[float, float]]:
    points = prom.series(expr, start, time.time())
    assert points, f"no samples of {expr}"
    drops = [(a, b) for a, b in itertools.pairwise(points) if b[1] < a[1]]
    assert not drops, f"{expr} went backwards: {drops}"
    return points


def dashboard_metric_names() -> set[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return {name for e in exprs for name in re.findall(r"\b(jodo_[a-z_]+)\b", e)}


def test_prometheus_counts_every_reconnect_and_keeps_counting_across_a_sigkilled_shard(
    metrics_dir: Path, start_node: Callable[..., Node], tmp_path: Path
) -> None:
    began = time.time()
    with (
        running_jodo(start_node, tmp_path, meters=REMOTE + FIELD, sim=SIM, resend_after_s=5) as j,
        serving_metrics(metrics.render, metrics.CONTENT_TYPE) as target,
        running_prometheus(find_tool("prometheus"), tmp_path / "prom", target, rule_files=RULES) as prom,
    ):
        assert j.client.send(register(REMOTE, dues=DUES) + field_meters()) == []
        reaches(prom, 'sum(jodo_meters{relay_state="disconnected"})', REMOTE + FIELD)
        # no work order yet: the gauge reads 0 for every action (its panel must not say "No data")
        for action in ("reconnect", "disconnect"):
            reaches(prom, f'sum(jodo_work_orders_open{{action="{action}"}})', 0)

        # --- before the kill: 120 remote meters and every field meter pay -------------------------
        pay_in_batches(j, range(FIRST))
        pay(j, [payment(i, amount=DUES) for i in range(REMOTE, REMOTE + FIELD)])
        until("the first payments reconnected at the simulator", lambda: connected_at_simulator(j) == FIRST)
        reaches(prom, TOTAL, FIRST)
        reaches(prom, ACCEPTED, FIRST + FIELD)
        assert connected_at_simulator(j) == simulator_executed(j) == FIRST
        reaches(prom, 'sum(jodo_meters{relay_state="connected"})', FIRST)

        # --- SIGKILL shard-0 while idle, and wait for its replacement to count itself in ----------
        victim = j.node.status().child("shards/shard-0").pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        until("shard-0 restarted", lambda: j.node.status().child("shards/shard-0").pid not in (None, victim))
        j.client.refresh()
        reaches(prom, 'sum(jodo_actor_restarts_total{kind="meter_shard"})', 1)
        reaches(prom, 'sum(jodo_actor_processes{kind="meter_shard"})', 2)
        reaches(prom, "sum(jodo_meters)", REMOTE + FIELD)  # the dead shard's gauges went, the new one's came
        reaches(prom, TOTAL, FIRST)  # the dead shard's observations are still counted, once
        reaches(prom, ACCEPTED, FIRST + FIELD)

        # --- after the restart: 40 more pay, and a gateway re-delivers a batch --------------------
        pay_in_batches(j, range(FIRST, FIRST + SECOND))
        pay(j, [payment(i, amount=DUES) for i in range(BATCH)])
        until("every paid remote meter connected at the simulator",
              lambda: connected_at_simulator(j) == FIRST + SECOND)
        reconnects = FIRST + SECOND
        reaches(prom, TOTAL, reconnects)
        reaches(prom, ACCEPTED, FIRST + FIELD + SECOND)
        assert connected_at_simulator(j) == simulator_executed(j) == reconnects
        unpaid = [serial(i) for i in range(reconnects, REMOTE + FIELD)]
        assert all(s.control_state == HesControlState.DISCONNECTED for s in j.sim.relay_states(unpaid))

        # --- the rest of the metric set shows the same node ---------------------------------------
        reaches(prom, 'sum(jodo_meters{relay_state="connected"})', reconnects)
        reaches(prom, 'sum(jodo_meters{relay_state="disconnected"})', REMOTE + FIELD - reconnects)
        reaches(prom, 'sum(jodo_relay_commands_total{action="connect", outcome="confirmed"})', reconnects)
        reaches(prom, 'sum(jodo_relay_command_attempts_total{action="connect"})', reconnects)
        reaches(prom, 'sum(jodo_meters_paid_but_disconnected{path="field"})', FIELD)
        reaches(prom, 'sum(jodo_meters_paid_but_disconnected{path="auto"})', 0)
        reaches(prom, 'sum(jodo_work_orders_open{action="reconnect"})', FIELD)
        reaches(prom, 'sum(jodo_actor_processes{kind="payment_desk"})', 1)
        reaches(prom, 'sum(jodo_actor_processes{kind="headend_gateway"})', 1)
        assert prom.query('jodo_batches_in_flight{stage="shard_to_gateway"}')
        assert prom.query('jodo_batches_in_flight{stage="desk_to_shard"}')
        duplicates = prom.value('sum(jodo_payments_received_total{outcome="duplicate"})')
        assert duplicates is not None and duplicates >= BATCH
        assert prom.value(f'sum(jodo_payments_received_total{{gateway="{GATEWAY}"}})') == (
            FIRST + FIELD + SECOND + duplicates
        )

        # --- a head-end outage opens the breaker, its end closes it ----------------------------------
        breaker = f'jodo_headend_breaker_state{{head_end="{HEAD_END}"}}'
        j.sim.begin_outage()
        reaches(prom, breaker, 2)
        j.sim.end_outage()
        reaches(prom, breaker, 0)

        # --- over the whole run: never backwards, never doubled, never a reset --------------------
        window = f"{int(time.time() - began) + 5}s"
        for expr in (TOTAL, ACCEPTED, 'sum(jodo_relay_commands_total{outcome="confirmed"})'):
            assert max(v for _, v in never_decreased(prom, expr, began)) == prom.value(expr)
        for name in ("jodo_payment_to_relay_connected_seconds_count", "jodo_payments_received_total",
                     "jodo_relay_commands_total", "jodo_relay_command_attempts_total"):
            assert prom.value(f"sum(resets({name}[{window}]))") == 0, name
        assert prom.value(f'max_over_time(sum(jodo_actor_processes{{kind="meter_shard"}})[{window}:1s])') == 2
        assert prom.value(f"max_over_time(sum(jodo_meters)[{window}:1s])") == REMOTE + FIELD
        assert prom.value(f'min_over_time(up{{job="jodo"}}[{window}])') == 1

        # --- the alert and recording rules evaluate on real data; every reconnect was inside the SLO -----
        until("every rule evaluated", lambda: all(r["health"] == "ok" for r in prom.rules()))
        reaches(prom, "jodo:payment_to_relay_connected:slow_ratio_rate5m", 0)

        # --- every dashboard metric had a series in this run ----------------------------------------
        missing = sorted(
            name for name in dashboard_metric_names()
            if not prom.query(f"last_over_time({name}[{window}])")
        )
        never_nonzero = sorted(
            name for name in dashboard_metric_names()
            if not prom.query(f"max_over_time({name}[{window}]) > 0")
        )
        print(f"\ndashboard metrics never above zero in this run: {never_nonzero}")
        assert not missing, f"dashboard metrics with no series in a live run: {missing}"

    # an actor that calls a metric with a label the registry refuses logs it (once per process)
    log = (tmp_path / "node0.log").read_text(encoding="utf-8", errors="replace")
    failures = [line for line in log.splitlines() if re.search(r"metric \w+.* failed", line)]
    assert not failures, failures[:5]


def exposed(name: str, **labels: str) -> float:
    """The node's /metrics body, summed over the samples of ``name`` that carry ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_a_shard_killed_with_reconnects_in_flight_still_observes_each_reconnect_once(
    metrics_dir: Path, start_node: Callable[..., Node], tmp_path: Path
) -> None:
    n = 100
    slow = SimConfig(meters=n, disconnected_fraction=1.0, seed=1, latency=LatencySpec("fixed", (2.0,)))
    with running_jodo(start_node, tmp_path, meters=n, sim=slow, resend_after_s=5) as j:
        assert j.client.send(register(n, dues=DUES)) == []
        until("the meters counted", lambda: exposed("jodo_meters") == n)
        victim = j.node.status().child("shards/shard-0").pid
        assert victim is not None
        pay(j, [payment(i, amount=DUES) for i in range(n)])
        until("every command at the head-end", lambda: j.sim.call(lambda s: s.stats.accepted) >= n)
        assert connected_at_simulator(j) == 0, "the kill must find shard-0's reconnects in flight"
        os.kill(victim, signal.SIGKILL)
        until("every paid meter connected at the simulator", lambda: connected_at_simulator(j) == n,
              timeout=30)
        until("every reconnect confirmed in a shard",
              lambda: exposed("jodo_relay_commands_total", action="connect", outcome="confirmed") == n)
        assert exposed("jodo_actor_restarts_total", kind="meter_shard") == 1
        assert exposed("jodo_payments_received_total", outcome="accepted") == n
        assert exposed("jodo_relay_command_attempts_total", action="connect") == n
        # the replacement gets the killed shard's receipt times back from the ledger at recovery
        assert exposed("jodo_payment_to_relay_connected_seconds_count") == n


def test_a_sigkilled_supervisor_leaves_no_gauge_of_the_shards_that_died_with_it(
    metrics_dir: Path, start_node: Callable[..., Node], tmp_path: Path
) -> None:
    n, paid = 50, 10
    with running_jodo(start_node, tmp_path, meters=n, resend_after_s=5) as j:
        assert j.client.send(register(n, dues=DUES)) == []
        until("the meters counted", lambda: exposed("jodo_meters") == n)
        before = j.node.status()
        supervisor = before.child("shards").pid
        shards = {before.child(f"shards/shard-{g}").pid for g in range(2)}
        assert supervisor is not None
        os.kill(supervisor, signal.SIGKILL)  # its shards die with it (die_with_parent); nobody sees them exit

        def restarted() -> bool:
            try:
                now = j.node.status()
                pids = [now.child(f"shards/shard-{g}").pid for g in range(2)]
            except (StopIteration, AskTimeout):  # the shards supervisor is not back yet
                return False
            return all(pid not in (None, *shards) for pid in pids)

        until("new shards", restarted)
        j.client.refresh()
        pay(j, [payment(i, amount=DUES) for i in range(paid)])
        # the new shards' gauges say so once they ticked; the old shards' would still say 0 connected
        until("the new shards' gauges", lambda: exposed("jodo_meters", relay_state="connected") == paid)
        assert exposed("jodo_meters") == n
        assert exposed("jodo_meters", relay_state="disconnected") == n - paid
        assert exposed("jodo_actor_processes", kind="meter_shard") == 2
        assert exposed("jodo_actor_restarts_total", kind="supervisor") == 1
        live_files = [p.name for p in metrics_dir.glob("gauge_live*.db")]
        assert not [f for f in live_files if not Path(f"/proc/{f.rsplit('_', 1)[1][:-3]}").exists()]


def rule_metric_names() -> set[str]:
    """The jodo_* names in the rules' expressions (``expr: ...`` or an ``expr: |`` block under it),
    not in their descriptions (which also name tables such as jodo_members)."""
    exprs: list[str] = []
    for path in RULES:
        block: int | None = None  # indentation of the expr key while reading its block
        for line in path.read_text(encoding="utf-8").splitlines():
            indent = len(line) - len(line.lstrip())
            if block is not None and (not line.strip() or indent > block):
                exprs.append(line)
                continue
            block = None
            if line.strip().startswith("expr:"):
                rest = line.split("expr:", 1)[1].strip()
                if rest in ("|", ">", "|-", ">-"):
                    block = indent
                else:
                    exprs.append(rest)
    return {name for e in exprs for name in re.findall(r"\b(jodo_[a-z_]+)\b", e)}


def test_a_fresh_node_exposes_every_metric_the_dashboard_and_the_alerts_query(
    metrics_dir: Path, start_node: Callable[..., Node], tmp_path: Path
) -> None:
    """Before any payment, command or work order: every jodo_* name a panel or a rule queries has a
    sample in the node's exposition (histograms by their _bucket/_count/_sum), so no panel says
    "No data" on a healthy node."""
    with running_jodo(start_node, tmp_path, meters=5, sim=SIM, resend_after_s=5) as j:
        assert j.client.send(register(5, dues=DUES)) == []
        wanted = dashboard_metric_names() | rule_metric_names()

        def absent() -> list[str]:
            exposed = metrics.render().decode()
            names = {s.name for f in text_string_to_metric_families(exposed) for s in f.samples}
            return sorted(n for n in wanted if n not in names and not {f"{n}_bucket", f"{n}_total"} & names)

        until(f"every queried metric exposed (absent: {absent()})", lambda: not absent(), timeout=20)
