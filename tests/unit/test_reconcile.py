"""Reconciliation against a fake Razorpay API server (real HTTP on 127.0.0.1) with the real SDK as the
client, and a real SQLite ledger: what the ledger lacks is credited once, mismatches are reported,
bad gateway data is reported and never credited, and a window not fully read is never called clean."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from jodo.config import GatewayConfig, ReconcileConfig, Secret, load_config
from jodo.reconcile.core import text
from jodo.reconcile.razorpay_api import RazorpayLister
from jodo.reconcile.service import Reconciler, ReconcileRefused
from jodo.webhooks import parse_webhook, sign_razorpay
from protocols import codec
from protocols.payments import PaymentItemResult, PaymentReceived, PaymentResultCode
from storage import open_desk_store
from storage.api import DeskStore
from storage.postgres import PostgresBackend
from storage.records import NewPayment, RecordOutcome
from telemetry import metrics
from tests.razorpay_fake import KEY_ID, KEY_SECRET, FakeRazorpay, Scripted, entity

NOW = 1_765_000_000
START, END = NOW - 3_600, NOW - 60
WEBHOOK_SECRET = "rzp-webhook-secret-for-reconcile"


@pytest.fixture
def api() -> Iterator[FakeRazorpay]:
    with FakeRazorpay() as fake:
        yield fake


def lister(api: FakeRazorpay, waits: list[float] | None = None, secret: str = KEY_SECRET) -> RazorpayLister:
    def wait(seconds: float) -> bool:
        (waits if waits is not None else []).append(seconds)
        return False

    return RazorpayLister(key_id=KEY_ID, key_secret=Secret(secret), base_url=api.url, timeout_s=5, wait=wait)


def gateway(api: FakeRazorpay) -> GatewayConfig:
    return GatewayConfig(
        name="razorpay",
        format="razorpay",
        secret=Secret(WEBHOOK_SECRET),
        reconcile=ReconcileConfig(key_id=KEY_ID, key_secret=Secret(KEY_SECRET), base_url=api.url),
    )


# ---------------------------------------------------------------- the SDK against the fake API


def test_a_window_is_read_page_by_page_with_basic_auth(api: FakeRazorpay) -> None:
    api.payments += [
        entity(f"pay_{i:04d}", account="N0000000001", amount=100 + i, created_at=START + i)
        for i in range(250)
    ]
    api.payments.append(entity("pay_outside", account="N0000000001", amount=5, created_at=END + 1))
    listing = lister(api).list_payments(START, END)
    assert listing.complete and listing.error is None
    assert sorted(p["id"] for p in listing.items) == [f"pay_{i:04d}" for i in range(250)]
    assert [(q["count"], q["skip"]) for q in api.requests] == [("100", "0"), ("100", "100"), ("100", "200")]
    assert {(q["from"], q["to"]) for q in api.requests} == {(str(START), str(END))}
    assert (listing.pages, listing.requests) == (3, 3)


def test_a_wrong_key_is_refused_and_the_window_is_incomplete(api: FakeRazorpay) -> None:
    listing = lister(api, secret="not-the-secret").list_payments(START, END)
    assert not listing.complete
    assert listing.error is not None and "HTTP 401" in listing.error and "api key" in listing.error
    assert api.refused_auth == 1


def test_a_rate_limit_waits_retry_after_and_resumes_the_same_page(api: FakeRazorpay) -> None:
    api.payments += [
        entity(f"pay_{i:04d}", account="N0000000001", amount=100, created_at=START + i) for i in range(150)
    ]
    waits: list[float] = []
    first = lister(api, waits)
    assert len(first.list_payments(START, END).items) == 150
    api.requests.clear()
    api.script(Scripted(429, {"Retry-After": "7"}), Scripted(429))
    listing = first.list_payments(START, END)
    assert listing.complete and len(listing.items) == 150
    assert listing.rate_limited == 2
    assert waits == [7.0, 2.0]  # Retry-After when given, else backoff (1 s, 2 s, ...)
    assert [q["skip"] for q in api.requests] == ["0", "0", "0", "100"]


def test_server_errors_are_retried_with_backoff_then_the_window_is_incomplete(api: FakeRazorpay) -> None:
    api.payments.append(entity("pay_1", account="N0000000001", amount=100, created_at=START))
    waits: list[float] = []
    api.script(Scripted(500), Scripted(502, body=b"<html>bad gateway</html>"), Scripted(503))
    listing = lister(api, waits).list_payments(START, END)
    assert listing.complete and [p["id"] for p in listing.items] == ["pay_1"]
    assert (listing.server_errors, waits) == (3, [1.0, 2.0, 4.0])
    api.script(*[Scripted(500)] * 4)
    broken = lister(api).list_payments(START, END)
    assert not broken.complete and broken.error is not None and "HTTP 500 4 times" in broken.error


def test_a_page_of_another_shape_is_never_taken_as_empty(api: FakeRazorpay) -> None:
    api.script(Scripted(200, body=json.dumps({"entity": "collection", "count": 0}).encode()))
    listing = lister(api).list_payments(START, END)
    assert not listing.complete and listing.error is not None and "no items list" in listing.error


def test_no_proxy_from_the_environment_reaches_the_gateway(
    api: FakeRazorpay, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert lister(api).list_payments(START, END).complete


# ---------------------------------------------------------------- against a real ledger


class Desk:
    """The desk's intake on a real SQLite ledger: record_payments decides NEW or DUPLICATE."""

    def __init__(self, path: Path | None = None, store: DeskStore | None = None) -> None:
        self.store = store if store is not None else open_desk_store(path or Path("."))
        self.batches: list[list[str]] = []

    async def submit(self, payments: Sequence[PaymentReceived]) -> list[PaymentItemResult]:
        self.batches.append([p.payment_id for p in payments])
        return [
            PaymentItemResult(
                index=i,
                payment_id=p.payment_id,
                code=PaymentResultCode.ACCEPTED
                if r.outcome is RecordOutcome.NEW
                else PaymentResultCode.DUPLICATE,
            )
            for i, (p, r) in enumerate(zip(payments, self.record(payments), strict=True))
        ]

    def record(self, payments: Sequence[PaymentReceived]) -> Sequence[Any]:
        return self.store.record_payments(
            [
                NewPayment(
                    payment_id=p.payment_id,
                    gateway=p.gateway,
                    event_id=p.event_id,
                    account=p.account,
                    amount_paise=p.amount_paise,
                    channel=p.channel,
                    paid_at=p.paid_at,
                    received_at=p.received_at,
                    body=codec.encode(p),
                    shard=0,
                )
                for p in payments
            ],
            at=NOW,
        )


