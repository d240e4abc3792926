"""`jodo top`'s arithmetic and frame, without a node: rates from counter deltas, p99 from histogram
bucket deltas (Prometheus' histogram_quantile), error lines from counters that went up."""

from __future__ import annotations

import math

from rich.console import Console

from jodo.top import Scrape, TopState, histogram_quantile, parse_exposition, render, sparkline

EXPOSITION = """# HELP jodo_payments_received_total Payments received.
# TYPE jodo_payments_received_total counter
jodo_payments_received_total{{gateway="razorpay",outcome="accepted"}} {accepted}
jodo_payments_received_total{{gateway="razorpay",outcome="suspense"}} {suspense}
# HELP jodo_webhooks_total Webhooks answered.
# TYPE jodo_webhooks_total counter
jodo_webhooks_total{{gateway="razorpay",status_class="2xx"}} {accepted}
# HELP jodo_dead_letters_total Dead letters.
# TYPE jodo_dead_letters_total counter
jodo_dead_letters_total{{kind="payment_desk"}} {dead}
# HELP jodo_payment_to_relay_connected_seconds Paid to connected.
# TYPE jodo_payment_to_relay_connected_seconds histogram
jodo_payment_to_relay_connected_seconds_bucket{{head_end="hes-sim",le="0.1"}} {fast}
jodo_payment_to_relay_connected_seconds_bucket{{head_end="hes-sim",le="1.0"}} {slow}
jodo_payment_to_relay_connected_seconds_bucket{{head_end="hes-sim",le="+Inf"}} {slow}
jodo_payment_to_relay_connected_seconds_count{{head_end="hes-sim"}} {slow}
jodo_payment_to_relay_connected_seconds_sum{{head_end="hes-sim"}} 1.0
"""


def scrape(at: float, *, accepted: int = 0, suspense: int = 0, dead: int = 0, fast: int = 0,
           slow: int = 0) -> Scrape:
    text = EXPOSITION.format(accepted=accepted, suspense=suspense, dead=dead, fast=fast, slow=slow)
    status = {"ready": True, "restarts": 2, "shards": [{"relay": {"connected": 7, "disconnected": 3}}],
              "head_ends": [{"head_end": "hes-sim", "pending": 4, "breaker": "closed"}]}
    return Scrape(at=at, series=parse_exposition(text), status=status)


def test_histogram_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    assert histogram_quantile(0.99, {0.1: 0, 0.5: 10, math.inf: 10}) == 0.1 + 0.4 * 9.9 / 10
    assert histogram_quantile(0.5, {0.1: 10, 0.5: 10, math.inf: 10}) == 0.05
    assert histogram_quantile(0.99, {0.1: 0, math.inf: 5}) == 0.1  # past the last bound: the bound
    assert histogram_quantile(0.99, {0.1: 0, math.inf: 0}) is None


def test_rates_come_from_counter_deltas_and_errors_from_counters_that_went_up() -> None:
    state = TopState(url="http://127.0.0.1:1")
    state.add(scrape(100.0, accepted=10, suspense=1, dead=0, fast=5, slow=5))
    assert not state.events  # nothing to compare with yet
    state.add(scrape(102.0, accepted=110, suspense=3, dead=1, fast=5, slow=15))
    view = state.view()
    assert view.payments_per_s == (110 + 3 - 10 - 1) / 2.0
    assert view.webhooks_per_s == 50.0
    assert view.relay_states == {"connected": 7, "disconnected": 3}
    assert view.head_ends == [{"name": "hes-sim", "pending": 4, "breaker": "closed"}]
    assert view.restarts == 2
    # the 10 new observations all fell in 0.1..1.0: p99 over the window, not since start
    assert view.p99_connected_s is not None and 0.1 < view.p99_connected_s <= 1.0
    assert view.p99_window_s == 2.0
    lines = [line for _, line in view.events]
    assert "dead letters (kind=payment_desk): +1" in lines
    assert "payments to suspense (gateway=razorpay): +2" in lines


def test_a_counter_reset_by_a_restart_is_not_a_negative_rate() -> None:
    state = TopState()
    state.add(scrape(0.0, accepted=500))
    state.add(scrape(1.0, accepted=3))
    assert state.view().payments_per_s == 0.0


def test_sparkline_scales_to_its_own_maximum() -> None:
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([0, 5, 10]) == "▁▅█"
    assert len(sparkline([1.0] * 100, 40)) == 40


def test_the_frame_names_every_part() -> None:
    state = TopState(url="http://127.0.0.1:1")
    state.add(scrape(0.0))
    state.add(Scrape(at=1.0, series={}, error="/metrics: connection refused"))
    console = Console(record=True, width=100, color_system=None)
    console.print(render(state.view()))
    text = console.export_text()
    for part in ("payments/s", "webhooks/s", "p99 paid → connected", "relay state", "head-end", "breaker",
                 "last errors", "/metrics: connection refused", "restarts 2", "q quits"):
        assert part in text, (part, text)
