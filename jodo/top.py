"""`jodo top`: a live terminal view of one node, read from its own ``/metrics`` and ``/v1/status``.

    jodo top [--url URL] [--every 1.0] [--once]

Each refresh scrapes both endpoints (no actor system is opened), keeps the last `HISTORY` scrapes and
draws: payments/s and webhooks/s with sparklines, meters by relay state, relay commands pending and the
breaker per head-end, actor restarts, p99 payment → relay connected over the window, and the last
errors (any error counter that went up since the previous scrape: rejected webhooks, dead letters,
desk saturation, failed or expired relay commands, restarts). ``q`` (or Ctrl-C) quits. Plain ANSI
over any terminal, SSH included; ``--once`` prints one frame without the live screen (for scripts).

The arithmetic (`TopState`) is pure and unit-tested; `render` turns a `View` into rich renderables;
`run` is the loop.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import select
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from jodo.values import IST

__all__ = ["HISTORY", "Scrape", "TopState", "View", "histogram_quantile", "parse_exposition", "render",
           "run", "sparkline"]

HISTORY = 60  # scrapes kept: the sparklines' width and the p99 window
BLOCKS = "▁▂▃▄▅▆▇█"
BREAKER = {0: "closed", 1: "half-open", 2: "OPEN"}
#: Counters whose increase is an error worth a line: (metric, label shown, what it means).
ERROR_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("jodo_webhooks_rejected_total", "gateway", "webhooks refused"),
    ("jodo_dead_letters_total", "kind", "dead letters"),
    ("jodo_desk_saturated_total", "", "desk saturated (503 to payments)"),
    ("jodo_actor_restarts_total", "kind", "actor restarted"),
    ("jodo_payments_received_total", "gateway", "payments to suspense"),
    ("jodo_relay_commands_total", "action", "relay commands failed"),
    ("jodo_relay_commands_total", "action", "relay commands expired"),
    ("jodo_cluster_store_errors_total", "", "cluster store errors"),
)
_ERROR_MATCH: dict[str, dict[str, str]] = {
    "payments to suspense": {"outcome": "suspense"},
    "relay commands failed": {"outcome": "failed"},
    "relay commands expired": {"outcome": "expired"},
}

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_exposition(text: str) -> Series:
    """Prometheus text exposition → ``{(sample name, labels): value}``."""
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return series


def by_label(series: Series, name: str, label: str = "", **match: str) -> dict[str, float]:
    """``name``'s samples whose labels include ``match``, summed per value of ``label`` ("" without)."""
    want = set(match.items())
    out: dict[str, float] = {}
    for (n, labels), v in series.items():
        if n == name and want <= labels:
            key = dict(labels).get(label, "") if label else ""
            out[key] = out.get(key, 0.0) + v
    return out


def total(series: Series, name: str, **match: str) -> float:
    """Sum of ``name``'s samples whose labels include ``match``."""
    return sum(by_label(series, name, **match).values())


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative ``{le: count}``; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bucket: its bound is all that is known
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _buckets(series: Series, name: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for (n, labels), v in series.items():
        if n == name + "_bucket":
            le = float(dict(labels)["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def sparkline(values: list[float], width: int = HISTORY) -> str:
    """``values`` (oldest first) as block characters, scaled to their own maximum."""
    shown = values[-width:]
    top = max(shown, default=0.0)
    if top <= 0:
        return BLOCKS[0] * len(shown)
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int(v / top * (len(BLOCKS) - 1) + 0.5))] for v in shown)


@dataclass(frozen=True, slots=True)
class Scrape:
    """One refresh: when, the metrics, the status (None if it failed) and why it failed."""

    at: float
    series: Series
    status: Mapping[str, Any] | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class View:
    """Everything one frame shows."""

    url: str
    at: float
    ready: bool | None
    payments_per_s: float
    webhooks_per_s: float
    payments_history: list[float]
    webhooks_history: list[float]
    relay_states: dict[str, float]
    head_ends: list[dict[str, Any]]  # name, pending, breaker
    restarts: float
    p99_connected_s: float | None
    p99_window_s: float
    events: list[tuple[float, str]]
    error: str = ""
    clock: int | None = None