def webhook(payment_id: str, account: str, amount: int, created_at: int) -> PaymentReceived:
    body = json.dumps(
        {
            "entity": "event",
            "event": "payment.captured",
            "payload": {
                "payment": {
                    "entity": entity(payment_id, account=account, amount=amount, created_at=created_at)
                }
            },
        }
    ).encode()
    outcome = parse_webhook(
        gateway_config(),
        {
            "Content-Type": "application/json",
            "X-Razorpay-Event-Id": f"evt_{payment_id}",
            "X-Razorpay-Signature": sign_razorpay(WEBHOOK_SECRET, body),
        },
        body,
        NOW,
    )
    assert isinstance(outcome, PaymentReceived)
    return outcome


def gateway_config() -> GatewayConfig:
    return GatewayConfig(name="razorpay", format="razorpay", secret=Secret(WEBHOOK_SECRET))


def reconciler(
    api: FakeRazorpay, desk: Desk, tmp_path: Path, waits: list[float] | None = None, **storage: str
) -> Reconciler:
    config = load_config(
        env={
            **{f"JODO_STORAGE__{k.upper()}": v for k, v in storage.items()},
            "JODO_NODE__DATA_DIR": str(tmp_path),
            "JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay",
            "JODO_GATEWAYS__RAZORPAY__SECRET": WEBHOOK_SECRET,
            "JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_ID": KEY_ID,
            "JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_SECRET": KEY_SECRET,
            "JODO_GATEWAYS__RAZORPAY__RECONCILE__BASE_URL": api.url,
        }
    )
    r = Reconciler(config, lister_for=lambda g, stop: lister(api, waits), clock=lambda: NOW)
    r.attach(submit=desk.submit, ready=lambda: True)
    return r


