"""Reconciliation's decisions, with no I/O: the gateway's list of payments against the ledger's.

For one gateway and one window (unix seconds, inclusive, on the gateway's ``created_at`` = the
ledger's ``paid_at``), each item the gateway listed is one of:

    captured, not in the ledger     → credit now (`Plan.to_credit`: the same `PaymentReceived` a
                                      ``payment.captured`` webhook builds, so the desk deduplicates
                                      the two on payment_id, whichever comes first)
    captured, in the ledger         → matched; ``amount_differs`` if the amounts disagree
    authorized (never captured)     → ``stuck``: the consumer paid, the money is not ours yet
    failed / refunded, in ledger    → ``missing_at_gateway`` (the ledger credited money the gateway
                                      does not hold as captured)
    created / failed, not in ledger → nothing
    unreadable (missing fields, a negative or fractional amount, no account) → ``invalid``: reported
                                      with the field, never credited

and each ledger payment of that gateway in the window that the gateway did not list as captured is
``missing_at_gateway``. Mismatch kinds are a closed set (`MISMATCH_KINDS`): they are metric labels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jodo.config import GatewayConfig
from jodo.errors import WebhookError
from jodo.values import IST
from jodo.webhooks import razorpay_payment
from protocols.payments import PaymentReceived
from storage.records import PaymentRecord

__all__ = [
    "MISMATCH_KINDS",
    "Finding",
    "Plan",
    "Report",
    "plan",
]

AMOUNT_DIFFERS = "amount_differs"
MISSING_AT_GATEWAY = "missing_at_gateway"
STUCK = "stuck"
INVALID = "invalid"
MISMATCH_KINDS = (AMOUNT_DIFFERS, MISSING_AT_GATEWAY, STUCK, INVALID)
_MAX_LISTED = 200  # findings and credits listed in a report per kind (all are counted)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One mismatch; amounts in integer paise."""

    kind: str
    payment_id: str | None
    detail: str
    where: str | None = None
    account: str | None = None
    gateway_amount_paise: int | None = None
    ledger_amount_paise: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("kind", self.kind),
                ("payment_id", self.payment_id),
                ("detail", self.detail),
                ("where", self.where),
                ("account", self.account),
                ("gateway_amount_paise", self.gateway_amount_paise),
                ("ledger_amount_paise", self.ledger_amount_paise),
            )
            if v is not None
        }


@dataclass(slots=True)
class Plan:
    to_credit: list[PaymentReceived] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    matched: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # items seen by gateway status