@dataclass
class TopState:
    """The scrapes seen so far and what they add up to (pure: no I/O)."""

    url: str = ""
    history: deque[Scrape] = field(default_factory=lambda: deque(maxlen=HISTORY))
    events: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=8))

    def add(self, scrape: Scrape) -> None:
        previous = self.history[-1] if self.history else None
        self.history.append(scrape)
        if scrape.error:
            self.events.append((scrape.at, scrape.error))
        if previous is None or not previous.series or not scrape.series:
            return
        for name, label, what in ERROR_COUNTERS:
            match = _ERROR_MATCH.get(what, {})
            before = by_label(previous.series, name, label, **match)
            for key, value in by_label(scrape.series, name, label, **match).items():
                grown = value - before.get(key, 0.0)
                if grown > 0:
                    where = f" ({label}={key})" if label and key else ""
                    self.events.append((scrape.at, f"{what}{where}: +{grown:g}"))

    def _rates(self, count: Callable[[Series], float]) -> list[float]:
        scrapes = [s for s in self.history if s.series]
        out = []
        for a, b in itertools.pairwise(scrapes):
            dt = b.at - a.at
            out.append(max(0.0, count(b.series) - count(a.series)) / dt if dt > 0 else 0.0)
        return out

    def view(self) -> View:
        last = self.history[-1] if self.history else Scrape(at=time.time(), series={})
        payments = self._rates(lambda s: total(s, "jodo_payments_received_total"))
        webhooks = self._rates(lambda s: total(s, "jodo_webhooks_total"))
        status = next((s.status for s in reversed(self.history) if s.status is not None), None)
        relay: dict[str, float] = {}
        head_ends: list[dict[str, Any]] = []
        restarts = total(last.series, "jodo_actor_restarts_total")
        clock = None
        if status is not None:
            for shard in status.get("shards", []):
                for state, n in (shard.get("relay") or {}).items():
                    relay[state] = relay.get(state, 0.0) + n
                clock = shard.get("clock", clock)
            for h in status.get("head_ends", []):
                head_ends.append({"name": h.get("head_end", "?"), "pending": h.get("pending"),
                                  "breaker": h.get("breaker", h.get("error", "?"))})
            restarts = float(status.get("restarts", restarts))
        if not relay:
            counted = by_label(last.series, "jodo_meters_by_relay_state", "state")
            relay = {k: v for k, v in counted.items() if k}
        if not head_ends:
            pending = by_label(last.series, "jodo_relay_commands_pending", "head_end")
            breaker = by_label(last.series, "jodo_headend_breaker_state", "head_end")
            head_ends = [{"name": n, "pending": int(pending.get(n, 0)),
                          "breaker": BREAKER.get(int(breaker.get(n, 0)), "?")} for n in sorted(pending)]
        first = next((s for s in self.history if s.series), last)
        name = "jodo_payment_to_relay_connected_seconds"
        now_b, then_b = _buckets(last.series, name), _buckets(first.series, name)
        window = {le: now_b[le] - then_b.get(le, 0.0) for le in now_b}
        p99 = histogram_quantile(0.99, window) if first is not last else None
        span = last.at - first.at
        if p99 is None:  # nothing in the window: since the node started
            p99, span = histogram_quantile(0.99, now_b), 0.0
        return View(
            url=self.url, at=last.at, ready=None if status is None else bool(status.get("ready")),
            payments_per_s=payments[-1] if payments else 0.0,
            webhooks_per_s=webhooks[-1] if webhooks else 0.0,
            payments_history=payments, webhooks_history=webhooks, relay_states=relay, head_ends=head_ends,
            restarts=restarts, p99_connected_s=p99, p99_window_s=span, events=list(self.events),
            error=last.error, clock=clock if isinstance(clock, int) else None,
        )


def _ist(t: float) -> str:
    return datetime.fromtimestamp(t, IST).strftime("%H:%M:%S")


