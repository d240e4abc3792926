"""`jodo serve` as a real process (front door + actor processes + built-in simulated head-end), driven
over HTTP on 127.0.0.1 and through the `jodo` CLI; the simulator is inspected over its own socket.

One node serves the whole module (each test uses its own meters); at the end it gets SIGTERM and must
exit 0 with every process of its actor system gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from headend.sim.control import inspect_meters
from protocols.headend import HesControlState
from supervisors.processes import ProcessRef, is_alive, kill_process, process_group_members, process_ref
from tests.system.conftest import free_port

pytestmark = pytest.mark.system

T = TypeVar("T")
METERS = 100
DUES = 150_000
ADMIN = "admin-token-for-tests-0123456789"
PAYMENTS = "payments-token-for-tests-012345"
RZP_SECRET = "rzp-webhook-secret-for-tests"
JODO_SECRET = "jodo-signing-secret-for-tests"
ROOT = Path(__file__).resolve().parents[2]


def account(i: int) -> str:
    return f"N{i:010d}"


def serial(i: int) -> str:
    return f"MPW{i:08d}"


def eventually(check: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


@dataclass
class Served:
    url: str
    sim_port: int
    config: Path
    env: dict[str, str]
    workdir: Path

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             token: str | None = ADMIN) -> tuple[int, Any]:
        all_headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        req = urllib.request.Request(self.url + path, data=body, headers=all_headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, path: str) -> Any:
        status, doc = self.call("GET", path)
        assert status == 200, (path, status, doc)
        return doc

    def webhook(self, gateway: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        return self.call("POST", f"/v1/webhooks/{gateway}", body, headers, token=None)

    def relay(self, i: int) -> HesControlState | None:
        return inspect_meters("127.0.0.1", self.sim_port, [serial(i)])[0].control_state

    def jodo(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "jodo.cli", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=120, env=self.env, cwd=self.workdir)


def _config_file(path: Path, sim_port: int) -> Path:
    path.write_text(f"""
[node]
data_dir = "data"
admin_port = {free_port()}

[http]
port = 0
batch_window_ms = 20.0

[[head_ends]]
name = "hes-sim"
kind = "sim"
port = {sim_port}

[gateways.razorpay]
format = "razorpay"
secret = "{RZP_SECRET}"

[gateways.bbps]
format = "jodo"
secret = "{JODO_SECRET}"