def run(r: Reconciler, *, dry_run: bool = False, trigger: str = "manual") -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        return (await r.run("razorpay", START, END, dry_run=dry_run, trigger=trigger)).to_json()

    return asyncio.run(go())


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path)
    yield d
    d.store.close()


def ledger_ids(store: DeskStore) -> list[str]:
    return sorted(p.payment_id for p in store.payments_paid_between("razorpay", 0, 2**40))


def test_a_captured_payment_the_ledger_lacks_is_credited_once_and_mismatches_are_reported(
    api: FakeRazorpay, desk: Desk, tmp_path: Path
) -> None:
    desk.record(
        [
            webhook("pay_seen", "N0000000001", 150_000, START + 10),
            webhook("pay_amount", "N0000000002", 150_000, START + 20),
            webhook("pay_ledger_only", "N0000000003", 99_900, START + 30),
            webhook("pay_refunded", "N0000000004", 10_000, START + 40),
        ]
    )
    api.payments += [
        entity("pay_seen", account="N0000000001", amount=150_000, created_at=START + 10),
        entity("pay_amount", account="N0000000002", amount=150_100, created_at=START + 20),
        entity(
            "pay_refunded", account="N0000000004", amount=10_000, created_at=START + 40, status="refunded"
        ),
        entity("pay_lost", account="N0000000005", amount=120_000, created_at=START + 50),
        entity("pay_stuck", account="N0000000006", amount=50_000, created_at=START + 60, status="authorized"),
        entity("pay_failed", account="N0000000007", amount=50_000, created_at=START + 70, status="failed"),
    ]
    r = reconciler(api, desk, tmp_path)
    try:
        first = run(r)
        second = run(r)
    finally:
        r.close()
    assert first["complete"] and not first["clean"]
    assert [(p["payment_id"], p["account"], p["amount_paise"]) for p in first["credited"]] == [
        ("pay_lost", "N0000000005", 120_000)
    ]
    assert first["mismatches"] == {"amount_differs": 1, "missing_at_gateway": 2, "stuck": 1, "invalid": 0}
    kinds = {(f["kind"], f["payment_id"]) for f in first["findings"]}
    assert kinds == {
        ("amount_differs", "pay_amount"),
        ("missing_at_gateway", "pay_ledger_only"),
        ("missing_at_gateway", "pay_refunded"),
        ("stuck", "pay_stuck"),
    }
    amount = next(f for f in first["findings"] if f["kind"] == "amount_differs")
    assert (amount["gateway_amount_paise"], amount["ledger_amount_paise"]) == (150_100, 150_000)
    stored = desk.store.payment("pay_lost")
    assert stored is not None and (stored.account, stored.amount_paise, stored.paid_at) == (
        "N0000000005",
        120_000,
        START + 50,
    )
    # the second run finds it in the ledger: nothing is credited twice, nothing even submitted
    assert second["credited_count"] == 0 and second["matched"] == 3 and desk.batches == [["pay_lost"]]
    human = text(first)
    assert "credited now (captured, not in the ledger): 1" in human and "pay_lost" in human
    assert "Rs 1,200.00" in human and "amount_differs" in human


def test_the_webhook_after_reconciliation_and_reconciliation_after_the_webhook_credit_once(
    api: FakeRazorpay, desk: Desk, tmp_path: Path
) -> None:
    api.payments += [
        entity("pay_a", account="N0000000001", amount=150_000, created_at=START + 1),
        entity("pay_b", account="N0000000002", amount=150_000, created_at=START + 2),
    ]
    desk.record([webhook("pay_b", "N0000000002", 150_000, START + 2)])  # its webhook came first
    r = reconciler(api, desk, tmp_path)
    try:
        report = run(r)
    finally:
        r.close()
    assert [p["payment_id"] for p in report["credited"]] == ["pay_a"]
    (late,) = desk.record([webhook("pay_a", "N0000000001", 150_000, START + 1)])  # its webhook came late
    assert late.outcome is RecordOutcome.DUPLICATE and late.stored_payment_id == "pay_a"
    assert ledger_ids(desk.store) == ["pay_a", "pay_b"]
    assert desk.store.payment_counts().pending == 2


