"""The front door over real sockets on 127.0.0.1 (aiohttp's TestServer) with the in-memory FakeBackend."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jodo.config import Config, load_config
from jodo.frontdoor import BATCHER, FakeBackend, Saturated, build_app
from jodo.webhooks import sign_jodo, sign_razorpay
from protocols import codec
from protocols.payments import PaymentItemResult, PaymentReceived

NOW = 1_717_000_000
RZP_SECRET = "rzp-webhook-secret-1"
JODO_SECRET = "jodo-signing-secret-1"
ADMIN = "admin-token-0123456789abcdef"
PAYMENTS = "payments-token-0123456789abc"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
PAY_AUTH = {"Authorization": f"Bearer {PAYMENTS}"}


def make_config(tokens: bool = True, **http: Any) -> Config:
    env = {
        "JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay",
        "JODO_GATEWAYS__RAZORPAY__SECRET": RZP_SECRET,
        "JODO_GATEWAYS__BBPS__FORMAT": "jodo",
        "JODO_GATEWAYS__BBPS__SECRET": JODO_SECRET,
        **{f"JODO_HTTP__{key.upper()}": str(value) for key, value in http.items()},
    }
    if tokens:
        env |= {"JODO_TOKENS__ADMIN": ADMIN, "JODO_TOKENS__PAYMENTS": PAYMENTS}
    return load_config(env=env)


Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def front_door(
    backend: FakeBackend | None = None, *, tokens: bool = True, on_webhook: Any = None, **http: Any
) -> AsyncIterator[tuple[Client, FakeBackend]]:
    backend = backend if backend is not None else FakeBackend()
    app = build_app(make_config(tokens, **http), backend, clock=lambda: NOW, on_webhook=on_webhook)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, backend


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.002)


def jodo_payment(payment_id: str = "BBPS-0001", **fields: Any) -> tuple[bytes, dict[str, str]]:
    doc = {"payment_id": payment_id, "account": "N3462019771", "amount_paise": 99_900, "channel": "bbps",
           "paid_at": NOW - 60, **fields}
    body = json.dumps(doc).encode()
    return body, {"Content-Type": "application/json", "Jodo-Signature": sign_jodo(JODO_SECRET, body, NOW)}


def razorpay_event(event: str = "payment.captured", **entity: Any) -> tuple[bytes, dict[str, str]]:
    payment = {"id": "pay_29QQoUBi66xm2f", "amount": 125_050, "currency": "INR", "status": "captured",
               "method": "upi", "notes": {"account": "N3462019771"}, "created_at": NOW - 20, **entity}
    body = json.dumps({"event": event, "payload": {"payment": {"entity": payment}}}).encode()
    headers = {"Content-Type": "application/json", "X-Razorpay-Signature": sign_razorpay(RZP_SECRET, body),
               "X-Razorpay-Event-Id": "evt_KcPLBo1bF8ybOr"}
    return body, headers


async def post_jodo(client: Client, payment_id: str = "BBPS-0001", **fields: Any) -> tuple[int, Any]:
    body, headers = jodo_payment(payment_id, **fields)
    async with client.post("/v1/webhooks/bbps", data=body, headers=headers) as response:
        return response.status, await response.json()


class GatedBackend(FakeBackend):
    """A fake whose ledger commit waits for the test to open the gate."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.active = 0
        self.most_active = 0  # the most submit_payments calls ever running at once

    async def submit_payments(
        self, payments: Sequence[PaymentReceived]
    ) -> Sequence[PaymentItemResult] | Saturated:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            outcome = await super().submit_payments(payments)
            await self.gate.wait()
            return outcome
        finally:
            self.active -= 1


# ---------------------------------------------------------------- webhooks


def test_signed_webhook_is_accepted_once_and_then_duplicate() -> None:
    async def scenario() -> None:
        async with front_door() as (client, backend):
            assert await post_jodo(client) == (200, {"result": "accepted", "payment_id": "BBPS-0001"})
            assert await post_jodo(client) == (200, {"result": "duplicate", "payment_id": "BBPS-0001"})
            assert list(backend.ledger) == ["BBPS-0001"]
            assert backend.ledger["BBPS-0001"].received_at == NOW

    run(scenario)