[tokens]
admin = "{ADMIN}"
payments = "{PAYMENTS}"
""")
    return path


def _node_processes(served: Served) -> list[ProcessRef]:
    status = served.get("/v1/status")
    pgid = status["tree"]["pgid"]
    refs = {ref.pid: ref for ref in process_group_members(pgid)}
    for pid in _pids(status["tree"]):
        ref = process_ref(pid)
        if ref is not None:
            refs.setdefault(pid, ref)
    return list(refs.values())


def _pids(tree: dict[str, Any]) -> list[int]:
    pids = [tree["pid"]]
    for child in tree["children"]:
        pids += _pids(child["supervisor"]) if "supervisor" in child else [child["pid"]]
    return [p for p in pids if p]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("served")
    sim_port = free_port()
    config = _config_file(work / "jodo.toml", sim_port)
    port_file = work / "http.port"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
    env["PYTHONPATH"] = str(ROOT)
    out = (work / "serve.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jodo.cli", "--config", str(config), "serve", "--port-file", str(port_file),
         "--sim-meters", str(METERS), "--sim-disconnected-fraction", "1.0"],
        stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True,
    )
    node: list[ProcessRef] = []
    try:
        eventually(lambda: port_file.exists() or proc.poll() is not None, timeout=60, what="the port file")
        assert proc.poll() is None, (work / "serve.out").read_text()
        s = Served(f"http://127.0.0.1:{int(port_file.read_text())}", sim_port, config, env, work)
        env["JODO_URL"] = s.url  # the CLI's default front door (the config says port 0)
        eventually(lambda: s.call("GET", "/readyz", token=None)[0] == 200, timeout=60, what="readyz 200")
        node = _node_processes(s)
        commands = [{"type": "RegisterMeter", "fields": {
            "account": account(i), "serial": serial(i), "head_end": "hes-sim", "install_year": 2022,
            "relay_capable": True, "control_mode": 2, "relay": "disconnected", "opening_dues_paise": DUES}}
            for i in range(METERS)]
        status, answer = s.call("POST", "/v1/admin/meter-commands", json.dumps(commands).encode(),
                                {"Content-Type": "application/json"})
        assert (status, answer["accepted"], answer["rejected"]) == (200, METERS, [])
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        out.close()
        survivors = [ref for ref in node if is_alive(ref)]
        for ref in survivors:
            kill_process(ref)
        log = (work / "serve.out").read_text()
        assert code == 0, log
        assert not survivors, f"node processes outlived jodo serve: {[r.pid for r in survivors]}\n{log}"
        assert "tree stopped in order: yes" in log, log


# ---------------------------------------------------------------- signed as documented


def jodo_webhook(payment_id: str, i: int, amount: int, t: int | None = None,
                 **extra: Any) -> tuple[bytes, dict[str, str]]:
    """``Jodo-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`` (README), by hand."""
    t = int(time.time()) if t is None else t
    doc = {"payment_id": payment_id, "account": account(i), "amount_paise": amount, "channel": "upi",
           "paid_at": int(time.time()) - 30, **extra}
    body = json.dumps(doc).encode()
    mac = hmac.new(JODO_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "Jodo-Signature": f"t={t},v1={mac}"}


def razorpay_webhook(payment_id: str, i: int, amount: int, **entity: Any) -> tuple[bytes, dict[str, str]]:
    """``X-Razorpay-Signature`` = hex HMAC-SHA256 of the raw body with the webhook secret (README)."""
    payment = {"id": payment_id, "amount": amount, "currency": "INR", "status": "captured", "method": "upi",
               "notes": {"account": account(i)}, "created_at": int(time.time()) - 30, **entity}
    body = json.dumps({"entity": "event", "event": "payment.captured",
                       "payload": {"payment": {"entity": payment}}}).encode()
    mac = hmac.new(RZP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Razorpay-Signature": mac,
                  "X-Razorpay-Event-Id": f"evt_{payment_id}"}


def _applied_trace(served: Served, payment_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        trace = served.get(f"/v1/payments/{payment_id}")
        results = [h for h in trace["hops"] if h["hop"] == "result"]
        return trace if results and trace["status"] == "applied" else None

    return eventually(check, what=f"the trace of {payment_id} to reach the relay's result")


@pytest.mark.parametrize("fmt", ["jodo", "razorpay"])
def test_a_documented_webhook_closes_the_relay_and_the_trace_shows_every_hop(
    served: Served, fmt: str
) -> None:
    i = 1 if fmt == "jodo" else 2
    payment_id = f"e2e-{fmt}-1"
    assert served.relay(i) == HesControlState.DISCONNECTED
    body, headers = (jodo_webhook if fmt == "jodo" else razorpay_webhook)(payment_id, i, DUES)
    status, answer = served.webhook("bbps" if fmt == "jodo" else "razorpay", body, headers)
    assert (status, answer) == (200, {"result": "accepted", "payment_id": payment_id})

    eventually(lambda: served.relay(i) == HesControlState.CONNECTED, what="the relay closed at the simulator")
    trace = _applied_trace(served, payment_id)
    hops = {h["hop"]: h for h in trace["hops"]}
    # the shard credits and issues the command in one commit; the desk marks the payment applied when
    # that commit's acknowledgement comes back: "applied" and "command" are in the same second or
    # applied is the later one (a second boundary between them: this test failed on CI so)
    assert sorted(hops) == sorted(["received", "committed", "credited", "applied", "command", "result"])
    assert all(isinstance(h["at"], int) and h["at"] > 0 for h in trace["hops"])
    times = [h["at"] for h in trace["hops"]]
    assert times == sorted(times)  # the trace lists its hops in time order
    at = {name: h["at"] for name, h in hops.items()}
    assert at["received"] <= at["committed"] <= at["credited"] <= at["command"] <= at["result"]
    assert at["credited"] <= at["command"] <= at["applied"]
    assert hops["credited"]["dues_after_paise"] == 0
    assert hops["command"]["action"] == "connect"
    assert hops["result"] == {**hops["result"], "outcome": "confirmed", "relay": "connected",
                              "command_id": hops["command"]["command_id"]}
    meter = served.get(f"/v1/meters/{account(i)}")
    assert (meter["relay"], meter["dues_paise"]) == ("connected", 0)


# ---------------------------------------------------------------- bad input changes nothing


def _snapshot(served: Served, i: int) -> tuple[Any, ...]:
    status = served.get("/v1/status")
    history = served.get(f"/v1/meters/{account(i)}/history?limit=1000")
    meter = served.get(f"/v1/meters/{account(i)}")
    relays = inspect_meters("127.0.0.1", served.sim_port, [serial(k) for k in range(METERS)])
    states = [(r.meter, r.control_state, r.output_state) for r in relays]
    return status["desk"]["payments"], history, meter, states


def test_every_bad_input_class_gets_its_status_and_changes_nothing(served: Served) -> None:
    i = 5
    before = _snapshot(served, i)
    now = int(time.time())
    good, headers = jodo_webhook("bad-1", i, DUES)

    def signed(body: bytes, t: int = now) -> dict[str, str]:
        mac = hmac.new(JODO_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Content-Type": "application/json", "Jodo-Signature": f"t={t},v1={mac}"}

    amount = b'"amount_paise": 150000'
    float_amount = jodo_webhook("bad-2", i, DUES)[0].replace(amount, b'"amount_paise": 1500.5')
    string_amount = jodo_webhook("bad-3", i, DUES)[0].replace(amount, b'"amount_paise": "150000"')
    missing = json.dumps({"payment_id": "bad-4", "account": account(i), "channel": "upi",
                          "paid_at": now}).encode()
    no_account, rzp_headers = razorpay_webhook("pay_bad5", i, DUES, notes={})
    rzp_body, _ = razorpay_webhook("pay_bad6", i, DUES)
    cases = [
        ("bbps", b"{not json", signed(b"{not json"), 400, "malformed"),
        ("bbps", missing, signed(missing), 400, "malformed"),
        ("bbps", good, {**headers, "Jodo-Signature": headers["Jodo-Signature"][:-4] + "0000"}, 401,
         "bad_signature"),
        ("bbps", good, signed(good, now - 3600), 401, "bad_signature"),  # replayed an hour later
        ("razorpay", rzp_body, {**rzp_headers, "X-Razorpay-Signature": "0" * 64}, 401, "bad_signature"),
        ("nope", good, headers, 404, "unknown_gateway"),
        ("bbps", good + b" " * 70_000, signed(good + b" " * 70_000), 413, "too_large"),
        ("bbps", good, {**headers, "Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ("bbps", float_amount, signed(float_amount), 422, "invalid_payment"),
        ("bbps", string_amount, signed(string_amount), 422, "invalid_payment"),
        ("razorpay", no_account, rzp_headers, 422, "invalid_payment"),
    ]
    for gateway, body, hdrs, want, code in cases:
        status, answer = served.webhook(gateway, body, hdrs)
        assert (status, answer.get("error")) == (want, code), (gateway, want, answer)
        assert answer.get("detail")
    assert _snapshot(served, i) == before


# ---------------------------------------------------------------- 50 at once


def test_the_same_webhook_fifty_times_at_once_credits_once(served: Served) -> None:
    i = 7
    body, headers = jodo_webhook("dup-50", i, 40_000)
    duplicates_before = served.get("/v1/status")["desk"]["payments"]["duplicates"]

    async def fire() -> list[tuple[int, Any]]:
        connector = aiohttp.TCPConnector(limit=50)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one() -> tuple[int, Any]:
                async with session.post(f"{served.url}/v1/webhooks/bbps", data=body, headers=headers) as r:
                    return r.status, await r.json()

            return await asyncio.gather(*(one() for _ in range(50)))

    answers = asyncio.run(fire())
    assert {status for status, _ in answers} == {200}
    words = sorted(doc["result"] for _, doc in answers)
    assert words == ["accepted"] + ["duplicate"] * 49
    _ = eventually(lambda: served.get("/v1/payments/dup-50")["status"] == "applied", what="applied")
    meter = served.get(f"/v1/meters/{account(i)}")
    assert meter["dues_paise"] == DUES - 40_000
    assert meter["relay"] == "disconnected"  # part-payment: still owes, stays off
    events = served.get(f"/v1/meters/{account(i)}/history?limit=1000")["events"]
    assert [e["payment_id"] for e in events if e["event"] == "PaymentApplied"] == ["dup-50"]
    assert served.get("/v1/status")["desk"]["payments"]["duplicates"] == duplicates_before + 49


# ---------------------------------------------------------------- the CLI against the node


def test_an_import_with_a_bad_row_is_rejected_whole_with_its_line_number(served: Served) -> None:
    header = "account,serial,head_end,install_year,relay_capable,control_mode,protected\n"
    rows = ["M0000000001,MPWX0001,hes-sim,2022,true,2,false\n",
            "M0000000002,MPWX0002,hes-sim,2022,true,9,false\n",  # line 3: no such control mode
            "M0000000003,MPWX0003,hes-sim,2022,yes,2,no\n"]
    csv = served.workdir / "meters.csv"
    csv.write_text(header + "".join(rows))
    done = served.jodo("import", "meters", str(csv))
    assert done.returncode == 3, done
    assert "line 3, control_mode" in done.stdout and "nothing applied" in done.stdout
    assert served.call("GET", "/v1/meters/M0000000001")[0] == 404

    done = served.jodo("import", "meters", str(csv), "--skip-bad", "--json")
    assert done.returncode == 3, done  # applied the good rows, but some were bad
    report = json.loads(done.stdout)
    assert (report["applied"], report["rejected_rows"]) == (2, 1)
    rejects = Path(report["reject_file"]).read_text().splitlines()
    assert rejects[0].endswith(",error") and rejects[1].startswith("M0000000002,")
    assert served.get("/v1/meters/M0000000001")["serial"] == "MPWX0001"
    assert served.get("/v1/meters/M0000000003")["relay"] == "connected"


def test_a_reads_file_with_a_bad_row_is_rejected_whole_and_the_node_is_untouched(served: Served) -> None:
    i = 41
    rows = [f"R-{account(i)}-1,{account(i)},2024-05-01,8250\n",
            f"R-{account(i)}-2,{account(i)},2024-05-02,7.9\n",  # line 3: kWh, not Wh
            f"R-{account(i)}-3,{account(i)},2099-01-01,7000\n"]  # line 4: not yet
    csv = served.workdir / "reads.csv"
    csv.write_text("read_id,account,read_date,energy_wh\n" + "".join(rows))
    before = _snapshot(served, i)
    done = served.jodo("import", "reads", str(csv))
    assert done.returncode == 3, done
    assert "line 3, energy_wh" in done.stdout and "line 4, read_date" in done.stdout, done.stdout
    assert "nothing applied" in done.stdout
    assert _snapshot(served, i) == before


def test_a_good_reads_file_reaches_the_meter_s_shard_as_report_consumption(served: Served) -> None:
    i = 43
    rows = "".join(f"{serial(i)}:2024-05-0{d},{account(i)},2024-05-0{d},{7000 + d}\n" for d in range(1, 4))
    csv = served.workdir / "good-reads.csv"
    csv.write_text("read_id,account,read_date,energy_wh\n" + rows)
    done = served.jodo("import", "reads", str(csv), "--json")
    report = json.loads(done.stdout)
    assert report["rows"] == 3 and report["rejected_rows"] == 0, report
    # every row got the shard's answer: debited, or (until h/prepaid's core lands) refused by the core by name
    assert report["applied"] + len(report["refused_by_node"]) == 3, report
    for refused in report["refused_by_node"]:
        assert refused["record"].startswith(f"read {serial(i)}:") and "prepaid" in refused["reason"], refused
    assert done.returncode == (3 if report["refused_by_node"] else 0), done


def test_the_cli_shows_meters_traces_and_the_node(served: Served) -> None:
    shown = served.jodo("meter", "show", account(9))
    assert shown.returncode == 0, shown
    assert "disconnected" in shown.stdout and "Rs 1,500.00" in shown.stdout
    assert served.jodo("meter", "show", "N9999999999").returncode == 4
    injected = served.jodo("inject", "payment", "--account", account(9), "--amount-paise", str(DUES),
                           "--payment-id", "counter-9", "--json")
    assert injected.returncode == 0, injected
    assert json.loads(injected.stdout)["result"] == "accepted"
    eventually(lambda: served.relay(9) == HesControlState.CONNECTED, what="the injected payment to reconnect")
    _applied_trace(served, "counter-9")
    trace = served.jodo("trace", "counter-9")
    assert trace.returncode == 0 and "command" in trace.stdout and "result" in trace.stdout, trace
    history = served.jodo("meter", "history", account(9), "--json")
    assert "PaymentApplied" in [e["event"] for e in json.loads(history.stdout)["events"]]
    status = served.jodo("status")
    assert status.returncode == 0 and "READY" in status.stdout and "shard-1" in status.stdout, status


def test_a_crashed_shard_is_restarted_and_payments_flow_again(served: Served) -> None:
    before = served.get("/v1/status")
    crashed = served.jodo("inject", "crash", "shard-1", "--json")
    assert crashed.returncode == 0, crashed
    old_pid = json.loads(crashed.stdout)["pid"]
    # /readyz says 503 from the crash until shard-1 runs again: its first 200 comes with a new pid
    eventually(lambda: served.call("GET", "/readyz", token=None)[0] == 200, timeout=60, what="readyz 200")
    code, status_then = served.call("GET", "/v1/status")
    pid_then = {g["group"]: g.get("pid") for g in status_then["shards"]}.get(1)
    assert code == 200 and pid_then not in (None, old_pid), f"/readyz said 200 while shard-1 was {pid_then}"

    def restarted() -> dict[str, Any] | None:
        code, status = served.call("GET", "/v1/status")
        if code != 200:
            return None
        pids = {g["group"]: g.get("pid") for g in status["shards"]}
        return status if status["ready"] and pids.get(1) not in (None, old_pid) else None

    after = eventually(restarted, timeout=60, what="shard-1 restarted and the node ready")
    assert after["restarts"] == before["restarts"] + 1
    i = next(k for k in range(20, METERS) if _group(served, k) == 1)
    body, headers = jodo_webhook("after-crash", i, DUES)
    def answered() -> Any:
        status, answer = served.webhook("bbps", body, headers)
        return answer if status == 200 else None

    answer = eventually(answered, what="the webhook answered 200 after the restart")
    assert answer["result"] in ("accepted", "duplicate")
    eventually(lambda: served.relay(i) == HesControlState.CONNECTED, what="a shard-1 meter to reconnect")


def _group(served: Served, i: int) -> int:
    from domain.sharding import group_of, logical_shard

    return group_of(logical_shard(account(i), 256), 2)