def render(view: View) -> RenderableType:
    """One frame."""
    state = "ready" if view.ready else ("NOT READY" if view.ready is False else "no status")
    head = Text.assemble(("jodo top ", "bold"), f"{view.url}  ", (state, "green" if view.ready else "red"),
                         f"  {_ist(view.at)} IST  restarts {view.restarts:g}")
    if view.clock is not None and abs(view.clock - view.at) > 120:
        head.append(f"  lab clock {datetime.fromtimestamp(view.clock, IST):%Y-%m-%d %H:%M}", "yellow")
    if view.error:
        head.append(f"\n{view.error}", "red")
    flow = Table.grid(padding=(0, 2))
    flow.add_row("payments/s", f"{view.payments_per_s:8.1f}", sparkline(view.payments_history, 40))
    flow.add_row("webhooks/s", f"{view.webhooks_per_s:8.1f}", sparkline(view.webhooks_history, 40))
    if view.p99_connected_s is None:
        p99 = "no payment reconnected yet"
    else:
        over = f"last {view.p99_window_s:.0f} s" if view.p99_window_s else "since start"
        p99 = f"{view.p99_connected_s * 1000:.0f} ms ({over})"
    flow.add_row("p99 paid → connected", p99, "")
    relay = Table("relay state", "meters", box=None, padding=(0, 2))
    for state_name, n in sorted(view.relay_states.items()):
        relay.add_row(state_name, f"{n:,.0f}")
    heads = Table("head-end", "pending", "breaker", box=None, padding=(0, 2))
    for h in view.head_ends:
        heads.add_row(str(h["name"]), str(h["pending"]), str(h["breaker"]))
    errors = Text("\n").join(Text(f"{_ist(at)}  {line}", "red" if line != "none" else "dim")
                             for at, line in view.events[-8:] or [(view.at, "none")])
    return Group(
        head,
        Panel(flow, title="flow", title_align="left"),
        _row(relay, heads),
        Panel(errors, title="last errors", title_align="left"),
        Text("q quits", style="dim"),
    )


def _row(*cells: RenderableType) -> Table:
    grid = Table.grid(padding=(0, 4))
    grid.add_row(*cells)
    return grid


# ---------------------------------------------------------------- the loop


def scrape(get_text: Callable[[str], str], get_json: Callable[[str], Any]) -> Scrape:
    """Both endpoints; a failure of either is kept as the scrape's error, never raised."""
    at = time.time()
    series: Series = {}
    status: Mapping[str, Any] | None = None
    problems = []
    try:
        series = parse_exposition(get_text("/metrics"))
    except Exception as exc:
        problems.append(f"/metrics: {exc}")
    try:
        status = get_json("/v1/status")
    except Exception as exc:
        problems.append(f"/v1/status: {exc}")
    return Scrape(at=at, series=series, status=status, error="; ".join(problems))


@contextlib.contextmanager
def _keys(stream: TextIO) -> Iterator[Callable[[float], str]]:
    """``wait(seconds) -> key or ""``: single keys without Enter on a terminal (restored at the end)."""
    if not stream.isatty():
        def sleep(seconds: float) -> str:
            time.sleep(seconds)
            return ""

        yield sleep
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        def wait(seconds: float) -> str:
            ready, _, _ = select.select([fd], [], [], seconds)
            return os.read(fd, 32).decode(errors="replace") if ready else ""

        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(url: str, get_text: Callable[[str], str], get_json: Callable[[str], Any], *, every: float = 1.0,
        once: bool = False, console: Console | None = None, stdin: TextIO | None = None) -> int:
    """Draw until ``q``; with ``once``, two scrapes ``every`` apart (so rates exist) and one frame."""
    console = console or Console()
    state = TopState(url=url)
    state.add(scrape(get_text, get_json))
    if once:
        time.sleep(every)
        state.add(scrape(get_text, get_json))
        console.print(render(state.view()))
        return 0
    with _keys(stdin or sys.stdin) as wait, Live(render(state.view()), console=console, screen=True,
                                                 auto_refresh=False) as live:
        try:
            next_at = time.monotonic() + every
            while True:
                key = wait(max(0.0, next_at - time.monotonic()))
                if "q" in key.lower():
                    return 0
                if time.monotonic() >= next_at:
                    state.add(scrape(get_text, get_json))
                    live.update(render(state.view()), refresh=True)
                    next_at = time.monotonic() + every
        except KeyboardInterrupt:
            return 0
