"""telemetry.metrics in one process: names, units, bounded labels, helper validation, exposition."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetry import metrics


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_every_metric_is_prefixed_and_named_by_its_type() -> None:
    for family in metrics._REGISTRY.collect():
        assert family.name.startswith("jodo_"), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert not family.name.endswith("_total"), "the client adds _total to counters itself"
    assert all(name.startswith("jodo_") for name in metrics.metric_names())
    assert "jodo_payments_received_total" in metrics.metric_names()
    assert "jodo_payment_to_relay_connected_seconds_bucket" in metrics.metric_names()


def test_no_label_can_carry_an_identifier() -> None:
    forbidden = re.compile(r"account|meter_id|serial|payment_id|command_id|ivrs|pid|id$")
    for metric in metrics._ALL:
        for label in metric._labelnames:
            assert not forbidden.search(label), (metric._name, label)


def test_reconnect_histogram_has_bucket_edges_on_the_slos() -> None:
    edges = set(metrics.PAYMENT_TO_CONNECTED_BUCKETS)
    assert {5, 60, 120, 300, 900} <= edges
    assert sum(1 for edge in edges if edge < 1) >= 3


def test_unconfigured_gateway_and_head_end_are_counted_as_other() -> None:
    metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-indore"])
    before = _samples(metrics.render())
    metrics.payment_received("attacker-chosen-name-123", "rejected")
    metrics.headend_roundtrip("nope", 0.2)
    after = _samples(metrics.render())
    key = ("jodo_payments_received_total", (("gateway", "other"), ("outcome", "rejected")))
    assert after[key] == before.get(key, 0) + 1
    assert after[("jodo_headend_command_roundtrip_seconds_count", (("head_end", "other"),))] >= 1
    assert not any("attacker" in str(labels) for _, labels in after)


def test_configured_label_values_are_checked() -> None:
    with pytest.raises(ValueError):
        metrics.configure_labels(gateways=["Razor Pay!"], head_ends=[])
    with pytest.raises(ValueError):
        metrics.configure_labels(gateways=[], head_ends=["other"])


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.payment_received("razorpay", "credited"),
        lambda: metrics.relay_command_attempted("hes-indore", "toggle"),
        lambda: metrics.relay_command_finished("connect", "maybe"),
        lambda: metrics.set_breaker_state("hes-indore", "ajar"),
        lambda: metrics.set_meters_by_relay_state({"floating": 1}),
        lambda: metrics.set_work_orders_open("whim", 1),
        lambda: metrics.batches_in_flight("router", 1),
        lambda: metrics.notice_sent("spam"),
        lambda: metrics.webhook_rejected("razorpay", 200),
    ],
)
def test_a_label_outside_its_closed_set_is_a_bug(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_unknown_actor_kind_is_counted_as_other_not_raised() -> None:
    metrics.actor_restarted("brand_new_actor")
    text = _samples(metrics.render())
    assert text[("jodo_actor_restarts_total", (("kind", "other"),))] >= 1


def test_an_actor_class_name_counts_as_its_kind() -> None:
    before = _samples(metrics.render()).get(("jodo_recovery_seconds_count", (("kind", "meter_shard"),)), 0.0)
    metrics.recovered("MeterShard", 0.5)
    metrics.journal_commit("HeadEndGateway", 0.001)
    after = _samples(metrics.render())
    assert after[("jodo_recovery_seconds_count", (("kind", "meter_shard"),))] == before + 1
    assert after[("jodo_journal_commit_seconds_count", (("kind", "headend_gateway"),))] >= 1


def test_helpers_record_what_they_say() -> None:
    metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-indore"])
    before = _samples(metrics.render())
    metrics.payment_received("razorpay", "accepted")
    metrics.payment_reconnected("hes-indore", 3.0)
    metrics.relay_command_finished("connect", "expired")
    metrics.set_breaker_state("hes-indore", "half_open")
    metrics.set_meters_by_relay_state({"connected": 7, "awaiting_button": 2})
    metrics.set_paid_but_disconnected(auto=1, field=4)
    metrics.webhook_rejected("razorpay", 503)
    after = _samples(metrics.render())

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("jodo_payments_received_total", gateway="razorpay", outcome="accepted") == 1
    assert grew("jodo_payment_to_relay_connected_seconds_bucket", head_end="hes-indore", le="5.0") == 1
    assert grew("jodo_payment_to_relay_connected_seconds_bucket", head_end="hes-indore", le="2.0") == 0
    assert grew("jodo_relay_commands_total", action="connect", outcome="expired") == 1
    assert grew("jodo_webhooks_rejected_total", gateway="razorpay", status_class="5xx") == 1
    assert after[("jodo_headend_breaker_state", (("head_end", "hes-indore"),))] == 1
    assert after[("jodo_meters", (("relay_state", "connected"),))] == 7
    assert after[("jodo_meters", (("relay_state", "disconnected"),))] == 0
    assert after[("jodo_meters_paid_but_disconnected", (("path", "auto"),))] == 1


def test_counters_exist_at_zero_before_the_first_event() -> None:
    metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-indore"])
    text = _samples(metrics.render())
    assert ("jodo_dead_letters_total", (("kind", "meter_shard"),)) in text
    assert ("jodo_relay_commands_total", (("action", "connect"), ("outcome", "failed"))) in text


def test_process_memory_is_sampled_in_bytes() -> None:
    metrics.process_started("meter_shard")
    value = _samples(metrics.render())[("jodo_process_resident_memory_bytes", (("kind", "meter_shard"),))]
    assert 1 << 20 < value < 1 << 36


def test_outside_multiprocess_mode_mark_dead_is_harmless() -> None:
    assert metrics.multiprocess_dir() is None
    metrics.mark_dead(1)


def test_prepaid_series_exist_at_zero_and_balances_fall_into_their_bands() -> None:
    metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-indore"])
    before = _samples(metrics.render())
    for band in metrics.PREPAID_BANDS:
        assert ("jodo_prepaid_meters", (("band", band),)) in before
    for outcome in ("debited", "duplicate", "estimated", "trued_up", "rejected"):
        assert ("jodo_prepaid_reads_total", (("outcome", outcome),)) in before
    for event in ("granted", "recovered"):
        assert ("jodo_emergency_credits_total", (("event", event),)) in before
    assert ("jodo_prepaid_disconnections_held_total", ()) in before
    for rule in ("multiple", "week_average"):
        assert ("jodo_prepaid_recharges_off_rule_total", (("rule", rule),)) in before
    from domain.prepaid import balance_band

    assert [balance_band(p) for p in (-1, 0, 9_999, 10_000, 49_999, 50_000)] == [
        "negative", "zero_to_100", "zero_to_100", "100_to_500", "100_to_500", "500_plus"]
    assert set(metrics.PREPAID_BANDS) == {balance_band(p) for p in (-1, 0, 10_000, 50_000)}
    metrics.set_prepaid_bands({"negative": 1, "zero_to_100": 1, "100_to_500": 2, "500_plus": 1})
    metrics.prepaid_reads("duplicate", 3)
    metrics.emergency_credit("granted")
    after = _samples(metrics.render())
    assert after[("jodo_prepaid_meters", (("band", "100_to_500"),))] == 2
    assert after[("jodo_prepaid_meters", (("band", "negative"),))] == 1
    key = ("jodo_prepaid_reads_total", (("outcome", "duplicate"),))
    assert after[key] == before[key] + 3
    with pytest.raises(ValueError):
        metrics.prepaid_reads("lost")


def test_a_batch_of_observations_in_one_call_counts_each_in_its_bucket() -> None:
    metrics.configure_labels(gateways=["razorpay"], head_ends=["hes-indore"])
    before = _samples(metrics.render())
    metrics.headend_roundtrip("hes-indore", 0.001, 0.2, 9999.0, -1.0)  # a clock step back counts as 0
    metrics.payment_reconnected("hes-indore", 3.0, 4.0)
    metrics.payment_reconnected("hes-indore")  # nothing observed
    after = _samples(metrics.render())

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("jodo_headend_command_roundtrip_seconds_count", head_end="hes-indore") == 4
    assert grew("jodo_headend_command_roundtrip_seconds_bucket", head_end="hes-indore", le="+Inf") == 4
    assert grew("jodo_headend_command_roundtrip_seconds_sum", head_end="hes-indore") == pytest.approx(
        9_999.201, abs=0.01)
    assert grew("jodo_payment_to_relay_connected_seconds_count", head_end="hes-indore") == 2
    assert grew("jodo_payment_to_relay_connected_seconds_bucket", head_end="hes-indore", le="5.0") == 2