def test_razorpay_webhook_is_accepted_and_a_failed_payment_is_ignored() -> None:
    async def scenario() -> None:
        async with front_door() as (client, backend):
            body, headers = razorpay_event()
            async with client.post("/v1/webhooks/razorpay", data=body, headers=headers) as r:
                expected = {"result": "accepted", "payment_id": "pay_29QQoUBi66xm2f"}
                assert (r.status, await r.json()) == (200, expected)
            body, headers = razorpay_event("payment.failed", id="pay_other", status="failed")
            async with client.post("/v1/webhooks/razorpay", data=body, headers=headers) as r:
                assert r.status == 200
                assert await r.json() == {"result": "ignored", "event": "payment.failed", "payment_id": None}
            assert list(backend.ledger) == ["pay_29QQoUBi66xm2f"]

    run(scenario)


def test_payment_for_an_unknown_account_is_unmatched() -> None:
    async def scenario() -> None:
        async with front_door(FakeBackend(accounts={"N1"})) as (client, _):
            assert await post_jodo(client) == (200, {"result": "unmatched", "payment_id": "BBPS-0001"})

    run(scenario)


Mutation = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]
SIG = "Jodo-Signature"


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda b, h: (b, {**h, SIG: sign_jodo("wrong-secret", b, NOW)}), 401, "bad_signature"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != SIG}), 401, "bad_signature"),
        (lambda b, h: (b, {**h, SIG: sign_jodo(JODO_SECRET, b, NOW - 301)}), 401, "bad_signature"),
        (lambda b, h: (b, {**h, "Content-Type": "text/plain"}), 415, "unsupported_media_type"),
        (lambda b, h: (b"{oops", {**h, SIG: sign_jodo(JODO_SECRET, b"{oops", NOW)}), 400, "malformed"),
        (lambda b, h: (b + b" " * 70_000, h), 413, "too_large"),
    ],
)
def test_bad_webhooks_get_the_documented_status_and_a_json_error(
    mutate: Mutation, status: int, code: str
) -> None:
    async def scenario() -> None:
        async with front_door() as (client, backend):
            body, headers = mutate(*jodo_payment())
            async with client.post("/v1/webhooks/bbps", data=body, headers=headers) as r:
                assert r.status == status
                doc = await r.json()
                assert doc["error"] == code and doc["detail"]
                assert set(doc) == {"error", "detail", "where"} and doc["where"]  # one shape for every error
                assert JODO_SECRET not in json.dumps(doc)
            assert backend.ledger == {}

    run(scenario)


@pytest.mark.parametrize(("amount", "fragment"), [(100.5, "fraction"), ("100", "string"), (0, "between")])
def test_amount_that_is_not_integer_paise_is_422(amount: Any, fragment: str) -> None:
    async def scenario() -> None:
        async with front_door() as (client, backend):
            status, doc = await post_jodo(client, amount_paise=amount)
            assert status == 422 and doc["error"] == "invalid_payment" and doc["where"] == "amount_paise"
            assert fragment in doc["detail"]
            assert backend.ledger == {}

    run(scenario)


def test_unknown_gateway_is_404() -> None:
    async def scenario() -> None:
        async with front_door() as (client, _):
            body, headers = jodo_payment()
            async with client.post("/v1/webhooks/paypal", data=body, headers=headers) as r:
                assert r.status == 404 and (await r.json())["error"] == "unknown_gateway"

    run(scenario)


def test_a_chunked_body_over_the_limit_is_413_without_reading_it_all() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 4096

    async def scenario() -> None:
        async with front_door() as (client, _):
            headers = {"Content-Type": "application/json", "Jodo-Signature": f"t={NOW},v1={'0' * 64}"}
            async with client.post("/v1/webhooks/bbps", data=chunks(), headers=headers) as r:
                assert r.status == 413

    run(scenario)


def test_not_ready_answers_503_with_retry_after_and_readyz_agrees() -> None:
    async def scenario() -> None:
        async with front_door(FakeBackend(is_ready=False)) as (client, backend):
            body, headers = jodo_payment()
            async with client.post("/v1/webhooks/bbps", data=body, headers=headers) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
            async with client.get("/readyz") as r:
                assert r.status == 503
            async with client.get("/healthz") as r:
                assert r.status == 200
            backend.is_ready = True
            async with client.get("/readyz") as r:
                assert r.status == 200
            assert await post_jodo(client) == (200, {"result": "accepted", "payment_id": "BBPS-0001"})

    run(scenario)


