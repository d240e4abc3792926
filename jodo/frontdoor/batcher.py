"""Micro-batching: webhooks arriving within a short window go to the desk as one batch.

One webhook is one HTTP request, but the desk commits in groups: each request puts its payment in the
current window and awaits its own future; the window is submitted when it holds ``max_items`` or
``window_s`` after its first item, whichever comes first. Results go back by index, so two deliveries
of the same payment in one window get "accepted" and "duplicate", each to its own request.

At most ``max_batches`` submissions run at once (1 for a backend that must not be called
concurrently), whole batches from ``POST /v1/payments`` included (`MicroBatcher.submit_batch`).
While every slot is busy, webhooks queue and leave together as soon as one returns, so batches grow
with load: group commit without a longer window.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from jodo.frontdoor.backend import Saturated, match_results
from protocols.payments import PaymentItemResult, PaymentReceived

__all__ = ["BatcherStats", "MicroBatcher"]

log = logging.getLogger("jodo.frontdoor")

Submit = Callable[[Sequence[PaymentReceived]], Awaitable[Sequence[PaymentItemResult] | Saturated]]
_Waiter = tuple[PaymentReceived, "asyncio.Future[PaymentItemResult | Saturated]"]


@dataclass(slots=True)
class BatcherStats:
    """Counts since start, for /v1/status and the bench."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    saturated: int = 0  # webhooks answered 503 (desk full, timeout, failure, or too many waiting)


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
        max_batches: int = 4,
    ) -> None:
        if max_batches < 1 or max_items < 1:
            raise ValueError("max_batches and max_items must be at least 1")
        self._submit = submit
        self.window_s = window_s
        self.max_items = max_items
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_batches = max_batches
        self.stats = BatcherStats()
        self._pending: list[_Waiter] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = 0  # submission slots in use (webhook batches and whole batches)
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waiting = 0

    @property
    def queued(self) -> int:
        """Webhook payments not yet handed to the backend."""
        return len(self._pending)

    @property
    def batches_waiting(self) -> int:
        """Whole batches (``submit_batch``) waiting for a free slot."""
        return len(self._slot_waiters)

    @property
    def running(self) -> int:
        """Submissions handed to the backend and not yet answered."""
        return self._busy

    # ------------------------------------------------------------ webhooks

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
        loop = asyncio.get_running_loop()
        while self._pending and self._busy < self.max_batches:
            batch, self._pending = self._pending[: self.max_items], self._pending[self.max_items :]
            self._busy += 1
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._release()

    def _release(self) -> None:
        """Give a finished submission's slot to a waiting whole batch, else to queued webhooks."""
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: _busy unchanged
                return
        self._busy -= 1
        if self._pending:  # they queued while every slot was busy: no need to wait for a window
            self._flush()

    async def _run(self, batch: list[_Waiter]) -> None:
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        closing = Saturated(1, "the front door is shutting down; retry")
        answers: Sequence[PaymentItemResult | Saturated] = [closing] * len(batch)
        try:
            outcome = await self._submit_checked([payment for payment, _ in batch])
            answers = [outcome] * len(batch) if isinstance(outcome, Saturated) else outcome
        finally:  # also on cancellation: every waiting request gets an answer
            for (_, future), answer in zip(batch, answers, strict=True):
                if isinstance(answer, Saturated):
                    self.stats.saturated += 1
                if not future.done():  # done: its request was cancelled (client went away)
                    future.set_result(answer)

    # ------------------------------------------------------------ whole batches

    async def submit_batch(self, payments: Sequence[PaymentReceived]) -> list[PaymentItemResult] | Saturated:
        """Submit ``payments`` as one batch of its own (``POST /v1/payments``), sharing the slots."""
        if self._busy >= self.max_batches:
            slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(slot)
            try:
                await slot
            except asyncio.CancelledError:
                if slot.done() and not slot.cancelled():  # handed a slot just as we were cancelled
                    self._release()
                raise
        else:
            self._busy += 1
        try:
            return await self._submit_checked(payments)
        finally:
            self._release()

    async def _submit_checked(
        self, payments: Sequence[PaymentReceived]
    ) -> list[PaymentItemResult] | Saturated:
        """The backend's answer in item order, or `Saturated` for anything that is not a clean answer."""
        try:
            outcome = await asyncio.wait_for(self._submit(payments), self.timeout_s)
            return outcome if isinstance(outcome, Saturated) else match_results(payments, outcome)
        except TimeoutError:
            return Saturated(1, f"the ledger did not answer within {self.timeout_s:g} s; retry")
        except Exception:  # the backend broke: nothing is known to be durable, so nobody gets a 2xx
            log.exception("payment batch of %d failed in the backend", len(payments))
            return Saturated(1, "the ledger failed; retry")

    async def close(self) -> None:
        """Submit what is waiting and wait for every batch in flight (app shutdown)."""
        self._flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.timeout_s
        while (self._tasks or self._pending) and loop.time() < deadline:
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.timeout_s)
            else:  # queued behind a whole batch, which flushes them when it returns
                await asyncio.sleep(0.01)
