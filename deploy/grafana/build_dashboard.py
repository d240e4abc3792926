"""Builds deploy/grafana/dashboards/jodo.json, the jodo overview dashboard.

    python deploy/grafana/build_dashboard.py           # write the JSON
    python deploy/grafana/build_dashboard.py --check   # exit 1 if the committed JSON is stale

Five rows: the promise (payment → relay connected, paid-but-disconnected), flow (payments, commands),
health (restarts, breakers, backlog, dead letters, journal), capacity (meters per state, memory), and
cluster (members, unowned groups, leases per node, hand-overs and take-overs, fencing, failover time;
empty on a single node).
Every expression uses only metrics defined in telemetry/metrics.py (tests/unit/test_metrics_dashboard.py
checks it). Standard library only, so it runs without the project's virtualenv.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "jodo.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
INST = 'instance=~"$instance"'
RATE = "$__rate_interval"
WIDTH = 24


def _sel(*matchers: str) -> str:
    return "{" + ", ".join((INST, *matchers)) + "}"


def _quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    group = f"{by}, le" if by else "le"
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{_sel()}[{RATE}])))",
            f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for q in (0.5, 0.95, 0.99)
    ]


class Layout:
    """Places panels left to right, wrapping rows of 24 grid units; hands out ids."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": self._id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        description: str,
        unit: str = "short",
        kind: str = "timeseries",
        width: int = 8,
        height: int = 8,
        stack: bool = False,
        thresholds: Sequence[tuple[float | None, str]] | None = None,
        mappings: list[dict[str, Any]] | None = None,
    ) -> None:
        if self.x + width > WIDTH:
            self._newline()
        defaults: dict[str, Any] = {"unit": unit}
        if thresholds:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"value": value, "color": color} for value, color in thresholds],
            }
        if mappings:
            defaults["mappings"] = mappings
        if kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 20 if stack else 5,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                "showPoints": "never",
            }
        options: dict[str, Any] = {"tooltip": {"mode": "multi", "sort": "desc"}}
        if kind == "timeseries":
            options["legend"] = {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            }
        elif kind == "stat":
            options = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background",
                "graphMode": "area",
                "textMode": "value",
            }
        elif kind == "state-timeline":
            options = {"showValue": "auto", "mergeValues": True, "rowHeight": 0.9}
        self.panels.append(
            {
                "id": self._id(),
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DATASOURCE,
                "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
                "targets": [
                    {
                        "refId": chr(ord("A") + i),
                        "datasource": DATASOURCE,
                        "expr": expr,
                        "legendFormat": legend,
                        "range": True,
                    }
                    for i, (expr, legend) in enumerate(targets)
                ],
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": options,
            }
        )
        self.x += width
        self.row_height = max(self.row_height, height)


def _reconciliation(lay: Layout) -> None:
    """Reconciliation with the payment gateways (jodo/reconcile), at the end of the Flow row."""
    lay.panel(
        "Reconciliation: mismatches",
        [(f"max by (gateway, kind) (jodo_reconcile_mismatches{_sel()})", "{{gateway}} {{kind}}")],
        description="What the last periodic run of each gateway found in its window: amount_differs, "
        "missing_at_gateway (the ledger has it, the gateway not as captured), invalid (not credited), stuck "
        "(authorized, never captured). All but stuck alert after 15 min (JodoReconcileMismatch).",
        width=6,
    )
    lay.panel(
        "Reconciliation: credited without a webhook (1h)",
        [(f"sum by (gateway) (increase(jodo_reconcile_credited_total{_sel()}[1h]))", "{{gateway}}")],
        description="Captured payments the ledger lacked, credited by reconciliation: their webhook was "
        "lost. 3 in 30 minutes alert (JodoWebhooksLost).",
        width=6,
        stack=True,
    )
    lay.panel(
        "Reconciliation: age of the last complete window",
        [
            (
                f"max by (gateway) ((time() - jodo_reconcile_last_complete_timestamp_seconds{_sel()}) "
                f"* jodo_reconcile_enabled{_sel()})",
                "{{gateway}}",
            ),
        ],
        description="Seconds since the end of the last window read completely from the gateway's API; 0 for "
        "gateways whose periodic reconciliation is off. Over an hour alerts (JodoReconcileStale).",
        unit="s",
        width=6,
        thresholds=[(None, "green"), (3600, "red")],
    )
    lay.panel(
        "Reconciliation: gateway API errors",
        [(f"sum by (gateway, kind) (rate(jodo_reconcile_gateway_errors_total{_sel()}[{RATE}]))",
          "{{gateway}} {{kind}}")],
        description="Failed requests to the gateways' payments APIs: rate_limited (429: waits Retry-After, "
        "resumes the page), server_error (5xx, timeouts, no answer: retried with backoff, then the window "
        "is incomplete).",
        unit="reqps",
        width=6,
    )