def test_saturated_backend_answers_503_with_its_retry_after() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        backend.saturated = True
        async with front_door(backend) as (client, _):
            body, headers = jodo_payment()
            async with client.post("/v1/webhooks/bbps", data=body, headers=headers) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "2"
                assert (await r.json())["error"] == "unavailable"

    run(scenario)


def test_a_failing_backend_answers_503_never_2xx_or_500() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        backend.fail_with = RuntimeError("journal disk full")
        async with front_door(backend) as (client, _):
            status, doc = await post_jodo(client)
            assert status == 503 and "retry" in doc["detail"]
            assert await post_jodo(client) == (200, {"result": "accepted", "payment_id": "BBPS-0001"})

    run(scenario)


def test_a_backend_slower_than_the_timeout_answers_503() -> None:
    async def scenario() -> None:
        async with front_door(GatedBackend(), submit_timeout_s=0.1) as (client, _):
            status, doc = await post_jodo(client)
            assert status == 503 and "did not answer within 0.1 s" in doc["detail"]

    run(scenario)


def test_webhooks_beyond_max_in_flight_are_refused_with_503() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        async with front_door(backend, max_in_flight=1, batch_max_items=1) as (client, _):
            first = asyncio.ensure_future(post_jodo(client, "P-1"))
            await until(lambda: len(backend.batches) == 1)
            status, doc = await post_jodo(client, "P-2")
            assert status == 503 and "already waiting" in doc["detail"]
            backend.gate.set()
            assert await first == (200, {"result": "accepted", "payment_id": "P-1"})

    run(scenario)


def test_the_observer_sees_every_webhook_answer() -> None:
    seen: list[tuple[str, int]] = []

    async def scenario() -> None:
        observer = lambda gateway, status: seen.append((gateway, status))  # noqa: E731
        async with front_door(on_webhook=observer) as (client, _):
            await post_jodo(client)
            await post_jodo(client, amount_paise=1.5)
            body, headers = jodo_payment()
            async with client.post("/v1/webhooks/nope", data=body, headers=headers):
                pass

    run(scenario)
    assert seen == [("bbps", 200), ("bbps", 422), ("nope", 404)]


# ---------------------------------------------------------------- micro-batching


def test_fifty_concurrent_identical_webhooks_credit_once() -> None:
    async def scenario() -> None:
        async with front_door(batch_window_ms=200) as (client, backend):
            answers = await asyncio.gather(*(post_jodo(client, "pay_same") for _ in range(50)))
            assert all(status == 200 for status, _ in answers)
            results = sorted(doc["result"] for _, doc in answers)
            assert results == ["accepted"] + ["duplicate"] * 49
            assert list(backend.ledger) == ["pay_same"]
            assert sum(backend.batches) == 50 and max(backend.batches) > 1  # batched, not 50 commits

    run(scenario)


def test_a_full_window_is_submitted_at_once_as_one_batch() -> None:
    async def scenario() -> None:
        async with front_door(batch_window_ms=1000, batch_max_items=10) as (client, backend):
            answers = await asyncio.gather(*(post_jodo(client, f"P-{i}") for i in range(30)))
            assert [doc["payment_id"] for _, doc in answers] == [f"P-{i}" for i in range(30)]
            assert all(doc["result"] == "accepted" for _, doc in answers)
            assert backend.batches == [10, 10, 10]
            app = client.app
            assert app is not None and app[BATCHER].stats.largest == 10

    run(scenario)


def test_the_same_payment_twice_in_one_batch_is_accepted_then_duplicate() -> None:
    async def scenario() -> None:
        async with front_door(batch_window_ms=1000, batch_max_items=2) as (client, backend):
            answers = await asyncio.gather(post_jodo(client, "P-1"), post_jodo(client, "P-1"))
            assert sorted(doc["result"] for _, doc in answers) == ["accepted", "duplicate"]
            assert backend.batches == [2]

    run(scenario)


