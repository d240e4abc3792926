"""What the front door needs from the node behind it: the `Backend` port, and its reply types.

The actor runtime implements `Backend` (a typed facade over asks to the PaymentDesk, the shards and
the supervisors); `jodo.frontdoor.fake.FakeBackend` implements it in memory for tests and the bench.
Every method is called from the aiohttp event loop: async methods may await, the two plain ones
(`Backend.ready`, `Backend.metrics`) must return at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from protocols.payments import PaymentItemResult, PaymentReceived, PaymentResultCode

__all__ = ["UNMATCHED", "Backend", "Saturated", "match_results", "result_word"]

#: Reason the desk gives with ACCEPTED for a payment it stored in suspense (no meter has that account).
UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class Saturated:
    """Nothing of the batch was stored: answer 503 with ``Retry-After: retry_after_s``.

    The backend returns it when the desk is full (`protocols.payments.DeskSaturated`); the front door
    also uses it when the backend did not answer in time or failed. A retry is always safe: payments are
    deduplicated on payment_id and event_id.
    """

    retry_after_s: int = 1
    reason: str = "the payment desk is saturated"


@runtime_checkable
class Backend(Protocol):
    """The node as the front door sees it. Mappings returned must be JSON-able (str keys, plain values).

    Expected refusals (an unknown fault kind, an injected message the runtime will not take) raise
    `jodo.errors.RequestRefused`; anything else raised is a bug and answers 500.
    """

    def ready(self) -> bool:
        """True once the node can make payments durable (desk and journal up, recovery done)."""
        ...

    async def submit_payments(
        self, payments: Sequence[PaymentReceived]
    ) -> Sequence[PaymentItemResult] | Saturated:
        """Hand a batch to the desk; return only after the ledger commit, one result per item.

        Called at most ``[http] max_batches_in_flight`` times concurrently (set 1 if the
        implementation must not overlap calls, e.g. one Thespian ActorSystem shared across threads).

        ``PaymentItemResult.index`` is the item's position in ``payments``; the same payment_id (or
        event_id) twice in one batch gives ACCEPTED once and DUPLICATE after. ACCEPTED with reason
        `UNMATCHED` means stored in suspense (no such account).
        """
        ...

    async def meter(self, account: str) -> Mapping[str, Any] | None:
        """The meter entity's current state, or None if no meter has that account."""
        ...

    async def meter_history(self, account: str, *, limit: int) -> Sequence[Mapping[str, Any]] | None:
        """The latest ``limit`` events of that meter, newest first; None if no such meter."""
        ...

    async def payment_trace(self, payment_id: str) -> Mapping[str, Any] | None:
        """Where a payment is: ledger entry, credit, relay command and outcome; None if never seen."""
        ...

    async def inject(self, message: Any) -> Mapping[str, Any]:
        """Deliver an operator-injected protocol message (already decoded and checked by the codec)."""
        ...

    async def send_commands(self, commands: Sequence[Any]) -> Sequence[tuple[int, str]]:
        """Deliver meter commands (registrations, bills, overrides...) to their meters, in order per
        meter; return after their journal commits, with ``(index, reason)`` for each one refused."""
        ...

    async def fault(self, kind: str, target: str, on: bool) -> Mapping[str, Any]:
        """Switch a fault on or off (test/demo nodes), e.g. kind "drop" on target head-end "hes-1"."""
        ...

    async def status(self) -> Mapping[str, Any]:
        """Node summary for ``jodo status``: actors, shards, head-ends, queues."""
        ...

    async def set_clock(self, to: int | None = None, *, by: int | None = None) -> Mapping[str, Any]:
        """A lab node's clock: to ``to`` (unix seconds) or forward ``by`` seconds, after which every
        meter has run what came due; ``{"clock", "was", "moved_s"}``. Refused 409 on a wall clock."""
        ...

    async def cluster(self, *, drain: str | None = None, draining: bool = True) -> Mapping[str, Any]:
        """The cluster as this node's keeper sees it (members, leases, what this node holds); with
        ``drain``, first mark that member draining (or not). Refused 409 on a single node."""
        ...

    def metrics(self) -> tuple[bytes, str]:
        """The Prometheus text exposition for this node and its content type."""
        ...


def result_word(result: PaymentItemResult) -> str:
    """The API's word for a desk result: accepted, unmatched, duplicate or rejected."""
    if result.code is PaymentResultCode.ACCEPTED and result.reason == UNMATCHED:
        return UNMATCHED
    return str(result.code)


def match_results(
    payments: Sequence[PaymentReceived], results: Sequence[PaymentItemResult]
) -> list[PaymentItemResult]:
    """``results`` reordered by index; ValueError unless there is exactly one per payment, ids matching.

    A backend that mixes up results would credit the wrong webhook's answer: refuse rather than guess.
    """
    ordered: list[PaymentItemResult | None] = [None] * len(payments)
    for result in results:
        if not isinstance(result, PaymentItemResult) or not 0 <= result.index < len(payments):
            raise ValueError(f"backend returned a result out of range: {result!r}")
        if ordered[result.index] is not None:
            raise ValueError(f"backend returned two results for index {result.index}")
        if result.payment_id != payments[result.index].payment_id:
            raise ValueError(f"backend result {result.index} is for another payment id")
        ordered[result.index] = result
    if any(r is None for r in ordered):
        raise ValueError(f"backend returned {len(results)} results for {len(payments)} payments")
    return [r for r in ordered if r is not None]
