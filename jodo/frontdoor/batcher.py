"""Micro-batching: webhooks arriving within a short window go to the desk as one batch.

One webhook is one HTTP request, but the desk commits in groups: each request puts its payment in the
current window and awaits its own future; the window is submitted when it holds ``max_items`` or
``window_s`` after its first item, whichever comes first. Results go back by index, so two deliveries
of the same payment in one window get "accepted" and "duplicate", each to its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from jodo.frontdoor.backend import Saturated, match_results
from protocols.payments import PaymentItemResult, PaymentReceived

__all__ = ["BatcherStats", "MicroBatcher"]

log = logging.getLogger("jodo.frontdoor")

Submit = Callable[[Sequence[PaymentReceived]], Awaitable[Sequence[PaymentItemResult] | Saturated]]


@dataclass(slots=True)
class BatcherStats:
    """Counts since start, for /v1/status and the bench."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    saturated: int = 0  # items answered 503 (desk full, timeout, failure, or too many waiting)


class MicroBatcher:
    """Collects payments from concurrent requests and submits them together."""

    def __init__(
        self,
        submit: Submit,
        *,
        window_s: float,
        max_items: int,
        max_in_flight: int,
        timeout_s: float,
    ) -> None:
        self._submit = submit
        self.window_s = window_s
        self.max_items = max_items
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.stats = BatcherStats()
        self._pending: list[tuple[PaymentReceived, asyncio.Future[PaymentItemResult | Saturated]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting = 0

    async def submit(self, payment: PaymentReceived) -> PaymentItemResult | Saturated:
        """This payment's result once its batch is durable, or `Saturated` (answer 503)."""
        if self._waiting >= self.max_in_flight:
            self.stats.saturated += 1
            return Saturated(1, f"{self._waiting} webhooks already waiting for the ledger")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PaymentItemResult | Saturated] = loop.create_future()
        self._pending.append((payment, future))
        self._waiting += 1
        try:
            if len(self._pending) >= self.max_items:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self.window_s, self._flush)
            return await future
        finally:
            self._waiting -= 1

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, batch: list[tuple[PaymentReceived, asyncio.Future[PaymentItemResult | Saturated]]]
    ) -> None:
        payments = [payment for payment, _ in batch]
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        closing = Saturated(1, "the front door is shutting down; retry")
        answers: Sequence[PaymentItemResult | Saturated] = [closing] * len(batch)
        try:
            outcome = await asyncio.wait_for(self._submit(payments), self.timeout_s)
            if isinstance(outcome, Saturated):
                answers = [outcome] * len(batch)
            else:
                answers = match_results(payments, outcome)
        except TimeoutError:
            late = Saturated(1, f"the ledger did not answer within {self.timeout_s:g} s; retry")
            answers = [late] * len(batch)
        except Exception:  # the backend broke: nothing is known to be durable, so nobody gets a 2xx
            log.exception("payment batch of %d failed in the backend", len(batch))
            answers = [Saturated(1, "the ledger failed; retry")] * len(batch)
        finally:  # also on cancellation: every waiting request gets an answer
            for (_, future), answer in zip(batch, answers, strict=True):
                if isinstance(answer, Saturated):
                    self.stats.saturated += 1
                if not future.done():  # done: its request was cancelled (client went away)
                    future.set_result(answer)

    async def close(self) -> None:
        """Submit what is waiting and wait for every batch in flight (app shutdown)."""
        self._flush()
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(set(self._tasks), timeout=self.timeout_s)