def test_webhooks_arriving_while_the_ledger_is_busy_leave_together_as_the_next_batch() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        async with front_door(backend, batch_window_ms=0, max_batches_in_flight=1) as (client, _):
            app = client.app
            assert app is not None
            first = asyncio.ensure_future(post_jodo(client, "P-1"))
            await until(lambda: backend.batches == [1])
            later = [asyncio.ensure_future(post_jodo(client, f"P-{i}")) for i in (2, 3)]
            await until(lambda: app[BATCHER].queued == 2)
            assert backend.batches == [1]  # the one slot is busy: they wait, together
            backend.gate.set()
            answers = await asyncio.gather(first, *later)
            assert [doc["result"] for _, doc in answers] == ["accepted"] * 3
            assert backend.batches == [1, 2] and backend.most_active == 1

    run(scenario)


def test_a_payment_batch_shares_the_ledger_slots_with_webhooks() -> None:
    items = [{"payment_id": f"C-{i}", "account": "N1", "amount_paise": 100, "channel": "counter",
              "paid_at": NOW} for i in range(3)]

    async def scenario() -> None:
        backend = GatedBackend()
        async with front_door(backend, batch_window_ms=0, max_batches_in_flight=1) as (client, _):
            webhook = asyncio.ensure_future(post_jodo(client, "P-1"))
            await until(lambda: backend.batches == [1])

            async def post_batch() -> tuple[int, Any]:
                async with client.post("/v1/payments", json=items, headers=PAY_AUTH) as r:
                    return r.status, await r.json()

            batch = asyncio.ensure_future(post_batch())
            await until(lambda: client.app is not None and client.app[BATCHER].batches_waiting == 1)
            backend.gate.set()
            status, doc = await batch
            assert status == 200 and doc["accepted"] == 3
            assert (await webhook)[0] == 200
            assert backend.batches == [1, 3] and backend.most_active == 1

    run(scenario)


def test_a_lone_webhook_is_submitted_when_its_window_closes() -> None:
    async def scenario() -> None:
        async with front_door(batch_window_ms=5, batch_max_items=256) as (client, backend):
            assert (await post_jodo(client))[0] == 200
            assert backend.batches == [1]

    run(scenario)


# ---------------------------------------------------------------- /v1/payments