def test_a_credit_racing_its_webhook_is_counted_as_already_in_the_ledger(
    api: FakeRazorpay, desk: Desk, tmp_path: Path
) -> None:
    api.payments.append(entity("pay_race", account="N0000000001", amount=150_000, created_at=START + 1))
    r = reconciler(api, desk, tmp_path)
    real = desk.submit

    async def webhook_first(payments: Sequence[PaymentReceived]) -> list[PaymentItemResult]:
        desk.record([webhook("pay_race", "N0000000001", 150_000, START + 1)])  # lands between read and credit
        return await real(payments)

    r.attach(submit=webhook_first, ready=lambda: True)
    try:
        report = run(r)
    finally:
        r.close()
    assert (report["credited_count"], report["already_in_ledger"]) == (0, 1)
    stored = desk.store.payment("pay_race")
    assert stored is not None and stored.event_id == "evt_pay_race"  # the webhook's row, alone


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"amount": -100}, "items[0].amount"),
        ({"amount": 1500.5}, "items[0].amount"),
        ({"amount": "150000"}, "items[0].amount"),
        ({"notes": []}, "items[0].notes.account"),
        ({"notes": {"account": 1234567}}, "items[0].notes.account"),
        ({"currency": "USD"}, "items[0].currency"),
        ({"created_at": None}, "items[0].created_at"),
        ({"id": None}, "items[0].id"),
        ({"status": "teleported"}, "items[0].status"),
    ],
)
def test_bad_data_from_the_gateway_is_reported_with_its_field_and_never_credited(
    api: FakeRazorpay, desk: Desk, tmp_path: Path, bad: dict[str, Any], where: str
) -> None:
    item = entity("pay_bad", account="N0000000001", amount=150_000, created_at=START + 5) | bad
    api.script(Scripted(200, body=json.dumps({"entity": "collection", "count": 1, "items": [item]}).encode()))
    r = reconciler(api, desk, tmp_path)
    try:
        report = run(r)
    finally:
        r.close()
    assert report["credited_count"] == 0 and desk.batches == [] and ledger_ids(desk.store) == []
    assert report["mismatches"]["invalid"] == 1, report
    (finding,) = report["findings"]
    assert finding["kind"] == "invalid" and finding["where"] == where, finding


def test_an_item_that_is_not_an_object_is_reported_and_the_rest_still_credited(
    api: FakeRazorpay, desk: Desk, tmp_path: Path
) -> None:
    good = entity("pay_good", account="N0000000001", amount=150_000, created_at=START + 1)
    api.script(
        Scripted(200, body=json.dumps({"entity": "collection", "count": 2, "items": ["x", good]}).encode())
    )
    r = reconciler(api, desk, tmp_path)
    try:
        report = run(r)
    finally:
        r.close()
    assert [p["payment_id"] for p in report["credited"]] == ["pay_good"]
    assert [(f["kind"], f["where"]) for f in report["findings"]] == [("invalid", "items[0]")]


def test_an_incomplete_window_is_never_clean_and_claims_nothing_missing_at_the_gateway(
    api: FakeRazorpay, desk: Desk, tmp_path: Path
) -> None:
    metrics.configure_labels(gateways=["razorpay"], head_ends=[])
    desk.record([webhook("pay_in_ledger", "N0000000001", 150_000, START + 1)])
    api.script(*[Scripted(503)] * 4)
    r = reconciler(api, desk, tmp_path)
    try:
        report = run(r, trigger="periodic")
    finally:
        r.close()
    assert not report["complete"] and not report["clean"]
    assert report["error"] is not None and "HTTP 503" in report["error"]
    assert report["mismatches"]["missing_at_gateway"] == 0
    assert "INCOMPLETE" in text(report)
    exposed = metrics.render().decode()
    assert 'jodo_reconcile_window_incomplete{gateway="razorpay"} 1.0' in exposed
    assert 'jodo_reconcile_gateway_errors_total{gateway="razorpay",kind="server_error"}' in exposed


def test_a_dry_run_lists_what_it_would_credit_and_writes_nothing(
    api: FakeRazorpay, desk: Desk, tmp_path: Path
) -> None:
    api.payments.append(entity("pay_lost", account="N0000000001", amount=150_000, created_at=START + 1))
    r = reconciler(api, desk, tmp_path)
    try:
        report = run(r, dry_run=True)
    finally:
        r.close()
    assert [p["payment_id"] for p in report["would_credit"]] == ["pay_lost"] and report["credited_count"] == 0
    assert desk.batches == [] and ledger_ids(desk.store) == []