def plan(
    gateway: GatewayConfig,
    items: Sequence[Any],
    ledger: Iterable[PaymentRecord],
    *,
    now: float,
    lookup: Callable[[str], PaymentRecord | None],
    complete: bool = True,
) -> Plan:
    """Compare what the gateway listed for a window with the ledger's payments of that window.

    ``ledger``: the ledger's payments of this gateway in the window; ``lookup``: one payment by id
    from anywhere in the ledger (a payment recorded under another gateway name or paid_at). Unless
    ``complete`` (every page of the window was read), a ledger payment the gateway did not list may
    be on a page never read: it is not reported missing."""
    out = Plan()
    in_window = {p.payment_id: p for p in ledger}
    captured: set[str] = set()
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            out.findings.append(
                Finding(
                    kind=INVALID,
                    payment_id=None,
                    where=where,
                    detail=f"not a payment object: {type(item).__name__}",
                )
            )
            continue
        pid, status = item.get("id"), item.get("status")
        if not isinstance(pid, str) or not pid or not isinstance(status, str):
            out.findings.append(
                Finding(
                    kind=INVALID,
                    payment_id=pid if isinstance(pid, str) else None,
                    where=f"{where}.{'status' if isinstance(pid, str) and pid else 'id'}",
                    detail="a payment needs a string id and status",
                )
            )
            continue
        if pid in seen:  # pages shifted under us: the same payment twice is one payment
            continue
        seen.add(pid)
        out.statuses[status] = out.statuses.get(status, 0) + 1
        recorded = in_window.get(pid) or lookup(pid)
        if status == "captured":
            captured.add(pid)
            _captured(out, gateway, item, where, recorded, now)
        elif status == "authorized":
            out.findings.append(
                Finding(
                    kind=STUCK,
                    payment_id=pid,
                    account=_account(gateway, item),
                    gateway_amount_paise=_int(item.get("amount")),
                    detail="authorized at the gateway and never captured",
                )
            )
        elif recorded is not None and status in ("failed", "refunded", "created"):
            captured.add(pid)  # reported here, not again as absent
            out.findings.append(
                Finding(
                    kind=MISSING_AT_GATEWAY,
                    payment_id=pid,
                    account=recorded.account,
                    ledger_amount_paise=recorded.amount_paise,
                    gateway_amount_paise=_int(item.get("amount")),
                    detail=f"in the ledger ({recorded.status}), the gateway says {status[:16]}",
                )
            )
        elif status not in ("failed", "refunded", "created"):
            out.findings.append(
                Finding(
                    kind=INVALID,
                    payment_id=pid,
                    where=f"{where}.status",
                    detail=f"unknown payment status {status[:32]!r}",
                )
            )
    for pid, recorded in in_window.items() if complete else ():
        if pid not in captured:
            out.findings.append(
                Finding(
                    kind=MISSING_AT_GATEWAY,
                    payment_id=pid,
                    account=recorded.account,
                    ledger_amount_paise=recorded.amount_paise,
                    detail=f"in the ledger ({recorded.status}), not listed as captured by the gateway",
                )
            )
    return out