def test_a_payment_batch_gets_per_item_results_and_bad_items_do_not_sink_the_rest() -> None:
    items: list[Any] = [
        {"payment_id": "C-1", "account": "N1", "amount_paise": 5000, "channel": "counter",
         "paid_at": NOW - 9, "gateway": "counter", "cashless": False},
        {"payment_id": "C-2", "account": "N2", "amount_paise": 50.5, "channel": "counter", "paid_at": NOW},
        {"payment_id": "C-3", "account": "N3", "channel": "counter", "paid_at": NOW},
        {"payment_id": "C-1", "account": "N1", "amount_paise": 5000, "channel": "bbps", "paid_at": NOW - 9},
        "not an object",
        {"payment_id": "C-6", "account": "N9", "amount_paise": 100, "channel": "bbps", "paid_at": NOW},
    ]

    async def scenario() -> None:
        async with front_door(FakeBackend(accounts={"N1", "N2", "N3"})) as (client, backend):
            async with client.post("/v1/payments", json=items, headers=PAY_AUTH) as r:
                assert r.status == 200
                doc = await r.json()
            results = doc["results"]
            assert [x["result"] for x in results] == [
                "accepted", "rejected", "rejected", "duplicate", "rejected", "unmatched",
            ]
            assert [x["index"] for x in results] == list(range(6))
            assert results[1]["where"] == "[1].amount_paise" and results[1]["error"] == "invalid_payment"
            assert results[2]["where"] == "[2].amount_paise" and results[2]["error"] == "malformed"
            assert results[4]["payment_id"] is None
            assert (doc["accepted"], doc["duplicate"], doc["rejected"], doc["unmatched"]) == (1, 1, 3, 1)
            assert backend.ledger["C-1"].gateway == "counter" and backend.ledger["C-1"].cashless is False
            assert backend.ledger["C-6"].gateway == "api"
            assert backend.batches == [3]

    run(scenario)


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"payment_id": "x"}', {**PAY_AUTH, "Content-Type": "application/json"}, 400, "malformed"),
        (b"[1,", {**PAY_AUTH, "Content-Type": "application/json"}, 400, "malformed"),
        (b"[]", {**PAY_AUTH, "Content-Type": "text/csv"}, 415, "unsupported_media_type"),
        (b"[]", {"Content-Type": "application/json"}, 401, "unauthorized"),
        (b"[]", {**ADMIN_AUTH, "Content-Type": "application/json"}, 401, "unauthorized"),
        (b"[" + b"{}," * 11 + b"{}]", {**PAY_AUTH, "Content-Type": "application/json"}, 413, "too_large"),
    ],
)
def test_a_payment_batch_request_that_is_not_an_authorised_json_array_is_refused_whole(
    body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    async def scenario() -> None:
        async with front_door(max_batch_items=10) as (client, backend):
            async with client.post("/v1/payments", data=body, headers=headers) as r:
                assert r.status == status and (await r.json())["error"] == code
                if status == 401:
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert backend.batches == []

    run(scenario)


def test_apis_without_a_configured_token_are_disabled_not_open() -> None:
    async def scenario() -> None:
        async with front_door(tokens=False) as (client, _):
            async with client.post("/v1/payments", json=[], headers=PAY_AUTH) as r:
                assert r.status == 403 and (await r.json())["error"] == "disabled"
            async with client.get("/v1/status", headers=ADMIN_AUTH) as r:
                assert r.status == 403

    run(scenario)


# ---------------------------------------------------------------- admin and probes


def test_admin_reads_meter_history_and_payment_trace() -> None:
    async def scenario() -> None:
        async with front_door(FakeBackend(accounts={"N3462019771"})) as (client, _):
            await post_jodo(client)
            async with client.get("/v1/meters/N3462019771", headers=ADMIN_AUTH) as r:
                assert r.status == 200 and (await r.json())["credited_paise"] == 99_900
            async with client.get("/v1/meters/N3462019771/history?limit=5", headers=ADMIN_AUTH) as r:
                doc = await r.json()
                assert r.status == 200 and doc["events"][0]["payment_id"] == "BBPS-0001"
            async with client.get("/v1/payments/BBPS-0001", headers=ADMIN_AUTH) as r:
                assert r.status == 200 and (await r.json())["account"] == "N3462019771"
            async with client.get("/v1/meters/N0000", headers=ADMIN_AUTH) as r:
                assert r.status == 404 and (await r.json())["error"] == "not_found"
            async with client.get("/v1/payments/nope", headers=ADMIN_AUTH) as r:
                assert r.status == 404
            async with client.get("/v1/meters/N3462019771/history?limit=0", headers=ADMIN_AUTH) as r:
                assert r.status == 400 and (await r.json())["where"] == "query.limit"
            async with client.get("/v1/meters/bad%20account", headers=ADMIN_AUTH) as r:
                assert r.status == 400
            async with client.get("/v1/meters/N3462019771") as r:
                assert r.status == 401

    run(scenario)


def test_inject_takes_json_type_and_fields_or_msgpack() -> None:
    fields: dict[str, Any] = {"payment_id": "INJ-1", "account": "N1", "amount_paise": 100, "channel": "test",
                              "gateway": "inject", "paid_at": NOW, "received_at": NOW}

    async def scenario() -> None:
        async with front_door() as (client, backend):
            doc = {"type": "PaymentReceived", "fields": fields}
            async with client.post("/v1/admin/inject", json=doc, headers=ADMIN_AUTH) as r:
                assert r.status == 200
                assert await r.json() == {"injected": "PaymentReceived", "result": "accepted"}
            packed = codec.encode(PaymentReceived(**{**fields, "payment_id": "INJ-2"}))
            headers = {**ADMIN_AUTH, "Content-Type": "application/msgpack"}
            async with client.post("/v1/admin/inject", data=packed, headers=headers) as r:
                assert r.status == 200
            assert set(backend.ledger) == {"INJ-1", "INJ-2"}
            bad_docs: list[dict[str, Any]] = [
                {"type": "NoSuchMessage", "fields": {}},
                {"type": "PaymentReceived", "fields": {"x": 1}},
                {"type": "PaymentReceived", "fields": {**fields, "amount_paise": -1}},
                {"fields": {}},
            ]
            for bad in bad_docs:
                async with client.post("/v1/admin/inject", json=bad, headers=ADMIN_AUTH) as r:
                    assert r.status == 400 and (await r.json())["error"] == "malformed"
            async with client.post("/v1/admin/inject", data=b"\xc1\xc1", headers=headers) as r:
                assert r.status == 400 and "msgpack" in (await r.json())["detail"]

    run(scenario)


def test_fault_switches_and_unknown_kinds_are_refused() -> None:
    async def scenario() -> None:
        async with front_door() as (client, backend):
            doc = {"kind": "drop", "target": "hes-1", "on": True}
            async with client.post("/v1/admin/fault", json=doc, headers=ADMIN_AUTH) as r:
                assert r.status == 200
            assert backend.faults == {("drop", "hes-1"): True}
            meteor = {**doc, "kind": "meteor"}
            async with client.post("/v1/admin/fault", json=meteor, headers=ADMIN_AUTH) as r:
                assert r.status == 400 and (await r.json())["error"] == "unknown_fault"
            async with client.post("/v1/admin/fault", json={**doc, "on": "yes"}, headers=ADMIN_AUTH) as r:
                assert r.status == 400

    run(scenario)


def test_status_includes_front_door_batching_and_metrics_come_from_the_backend() -> None:
    async def scenario() -> None:
        async with front_door() as (client, _):
            await post_jodo(client)
            async with client.get("/v1/status", headers=ADMIN_AUTH) as r:
                doc = await r.json()
                assert doc["payments"] == 1 and doc["front_door"]["items"] == 1
            async with client.get("/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                assert "jodo_fake_payments 1" in await r.text()

    run(scenario)


def test_unknown_routes_and_methods_answer_json() -> None:
    async def scenario() -> None:
        async with front_door() as (client, _):
            async with client.get("/v2/nothing") as r:
                assert r.status == 404 and (await r.json())["error"] == "not_found"
            async with client.get("/v1/webhooks/bbps") as r:
                assert r.status == 405 and (await r.json())["error"] == "method_not_allowed"
                assert "POST" in r.headers["Allow"]

    run(scenario)


def test_random_input_to_every_route_never_gets_a_500() -> None:
    rng = random.Random(20240529)
    pieces = [b"{", b"}", b"[", b"]", b'"', b"amount_paise", b":", b"1", b"-", b"1.5", b",", b"null",
              b"\xff", b"payment_id", b'"PaymentReceived"', b"type", b"fields", b"\x93\xa1", b"\x00"]

    def junk() -> bytes:
        return b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))

    async def scenario() -> None:
        async with front_door() as (client, _):
            for _ in range(60):
                body = junk()
                jodo = {"Content-Type": "application/json", SIG: sign_jodo(JODO_SECRET, body, NOW)}
                ctype = rng.choice(["application/json", "application/msgpack", "text/plain", ""])
                for path, headers in [
                    ("/v1/webhooks/bbps", jodo),
                    ("/v1/payments", {**PAY_AUTH, "Content-Type": "application/json"}),
                    ("/v1/admin/inject", {**ADMIN_AUTH, "Content-Type": ctype}),
                    ("/v1/admin/fault", {**ADMIN_AUTH, "Content-Type": "application/json"}),
                ]:
                    async with client.post(path, data=body, headers=headers) as r:
                        assert r.status < 500, (path, body, await r.text())
                        assert "error" in await r.json() or r.status == 200

    run(scenario)