def build() -> dict[str, Any]:
    lay = Layout()
    green_red = [(None, "green"), (1, "red")]

    lay.row("The promise: paid → supply back")
    lay.panel(
        "Paid but still disconnected (automatic)",
        [("sum(jodo_meters_paid_but_disconnected" + _sel('path="auto"') + ") or vector(0)", "meters")],
        description="Eligible meters paid down to the threshold, relay not connected past the grace. "
        "Anything above 0 for 5 minutes pages (JodoPaidButDisconnected).",
        kind="stat",
        width=6,
        thresholds=green_red,
    )
    lay.panel(
        "Paid, waiting for a field visit",
        [("sum(jodo_meters_paid_but_disconnected" + _sel('path="field"') + ") or vector(0)", "meters")],
        description="Paid meters that cannot be reconnected remotely: a work order and a notice went out.",
        kind="stat",
        width=6,
        thresholds=[(None, "green"), (1, "orange")],
    )
    lay.panel(
        "Reconnected within 300 s (1h)",
        [
            (
                "sum(rate(jodo_payment_to_relay_connected_seconds_bucket"
                + _sel('le=~"300(\\\\.0)?"')
                + "[1h])) / "
                f"sum(rate(jodo_payment_to_relay_connected_seconds_count{_sel()}[1h]))",
                "within 300 s",
            )
        ],
        description="Share of automatic reconnections confirmed within 300 s of payment; objective 99 %.",
        kind="stat",
        unit="percentunit",
        width=6,
        thresholds=[(None, "red"), (0.95, "orange"), (0.99, "green")],
    )
    lay.panel(
        "Awaiting the consumer's button",
        [("sum(jodo_meters" + _sel('relay_state="awaiting_button"') + ") or vector(0)", "meters")],
        description="Relay armed (DLMS ready_for_reconnection); the consumer was told to press the button.",
        kind="stat",
        width=6,
        thresholds=[(None, "green"), (1, "blue")],
    )
    lay.panel(
        "Payment → relay connected",
        _quantiles("jodo_payment_to_relay_connected_seconds"),
        description="Seconds from a payment's durable receipt to the relay confirmed connected: p50/p95/p99.",
        unit="s",
        width=12,
        thresholds=[(None, "green"), (60, "orange"), (300, "red")],
    )
    lay.panel(
        "Payment → relay connected p95 by head-end",
        [
            (
                "histogram_quantile(0.95, sum by (head_end, le) "
                f"(rate(jodo_payment_to_relay_connected_seconds_bucket{_sel()}[{RATE}])))",
                "{{head_end}}",
            )
        ],
        description="Which head-end is slow.",
        unit="s",
        width=12,
    )

    lay.row("Flow")
    lay.panel(
        "Payments received by outcome",
        [(f"sum by (outcome) (rate(jodo_payments_received_total{_sel()}[{RATE}]))", "{{outcome}}")],
        description="accepted, duplicate (deduplicated by payment id), suspense (no such account), rejected.",
        unit="reqps",
        stack=True,
    )
    lay.panel(
        "Payments received by gateway",
        [(f"sum by (gateway) (rate(jodo_payments_received_total{_sel()}[{RATE}]))", "{{gateway}}")],
        description="Per configured payment gateway (others are 'other').",
        unit="reqps",
        stack=True,
    )
    lay.panel(
        "Webhooks rejected by status class",
        [
            (
                f"sum by (gateway, status_class) (rate(jodo_webhooks_rejected_total{_sel()}[{RATE}]))",
                "{{gateway}} {{status_class}}",
            )
        ],
        description="4xx: bad signature or body (the gateway's side); 5xx: ours (not durable, try again).",
        unit="reqps",
    )
    lay.panel(
        "Relay commands finished",
        [
            (
                f"sum by (action, outcome) (rate(jodo_relay_commands_total{_sel()}[{RATE}]))",
                "{{action}} {{outcome}}",
            )
        ],
        description="By action and outcome: confirmed, awaiting_button, failed, rejected, expired, "
        "cancelled.",
        unit="ops",
        stack=True,
    )
    lay.panel(
        "Relay command transmissions by head-end",
        [
            (
                f"sum by (head_end, action) (rate(jodo_relay_command_attempts_total{_sel()}[{RATE}]))",
                "{{head_end}} {{action}}",
            )
        ],
        description="Every transmission, retries included; compare with commands finished.",
        unit="ops",
    )
    lay.panel(
        "Head-end round trip",
        _quantiles("jodo_headend_command_roundtrip_seconds", by="head_end"),
        description="Seconds from sending a relay command to the head-end's result.",
        unit="s",
    )
    lay.panel(
        "Consumer notices sent",
        [(f"sum by (template) (rate(jodo_consumer_notices_sent_total{_sel()}[{RATE}]))", "{{template}}")],
        description="By template (domain.enums.NoticeTemplate).",
        unit="ops",
        width=12,
        stack=True,
    )
    lay.panel(
        "Work orders open",
        [(f"sum by (action) (jodo_work_orders_open{_sel()})", "{{action}}")],
        description="Field visits owed: meters that cannot be reconnected remotely or failed every retry.",
        width=12,
        stack=True,
    )
    _reconciliation(lay)

    lay.row("Health")
    lay.panel(
        "Head-end breakers",
        [(f"max by (head_end) (jodo_headend_breaker_state{_sel()})", "{{head_end}}")],
        description="Circuit breaker per head-end: closed, half-open (probing), open (not sending).",
        kind="state-timeline",
        width=12,
        thresholds=[(None, "green"), (1, "orange"), (2, "red")],
        mappings=[
            {
                "type": "value",
                "options": {
                    "0": {"text": "closed", "color": "green"},
                    "1": {"text": "half-open", "color": "orange"},
                    "2": {"text": "open", "color": "red"},
                },
            }
        ],
    )
    lay.panel(
        "Actor restarts (10 min)",
        [(f"sum by (kind) (increase(jodo_actor_restarts_total{_sel()}[10m]))", "{{kind}}")],
        description="Restarts by supervisors; more than 5 in 10 minutes for one kind alerts "
        "(JodoRestartStorm).",
        width=12,
        thresholds=[(None, "green"), (5, "red")],
    )
    lay.panel(
        "Backlog: relay commands pending",
        [(f"sum by (head_end) (jodo_relay_commands_pending{_sel()})", "{{head_end}}")],
        description="Issued and not finished, per head-end.",
        stack=True,
    )
    lay.panel(
        "Backlog: payments not yet applied",
        [
            (f"sum(jodo_payments_unapplied{_sel()})", "unapplied payments"),
            (f"sum by (stage) (jodo_batches_in_flight{_sel()})", "batches in flight: {{stage}}"),
        ],
        description="Durable in the ledger, not yet applied by a shard; and unacknowledged batches "
        "per stage.",
    )
    lay.panel(
        "Backpressure and dead letters",
        [
            (f"sum(rate(jodo_desk_saturated_total{_sel()}[{RATE}]))", "desk saturated /s"),
            (
                f"sum by (kind) (increase(jodo_dead_letters_total{_sel()}[15m]))",
                "dead letters (15 min) {{kind}}",
            ),
        ],
        description="Desk saturation: intake held back because every credit window was full. "
        "Dead letters: stored, never applied automatically (JodoDeadLetters).",
    )
    lay.panel(
        "Journal commit p99",
        [
            (
                "histogram_quantile(0.99, sum by (kind, le) "
                f"(rate(jodo_journal_commit_seconds_bucket{_sel()}[{RATE}])))",
                "{{kind}}",
            )
        ],
        description="Group commit time; above 250 ms for 10 minutes alerts (JodoJournalSlow).",
        unit="s",
        width=12,
        thresholds=[(None, "green"), (0.25, "red")],
    )
    lay.panel(
        "Recovery time p95",
        [
            (
                "histogram_quantile(0.95, sum by (kind, le) "
                f"(rate(jodo_recovery_seconds_bucket{_sel()}[1h])))",
                "{{kind}}",
            )
        ],
        description="Snapshot + journal replay after an actor start, by kind.",
        unit="s",
        width=12,
    )

    lay.row("Capacity")
    lay.panel(
        "Meters by relay state",
        [(f"sum by (relay_state) (jodo_meters{_sel()})", "{{relay_state}}")],
        description="Every hosted meter, by relay state.",
        width=12,
        stack=True,
    )
    lay.panel(
        "Actor processes",
        [(f"sum by (kind) (jodo_actor_processes{_sel()})", "{{kind}}")],
        description="Live actor processes by kind.",
        width=12,
        stack=True,
    )
    lay.panel(
        "Resident memory by kind",
        [(f"sum by (kind) (jodo_process_resident_memory_bytes{_sel()})", "{{kind}}")],
        description="Sum over live processes of each kind (sampled on each actor's tick).",
        unit="bytes",
        width=12,
        stack=True,
    )
    lay.panel(
        "Memory per process",
        [
            (
                f"sum by (kind) (jodo_process_resident_memory_bytes{_sel()}) / "
                f"sum by (kind) (jodo_actor_processes{_sel()})",
                "{{kind}}",
            )
        ],
        description="Average resident memory of one process of each kind; watch meter shards grow.",
        unit="bytes",
        width=12,
    )

    # Gauges of the cluster are each keeper's view of the shared tables: max over nodes, not sum.
    lay.row("Cluster")
    lay.panel(
        "Groups unowned",
        [(f"max(jodo_cluster_groups_unowned{_sel()}) or vector(0)", "groups")],
        description="Shard groups no live member holds a lease on: their meters get no credit and no "
        "relay command. A take-over takes a few seconds; above 0 for 30 s pages (JodoClusterGroupsUnowned).",
        kind="stat",
        width=6,
        thresholds=green_red,
    )
    lay.panel(
        "Fencing refusals (15 min)",
        [(f"sum(increase(jodo_cluster_fencing_refusals_total{_sel()}[15m])) or vector(0)", "refused writes")],
        description="Commits refused because the writer no longer held the group's lease epoch: a paused or "
        "cut-off node woke up after a take-over. Any alerts (JodoClusterFencingRefusals).",
        kind="stat",
        width=6,
        thresholds=[(None, "green"), (1, "orange")],
    )
    lay.panel(
        "Members by state",
        [(f"max by (state) (jodo_cluster_members{_sel()})", "{{state}}")],
        description="Members with a fresh heartbeat: live (taking groups) and draining (handing them over). "
        "Fewer than the nodes scraped for 5 minutes alerts (JodoClusterMemberLost).",
        width=12,
        stack=True,
    )
    lay.panel(
        "Leases held per node",
        [(f"sum by (instance) (jodo_cluster_leases_held{_sel()})", "{{instance}}")],
        description="Shard-group leases each node holds (stacked: the total is the group count when every "
        "group is owned). Placement keeps the nodes within one group of each other.",
        width=12,
        stack=True,
    )
    lay.panel(
        "Failover time",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f"(increase(jodo_cluster_failover_seconds_bucket{_sel()}[1h])))",
                f"p{int(q * 100)} (1h)",
            )
            for q in (0.5, 0.99)
        ],
        description="Seconds from a lost member's lease expiring to its group serving on the new owner, over "
        "the take-overs of the last hour (none: no line). Objective 5 s (JodoClusterFailoverSlow).",
        unit="s",
        width=12,
        thresholds=[(None, "green"), (5, "red")],
    )
    lay.panel(
        "Lease acquisitions (10 min)",
        [
            (
                f"sum by (reason) (increase(jodo_cluster_lease_acquisitions_total{_sel()}[10m]))",
                "{{reason}}",
            )
        ],
        description="orphan: taken over after its owner's lease expired (a failover); free: handed over by "
        "its owner (drain, restart, rebalancing) or never owned.",
        width=8,
        stack=True,
    )
    lay.panel(
        "Lease losses (10 min)",
        [
            (
                f"sum by (instance, reason) (increase(jodo_cluster_lease_losses_total{_sel()}[10m]))",
                "{{instance}} {{reason}}",
            )
        ],
        description="released: handed over; expired: not renewed in time (the node paused, "
        "JodoClusterLeaseChurn); fenced: a write was refused; unreachable: the database did not answer.",
        width=8,
        stack=True,
    )
    lay.panel(
        "Cluster database errors",
        [(f"sum by (instance) (rate(jodo_cluster_store_errors_total{_sel()}[{RATE}]))", "{{instance}}")],
        description="Keeper ticks per second on which PostgreSQL did not answer; any for a minute pages "
        "(JodoClusterStoreUnreachable).",
        unit="ops",
        width=8,
        thresholds=[(None, "green"), (0.01, "red")],
    )

    _guard_row(lay)
    # ---- the audit chain (jodo/audit.py)
    lay.row("Audit chain")
    lay.panel(
        "Audit checkpoint age",
        [(f"time() - (max by (instance) (jodo_audit_last_checkpoint_timestamp_seconds{_sel()}) > 0)",
          "{{instance}}")],
        description="Seconds since each node signed its newest checkpoint of every audit chain (every 300 s "
        "by default; JodoAuditCheckpointsStopped past 900 s). A node that has not written one yet has no "
        "line.",
        unit="s",
        width=8,
        thresholds=[(None, "green"), (900, "red")],
    )
    lay.panel(
        "Audit chain records",
        [(f"max by (kind) (jodo_audit_chain_records{_sel()})", "{{kind}}")],
        description="At the last checkpoint: journal: events chained (the sum of every logical shard's head "
        "seq); desk: ledger transactions chained. Both only grow.",
        width=8,
    )
    lay.panel(
        "Audit checkpoints (1 h)",
        [(f"sum by (outcome) (increase(jodo_audit_checkpoints_total{_sel()}[1h]))", "{{outcome}}")],
        description="Signed checkpoints written and failed in the last hour (a failure is retried on the "
        "next period; the node's log says why).",
        width=8,
        stack=True,
    )

    _prepaid_row(lay)

    return {
        "uid": "jodo-overview",
        "title": "jodo: pay to reconnect",
        "description": "The promise, the flow, the health, the capacity and the cluster of jodo. Built by "
        "deploy/grafana/build_dashboard.py; edit that, not this JSON.",
        "tags": ["jodo"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus (jodo)", "value": "jodo-prometheus"},
                    "hide": 0,
                },
                {
                    "name": "instance",
                    "label": "Node",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(jodo_actor_processes, instance)", "refId": "instance"},
                    "definition": "label_values(jodo_actor_processes, instance)",
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "panels": lay.panels,
    }


def _guard_row(lay: Layout) -> None:
    """The mass-disconnect guard (domain/guard.py): held waves, what waits, the kill switch, approvals."""
    lay.row("Mass-disconnect guard")
    lay.panel(
        "Disconnect waves held / kill switch",
        [
            (f"max by (instance, head_end) (jodo_disconnect_waves_held{_sel()})",
             "held {{instance}} {{head_end}}"),
            (f"max by (instance) (jodo_disconnects_paused{_sel()})", "paused {{instance}}"),
        ],
        description="1 while a wave of automatic disconnections waits for approval at a head-end "
        "(JodoDisconnectWaveHeld; jodo disconnects approve WAVE), or while the kill switch is on "
        "(jodo disconnects pause; JodoDisconnectsPausedLong after 4 h). Reconnections are never held.",
        width=8,
        thresholds=[(None, "green"), (1, "orange")],
    )
    lay.panel(
        "Disconnections kept and let out",
        [
            (f"sum by (instance, head_end) (jodo_disconnects_kept{_sel()})",
             "kept {{instance}} {{head_end}}"),
            (f"sum by (instance, head_end) (increase(jodo_disconnects_released_total{_sel()}[10m]))",
             "let out (10 min) {{instance}} {{head_end}}"),
        ],
        description="Kept: automatic disconnections queued for a wave or in a held/approved one. Let out: "
        "those the guard sent to the head-end, at once or in a wave (at most wave_size each wave_spacing_s).",
        width=8,
    )
    lay.panel(
        "Approvals and switches (1 h)",
        [
            (f"sum by (outcome) (increase(jodo_disconnect_approvals_total{_sel()}[1h]))",
             "approval {{outcome}}"),
            (f"sum by (action) (increase(jodo_disconnect_switches_total{_sel()}[1h]))", "{{action}}"),
            (f"sum (increase(jodo_disconnect_guard_errors_total{_sel()}[1h]))", "guard store errors"),
        ],
        description="Approvals of held waves (recorded: one more approver needed; refused: not held, or the "
        "same approver twice) and pause/resume, each audited in guard.sqlite3; guard store errors keep "
        "disconnections waiting.",
        width=8,
    )


def _prepaid_row(lay: Layout) -> None:
    """Prepaid meters (issue 16, docs/prepaid-contract.md): balances, reads, held cuts, emergency credit."""
    lay.row("Prepaid")
    lay.panel(
        "Prepaid meters by balance",
        [(f"sum by (band) (jodo_prepaid_meters{_sel()})", "{{band}}")],
        description="Prepaid meters by balance band: negative (owes: disconnected outside friendly hours, "
        "or on emergency credit), Rs 0-100, Rs 100-500, over Rs 500.",
        width=8,
        stack=True,
    )
    lay.panel(
        "Reads (1 h)",
        [(f"sum by (outcome) (increase(jodo_prepaid_reads_total{_sel()}[1h]))", "{{outcome}}")],
        description="Consumption reads in the last hour: debited; duplicate (a read id already debited: "
        "debited once); estimated (a gap day charged from recent use) and trued_up (the real read replacing "
        "it); rejected (a bad read, refused alone). Daily reads arrive in a burst after midnight IST.",
        width=8,
        stack=True,
    )
    lay.panel(
        "Held by friendly hours / emergency credit (1 d)",
        [
            (f"sum (increase(jodo_prepaid_disconnections_held_total{_sel()}[1d]))", "disconnections held"),
            (f"sum by (event) (increase(jodo_emergency_credits_total{_sel()}[1d]))", "emergency {{event}}"),
        ],
        description="Zero-balance meters whose disconnection waited for a friendly window to end, and "
        "emergency credits granted and recovered from a recharge, in the last day.",
        width=8,
    )


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
