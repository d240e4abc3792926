"""``POST /v1/admin/reconcile`` on the real front door (aiohttp on 127.0.0.1) with the in-memory
FakeBackend as the desk, a fake Razorpay API (real HTTP, the real SDK), and the config's
``[gateways.<name>.reconcile]``: refusals name where, a saturated desk is reported, never hidden."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jodo.cli import to_toml
from jodo.config import Config, ConfigError, load_config
from jodo.frontdoor import FakeBackend, build_app
from jodo.reconcile.http import RECONCILER
from tests.razorpay_fake import KEY_ID, KEY_SECRET, FakeRazorpay, entity

ADMIN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
NOW = int(time.time())
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def api() -> Iterator[FakeRazorpay]:
    with FakeRazorpay() as fake:
        yield fake


def config(api: FakeRazorpay, tmp_path: Path, **reconcile: str) -> Config:
    env = {
        "JODO_NODE__DATA_DIR": str(tmp_path),
        "JODO_TOKENS__ADMIN": ADMIN,
        "JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay",
        "JODO_GATEWAYS__RAZORPAY__SECRET": "rzp-webhook-1",
        "JODO_GATEWAYS__BBPS__FORMAT": "jodo",
        "JODO_GATEWAYS__BBPS__SECRET": "jodo-secret-1",
        "JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_ID": KEY_ID,
        "JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_SECRET": KEY_SECRET,
        "JODO_GATEWAYS__RAZORPAY__RECONCILE__BASE_URL": api.url,
        "JODO_GATEWAYS__RAZORPAY__RECONCILE__ENABLED": "false",
    }  # runs on demand only, here
    env |= {f"JODO_GATEWAYS__RAZORPAY__RECONCILE__{k.upper()}": v for k, v in reconcile.items()}
    return load_config(env=env)


@asynccontextmanager
async def front_door(cfg: Config, backend: FakeBackend) -> AsyncIterator[Client]:
    app = build_app(cfg, backend)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def post(client: Client, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = await client.post(
        "/v1/admin/reconcile", json=body, headers=AUTH if headers is None else headers
    )
    return response.status, await response.json()


def test_a_run_over_http_credits_through_the_front_doors_batcher(api: FakeRazorpay, tmp_path: Path) -> None:
    api.payments.append(entity("pay_lost", account="N0000000001", amount=150_000, created_at=NOW - 100))
    backend = FakeBackend()

    async def scenario() -> None:
        async with front_door(config(api, tmp_path), backend) as client:
            status, doc = await post(client, {"gateway": "razorpay", "from": NOW - 3600, "to": NOW})
            assert status == 200, doc
            (report,) = doc["reports"]
            assert [p["payment_id"] for p in report["credited"]] == ["pay_lost"] and doc["clean"]
            # ISO times (IST when no offset) and every gateway with credentials when none is named
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - 3600)) + "Z"
            status, again = await post(client, {"from": iso, "to": NOW})
            assert status == 200 and [r["gateway"] for r in again["reports"]] == ["razorpay"]
            assert again["reports"][0]["matched"] == 0  # FakeBackend keeps no SQLite ledger...
            assert again["reports"][0]["already_in_ledger"] == 1  # ...so the desk's dedup answers

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert list(backend.ledger) == ["pay_lost"]
    assert backend.ledger["pay_lost"].gateway == "razorpay"


@pytest.mark.parametrize(
    ("body", "status", "where"),
    [
        ({"from": "yesterday", "to": NOW}, 400, "from"),
        ({"from": NOW}, 400, "to"),
        ({"from": NOW, "to": NOW - 10}, 400, "to"),
        ({"from": NOW - 10, "to": NOW, "dry_run": "yes"}, 400, "dry_run"),
        ({"from": NOW - 10, "to": NOW, "gateway": "paytm"}, 404, "gateway"),
        ({"from": NOW - 10, "to": NOW, "gateway": "bbps"}, 409, "gateway"),
        ({"from": NOW - 10, "to": NOW, "window": 5}, 400, "body"),
    ],
)
def test_a_bad_request_is_refused_naming_where(
    api: FakeRazorpay, tmp_path: Path, body: dict[str, Any], status: int, where: str
) -> None:
    async def scenario() -> None:
        async with front_door(config(api, tmp_path), FakeBackend()) as client:
            got, doc = await post(client, body)
            assert (got, doc["where"]) == (status, where), doc
            assert set(doc) == {"error", "detail", "where"}

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert api.requests == []  # nothing was asked of the gateway


def test_the_admin_token_is_required(api: FakeRazorpay, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with front_door(config(api, tmp_path), FakeBackend()) as client:
            got, doc = await post(client, {"from": NOW - 10, "to": NOW}, headers={})
            assert (got, doc["where"]) == (401, "header.Authorization")

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_saturated_desk_leaves_the_payment_uncredited_and_the_report_not_clean(
    api: FakeRazorpay, tmp_path: Path
) -> None:
    api.payments.append(entity("pay_lost", account="N0000000001", amount=150_000, created_at=NOW - 100))
    backend = FakeBackend()
    backend.saturated = True

    async def scenario() -> None:
        async with front_door(config(api, tmp_path), backend) as client:
            status, doc = await post(client, {"from": NOW - 3600, "to": NOW})
            assert status == 200 and not doc["clean"]
            (report,) = doc["reports"]
            assert report["credited_count"] == 0
            assert [f["payment_id"] for f in report["not_credited"]] == ["pay_lost"]
            assert "next run retries" in report["not_credited"][0]["detail"]

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert backend.ledger == {}


def test_the_periodic_pull_runs_with_the_app_and_stops_with_it(api: FakeRazorpay, tmp_path: Path) -> None:
    api.payments.append(entity("pay_lost", account="N0000000001", amount=150_000, created_at=NOW - 100))
    backend = FakeBackend()
    cfg = config(api, tmp_path, enabled="true", every_s="1", window_s="3600", settle_s="0")

    seen: list[Any] = []

    async def scenario() -> None:
        async with front_door(cfg, backend) as client:
            deadline = time.monotonic() + 20
            while "pay_lost" not in backend.ledger:
                assert time.monotonic() < deadline, "the periodic run did not credit the payment"
                await asyncio.sleep(0.02)
            reconciler = client.app[RECONCILER]
            seen.append(reconciler)
            assert reconciler.active() == ["razorpay"] and not reconciler.stopped
            assert reconciler.last["razorpay"].trigger == "periodic"

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert seen[0].stopped  # the app's cleanup stopped it (and its worker thread)


def test_reconcile_config_is_checked_where_it_is_written(tmp_path: Path) -> None:
    base = {
        "JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay",
        "JODO_GATEWAYS__RAZORPAY__SECRET": "rzp-webhook-1",
        "JODO_GATEWAYS__BBPS__FORMAT": "jodo",
        "JODO_GATEWAYS__BBPS__SECRET": "jodo-secret-1",
    }
    cases = [
        ({"JODO_GATEWAYS__RAZORPAY__RECONCILE__ENABLED": "true"}, "needs key_id"),
        ({"JODO_GATEWAYS__BBPS__RECONCILE__ENABLED": "true"}, "only razorpay-format"),
        ({"JODO_GATEWAYS__RAZORPAY__RECONCILE__EVERY_S": "0"}, "gateways.razorpay.reconcile.every_s"),
        (
            {
                "JODO_GATEWAYS__RAZORPAY__RECONCILE__SETTLE_S": "600",
                "JODO_GATEWAYS__RAZORPAY__RECONCILE__WINDOW_S": "300",
            },
            "settle_s must be less than window_s",
        ),
        ({"JODO_GATEWAYS__RAZORPAY__RECONCILE__KEYID": "x"}, "unknown key gateways.razorpay.reconcile.keyid"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            load_config(env=base | extra)
    secret_file = tmp_path / "rzp.key"
    secret_file.write_text("from-a-file\n")
    (tmp_path / "jodo.toml").write_text(f"""
