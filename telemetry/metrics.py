"""Every jodo metric, defined once, and the machinery that makes them work across actor processes.

Names: prefix ``jodo_``, base units (seconds, bytes), ``_total`` on counters, and only bounded labels
(closed enums from the code, or the configured gateways and head-ends); never an account, meter,
payment or command id. `metric_names` lists every exposed sample name: the Grafana dashboard and
the alert rules are tested against it.

**How many processes count into one /metrics.** Every Thespian actor is an OS process forked from the
node's starter (``THESPIAN.md``). prometheus-client's multiprocess mode gives each process its own
memory-mapped file per metric type under one directory per node (``PROMETHEUS_MULTIPROC_DIR``);
`render` merges them all (``MultiProcessCollector``'s merge, minus its failure on the empty file of a
process that is just starting, which broke 3 of 5 runs of the start/die storm in tests/unit):

- counters and histograms are summed over every file, dead processes included, so a total never
  goes backwards and never counts twice across a restart: what a SIGKILLed process wrote to its
  mapping is already in the page cache, and its file stays; the replacement (a new pid) starts its
  own file at zero. A recycled pid reopens the old file and counts on from its value.
- gauges say how to merge: ``livesum`` for counts that each process holds a share of (meters per
  relay state, commands pending, batches in flight, work orders open, memory), ``livemax`` for a
  state that one process owns per label value (a head-end's breaker: during a restart the old and
  the new gateway may both be on file, and the worse state wins). Live modes only: `mark_dead`
  (called by the supervisor on ``ChildActorExited``, before it starts the replacement) deletes the
  dead pid's gauge files, so its gauges vanish while its counters keep counting. Processes nobody
  saw exit (the children of a SIGKILLed supervisor die with it, ``die_with_parent``) are swept by
  `forget_dead_processes`, which a supervisor calls before each restart. ``liveall`` is not
  used: its ``pid`` label would mint new series on every restart.

Why not a collector actor fed with batched deltas: an increment here is a lock and a write into a
shared mapping, ~2.5 µs measured (~1.7 µs single-process), and sends nothing; a collector would
add messages to a transport that manages ~500 to 2 000 per second per actor pair with a per-actor send
cap (``THESPIAN.md``), compete with business traffic, lose the deltas a killed actor had not yet
flushed (and everything, if the collector itself dies), and need its own restart protocol. The
price of the files: a scrape reads up to four 64 KiB (sparse) files per process that ever lived since
node start (restarts leave counter and histogram files behind): fine for tens of processes and
hundreds of restarts;
the directory is emptied at node start (`setup_multiproc_dir`), where counters reset as for any
process restart, which ``rate()``/``increase()`` handle.

Order at node start (the starter, before it forks any actor)::

    metrics.configure_labels(gateways=cfg.gateways, head_ends=cfg.head_ends)
    metrics.setup_multiproc_dir(cfg.data_dir / "metrics")   # or /run/jodo/metrics under systemd
    ... start the ActorSystem, supervisors call metrics.mark_dead(pid) when a child dies ...
    front door: body = metrics.render(); content type metrics.CONTENT_TYPE

Without `setup_multiproc_dir` (unit tests, the CLI) metrics live in this process only.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from domain.enums import NoticeTemplate, RelayAction, RelayState, WorkOrderAction

__all__ = [
    "ACTOR_KINDS",
    "BREAKER_STATES",
    "CONTENT_TYPE",
    "MULTIPROC_ENV",
    "NOTICE_TEMPLATES",
    "OTHER",
    "PAID_DISCONNECTED_PATHS",
    "PAYMENT_OUTCOMES",
    "PREPAID_BANDS",
    "RELAY_ACTIONS",
    "RELAY_OUTCOMES",
    "RELAY_STATES",
    "STAGES",
    "WORK_ORDER_ACTIONS",
    "actor_restarted",
    "batches_in_flight",
    "cim_events",
    "cluster_failover",
    "cluster_lease_acquired",
    "cluster_lease_lost",
    "cluster_store_error",
    "configure_labels",
    "dead_letter",
    "desk_saturated",
    "disconnect_approval",
    "disconnect_guard_failed",
    "disconnect_switch",
    "disconnects_released",
    "dlms_events",
    "emergency_credit",
    "fencing_refusal",
    "forget_dead_processes",
    "headend_reads",
    "headend_roundtrip",
    "journal_commit",
    "mark_dead",
    "meter_credit_updates",
    "metric_names",
    "multiprocess_dir",
    "notice_sent",
    "payment_received",
    "payment_reconnected",
    "prepaid_disconnection_held",
    "prepaid_reads",
    "prepaid_recharge_off_rule",
    "process_started",
    "reconcile_run",
    "recovered",
    "relay_command_attempted",
    "relay_command_finished",
    "render",
    "sample_process_memory",
    "set_breaker_state",
    "set_cluster_leases_held",
    "set_cluster_view",
    "set_disconnect_guard",
    "set_meters_by_relay_state",
    "set_paid_but_disconnected",
    "set_payments_unapplied",
    "set_prepaid_bands",
    "set_reconcile_enabled",
    "set_reconcile_state",
    "set_relay_commands_pending",
    "set_work_orders_open",
    "setup_multiproc_dir",
    "stop_multiproc_dir",
    "webhook_rejected",
]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
OTHER: Final = "other"  # the label value for an unconfigured gateway/head-end or an unknown actor kind

# Closed label sets (the core's enums where domain.enums has one). A value outside them is a bug and
# raises ValueError, except where noted. Relay outcomes are how a command ended, seen by its shard.
PAYMENT_OUTCOMES: Final = frozenset({"accepted", "duplicate", "suspense", "rejected"})
# connect, disconnect, read (a credit update is counted by meter_credit_updates)
RELAY_ACTIONS: Final = frozenset(action.value for action in RelayAction if action is not RelayAction.CREDIT)
RELAY_OUTCOMES: Final = frozenset(
    {"confirmed", "awaiting_button", "failed", "rejected", "expired", "cancelled"}
)
RELAY_STATES: Final = tuple(state.value for state in RelayState)
BREAKER_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}
PAID_DISCONNECTED_PATHS: Final = frozenset({"auto", "field"})
WORK_ORDER_ACTIONS: Final = frozenset(action.value for action in WorkOrderAction)
# Links batches travel on, named sender_to_receiver.
STAGES: Final = frozenset({"desk_to_shard", "shard_to_gateway", "gateway_to_headend"})
NOTICE_TEMPLATES: Final = frozenset(template.value for template in NoticeTemplate)
# Open-ended by nature (new actors come): an unknown kind is counted as OTHER rather than raising.
ACTOR_KINDS: Final = frozenset(
    {
        "supervisor",
        "payment_desk",
        "meter_shard",
        "headend_gateway",
        "outbox",
        "reconciler",
        "registrar",
        "front_door",
        "cluster_keeper",
    }
)
# Actors may name themselves by class or short name; all land on the kind above.
_KIND_ALIASES: Final = {
    "MeterShard": "meter_shard",
    "shard": "meter_shard",
    "PaymentDesk": "payment_desk",
    "desk": "payment_desk",
    "HeadEndGateway": "headend_gateway",
    "gateway": "headend_gateway",
    "Supervisor": "supervisor",
    "RootSupervisor": "supervisor",
    "root_supervisor": "supervisor",
    "ClusterKeeper": "cluster_keeper",
}

PAYMENT_TO_CONNECTED_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
HEADEND_ROUNDTRIP_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
JOURNAL_COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
RECOVERY_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# edges on the failover objective (5 s) and the anchors it beats: Orleans ~15 s, Akka SBR >= 20 s
FAILOVER_BUCKETS: Final = (0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60, 120)
CLUSTER_ACQUIRE_REASONS: Final = frozenset({"orphan", "free"})
CLUSTER_LOSS_REASONS: Final = frozenset({"expired", "fenced", "released", "unreachable"})
CLUSTER_MEMBER_STATES: Final = frozenset({"live", "draining"})

# Multiprocess mode has no ``_created`` series; drop them in-process too, so both modes expose the same.
disable_created_metrics()  # type: ignore[no-untyped-call]

_MMAP_HEADER_BYTES: Final = 8  # prometheus-client's file header: 4-byte used length + 4 padding
_LABEL_VALUE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

# If the environment already names a directory (inherited from a starter), prometheus-client chose
# multiprocess mode at import and our unlabelled metrics open their files below: make sure it exists.
if os.environ.get(MULTIPROC_ENV):
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)

# Our own registry: the default one carries process/GC collectors that describe only the process
# serving /metrics, and multiprocess mode must not mix live in-process metrics into the merge.
_REGISTRY: Final = CollectorRegistry(auto_describe=True)

# --- the promise -------------------------------------------------------------------------------
PAYMENT_TO_RELAY_CONNECTED_SECONDS: Final = Histogram(
    "jodo_payment_to_relay_connected_seconds",
    "Seconds from a payment's durable receipt to its meter's relay confirmed connected (automatic path).",
    ["head_end"],
    buckets=PAYMENT_TO_CONNECTED_BUCKETS,
    registry=_REGISTRY,
)
METERS_PAID_BUT_DISCONNECTED: Final = Gauge(
    "jodo_meters_paid_but_disconnected",
    "Meters whose dues are paid down to the reconnect threshold but whose relay is not connected, "
    "and has not been for longer than the reconnect grace (path=auto: eligible for a head-end "
    "command; path=field: waiting for a field work order). awaiting_button is not counted here.",
    ["path"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)

# --- flow ---------------------------------------------------------------------------------------
PAYMENTS_RECEIVED_TOTAL: Final = Counter(
    "jodo_payments_received",
    "Payments received, by gateway and outcome (accepted, duplicate, suspense, rejected).",
    ["gateway", "outcome"],
    registry=_REGISTRY,
)
RELAY_COMMAND_ATTEMPTS_TOTAL: Final = Counter(
    "jodo_relay_command_attempts",
    "Relay commands transmitted to a head-end, retries included.",
    ["head_end", "action"],
    registry=_REGISTRY,
)
RELAY_COMMANDS_TOTAL: Final = Counter(
    "jodo_relay_commands",
    "Relay commands finished, by action and outcome (expired: its expiry passed before a result).",
    ["action", "outcome"],
    registry=_REGISTRY,
)
DLMS_EVENTS_TOTAL: Final = Counter(
    "jodo_dlms_events",
    "DLMS adapter events by head-end and event (association, refused, connect_failure, release, "
    "response_timeout, protocol_fault, queue_timeout); docs/dlms.md.",
    ["head_end", "event"],
    registry=_REGISTRY,
)
CIM_EVENTS_TOTAL: Final = Counter(
    "jodo_cim_events",
    "CIM adapter events by head-end and event (request, accepted, callback_event, timeout, refused_unknown, "
    "refused_duplicate, refused_late, refused_unauthorised, refused_malformed); docs/cim.md.",
    ["head_end", "event"],
    registry=_REGISTRY,
)
METER_CREDIT_UPDATES_TOTAL: Final = Counter(
    "jodo_meter_credit_updates",
    "Credit updates to prepaid meters that keep their own credit (CIM 3.20.22.13), by head-end and outcome: "
    "sent (to the adapter), applied, failed (e.g. unsupported: the head-end's protocol has none), rejected, "
    "expired; docs/prepaid-headend.md.",
    ["head_end", "outcome"],
    registry=_REGISTRY,
)
HEADEND_COMMAND_ROUNDTRIP_SECONDS: Final = Histogram(
    "jodo_headend_command_roundtrip_seconds",
    "Seconds from transmitting a relay command to the head-end's result for it.",
    ["head_end"],
    buckets=HEADEND_ROUNDTRIP_BUCKETS,
    registry=_REGISTRY,
)
RELAY_COMMANDS_PENDING: Final = Gauge(
    "jodo_relay_commands_pending",
    "Relay commands issued and not yet finished, per head-end.",
    ["head_end"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
CONSUMER_NOTICES_SENT_TOTAL: Final = Counter(
    "jodo_consumer_notices_sent",
    "Consumer notices handed to the outbox sender, by template.",
    ["template"],
    registry=_REGISTRY,
)
WEBHOOKS_TOTAL: Final = Counter(
    "jodo_webhooks",
    "Payment-gateway webhooks answered, by gateway and status class (2xx, 4xx, 5xx).",
    ["gateway", "status_class"],
    registry=_REGISTRY,
)
WEBHOOKS_REJECTED_TOTAL: Final = Counter(
    "jodo_webhooks_rejected",
    "Payment-gateway webhooks answered with an error, by gateway and status class (4xx, 5xx).",
    ["gateway", "status_class"],
    registry=_REGISTRY,
)

# --- health -------------------------------------------------------------------------------------
HEADEND_BREAKER_STATE: Final = Gauge(
    "jodo_headend_breaker_state",
    "Circuit breaker towards each configured head-end: 0 closed, 1 half-open, 2 open.",
    ["head_end"],
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
ACTOR_RESTARTS_TOTAL: Final = Counter(
    "jodo_actor_restarts",
    "Actor processes restarted by their supervisor, by actor kind.",
    ["kind"],
    registry=_REGISTRY,
)
DEAD_LETTERS_TOTAL: Final = Counter(
    "jodo_dead_letters",
    "Messages stored as dead letters (poison messages, undeliverable envelopes), by actor kind.",
    ["kind"],
    registry=_REGISTRY,
)
BATCHES_IN_FLIGHT: Final = Gauge(
    "jodo_batches_in_flight",
    "Batches sent and not yet acknowledged, by link (desk_to_shard, shard_to_gateway, gateway_to_headend).",
    ["stage"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
DESK_SATURATED_TOTAL: Final = Counter(
    "jodo_desk_saturated",
    "Times the payment desk held back intake because every credit window was full (backpressure).",
    registry=_REGISTRY,
)
PAYMENTS_UNAPPLIED: Final = Gauge(
    "jodo_payments_unapplied",
    "Payments durable in the ledger and not yet acknowledged as applied by their meter shard.",
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
JOURNAL_COMMIT_SECONDS: Final = Histogram(
    "jodo_journal_commit_seconds",
    "Seconds per journal/ledger group commit, by committing actor kind.",
    ["kind"],
    buckets=JOURNAL_COMMIT_BUCKETS,
    registry=_REGISTRY,
)
RECOVERY_SECONDS: Final = Histogram(
    "jodo_recovery_seconds",
    "Seconds an actor took to recover its state (snapshot + tail replay) after a start, by kind.",
    ["kind"],
    buckets=RECOVERY_BUCKETS,
    registry=_REGISTRY,
)

# --- cluster ------------------------------------------------------------------------------------
CLUSTER_MEMBERS: Final = Gauge(
    "jodo_cluster_members",
    "Cluster members with a fresh heartbeat, as this node's keeper sees them (live: taking groups; "
    "draining: handing its groups over).",
    ["state"],
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
CLUSTER_GROUPS_UNOWNED: Final = Gauge(
    "jodo_cluster_groups_unowned",
    "Shard groups no live member holds a lease on, as this node's keeper saw them on its last tick "
    "(their meters get no credit and no relay command until a member takes them).",
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
CLUSTER_LEASES_HELD: Final = Gauge(
    "jodo_cluster_leases_held",
    "Shard-group leases this node holds.",
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
CLUSTER_LEASE_ACQUISITIONS_TOTAL: Final = Counter(
    "jodo_cluster_lease_acquisitions",
    "Shard-group leases acquired by this node (orphan: taken over after its owner's lease expired; "
    "free: released by its owner, or never owned).",
    ["reason"],
    registry=_REGISTRY,
)
CLUSTER_LEASE_LOSSES_TOTAL: Final = Counter(
    "jodo_cluster_lease_losses",
    "Shard-group leases this node stopped holding (released: handed over; expired: not renewed in "
    "time; fenced: a write was refused, another node owns it; unreachable: the database did not "
    "answer, so the node stopped the group before its lease could expire).",
    ["reason"],
    registry=_REGISTRY,
)
CLUSTER_FENCING_REFUSALS_TOTAL: Final = Counter(
    "jodo_cluster_fencing_refusals",
    "Writes refused because the writer's lease epoch no longer held (a stale owner after a take-over).",
    ["kind"],
    registry=_REGISTRY,
)
CLUSTER_FAILOVER_SECONDS: Final = Histogram(
    "jodo_cluster_failover_seconds",
    "Seconds from a shard group's lease expiring (its owner gone) to the group serving on this node.",
    buckets=FAILOVER_BUCKETS,
    registry=_REGISTRY,
)
CLUSTER_STORE_ERRORS_TOTAL: Final = Counter(
    "jodo_cluster_store_errors",
    "Ticks of this node's keeper on which the cluster database did not answer.",
    registry=_REGISTRY,
)

# --- capacity -----------------------------------------------------------------------------------
METERS: Final = Gauge(
    "jodo_meters",
    "Meters hosted, by relay state.",
    ["relay_state"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
WORK_ORDERS_OPEN: Final = Gauge(
    "jodo_work_orders_open",
    "Field work orders raised and not yet closed, by what the crew is to do (reconnect, disconnect).",
    ["action"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
ACTOR_PROCESSES: Final = Gauge(
    "jodo_actor_processes",
    "Live actor processes, by kind.",
    ["kind"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
PROCESS_RESIDENT_MEMORY_BYTES: Final = Gauge(
    "jodo_process_resident_memory_bytes",
    "Resident memory of live actor processes, summed by kind (sampled by each process on its tick).",
    ["kind"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
# --- the audit chain (jodo/audit.py; written by the serving process's checkpointer) -------------
AUDIT_CHAINS: Final = Gauge(
    "jodo_audit_chains",
    "Audit chains with at least one link at the last checkpoint, by kind (journal: one per logical shard;"
    " desk: one per ledger writer).",
    ["kind"],
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
AUDIT_CHAIN_RECORDS: Final = Gauge(
    "jodo_audit_chain_records",
    "Sum of the audit chains' head seqs at the last checkpoint, by kind (journal: events; desk: ledger"
    " transactions).",
    ["kind"],
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
AUDIT_LAST_CHECKPOINT_TIMESTAMP_SECONDS: Final = Gauge(
    "jodo_audit_last_checkpoint_timestamp_seconds",
    "Unix time of the newest signed audit checkpoint this node wrote (0 until the first).",
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
AUDIT_CHECKPOINTS_TOTAL: Final = Counter(
    "jodo_audit_checkpoints_total",
    "Signed audit checkpoints attempted, by outcome (written, failed).",
    ["outcome"],
    registry=_REGISTRY,
)

# --- reconciliation with the payment gateways (jodo/reconcile) ----------------------------------
RECONCILE_RUNS_TOTAL: Final = Counter(
    "jodo_reconcile_runs",
    "Reconciliation runs over a gateway's window, by result: clean, findings, incomplete (not fully read).",
    ["gateway", "result"],
    registry=_REGISTRY,
)
RECONCILE_CREDITED_TOTAL: Final = Counter(
    "jodo_reconcile_credited",
    "Captured payments the ledger lacked, credited by reconciliation (their webhook never arrived).",
    ["gateway"],
    registry=_REGISTRY,
)
RECONCILE_GATEWAY_ERRORS_TOTAL: Final = Counter(
    "jodo_reconcile_gateway_errors",
    "Failed requests to a gateway's payments API while reconciling, by kind (rate_limited, server_error).",
    ["gateway", "kind"],
    registry=_REGISTRY,
)
RECONCILE_MISMATCHES: Final = Gauge(
    "jodo_reconcile_mismatches",
    "Mismatches found by the last periodic run, by kind: amount_differs, missing_at_gateway, stuck, invalid.",
    ["gateway", "kind"],
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
RECONCILE_WINDOW_INCOMPLETE: Final = Gauge(
    "jodo_reconcile_window_incomplete",
    "1 if the last periodic run could not read its whole window from the gateway (429s, 5xx, bad pages).",
    ["gateway"],
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
RECONCILE_LAST_COMPLETE: Final = Gauge(
    "jodo_reconcile_last_complete_timestamp_seconds",
    "End (unix seconds) of the last window read completely from the gateway; 0 until one is.",
    ["gateway"],
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
RECONCILE_ENABLED: Final = Gauge(
    "jodo_reconcile_enabled",
    "1 for each configured gateway whose periodic reconciliation runs on this node, else 0.",
    ["gateway"],
    multiprocess_mode="livemax",
    registry=_REGISTRY,
)
RECONCILE_MISMATCH_KINDS: Final = ("amount_differs", "missing_at_gateway", "stuck", "invalid")
RECONCILE_RESULTS: Final = frozenset({"clean", "findings", "incomplete"})
RECONCILE_ERROR_KINDS: Final = frozenset({"rate_limited", "server_error"})
_RECONCILE: Final = (RECONCILE_RUNS_TOTAL, RECONCILE_CREDITED_TOTAL, RECONCILE_GATEWAY_ERRORS_TOTAL,
                     RECONCILE_MISMATCHES, RECONCILE_WINDOW_INCOMPLETE, RECONCILE_LAST_COMPLETE,
                     RECONCILE_ENABLED)
# --- the mass-disconnect guard (actors/guard_shell.py) -------------------------------------------
DISCONNECT_WAVES_HELD: Final = Gauge(
    "jodo_disconnect_waves_held",
    "Disconnect waves held for approval, by head-end (0 or 1: a held wave takes in what queues behind it).",
    ["head_end"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
DISCONNECTS_KEPT: Final = Gauge(
    "jodo_disconnects_kept",
    "Automatic disconnections the guard keeps (queued for a wave, or in a held/approved wave), by head-end.",
    ["head_end"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
DISCONNECTS_PAUSED: Final = Gauge(
    "jodo_disconnects_paused",
    "1 while the kill switch (jodo disconnects pause) stops disconnections at this head-end.",
    ["head_end"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
DISCONNECTS_RELEASED_TOTAL: Final = Counter(
    "jodo_disconnects_released",
    "Automatic disconnections the guard let leave for the head-end (at once or in a wave), by head-end.",
    ["head_end"],
    registry=_REGISTRY,
)
DISCONNECT_APPROVALS_TOTAL: Final = Counter(
    "jodo_disconnect_approvals",
    "Approvals of held disconnect waves, by outcome (approved, recorded: one more approver needed, refused).",
    ["outcome"],
    registry=_REGISTRY,
)
DISCONNECT_SWITCHES_TOTAL: Final = Counter(
    "jodo_disconnect_switches",
    "Kill-switch operations (jodo disconnects pause / resume), by action.",
    ["action"],
    registry=_REGISTRY,
)
DISCONNECT_GUARD_ERRORS_TOTAL: Final = Counter(
    "jodo_disconnect_guard_errors",
    "Guard steps that failed to reach the guard store (its automatic disconnects waited), by head-end.",
    ["head_end"],
    registry=_REGISTRY,
)
GUARD_APPROVAL_OUTCOMES: Final = frozenset({"approved", "recorded", "refused"})
GUARD_SWITCH_ACTIONS: Final = frozenset({"pause", "resume"})

# --- prepaid (issue 16; names from docs/prepaid-contract.md) -------------------------------------
PREPAID_METERS: Final = Gauge(
    "jodo_prepaid_meters",
    "Prepaid meters by balance band (negative; zero_to_100: Rs 0-100; 100_to_500; 500_plus).",
    ["band"],
    multiprocess_mode="livesum",
    registry=_REGISTRY,
)
PREPAID_READS_TOTAL: Final = Counter(
    "jodo_prepaid_reads",
    "Consumption reads of prepaid meters, by outcome (debited, duplicate: that read id was debited before, "
    "estimated: a gap day charged from recent use, trued_up: a real read replacing an estimate, rejected).",
    ["outcome"],
    registry=_REGISTRY,
)
PREPAID_DISCONNECTIONS_HELD_TOTAL: Final = Counter(
    "jodo_prepaid_disconnections_held",
    "Prepaid meters at zero balance whose disconnection waited for the end of a friendly window.",
    registry=_REGISTRY,
)
EMERGENCY_CREDITS_TOTAL: Final = Counter(
    "jodo_emergency_credits",
    "Emergency credits, by event (granted; recovered: paid back from a recharge).",
    ["event"],
    registry=_REGISTRY,
)
PREPAID_RECHARGES_OFF_RULE_TOTAL: Final = Counter(
    "jodo_prepaid_recharges_off_rule",
    "Prepaid recharges credited in full although off KERC's recharge rule, by rule (multiple: not a multiple "
    "of prepaid.recharge_multiple_paise; week_average: below a week's average use). Flagged, never refused.",
    ["rule"],
    registry=_REGISTRY,
)
HEADEND_READS_TOTAL: Final = Counter(
    "jodo_headend_reads",
    "Consumption reads from a head-end (HesReads), by outcome (forwarded to the meter's shard group; "
    "postpaid: ignored, the billing system bills it; unknown_serial: no meter has that serial on this "
    "head-end; unrouted: a shard group did not answer the gateway's serial question in time).",
    ["head_end", "outcome"],
    registry=_REGISTRY,
)
HEADEND_READ_OUTCOMES: Final = frozenset({"forwarded", "postpaid", "unknown_serial", "unrouted"})
PREPAID_BANDS: Final = ("negative", "zero_to_100", "100_to_500", "500_plus")
RECHARGE_RULES: Final = frozenset({"multiple", "week_average"})
PREPAID_READ_OUTCOMES: Final = frozenset({"debited", "duplicate", "estimated", "trued_up", "rejected"})
EMERGENCY_CREDIT_EVENTS: Final = frozenset({"granted", "recovered"})


_PREPAID: Final = (HEADEND_READS_TOTAL, PREPAID_METERS, PREPAID_READS_TOTAL,
                   PREPAID_DISCONNECTIONS_HELD_TOTAL, EMERGENCY_CREDITS_TOTAL,
                   PREPAID_RECHARGES_OFF_RULE_TOTAL)

_ALL: Final = (
    *_RECONCILE,
    *_PREPAID,
    PAYMENT_TO_RELAY_CONNECTED_SECONDS,
    METERS_PAID_BUT_DISCONNECTED,
    PAYMENTS_RECEIVED_TOTAL,
    RELAY_COMMAND_ATTEMPTS_TOTAL,
    RELAY_COMMANDS_TOTAL,
    DLMS_EVENTS_TOTAL,
    CIM_EVENTS_TOTAL,
    METER_CREDIT_UPDATES_TOTAL,
    HEADEND_COMMAND_ROUNDTRIP_SECONDS,
    RELAY_COMMANDS_PENDING,
    CONSUMER_NOTICES_SENT_TOTAL,
    WEBHOOKS_REJECTED_TOTAL,
    HEADEND_BREAKER_STATE,
    ACTOR_RESTARTS_TOTAL,
    DEAD_LETTERS_TOTAL,
    BATCHES_IN_FLIGHT,
    DESK_SATURATED_TOTAL,
    PAYMENTS_UNAPPLIED,
    JOURNAL_COMMIT_SECONDS,
    RECOVERY_SECONDS,
    METERS,
    WORK_ORDERS_OPEN,
    ACTOR_PROCESSES,
    PROCESS_RESIDENT_MEMORY_BYTES,
    CLUSTER_MEMBERS,
    CLUSTER_GROUPS_UNOWNED,
    CLUSTER_LEASES_HELD,
    CLUSTER_LEASE_ACQUISITIONS_TOTAL,
    CLUSTER_LEASE_LOSSES_TOTAL,
    CLUSTER_FENCING_REFUSALS_TOTAL,
    CLUSTER_FAILOVER_SECONDS,
    CLUSTER_STORE_ERRORS_TOTAL,
    DISCONNECT_WAVES_HELD,
    DISCONNECTS_KEPT,
    DISCONNECTS_PAUSED,
    DISCONNECTS_RELEASED_TOTAL,
    DISCONNECT_APPROVALS_TOTAL,
    DISCONNECT_SWITCHES_TOTAL,
    DISCONNECT_GUARD_ERRORS_TOTAL,
    AUDIT_CHAINS,
    AUDIT_CHAIN_RECORDS,
    AUDIT_LAST_CHECKPOINT_TIMESTAMP_SECONDS,
    AUDIT_CHECKPOINTS_TOTAL,
)

_gateways: frozenset[str] = frozenset()
_head_ends: frozenset[str] = frozenset()


# --- set-up -------------------------------------------------------------------------------------
def configure_labels(*, gateways: Iterable[str], head_ends: Iterable[str]) -> None:
    """Declare the configured payment gateways and head-ends: the only values their labels take.

    Anything else is counted as ``other``. Also creates the zero series of every counter and
    histogram, so ``increase()`` sees the first event. Call in the starter, before forking.
    """
    global _gateways, _head_ends
    gw, he = frozenset(gateways), frozenset(head_ends)
    for value in gw | he:
        if not _LABEL_VALUE.match(value) or value == OTHER:
            raise ValueError(f"not a usable label value: {value!r}")
    _gateways, _head_ends = gw, he
    _touch_series()


def setup_multiproc_dir(path: str | os.PathLike[str]) -> Path:
    """Create (or empty) the node's metrics directory and switch this process to multiprocess mode.

    Call once at node start, in the starter, before any actor process is forked: children inherit
    the mode and the directory. Deletes only ``*.db`` files; give it a directory of its own.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
    _use_files_in_this_process()
    _touch_series()
    return directory