def _captured(
    out: Plan,
    gateway: GatewayConfig,
    item: dict[str, Any],
    where: str,
    recorded: PaymentRecord | None,
    now: float,
) -> None:
    try:
        payment = razorpay_payment(gateway, item, now, where=where)
    except WebhookError as exc:
        out.findings.append(
            Finding(kind=INVALID, payment_id=str(item["id"])[:64], where=exc.where, detail=exc.detail)
        )
        return
    if recorded is None:
        out.to_credit.append(payment)
        return
    out.matched += 1
    if recorded.amount_paise != payment.amount_paise:
        out.findings.append(
            Finding(
                kind=AMOUNT_DIFFERS,
                payment_id=payment.payment_id,
                account=recorded.account,
                gateway_amount_paise=payment.amount_paise,
                ledger_amount_paise=recorded.amount_paise,
                detail="the ledger and the gateway disagree on the amount",
            )
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _account(gateway: GatewayConfig, item: Mapping[str, Any]) -> str | None:
    notes = item.get("notes")
    value = notes.get(gateway.account_field) if isinstance(notes, dict) else None
    return value[:64] if isinstance(value, str) else None


# ---------------------------------------------------------------- the report


@dataclass(slots=True, kw_only=True)
class Report:
    """One run over one gateway's window; `to_json` for scripts and the API, `text` for people."""

    gateway: str
    start: int
    end: int
    started_at: float
    dry_run: bool = False
    trigger: str = "manual"
    complete: bool = False
    error: str | None = None
    pages: int = 0
    requests: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    listed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    matched: int = 0
    credited: list[PaymentReceived] = field(default_factory=list)  # accepted by the desk now
    would_credit: list[PaymentReceived] = field(default_factory=list)  # dry run
    already: int = 0  # the desk said duplicate: the webhook won the race
    not_credited: list[Finding] = field(default_factory=list)  # the desk refused or was full
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(MISMATCH_KINDS, 0)
        for f in self.findings:
            out[f.kind] += 1
        return out

    @property
    def clean(self) -> bool:
        return self.complete and not self.not_credited and not any(self.counts().values())

    def to_json(self) -> dict[str, Any]:
        def paid(p: PaymentReceived) -> dict[str, Any]:
            return {
                "payment_id": p.payment_id,
                "account": p.account,
                "amount_paise": p.amount_paise,
                "paid_at": p.paid_at,
            }

        return {
            "gateway": self.gateway,
            "from": self.start,
            "to": self.end,
            "dry_run": self.dry_run,
            "trigger": self.trigger,
            "complete": self.complete,
            "clean": self.clean,
            "error": self.error,
            "gateway_requests": {
                "pages": self.pages,
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "server_errors": self.server_errors,
            },
            "listed": self.listed,
            "statuses": dict(sorted(self.statuses.items())),
            "matched": self.matched,
            "credited": [paid(p) for p in self.credited[:_MAX_LISTED]],
            "credited_count": len(self.credited),
            "would_credit": [paid(p) for p in self.would_credit[:_MAX_LISTED]],
            "would_credit_count": len(self.would_credit),
            "already_in_ledger": self.already,
            "not_credited": [f.to_json() for f in self.not_credited[:_MAX_LISTED]],
            "mismatches": self.counts(),
            "findings": [f.to_json() for f in self._listed_findings()],
            "started_at": int(self.started_at),
            "seconds": round(self.seconds, 3),
        }

    def _listed_findings(self) -> list[Finding]:
        per_kind: dict[str, int] = {}
        out = []
        for f in self.findings:
            per_kind[f.kind] = per_kind.get(f.kind, 0) + 1
            if per_kind[f.kind] <= _MAX_LISTED:
                out.append(f)
        return out


def text(doc: Mapping[str, Any]) -> str:
    """A report (`Report.to_json`) for people: times in IST, amounts in rupees."""
    state = (
        "clean"
        if doc["clean"]
        else "complete, with findings"
        if doc["complete"]
        else f"INCOMPLETE ({doc['error']})"
    )
    lines = [
        f"gateway {doc['gateway']}: {_when(doc['from'])} .. {_when(doc['to'])} IST"
        f"{' (dry run: nothing credited)' if doc['dry_run'] else ''}: {state}",
        f"  read {doc['listed']} payments in {doc['gateway_requests']['pages']} pages "
        f"({doc['gateway_requests']['requests']} requests, {doc['gateway_requests']['rate_limited']} "
        f"rate-limited, {doc['gateway_requests']['server_errors']} server errors); by status: "
        + (", ".join(f"{k} {v}" for k, v in doc["statuses"].items()) or "none"),
        f"  matched the ledger: {doc['matched']}; already in the ledger when credited: "
        f"{doc['already_in_ledger']}",
    ]
    key = "would_credit" if doc["dry_run"] else "credited"
    lines.append(
        f"  {'would credit' if doc['dry_run'] else 'credited now'} (captured, not in the ledger): "
        f"{doc[key + '_count']}"
    )
    lines += [
        f"    {p['payment_id']}  {p['account']}  {_rupees(p['amount_paise'])}  paid {_when(p['paid_at'])}"
        for p in doc[key]
    ]
    for f in doc["not_credited"]:
        lines.append(f"  NOT credited {f.get('payment_id')}: {f['detail']}")
    counts = doc["mismatches"]
    lines.append("  mismatches: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for f in doc["findings"]:
        amounts = ""
        if "gateway_amount_paise" in f or "ledger_amount_paise" in f:
            amounts = (
                f" (gateway {_rupees(f.get('gateway_amount_paise'))}, "
                f"ledger {_rupees(f.get('ledger_amount_paise'))})"
            )
        where = f" at {f['where']}" if "where" in f else ""
        lines.append(f"    {f['kind']:<18} {f.get('payment_id') or '-'}: {f['detail']}{where}{amounts}")
    return "\n".join(lines)


def _when(t: Any) -> str:
    return datetime.fromtimestamp(int(t), IST).strftime("%Y-%m-%d %H:%M:%S") if isinstance(t, int) else "-"


def _rupees(paise: Any) -> str:
    if not isinstance(paise, int) or isinstance(paise, bool):
        return "-"
    sign = "-" if paise < 0 else ""
    return f"{sign}Rs {abs(paise) // 100:,}.{abs(paise) % 100:02d}"


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)