def test_a_periodic_run_sets_the_gauges_and_counts_credits(
    api: FakeRazorpay, desk: Desk, tmp_path: Path
) -> None:
    metrics.configure_labels(gateways=["razorpay"], head_ends=[])
    before = _sample('jodo_reconcile_credited_total{gateway="razorpay"}')
    api.payments += [
        entity("pay_lost", account="N0000000001", amount=150_000, created_at=START + 1),
        entity("pay_stuck", account="N0000000002", amount=1, created_at=START + 2, status="authorized"),
    ]
    r = reconciler(api, desk, tmp_path)
    try:
        run(r, trigger="periodic")
    finally:
        r.close()
    assert _sample('jodo_reconcile_credited_total{gateway="razorpay"}') == before + 1
    assert _sample('jodo_reconcile_mismatches{gateway="razorpay",kind="stuck"}') == 1
    assert _sample('jodo_reconcile_mismatches{gateway="razorpay",kind="amount_differs"}') == 0
    assert _sample('jodo_reconcile_window_incomplete{gateway="razorpay"}') == 0
    assert _sample('jodo_reconcile_last_complete_timestamp_seconds{gateway="razorpay"}') == END


def _sample(name: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exposed")


def test_a_run_is_refused_for_an_unknown_gateway_or_one_without_credentials(
    api: FakeRazorpay, desk: Desk, tmp_path: Path
) -> None:
    r = reconciler(api, desk, tmp_path)
    try:
        with pytest.raises(ReconcileRefused) as unknown:
            r.check("paytm", START, END)
        assert (unknown.value.status, unknown.value.where) == (404, "gateway")
        with pytest.raises(ReconcileRefused) as backwards:
            r.check("razorpay", END, START)
        assert backwards.value.where == "to"
    finally:
        r.close()
    bare = Reconciler(
        load_config(
            env={
                "JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay",
                "JODO_GATEWAYS__RAZORPAY__SECRET": WEBHOOK_SECRET,
            }
        )
    )
    try:
        assert bare.active() == []
        with pytest.raises(ReconcileRefused) as none:
            bare.check("razorpay", START, END)
        assert none.value.status == 409 and "key_id" in none.value.detail
    finally:
        bare.close()


def test_on_postgresql_the_ledger_is_read_from_the_configured_database(
    api: FakeRazorpay, pg_dsn: str, tmp_path: Path
) -> None:
    """The reconciler opens its own ledger handle from [storage] (the DSN), beside the desk's."""
    desk = Desk(store=PostgresBackend().open_desk_store(pg_dsn))
    try:
        desk.record([webhook("pay_seen", "N0000000001", 150_000, START + 10)])
        api.payments += [
            entity("pay_seen", account="N0000000001", amount=150_000, created_at=START + 10),
            entity("pay_lost", account="N0000000002", amount=99_900, created_at=START + 20),
        ]
        r = reconciler(api, desk, tmp_path, backend="postgresql", dsn=pg_dsn)
        try:
            report = run(r)
        finally:
            r.close()
        assert (report["matched"], [p["payment_id"] for p in report["credited"]]) == (1, ["pay_lost"])
        assert ledger_ids(desk.store) == ["pay_lost", "pay_seen"]
    finally:
        desk.store.close()


def test_a_mismatch_is_warned_about_when_first_seen_not_on_every_periodic_run(
    api: FakeRazorpay, desk: Desk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = entity("pay_stuck", account="N0000000001", amount=1, created_at=START + 2, status="authorized")
    api.payments.append(stuck)
    r = reconciler(api, desk, tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger="jodo.reconcile"):
            run(r, trigger="periodic")
            run(r, trigger="periodic")
            api.payments.append(stuck | {"id": "pay_stuck_2"})
            run(r, trigger="periodic")
    finally:
        r.close()
    warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert [m.split(":")[1].strip() for m in warned] == ["stuck pay_stuck", "stuck pay_stuck_2"]
    assert sum("stuck pay_stuck:" in rec.getMessage() for rec in caplog.records) == 3  # still logged, as INFO