[gateways.razorpay]
format = "razorpay"
secret = "rzp-webhook-1"

[gateways.razorpay.reconcile]
key_id = "{KEY_ID}"
key_secret_file = "rzp.key"
every_s = 120
""")
    cfg = load_config(tmp_path / "jodo.toml", env={})
    rc = cfg.gateways["razorpay"].reconcile
    assert rc.active and rc.every_s == 120.0 and rc.resolved_secret().reveal() == "from-a-file"
    assert "from-a-file" not in repr(cfg) and "from-a-file" not in str(cfg.redacted())
    env_secret = load_config(
        env=base
        | {
            "JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_ID": KEY_ID,
            "JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_SECRET": "from-env",
        }
    )
    assert env_secret.gateways["razorpay"].reconcile.active
    assert env_secret.redacted()["gateways"]["razorpay"]["reconcile"]["key_secret"] == "***"
    assert not load_config(env=base).gateways["razorpay"].reconcile.active  # no credentials: off


def test_config_show_prints_the_reconcile_table_with_the_key_secret_redacted() -> None:
    cfg = load_config(env={"JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay",
                           "JODO_GATEWAYS__RAZORPAY__SECRET": "rzp-webhook-1",
                           "JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_ID": KEY_ID,
                           "JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_SECRET": "api-key-secret-not-shown"})
    out = to_toml(cfg.redacted())
    assert "api-key-secret-not-shown" not in out
    shown = tomllib.loads(out)["gateways"]["razorpay"]["reconcile"]
    assert (shown["key_id"], shown["key_secret"], shown["every_s"]) == (KEY_ID, "***", 300.0)