def stop_multiproc_dir() -> None:
    """Undo `setup_multiproc_dir` in this process: metrics live in this process again, from zero.

    For a process that carries on after its node stopped (a test run that started a node); the
    directory and its files are left as they are. Processes forked earlier keep the directory.
    """
    close = getattr(values.ValueClass, "close_all_files", None)  # prometheus-client >= 0.21
    if callable(close):
        close()
    os.environ.pop(MULTIPROC_ENV, None)
    _use_value_class(values.MutexValue)
    _touch_series()


def multiprocess_dir() -> Path | None:
    """The directory metrics are written to, or None when metrics live in this process only."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    env = os.environ.get(MULTIPROC_ENV)
    return Path(env) if env else None


def mark_dead(pid: int) -> None:
    """A child process died: drop its live gauges (its counters and histograms keep counting).

    The supervisor calls this on ``ChildActorExited``, with the pid from ``ChildStarted``, before it
    starts the replacement. Harmless for an unknown pid or outside multiprocess mode.
    """
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def forget_dead_processes() -> int:
    """`mark_dead` every process that has live gauges on file but no longer runs; returns how many.

    For processes whose exit no supervisor saw: the children of a killed supervisor die with it
    (``die_with_parent``) and the supervisor that would have marked them is gone. Supervisors call
    this before each restart (by then the dead subtree has gone). Harmless outside multiprocess mode.
    """
    directory = multiprocess_dir()
    if directory is None:
        return 0
    dead = {
        pid
        for path in directory.glob("gauge_live*.db")
        if (found := _LIVE_GAUGE_FILE.match(path.name)) is not None
        and not _running(pid := int(found.group(1)))
    }
    for pid in dead:
        mark_dead(pid)
    return len(dead)


def render() -> bytes:
    """The text exposition of every process's metrics on this node (or of this process only)."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(_REGISTRY)
    registry = CollectorRegistry()
    registry.register(_NodeCollector(directory))
    return generate_latest(registry)


