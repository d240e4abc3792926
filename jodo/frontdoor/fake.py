"""An in-memory `Backend` for tests, the bench and front-door demos: a ledger in a dict.

It behaves like the payment desk where the front door can tell: deduplicates on payment_id and
event_id (within a batch too), answers ACCEPTED/`UNMATCHED` for unknown accounts, can be made
unready, saturated, slow or broken on demand, and records every batch it was given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jodo.errors import RequestRefused
from jodo.frontdoor.backend import UNMATCHED, Saturated
from protocols.payments import PaymentItemResult, PaymentReceived, PaymentResultCode

__all__ = ["FAULT_KINDS", "FakeBackend"]

# crash and outage are what jodo.backend.ActorBackend takes (and the CLI sends)
FAULT_KINDS = frozenset({"drop", "delay", "reject", "partition", "crash", "outage"})


class FakeBackend:
    """A `jodo.frontdoor.backend.Backend` in memory. Attributes are the knobs and the record."""

    def __init__(
        self,
        *,
        accounts: Iterable[str] | None = None,
        is_ready: bool = True,
        commit_delay_s: float = 0.0,
    ) -> None:
        self.accounts = set(accounts) if accounts is not None else None  # None: every account exists
        self.is_ready = is_ready
        self.commit_delay_s = commit_delay_s  # simulated ledger commit time
        self.saturated = False
        self.fail_with: Exception | None = None  # raised by the next submit_payments
        self.ledger: dict[str, PaymentReceived] = {}
        self.event_ids: set[str] = set()
        self.batches: list[int] = []  # size of every batch submitted, in order
        self.injected: list[Any] = []
        self.commands: list[Any] = []  # meter commands given to send_commands, in order
        self.faults: dict[tuple[str, str], bool] = {}

    def ready(self) -> bool:
        return self.is_ready

    async def submit_payments(
        self, payments: Sequence[PaymentReceived]
    ) -> Sequence[PaymentItemResult] | Saturated:
        self.batches.append(len(payments))
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        if self.saturated:
            return Saturated(2, "fake desk saturated")
        results = [self._apply(i, p) for i, p in enumerate(payments)]
        if self.commit_delay_s:
            await asyncio.sleep(self.commit_delay_s)  # the commit's latency, not a wait for a condition
        return results

    def _apply(self, index: int, payment: PaymentReceived) -> PaymentItemResult:
        seen = payment.payment_id in self.ledger or (payment.event_id in self.event_ids)
        if seen:
            code = PaymentResultCode.DUPLICATE
            return PaymentItemResult(index=index, payment_id=payment.payment_id, code=code)
        self.ledger[payment.payment_id] = payment
        if payment.event_id is not None:
            self.event_ids.add(payment.event_id)
        known = self.accounts is None or payment.account in self.accounts
        return PaymentItemResult(
            index=index, payment_id=payment.payment_id, code=PaymentResultCode.ACCEPTED,
            reason="" if known else UNMATCHED,
        )

    def _payments_of(self, account: str) -> list[PaymentReceived]:
        return [p for p in self.ledger.values() if p.account == account]

    async def meter(self, account: str) -> Mapping[str, Any] | None:
        if self.accounts is not None and account not in self.accounts:
            return None
        paid = self._payments_of(account)
        return {"account": account, "relay": "connected", "credited_paise": sum(p.amount_paise for p in paid),
                "payments": len(paid)}

    async def meter_history(self, account: str, *, limit: int) -> Sequence[Mapping[str, Any]] | None:
        if self.accounts is not None and account not in self.accounts:
            return None
        paid = sorted(self._payments_of(account), key=lambda p: p.received_at, reverse=True)
        return [{"event": "payment_credited", "payment_id": p.payment_id, "amount_paise": p.amount_paise}
                for p in paid[:limit]]

    async def payment_trace(self, payment_id: str) -> Mapping[str, Any] | None:
        payment = self.ledger.get(payment_id)
        if payment is None:
            return None
        return {"payment_id": payment_id, "account": payment.account, "amount_paise": payment.amount_paise,
                "gateway": payment.gateway, "stage": "ledger"}

    async def inject(self, message: Any) -> Mapping[str, Any]:
        self.injected.append(message)
        if isinstance(message, PaymentReceived):
            result = await self.submit_payments([message])
            if isinstance(result, Saturated):
                raise RequestRefused(503, "unavailable", result.reason)
            return {"result": str(result[0].code)}
        return {"result": "delivered"}

    async def send_commands(self, commands: Sequence[Any]) -> Sequence[tuple[int, str]]:
        self.commands.extend(commands)
        if self.accounts is not None:
            self.accounts.update(c.account for c in commands if type(c).__name__ == "RegisterMeter")
        return []

    async def cluster(self, *, drain: str | None = None, draining: bool = True) -> Mapping[str, Any]:
        raise RequestRefused(409, "not_a_cluster",
                             "this node is not a cluster member ([cluster] enabled = false)")

    async def fault(self, kind: str, target: str, on: bool) -> Mapping[str, Any]:
        if kind not in FAULT_KINDS:
            raise RequestRefused(
                400, "unknown_fault", f"fault kind must be one of {sorted(FAULT_KINDS)}", where="body.kind"
            )
        self.faults[(kind, target)] = on
        return {"kind": kind, "target": target, "on": on}

    async def set_clock(self, to: int | None = None, *, by: int | None = None) -> Mapping[str, Any]:
        raise RequestRefused(409, "wall_clock", "the fake backend runs the wall clock", where="node")

    async def status(self) -> Mapping[str, Any]:
        return {"ready": self.is_ready, "payments": len(self.ledger), "batches": len(self.batches),
                "largest_batch": max(self.batches, default=0)}

    def metrics(self) -> tuple[bytes, str]:
        text = (
            "# HELP jodo_fake_payments Payments in the fake ledger.\n"
            "# TYPE jodo_fake_payments gauge\n"
            f"jodo_fake_payments {len(self.ledger)}\n"
        )
        return text.encode(), "text/plain; version=0.0.4; charset=utf-8"
