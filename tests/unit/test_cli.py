"""The `jodo` command line without a node: config show, exit codes, CSV validation before any request,
and the admin commands against the front door over the in-memory FakeBackend (loopback only)."""

from __future__ import annotations

import asyncio
import json
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.commands import PostBill, RegisterMeter
from domain.enums import RelayAction, RelayState
from domain.events import (
    ConsumptionDebited,
    EmergencyCreditRecovered,
    PaymentApplied,
    RelayCommandIssued,
    RelayStateConfirmed,
)
from jodo.cli import ExitCode, main, to_toml
from jodo.config import load_config
from jodo.frontdoor import FakeBackend, build_app, start_site
from jodo.frontdoor.views import trace_view
from tests.system.conftest import free_port

ADMIN = "admin-token-for-cli-tests-0123"
SECRETS = ("rzp-secret-must-not-show-0001", ADMIN, "payments-token-must-not-show")


def write_config(tmp_path: Path, port: int = 8080) -> Path:
    path = tmp_path / "jodo.toml"
    path.write_text(f"""
[http]
port = {port}
[gateways.razorpay]
format = "razorpay"
secret = "{SECRETS[0]}"
[tokens]
admin = "{SECRETS[1]}"
payments = "{SECRETS[2]}"
""")
    return path


@pytest.fixture(autouse=True)
def _no_jodo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("JODO_"):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------- config show


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_config_show_prints_the_merged_config_with_every_secret_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setenv("JODO_GATEWAYS__BBPS__FORMAT", "jodo")
    monkeypatch.setenv("JODO_GATEWAYS__BBPS__SECRET", "bbps-secret-from-the-environment")
    args = ["--config", str(write_config(tmp_path)), "config", "show", *(["--json"] if fmt == "json" else [])]
    assert main(args) == ExitCode.OK
    out = capsys.readouterr().out
    for secret in (*SECRETS, "bbps-secret-from-the-environment"):
        assert secret not in out
    doc = json.loads(out) if fmt == "json" else tomllib.loads(out)
    assert doc["gateways"]["razorpay"]["secret"] == "***"
    assert doc["gateways"]["bbps"]["secret"] == "***"
    assert doc["tokens"] == {"admin": "***", "payments": "***"}
    assert doc["http"]["port"] == 8080 and doc["head_ends"][0]["kind"] == "sim"


def test_the_config_shown_as_toml_is_the_config() -> None:
    shown = tomllib.loads(to_toml(load_config(env={}).redacted()))
    assert shown["node"]["admin_port"] == 1900
    assert shown["head_ends"] == [{"name": "hes-sim", "kind": "sim", "host": "127.0.0.1", "port": 8471,
                                   "rate_limit_per_s": 200.0, "dlms_client_wport": 16, "dlms_wport_base": 256,
                                   "dlms_pool_size": 64, "dlms_response_timeout_s": 3.0,
                                   "cim_url": "", "cim_callback_host": "127.0.0.1",
                                   "cim_callback_port": 8470, "cim_callback_url": "", "cim_max_batch": 500,
                                   "cim_callback_timeout_s": 120.0}]


# ---------------------------------------------------------------- exit codes


def test_usage_and_configuration_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["meter"]) == ExitCode.USAGE
    assert main(["no-such-command"]) == ExitCode.USAGE
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nport = 'eighty'\n")
    assert main(["--config", str(bad), "status"]) == ExitCode.USAGE
    assert "http.port" in capsys.readouterr().err
    assert main(["--help"]) == ExitCode.OK


def test_no_node_at_the_url_exits_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["meter", "show", "N1", "--url", url]) == ExitCode.UNAVAILABLE
    assert "is `jodo serve` running?" in capsys.readouterr().err


def test_a_csv_with_a_bad_row_is_refused_with_line_numbers_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "bills.csv"
    csv.write_text("account,bill_id,amount_paise,due_date,issued_at\n"
                   "N1,B1,150000,2026-07-29,2026-07-13T10:00:00\n"
                   "N2,B2,1500.50,2026-07-29,2026-07-13T10:00:00\n"
                   "N3,B1,150000,2026-07-29,2026-07-13T10:00:00\n")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would exit 5, not 3
    assert main(["--config", str(write_config(tmp_path)), "import", "bills", str(csv), "--url", url]) == 3
    out = capsys.readouterr().out
    assert "rejected whole, nothing applied: 2 bad row(s)" in out
    assert "line 3, amount_paise" in out and "line 4, bill_id: duplicate 'B1': first seen on line 2" in out


# ---------------------------------------------------------------- against a front door (FakeBackend)