class _NodeCollector(Collector):
    """``MultiProcessCollector`` minus a race: a process that is just starting has created its file but
    not yet sized it, and the stock reader fails the whole scrape on that empty file. Such a file holds
    no values yet, so it is skipped; so is one a `mark_dead` removes while we look."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self._directory, "*.db")):
            try:
                if os.stat(path).st_size >= _MMAP_HEADER_BYTES:
                    files.append(path)
            except FileNotFoundError:
                continue
        merged: Iterable[Metric] = multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


_LIVE_GAUGE_FILE: Final = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")
_PROC: Final = os.path.exists("/proc/self/stat")


def _running(pid: int) -> bool:
    """Is ``pid`` a process that still runs (not gone, not a zombie awaiting its reaper)?"""
    if _PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            return False
        state = raw[raw.rindex(b")") + 2 : raw.rindex(b")") + 3]  # the name in parentheses may hold spaces
        return state not in (b"Z", b"X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metric_names() -> frozenset[str]:
    """Every sample name /metrics can expose (``_total``, ``_bucket``/``_sum``/``_count`` included)."""
    names: set[str] = set()
    for family in _REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return frozenset(names)


def _use_files_in_this_process() -> None:
    # prometheus-client picks its value class once, at import, from the environment; the starter has
    # usually imported this module before it knows its data directory. Swap in a fresh file-backed
    # class (a fresh one also forgets files of an earlier directory) and rebuild our metrics' values.
    _use_value_class(values.MultiProcessValue())  # type: ignore[no-untyped-call]


def _use_value_class(value_class: object) -> None:
    values.ValueClass = value_class
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clear() warns in multiprocess mode; nothing is on file yet
        for metric in _ALL:
            if metric._labelnames:
                metric.clear()
            else:
                metric._metric_init()


def _touch_series() -> None:
    for gateway in (*_gateways, OTHER):
        for outcome in PAYMENT_OUTCOMES:
            PAYMENTS_RECEIVED_TOTAL.labels(gateway, outcome)
        for status_class in ("4xx", "5xx"):
            WEBHOOKS_REJECTED_TOTAL.labels(gateway, status_class)
        for status_class in ("2xx", "4xx", "5xx"):
            WEBHOOKS_TOTAL.labels(gateway, status_class)
    for head_end in _head_ends:
        PAYMENT_TO_RELAY_CONNECTED_SECONDS.labels(head_end)
        HEADEND_COMMAND_ROUNDTRIP_SECONDS.labels(head_end)
        for action in RELAY_ACTIONS:
            RELAY_COMMAND_ATTEMPTS_TOTAL.labels(head_end, action)
        for event in CIM_EVENTS:
            CIM_EVENTS_TOTAL.labels(head_end, event)
        for outcome in CREDIT_UPDATE_OUTCOMES:
            METER_CREDIT_UPDATES_TOTAL.labels(head_end, outcome)
        for outcome in HEADEND_READ_OUTCOMES:
            HEADEND_READS_TOTAL.labels(head_end, outcome)
    for action in RELAY_ACTIONS:
        for outcome in RELAY_OUTCOMES:
            RELAY_COMMANDS_TOTAL.labels(action, outcome)
    for template in NOTICE_TEMPLATES:
        CONSUMER_NOTICES_SENT_TOTAL.labels(template)
    for kind in (*ACTOR_KINDS, OTHER):
        ACTOR_RESTARTS_TOTAL.labels(kind)
        DEAD_LETTERS_TOTAL.labels(kind)
    for kind in ("meter_shard", "payment_desk"):
        JOURNAL_COMMIT_SECONDS.labels(kind)
    for reason in CLUSTER_ACQUIRE_REASONS:
        CLUSTER_LEASE_ACQUISITIONS_TOTAL.labels(reason)
    for reason in CLUSTER_LOSS_REASONS:
        CLUSTER_LEASE_LOSSES_TOTAL.labels(reason)
    CLUSTER_FENCING_REFUSALS_TOTAL.labels("group")
    for state in CLUSTER_MEMBER_STATES:  # 0 on a single node, not "No data"
        CLUSTER_MEMBERS.labels(state)
    for kind in ("journal", "desk"):
        AUDIT_CHAINS.labels(kind)
        AUDIT_CHAIN_RECORDS.labels(kind)
    for outcome in ("written", "failed"):
        AUDIT_CHECKPOINTS_TOTAL.labels(outcome)
    _touch_reconcile()
    _touch_guard()
    _touch_prepaid()


def _touch_prepaid() -> None:
    for band in PREPAID_BANDS:
        PREPAID_METERS.labels(band)
    for outcome in PREPAID_READ_OUTCOMES:
        PREPAID_READS_TOTAL.labels(outcome)
    for event in EMERGENCY_CREDIT_EVENTS:
        EMERGENCY_CREDITS_TOTAL.labels(event)
    for rule in RECHARGE_RULES:
        PREPAID_RECHARGES_OFF_RULE_TOTAL.labels(rule)


def _touch_reconcile() -> None:
    for gateway in (*_gateways, OTHER):
        for result in RECONCILE_RESULTS:
            RECONCILE_RUNS_TOTAL.labels(gateway, result)
        for kind in RECONCILE_ERROR_KINDS:
            RECONCILE_GATEWAY_ERRORS_TOTAL.labels(gateway, kind)
        RECONCILE_CREDITED_TOTAL.labels(gateway)
        for mismatch in RECONCILE_MISMATCH_KINDS:
            RECONCILE_MISMATCHES.labels(gateway, mismatch)
        RECONCILE_WINDOW_INCOMPLETE.labels(gateway)
        RECONCILE_LAST_COMPLETE.labels(gateway)
        RECONCILE_ENABLED.labels(gateway)


def _touch_guard() -> None:
    for head_end in _head_ends:
        DISCONNECTS_RELEASED_TOTAL.labels(head_end)
        DISCONNECT_GUARD_ERRORS_TOTAL.labels(head_end)
    for outcome in GUARD_APPROVAL_OUTCOMES:
        DISCONNECT_APPROVALS_TOTAL.labels(outcome)
    for action in GUARD_SWITCH_ACTIONS:
        DISCONNECT_SWITCHES_TOTAL.labels(action)


# --- label checks -------------------------------------------------------------------------------
def _closed(value: str, allowed: Iterable[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")
    return str(value)  # a StrEnum member becomes its plain value


def _configured(value: str, configured: frozenset[str]) -> str:
    return str(value) if value in configured else OTHER


def _kind(kind: str) -> str:
    kind = _KIND_ALIASES.get(kind, kind)
    return str(kind) if kind in ACTOR_KINDS else OTHER


# --- helpers: one per event, labels checked -----------------------------------------------------
def payment_received(gateway: str, outcome: str, count: int = 1) -> None:
    PAYMENTS_RECEIVED_TOTAL.labels(
        _configured(gateway, _gateways), _closed(outcome, PAYMENT_OUTCOMES, "payment outcome")
    ).inc(count)


def payment_reconnected(head_end: str, *seconds: float) -> None:
    """Paid meters' relays were confirmed connected ``seconds`` after their payments were received
    (one observation each; several in one call resolve the labels once: a shard's batch)."""
    child = PAYMENT_TO_RELAY_CONNECTED_SECONDS.labels(_configured(head_end, _head_ends))
    for s in seconds:
        child.observe(max(0.0, s))


def relay_command_attempted(head_end: str, action: str, count: int = 1) -> None:
    RELAY_COMMAND_ATTEMPTS_TOTAL.labels(
        _configured(head_end, _head_ends), _closed(action, RELAY_ACTIONS, "relay action")
    ).inc(count)


DLMS_EVENTS: Final = frozenset({"association", "refused", "connect_failure", "release", "response_timeout",
                                 "protocol_fault", "queue_timeout"})


def dlms_events(head_end: str, event: str, count: int = 1) -> None:
    event = _closed(event, DLMS_EVENTS, "DLMS event")
    DLMS_EVENTS_TOTAL.labels(_configured(head_end, _head_ends), event).inc(count)


CIM_EVENTS: Final = frozenset({"request", "accepted", "callback_event", "timeout", "refused_unknown",
                                "refused_duplicate", "refused_late", "refused_unauthorised",
                                "refused_malformed"})


def cim_events(head_end: str, event: str, count: int = 1) -> None:
    event = _closed(event, CIM_EVENTS, "CIM event")
    CIM_EVENTS_TOTAL.labels(_configured(head_end, _head_ends), event).inc(count)


CREDIT_UPDATE_OUTCOMES: Final = frozenset({"sent", "applied", "failed", "rejected", "expired"})


def meter_credit_updates(head_end: str, outcome: str, count: int = 1) -> None:
    """Credit updates sent to a head-end, and how they ended (domain/credit.py)."""
    outcome = _closed(outcome, CREDIT_UPDATE_OUTCOMES, "credit update outcome")
    METER_CREDIT_UPDATES_TOTAL.labels(_configured(head_end, _head_ends), outcome).inc(count)


def relay_command_finished(action: str, outcome: str, count: int = 1) -> None:
    RELAY_COMMANDS_TOTAL.labels(
        _closed(action, RELAY_ACTIONS, "relay action"), _closed(outcome, RELAY_OUTCOMES, "relay outcome")
    ).inc(count)


def headend_reads(head_end: str, outcome: str, count: int = 1) -> None:
    if count > 0:
        outcome = _closed(outcome, HEADEND_READ_OUTCOMES, "head-end read outcome")
        HEADEND_READS_TOTAL.labels(_configured(head_end, _head_ends), outcome).inc(count)


def headend_roundtrip(head_end: str, *seconds: float) -> None:
    """Commands' submit → outcome seconds (one observation each; a gateway's batch in one call)."""
    child = HEADEND_COMMAND_ROUNDTRIP_SECONDS.labels(_configured(head_end, _head_ends))
    for s in seconds:
        child.observe(max(0.0, s))


def set_relay_commands_pending(head_end: str, count: int) -> None:
    """This process's pending commands for ``head_end`` (summed over live processes)."""
    RELAY_COMMANDS_PENDING.labels(_configured(head_end, _head_ends)).set(count)


def set_breaker_state(head_end: str, state: str) -> None:
    """``state``: closed, half_open or open (the worst over live processes is exposed)."""
    code = BREAKER_STATES.get(str(state))
    if code is None:
        raise ValueError(f"unknown breaker state {state!r}; expected one of {sorted(BREAKER_STATES)}")
    HEADEND_BREAKER_STATE.labels(_configured(head_end, _head_ends)).set(code)


def set_meters_by_relay_state(counts: Mapping[str, int]) -> None:
    """This process's meters per relay state; a state missing from ``counts`` is set to 0."""
    for state in counts:
        _closed(state, RELAY_STATES, "relay state")
    for state in RELAY_STATES:
        METERS.labels(state).set(counts.get(state, 0))


def set_prepaid_bands(counts: Mapping[str, int]) -> None:
    """This process's prepaid meters by balance band (counts kept by the shard host); every band set."""
    for band in PREPAID_BANDS:
        PREPAID_METERS.labels(band).set(counts.get(band, 0))


def prepaid_reads(outcome: str, count: int = 1) -> None:
    if count > 0:
        PREPAID_READS_TOTAL.labels(_closed(outcome, PREPAID_READ_OUTCOMES, "read outcome")).inc(count)


def prepaid_disconnection_held(count: int = 1) -> None:
    if count > 0:
        PREPAID_DISCONNECTIONS_HELD_TOTAL.inc(count)


def prepaid_recharge_off_rule(rule: str, count: int = 1) -> None:
    if count > 0:
        PREPAID_RECHARGES_OFF_RULE_TOTAL.labels(_closed(rule, RECHARGE_RULES, "recharge rule")).inc(count)


def emergency_credit(event: str, count: int = 1) -> None:
    if count > 0:
        label = _closed(event, EMERGENCY_CREDIT_EVENTS, "emergency credit event")
        EMERGENCY_CREDITS_TOTAL.labels(label).inc(count)


def set_paid_but_disconnected(*, auto: int, field: int) -> None:
    """This process's paid-but-disconnected meters past the grace, by reconnection path."""
    METERS_PAID_BUT_DISCONNECTED.labels("auto").set(auto)
    METERS_PAID_BUT_DISCONNECTED.labels("field").set(field)


def set_work_orders_open(action: str, count: int) -> None:
    """This process's open work orders for ``action`` (summed over live processes)."""
    WORK_ORDERS_OPEN.labels(_closed(action, WORK_ORDER_ACTIONS, "work-order action")).set(count)


def set_disconnect_guard(head_end: str, held: int, kept: int, paused: bool) -> None:
    """This gateway's guard: held waves, disconnects kept, kill switch (each gateway sets its own)."""
    label = _configured(head_end, _head_ends)
    DISCONNECT_WAVES_HELD.labels(label).set(held)
    DISCONNECTS_KEPT.labels(label).set(kept)
    DISCONNECTS_PAUSED.labels(label).set(1 if paused else 0)


def disconnects_released(head_end: str, count: int) -> None:
    if count > 0:
        DISCONNECTS_RELEASED_TOTAL.labels(_configured(head_end, _head_ends)).inc(count)


def disconnect_guard_failed(head_end: str, count: int = 1) -> None:
    if count > 0:
        DISCONNECT_GUARD_ERRORS_TOTAL.labels(_configured(head_end, _head_ends)).inc(count)


def disconnect_approval(outcome: str) -> None:
    DISCONNECT_APPROVALS_TOTAL.labels(_closed(outcome, GUARD_APPROVAL_OUTCOMES, "approval outcome")).inc()


def disconnect_switch(action: str) -> None:
    DISCONNECT_SWITCHES_TOTAL.labels(_closed(action, GUARD_SWITCH_ACTIONS, "switch action")).inc()


def actor_restarted(kind: str) -> None:
    ACTOR_RESTARTS_TOTAL.labels(_kind(kind)).inc()


def dead_letter(kind: str) -> None:
    DEAD_LETTERS_TOTAL.labels(_kind(kind)).inc()


def batches_in_flight(stage: str, count: int) -> None:
    BATCHES_IN_FLIGHT.labels(_closed(stage, STAGES, "stage")).set(count)


def desk_saturated() -> None:
    DESK_SATURATED_TOTAL.inc()


def set_payments_unapplied(count: int) -> None:
    PAYMENTS_UNAPPLIED.set(count)


def journal_commit(kind: str, seconds: float) -> None:
    JOURNAL_COMMIT_SECONDS.labels(_kind(kind)).observe(max(0.0, seconds))


def recovered(kind: str, seconds: float) -> None:
    RECOVERY_SECONDS.labels(_kind(kind)).observe(max(0.0, seconds))


def notice_sent(template: str, count: int = 1) -> None:
    CONSUMER_NOTICES_SENT_TOTAL.labels(_closed(template, NOTICE_TEMPLATES, "notice template")).inc(count)


def webhook_answered(gateway: str, status: int) -> None:
    """A webhook answered with HTTP ``status`` (any: 2xx accepted or duplicate, 4xx, 5xx)."""
    WEBHOOKS_TOTAL.labels(_configured(gateway, _gateways), f"{min(5, max(2, status // 100))}xx").inc()


def webhook_rejected(gateway: str, status: int) -> None:
    """A webhook answered with HTTP ``status`` (400 to 599)."""
    if not 400 <= status <= 599:
        raise ValueError(f"not an error status: {status}")
    WEBHOOKS_REJECTED_TOTAL.labels(_configured(gateway, _gateways), f"{status // 100}xx").inc()


def process_started(kind: str) -> None:
    """Count this process as a live actor of ``kind`` (until `mark_dead`) and sample its memory."""
    ACTOR_PROCESSES.labels(_kind(kind)).set(1)
    sample_process_memory(kind)


_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def sample_process_memory(kind: str) -> None:
    """Record this process's resident memory (Linux ``/proc/self/statm``); call it on the actor's tick."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return  # not Linux, or /proc hidden: no sample rather than a wrong one
    PROCESS_RESIDENT_MEMORY_BYTES.labels(_kind(kind)).set(resident_pages * _PAGE_SIZE)


# --- cluster ------------------------------------------------------------------------------------
def set_cluster_view(*, members: int, live: int, unowned: int) -> None:
    CLUSTER_MEMBERS.labels("live").set(live)
    CLUSTER_MEMBERS.labels("draining").set(max(0, members - live))
    CLUSTER_GROUPS_UNOWNED.set(unowned)


def set_cluster_leases_held(count: int) -> None:
    CLUSTER_LEASES_HELD.set(count)


def cluster_lease_acquired(reason: str) -> None:
    CLUSTER_LEASE_ACQUISITIONS_TOTAL.labels(_closed(reason, CLUSTER_ACQUIRE_REASONS, "acquire reason")).inc()


def cluster_lease_lost(reason: str) -> None:
    CLUSTER_LEASE_LOSSES_TOTAL.labels(_closed(reason, CLUSTER_LOSS_REASONS, "loss reason")).inc()


def fencing_refusal(kind: str) -> None:
    CLUSTER_FENCING_REFUSALS_TOTAL.labels(_closed(kind, {"group"}, "fenced kind")).inc()


def cluster_failover(seconds: float) -> None:
    CLUSTER_FAILOVER_SECONDS.observe(seconds)


def cluster_store_error() -> None:
    CLUSTER_STORE_ERRORS_TOTAL.inc()


# --- reconciliation -----------------------------------------------------------------------------
def reconcile_run(gateway: str, result: str, *, credited: int, rate_limited: int, server_errors: int) -> None:
    """One reconciliation run ended (periodic or `jodo reconcile`)."""
    label = _configured(gateway, _gateways)
    RECONCILE_RUNS_TOTAL.labels(label, _closed(result, RECONCILE_RESULTS, "reconcile result")).inc()
    RECONCILE_CREDITED_TOTAL.labels(label).inc(credited)
    RECONCILE_GATEWAY_ERRORS_TOTAL.labels(label, "rate_limited").inc(rate_limited)
    RECONCILE_GATEWAY_ERRORS_TOTAL.labels(label, "server_error").inc(server_errors)


def set_reconcile_state(gateway: str, *, mismatches: Mapping[str, int], complete: bool, end: int) -> None:
    """What the last periodic run of ``gateway`` found; ``end``: its window's end, kept if incomplete."""
    label = _configured(gateway, _gateways)
    for kind in RECONCILE_MISMATCH_KINDS:
        RECONCILE_MISMATCHES.labels(label, kind).set(mismatches.get(kind, 0))
    RECONCILE_WINDOW_INCOMPLETE.labels(label).set(0 if complete else 1)
    if complete:
        RECONCILE_LAST_COMPLETE.labels(label).set(end)


def set_reconcile_enabled(gateway: str, enabled: bool) -> None:
    RECONCILE_ENABLED.labels(_configured(gateway, _gateways)).set(1 if enabled else 0)


# --- audit chain --------------------------------------------------------------------------------
def audit_checkpoint_written(at: int, heads: Iterable[Any]) -> None:
    """A checkpoint was signed at ``at`` over ``heads`` (storage.audit.ChainHead: chain, seq)."""
    chains = {"journal": 0, "desk": 0}
    records = {"journal": 0, "desk": 0}
    for head in heads:
        kind = "desk" if str(head.chain).startswith("desk:") else "journal"
        chains[kind] += 1
        records[kind] += int(head.seq)
    for kind in chains:
        AUDIT_CHAINS.labels(kind).set(chains[kind])
        AUDIT_CHAIN_RECORDS.labels(kind).set(records[kind])
    AUDIT_LAST_CHECKPOINT_TIMESTAMP_SECONDS.set(at)
    AUDIT_CHECKPOINTS_TOTAL.labels("written").inc()


def audit_checkpoint_failed() -> None:
    AUDIT_CHECKPOINTS_TOTAL.labels("failed").inc()