class ClusterBackend(FakeBackend):
    """A FakeBackend that is a cluster member: two members, drains recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.drained: list[tuple[str, bool]] = []

    async def cluster(self, *, drain: str | None = None, draining: bool = True) -> dict[str, Any]:
        if drain is not None:
            self.drained.append((drain, draining))
        return {"node_id": "node1", "members": [{"node_id": "node1"}, {"node_id": "node2"}], "leases": []}


def test_the_cluster_routes_on_a_single_node_answer_409_and_need_the_admin_token() -> None:
    async def scenario() -> None:
        async with front_door() as (client, _):
            async with client.get("/v1/cluster", headers=ADMIN_AUTH) as r:
                assert (r.status, (await r.json())["error"]) == (409, "not_a_cluster")
            async with client.get("/v1/cluster") as r:
                assert r.status == 401
            body = json.dumps({"node": "node1"}).encode()
            async with client.post("/v1/cluster/drain", data=body,
                                   headers={**ADMIN_AUTH, "Content-Type": "application/json"}) as r:
                assert (r.status, (await r.json())["error"]) == (409, "not_a_cluster")

    run(scenario)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"not json", 400, "malformed"),
        (b'{"draining": true}', 400, "malformed"),
        (b'{"node": "", "draining": true}', 400, "malformed"),
        (b'{"node": "node2", "draining": "yes"}', 400, "malformed"),
        (b'{"node": "node2", "extra": 1}', 400, "malformed"),
        (b'{"node": "node9"}', 404, "not_found"),
    ],
)
def test_a_bad_drain_request_is_refused_and_drains_nobody_it_names_wrongly(
    body: bytes, status: int, error: str
) -> None:
    async def scenario() -> None:
        backend = ClusterBackend()
        async with front_door(backend) as (client, _), client.post("/v1/cluster/drain", data=body,
                               headers={**ADMIN_AUTH, "Content-Type": "application/json"}) as r:
            doc = await r.json()
            assert (r.status, doc["error"]) == (status, error), doc
            assert doc["detail"]
        assert all(node in {"node1", "node2"} for node, _ in backend.drained)  # never an unnamed one
        if status == 400:
            assert backend.drained == []

    run(scenario)


def test_a_drain_names_a_member_and_can_be_undone() -> None:
    async def scenario() -> None:
        backend = ClusterBackend()
        async with front_door(backend) as (client, _):
            for draining in (True, False):
                body = json.dumps({"node": "node2", "draining": draining}).encode()
                async with client.post("/v1/cluster/drain", data=body,
                                       headers={**ADMIN_AUTH, "Content-Type": "application/json"}) as r:
                    assert r.status == 200
        assert backend.drained == [("node2", True), ("node2", False)]

    run(scenario)


def test_every_error_body_has_the_same_shape_with_where() -> None:
    """401 (token), 404 (route, account, payment), 400 (unknown fault), 405: error, detail and where."""
    fault = {"kind": "meteor", "target": "hes-1", "on": True}

    async def scenario() -> None:
        async with front_door(FakeBackend(accounts={"N3462019771"})) as (client, _):
            cases = [
                (client.get("/v1/meters/N3462019771"), 401, "header.Authorization"),
                (client.get("/v1/meters/N3462019771", headers={"Authorization": "Bearer " + "x" * 20}), 401,
                 "header.Authorization"),
                (client.get("/v2/nothing"), 404, "path"),
                (client.get("/v1/meters/N0000", headers=ADMIN_AUTH), 404, "path.account"),
                (client.get("/v1/payments/nope", headers=ADMIN_AUTH), 404, "path.payment_id"),
                (client.post("/v1/admin/fault", json=fault, headers=ADMIN_AUTH), 400, "body.kind"),
                (client.get("/v1/webhooks/bbps"), 405, "method"),
            ]
            for request, status, where in cases:
                async with request as r:
                    doc = await r.json()
                    shape = (r.status, set(doc), doc.get("where"))
                    assert shape == (status, {"error", "detail", "where"}, where), doc

    run(scenario)


def test_a_store_that_is_busy_answers_503_with_retry_after_not_a_500() -> None:
    from jodo.frontdoor.app import _errors_as_json
    from storage.errors import SchemaTooNew, StorageUnavailable

    async def busy(request: web.Request) -> web.Response:
        raise StorageUnavailable("/data/guard.sqlite3: database is locked")

    async def too_new(request: web.Request) -> web.Response:
        raise SchemaTooNew("/data/guard.sqlite3", 9, 2)

    async def scenario() -> None:
        app = web.Application(middlewares=[_errors_as_json])
        app.router.add_get("/busy", busy)
        app.router.add_get("/too-new", too_new)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            async with client.get("/busy") as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
                doc = await r.json()
                assert doc["error"] == "storage_unavailable" and "guard.sqlite3" in doc["detail"]
            async with client.get("/too-new") as r:  # the operator must act: say which file and why
                assert r.status == 500
                doc = await r.json()
                assert doc["error"] == "storage" and "guard.sqlite3" in doc["detail"]

    run(scenario)
