"""`Reconciler`: runs reconciliation windows inside the front-door process, periodic and on demand.

    reconciler = Reconciler(config)                      # ledger opened from [storage], lazily
    reconciler.attach(submit=batcher.submit_batch, ready=backend.ready)
    report = await reconciler.run("razorpay", start, end, dry_run=True)
    task = asyncio.create_task(reconciler.periodic())     # every [gateways.<name>.reconcile] every_s

Why here and not in an actor: the gateway's API is slow, blocking HTTP (the SDK is ``requests``)
with backoffs of seconds to minutes, and an actor handler must stay short (THESPIAN.md: shutdown
gives up on a blocked handler after 10 s); and a credit must take the webhook's own road, the front
door's `MicroBatcher` into the desk, so the desk's dedup on payment_id decides between the webhook
and reconciliation. The blocking work (the gateway's pages, the ledger's window) runs on one worker
thread of its own; one run at a time (an asyncio lock), so two runs never race each other.

The ledger is read through a second `DeskStore` handle (the storage contract allows several;
SQLite readers never block the desk's writer in WAL mode). Credits are written only by the desk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from jodo.config import Config, ConfigError, GatewayConfig
from jodo.reconcile.core import Finding, Report, plan
from jodo.reconcile.razorpay_api import Listing, RazorpayLister
from protocols.payments import PaymentItemResult, PaymentReceived, PaymentResultCode
from storage import backend as storage_backend
from storage.api import DeskStore
from telemetry import metrics

if TYPE_CHECKING:  # jodo.frontdoor's app imports this package when it builds the app
    from jodo.frontdoor.backend import Saturated

    Submit = Callable[[Sequence[PaymentReceived]], Awaitable[Sequence[PaymentItemResult] | Saturated]]

__all__ = ["CREDIT_CHUNK", "Lister", "ReconcileRefused", "Reconciler"]

log = logging.getLogger("jodo.reconcile")

CREDIT_CHUNK = 1_000  # payments per desk batch when crediting


class Lister(Protocol):
    def list_payments(self, start: int, end: int) -> Listing: ...


class ReconcileRefused(Exception):
    """A run that cannot start (unknown gateway, no API credentials, a bad window): ``where`` names it."""

    def __init__(self, status: int, detail: str, where: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.where = where


@dataclass(frozen=True, slots=True)
class _Read:
    listing: Listing
    ledger: list[Any]
    lookup: dict[str, Any]


class Reconciler:
    """Reconciliation for every configured gateway of one node."""

    def __init__(
        self,
        config: Config,
        *,
        open_ledger: Callable[[], DeskStore] | None = None,
        lister_for: Callable[[GatewayConfig, Callable[[float], bool]], Lister] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._open_ledger = open_ledger or (lambda: _open_ledger(config))
        self._lister_for = lister_for or _razorpay_lister
        self._clock = clock
        self._ledger: DeskStore | None = None
        self._listers: dict[str, Lister] = {}
        self._submit: Submit | None = None
        self._ready: Callable[[], bool] = lambda: True
        self._lock: asyncio.Lock | None = None
        self._stopping = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jodo-reconcile")
        self.last: dict[str, Report] = {}  # the latest run per gateway (for /v1/status and tests)
        self._logged: dict[str, set[tuple[str, str | None]]] = {}  # findings already logged, per gateway

    def attach(self, *, submit: Submit, ready: Callable[[], bool]) -> None:
        self._submit, self._ready = submit, ready

    def active(self) -> list[str]:
        """Gateways whose periodic reconciliation is on."""
        return [name for name, g in self.config.gateways.items() if g.reconcile.active]

    # ------------------------------------------------------------ one run

    def check(self, gateway: str, start: int, end: int) -> GatewayConfig:
        g = self.config.gateways.get(gateway)
        if g is None:
            raise ReconcileRefused(
                404,
                f"no gateway {gateway[:64]!r} is configured "
                f"(configured: {', '.join(self.config.gateways) or 'none'})",
                "gateway",
            )
        if g.format != "razorpay" or not g.reconcile.has_credentials:
            raise ReconcileRefused(
                409,
                f"gateway {gateway} has no payments API credentials "
                f"([gateways.{gateway}.reconcile] key_id and key_secret)",
                "gateway",
            )
        if end < start:
            raise ReconcileRefused(400, f"the window ends ({end}) before it starts ({start})", "to")
        if end > self._clock() + 86_400:
            raise ReconcileRefused(400, "the window ends more than a day in the future", "to")
        return g

    async def run(
        self, gateway: str, start: int, end: int, *, dry_run: bool = False, trigger: str = "manual"
    ) -> Report:
        """Reconcile ``gateway`` over [start, end]; credit (unless ``dry_run``) what the ledger lacks."""
        g = self.check(gateway, start, end)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            report = Report(
                gateway=gateway,
                start=start,
                end=end,
                started_at=self._clock(),
                dry_run=dry_run,
                trigger=trigger,
            )
            began = time.monotonic()
            try:
                await self._run(g, report)
            except Exception as exc:  # the ledger or the gateway client broke: say so, never claim clean
                log.exception("reconcile %s: run failed", gateway)
                report.complete = False
                report.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            report.seconds = time.monotonic() - began
            self._finish(report)
            return report

    async def _run(self, g: GatewayConfig, report: Report) -> None:
        if not self._ready():
            report.error = "the node is not ready (starting or recovering)"
            return
        loop = asyncio.get_running_loop()
        read = await loop.run_in_executor(self._pool, self._read, g, report.start, report.end)
        listing = read.listing
        report.complete, report.error = listing.complete, listing.error
        report.pages, report.requests = listing.pages, listing.requests
        report.rate_limited, report.server_errors = listing.rate_limited, listing.server_errors
        report.listed = len(listing.items)
        decided = plan(
            g,
            listing.items,
            read.ledger,
            now=self._clock(),
            lookup=read.lookup.get,
            complete=listing.complete,
        )
        report.statuses, report.matched, report.findings = decided.statuses, decided.matched, decided.findings
        if report.dry_run:
            report.would_credit = decided.to_credit
        else:
            await self._credit(report, decided.to_credit)

    def _read(self, g: GatewayConfig, start: int, end: int) -> _Read:
        """On the worker thread: the gateway's window, then the ledger's (so a payment the webhook
        brings meanwhile is in the ledger by the time we compare, not credited twice: the desk would
        refuse the second anyway)."""
        lister = self._listers.get(g.name)
        if lister is None:
            lister = self._listers[g.name] = self._lister_for(g, self._stopping.wait)
        listing = lister.list_payments(start, end)
        ledger = self._ledger or self._open_ledger()
        self._ledger = ledger
        rows = list(ledger.payments_paid_between(g.name, start, end))
        in_window = {r.payment_id for r in rows}
        lookup = {}
        for item in listing.items:  # listed but recorded under another gateway name or paid_at
            pid = item.get("id") if isinstance(item, dict) else None
            if isinstance(pid, str) and pid and pid not in in_window and len(pid) <= 256:
                found = ledger.payment(pid)
                if found is not None:
                    lookup[pid] = found
        return _Read(listing, rows, lookup)

    async def _credit(self, report: Report, payments: list[PaymentReceived]) -> None:
        if not payments:
            return
        if self._submit is None:
            raise RuntimeError("Reconciler.attach(submit=...) was not called")
        for lo in range(0, len(payments), CREDIT_CHUNK):
            chunk = payments[lo : lo + CREDIT_CHUNK]
            outcome = await self._submit(chunk)
            if not isinstance(outcome, list | tuple):  # Saturated: nothing of the chunk was stored
                reason = getattr(outcome, "reason", "saturated")
                report.not_credited += [
                    Finding(
                        kind="not_credited",
                        payment_id=p.payment_id,
                        account=p.account,
                        gateway_amount_paise=p.amount_paise,
                        detail=f"the desk was busy ({reason}); the next run retries",
                    )
                    for p in chunk
                ]
                continue
            for p, result in zip(chunk, outcome, strict=True):
                if result.code is PaymentResultCode.ACCEPTED:
                    report.credited.append(p)
                    log.warning(
                        "reconcile %s: credited %s (account %s, %d paise, paid at %d): captured at the "
                        "gateway, no webhook had brought it",
                        report.gateway,
                        p.payment_id,
                        p.account,
                        p.amount_paise,
                        p.paid_at,
                    )
                elif result.code is PaymentResultCode.DUPLICATE:
                    report.already += 1
                else:
                    report.not_credited.append(
                        Finding(
                            kind="not_credited",
                            payment_id=p.payment_id,
                            account=p.account,
                            gateway_amount_paise=p.amount_paise,
                            detail=f"the desk rejected it: {result.reason}",
                        )
                    )

    def _finish(self, report: Report) -> None:
        self.last[report.gateway] = report
        result = "incomplete" if not report.complete else "clean" if report.clean else "findings"
        metrics.reconcile_run(
            report.gateway,
            result,
            credited=len(report.credited),
            rate_limited=report.rate_limited,
            server_errors=report.server_errors,
        )
        if report.trigger == "periodic":
            metrics.set_reconcile_state(
                report.gateway, mismatches=report.counts(), complete=report.complete, end=report.end
            )
        # a mismatch stays in the sliding window for a day: warn when a run first sees it, not every run
        before = self._logged.get(report.gateway, set()) if report.trigger == "periodic" else set()
        for f in report.findings:
            level = logging.INFO if (f.kind, f.payment_id) in before else logging.WARNING
            where = f" at {f.where}" if f.where else ""
            log.log(
                level,
                "reconcile %s: %s %s: %s%s",
                report.gateway,
                f.kind,
                f.payment_id or "-",
                f.detail,
                where,
            )
        if report.trigger == "periodic":
            self._logged[report.gateway] = {(f.kind, f.payment_id) for f in report.findings}
        for f in report.not_credited:
            log.error("reconcile %s: NOT credited %s: %s", report.gateway, f.payment_id, f.detail)
        log.info(
            "reconcile %s [%d, %d] %s%s: %s; listed %d, credited %d, already %d, mismatches %s (%.2f s)",
            report.gateway,
            report.start,
            report.end,
            report.trigger,
            " dry-run" if report.dry_run else "",
            result if report.complete else f"incomplete ({report.error})",
            report.listed,
            len(report.credited),
            report.already,
            report.counts(),
            report.seconds,
        )

    # ------------------------------------------------------------ periodic

    async def periodic(self) -> None:
        """Run every active gateway's sliding window every ``every_s`` until cancelled or `close`d."""
        for name in self.config.gateways:
            metrics.set_reconcile_enabled(name, name in self.active())
        tasks = [asyncio.create_task(self._every(name), name=f"reconcile-{name}") for name in self.active()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _every(self, name: str) -> None:
        rc = self.config.gateways[name].reconcile
        while not self._stopping.is_set():
            if self._ready():
                now = self._clock()
                try:
                    await self.run(name, int(now - rc.window_s), int(now - rc.settle_s), trigger="periodic")
                except Exception:  # a bug must not end the periodic pull for good
                    log.exception("reconcile %s: periodic run failed", name)
                delay = rc.every_s
            else:
                delay = min(rc.every_s, 1.0)  # the node is starting: look again soon
            await asyncio.get_running_loop().run_in_executor(None, self._stopping.wait, delay)

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def close(self) -> None:
        """Stop the periodic runs and any backoff in progress; close the ledger handle."""
        self._stopping.set()
        self._pool.submit(self._close_ledger)
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _close_ledger(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


def _razorpay_lister(g: GatewayConfig, wait: Callable[[float], bool]) -> Lister:
    rc = g.reconcile
    if rc.key_id is None:
        raise ConfigError(f"gateways.{g.name}.reconcile: no key_id")
    return RazorpayLister(
        key_id=rc.key_id,
        key_secret=rc.resolved_secret(),
        base_url=rc.base_url,
        timeout_s=rc.timeout_s,
        wait=wait,
    )


def _open_ledger(config: Config) -> DeskStore:
    storage = config.storage
    if storage.backend == "postgresql":
        location: str | Path = storage.resolved_dsn() or ""
    else:
        location = config.node.data_dir.resolve()
    return storage_backend(storage.backend).open_desk_store(location)