@pytest.fixture
def front_door(tmp_path: Path) -> Iterator[tuple[str, FakeBackend, Path]]:
    config_path = write_config(tmp_path)
    backend = FakeBackend()
    loop = asyncio.new_event_loop()
    ready: list[tuple[str, object]] = []
    started = threading.Event()

    async def serve() -> None:
        runner, port = await start_site(build_app(load_config(config_path, env={}), backend), "127.0.0.1", 0)
        ready.append((f"http://127.0.0.1:{port}", runner))
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    started.wait(10)
    url, runner = ready[0]
    try:
        yield url, backend, config_path
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_import_sends_meters_and_bills_as_meter_commands(
    front_door: tuple[str, FakeBackend, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, backend, config = front_door
    meters = tmp_path / "meters.csv"
    meters.write_text("account,serial,head_end,install_year,relay_capable,control_mode,protected\n"
                      + "".join(f"N{i},MPW{i:08d},hes-sim,2022,yes,2,no\n" for i in range(7)))
    bills = tmp_path / "bills.csv"
    bills.write_text("account,bill_id,amount_paise,due_date,issued_at\nN3,B3,99900,2026-07-29,1784000000\n")
    assert main(["--config", str(config), "import", "meters", str(meters), "--url", url, "--batch", "3"]) == 0
    assert main(["--config", str(config), "import", "bills", str(bills), "--url", url, "--json"]) == 0
    assert [type(c) for c in backend.commands] == [RegisterMeter] * 7 + [PostBill]
    assert backend.commands[6] == RegisterMeter(account="N6", serial="MPW00000006", head_end="hes-sim",
                                                install_year=2022, relay_capable=True, control_mode=2)
    assert backend.commands[7].due_date == "2026-07-29"
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["applied"] == 1


def test_inject_payment_and_fault_go_to_the_admin_routes(
    front_door: tuple[str, FakeBackend, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, backend, config = front_door
    base = ["--config", str(config)]
    assert main([*base, "inject", "payment", "--account", "N1", "--amount-paise", "5000", "--payment-id",
                 "cash-1", "--url", url]) == 0
    assert backend.ledger["cash-1"].amount_paise == 5000 and backend.ledger["cash-1"].cashless
    assert main([*base, "inject", "outage", "hes-1", "on", "--url", url]) == 0
    assert main([*base, "inject", "crash", "shard-1", "--url", url]) == 0
    assert backend.faults == {("outage", "hes-1"): True, ("crash", "shard-1"): True}
    assert main([*base, "inject", "message", "Nope", "a=1", "--url", url]) == ExitCode.REJECTED
    assert "unknown message type" in capsys.readouterr().err


# ---------------------------------------------------------------- the trace view


def test_a_trace_lists_each_hop_once_in_order_whatever_the_history_order() -> None:
    record = {"payment_id": "p1", "account": "N1", "received_at": 100, "committed_at": 100,
              "status": "applied", "applied_at": 101}
    history = [  # newest first, as the journal gives it; same second for several
        RelayStateConfirmed(account="N1", at=102, command_id="N1:c1", relay=RelayState.CONNECTED,
                            control_state=1, output_state=True),  # type: ignore[arg-type]
        RelayCommandIssued(account="N1", at=101, command_id="N1:c1", action=RelayAction.CONNECT, attempt=1,
                           expires_at=1000, reason="paid", correlation_id="p1", origin="automatic"),  # type: ignore[arg-type]
        PaymentApplied(account="N1", at=101, payment_id="p1", amount_paise=5, channel="upi", cashless=True,
                       paid_at=99, dues_after_paise=0),
        PaymentApplied(account="N1", at=50, payment_id="p0", amount_paise=5, channel="upi", cashless=True,
                       paid_at=49, dues_after_paise=5),
    ]
    trace = trace_view(record, history)
    assert [h["hop"] for h in trace["hops"]] == ["received", "committed", "credited", "applied", "command",
                                                 "result"]
    assert trace["stage"] == "result" and trace["hops"][-1]["relay"] == "connected"
    assert "balance_after_paise" not in trace["hops"][2]  # a postpaid meter: dues, no balance


def test_a_prepaid_recharge_trace_shows_the_emergency_credit_it_paid_back_and_the_balance() -> None:
    record = {"payment_id": "r1", "account": "N1", "received_at": 100, "committed_at": 100,
              "status": "applied", "applied_at": 101}
    history = [
        RelayCommandIssued(account="N1", at=101, command_id="N1:c2", action=RelayAction.CONNECT, attempt=1,
                           expires_at=1000, reason="paid", correlation_id="r1", origin="automatic"),  # type: ignore[arg-type]
        PaymentApplied(account="N1", at=101, payment_id="r1", amount_paise=50_000, channel="upi",
                       cashless=True, paid_at=99, dues_after_paise=-25_000),
        EmergencyCreditRecovered(account="N1", at=101, payment_id="r1", amount_paise=20_000,
                                 outstanding_after_paise=0),
        EmergencyCreditRecovered(account="N1", at=60, payment_id="r0", amount_paise=1,
                                 outstanding_after_paise=0),  # another payment's
        ConsumptionDebited(account="N1", at=90, read_id="MPW1:2026-11-02", read_date="2026-11-02",
                           energy_wh=9_000, energy_paise=4_000, fixed_paise=300, duty_paise=360,
                           debit_paise=4_660, balance_after_paise=-5_000),
    ]
    trace = trace_view(record, history)
    assert [h["hop"] for h in trace["hops"]] == ["received", "committed", "recovered", "credited", "applied",
                                                 "command"]
    recovered, credited = trace["hops"][2], trace["hops"][3]
    assert recovered["amount_paise"] == 20_000 and recovered["outstanding_after_paise"] == 0
    assert credited["balance_after_paise"] == 25_000 and credited["dues_after_paise"] == -25_000
