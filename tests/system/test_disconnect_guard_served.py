"""The mass-disconnect guard on a real node: the front door over HTTP, the `jodo` CLI as a process,
actor processes, the built-in simulated head-end, the manual clock.

A bill run on the first lawful morning would cut 12 meters; the guard (waves of 3, at most 5 an
hour, two distinct approvers) lets one wave out and holds the other 9. Held, they do not expire,
retry or open work orders, and survive a crash of their gateway; the kill switch stops the approved
wave until resumed; reconnections pass during the pause; a payment takes its meter out of the wave;
after approval and resume the rest of the relays open at the head-end. A second test SIGKILLs every
process of the node with the wave held: a new node on the same data dir still holds the same wave,
and after approval its relays open.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from domain.commands import PostBill, RegisterMeter
from domain.events import RelayCommandFailed, RelayCommandIssued, WorkOrderOpened
from headend.sim.config import SimConfig
from jodo.client import NodeClient
from jodo.config import load_config
from jodo.frontdoor import build_app, start_site
from jodo.serve import Stack, StackOptions
from protocols.headend import HesControlState
from protocols.payments import PaymentReceived
from supervisors.processes import kill_process
from tests.system.conftest import free_port

pytestmark = [pytest.mark.system, pytest.mark.slow]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
IST = ZoneInfo("Asia/Kolkata")
HEAD_END = "hes-sim"
METERS = 12
ADMIN = "admin-token-for-guard-tests-0123"
PAYMENTS = "payments-token-for-guard-0123456"
ISSUED = int(datetime(2026, 7, 13, 10, tzinfo=IST).timestamp())
DUE = int(datetime(2026, 7, 30, 10, tzinfo=IST).timestamp())  # the day after the due date
LAWFUL = int(datetime(2026, 8, 17, 8, tzinfo=IST).timestamp())  # Mon; 15 Aug a holiday, 16 a Sunday


def account(i: int) -> str:
    return f"N{i:010d}"


def serial(i: int) -> str:
    return f"MPW{i:08d}"


async def eventually(check: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


class Node:
    def __init__(self, tmp: Path, start_at: int = ISSUED) -> None:
        self.env = {
            "JODO_NODE__DATA_DIR": str(tmp / "data"), "JODO_NODE__ADMIN_PORT": str(free_port()),
            "JODO_HTTP__PORT": "0", "JODO_HEAD_ENDS__0__NAME": HEAD_END, "JODO_HEAD_ENDS__0__KIND": "sim",
            "JODO_HEAD_ENDS__0__PORT": str(free_port()), "JODO_TOKENS__ADMIN": ADMIN,
            "JODO_TOKENS__PAYMENTS": PAYMENTS, "JODO_LOGGING__LEVEL": "WARNING",
            "JODO_DISCONNECTS__WAVE_SIZE": "3", "JODO_DISCONNECTS__WAVE_SPACING_S": "0",
            "JODO_DISCONNECTS__MAX_PER_HOUR": "5", "JODO_DISCONNECTS__APPROVALS_REQUIRED": "2",
        }
        self.config = load_config(env=self.env)
        self.stack = Stack(self.config, StackOptions(
            sim=SimConfig(meters=METERS, seed=3), manual_clock=True, start_at=start_at, synchronous="normal",
            rate_limit=None, ask_timeout=30.0))
        self.url = ""

    async def call(self, run: Callable[[NodeClient], T]) -> T:
        assert self.stack.backend is not None
        return await self.stack.backend.call(run, timeout=60.0)

    async def clock(self, t: int) -> None:
        await self.call(lambda c: c.set_clock(t))

    def relays(self) -> list[int]:
        """The meters whose relay is open at the simulated head-end."""
        sim = self.stack.simulators[HEAD_END]
        states = sim.relay_states([serial(i) for i in range(METERS)])
        return [i for i, s in enumerate(states) if s.control_state == HesControlState.DISCONNECTED]

    async def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        url = self.url + path
        async with aiohttp.ClientSession(headers=headers) as s, s.request(method, url, json=body) as r:
            return r.status, await r.json()

    async def held(self) -> list[dict[str, Any]]:
        status, doc = await self.http("GET", "/v1/disconnects?status=held")
        assert status == 200, doc
        return list(doc["waves"])

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`jodo disconnects ...` as a process (off the event loop, which serves the front door)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("JODO_")}
        env |= {"PYTHONPATH": str(ROOT), "JODO_TOKENS__ADMIN": ADMIN, "USER": "asha"}
        argv = [sys.executable, "-m", "jodo.cli", "disconnects", *args, "--url", self.url]
        return await asyncio.get_running_loop().run_in_executor(None, lambda: subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=env))

    async def pay(self, i: int, amount: int, now: int) -> None:
        p = PaymentReceived(payment_id=f"pay_{i}", account=account(i), amount_paise=amount, channel="upi",
                            gateway="api", paid_at=now, received_at=now)
        await self.call(lambda c: c.pay([p]))

    async def dues(self, i: int) -> int:
        m = await self.call(lambda c: c.meter(account(i)))
        assert m is not None
        return int(m.dues_paise)


async def _started(tmp: Path, start_at: int = ISSUED) -> tuple[Node, Any]:
    node = Node(tmp, start_at)
    await asyncio.get_running_loop().run_in_executor(None, node.stack.start)
    assert node.stack.backend is not None
    runner, port = await start_site(build_app(node.config, node.stack.backend), "127.0.0.1", 0)
    node.url = f"http://127.0.0.1:{port}"
    return node, runner


async def _stopped(node: Node, runner: Any) -> None:
    await runner.cleanup()
    await asyncio.get_running_loop().run_in_executor(None, node.stack.close)


async def _scenario(tmp: Path) -> None:
    node, runner = await _started(tmp)
    try:
        await _bill_run_held_then_approved(node)
    finally:
        await _stopped(node, runner)


async def _bill_run(node: Node) -> str:
    """Meters, bills, the clock to the first lawful morning: one wave leaves, 9 are held."""
    meters = [RegisterMeter(account=account(i), serial=serial(i), head_end=HEAD_END, install_year=2022,
                            relay_capable=True, control_mode=2) for i in range(METERS)]
    bills = [PostBill(account=account(i), bill_id=f"B-{i}", amount_paise=200_000, due_date="2026-07-29",
                      issued_at=ISSUED) for i in range(METERS)]
    assert await node.call(lambda c: c.send(meters)) == []
    assert await node.call(lambda c: c.send(bills)) == []
    await node.clock(DUE)  # overdue: the s.56 notice is served
    await node.clock(LAWFUL)  # 15 clear days later: every meter may be cut
    (wave,) = await eventually(node.held, what="a held wave")
    await eventually(lambda: len(node.relays()) == 3, what="the first wave's relays to open")
    await eventually(lambda: _kept(node, wave["wave_id"], 9), what="9 disconnections kept")
    assert "max_per_hour 5" in wave["reason"]
    return str(wave["wave_id"])


async def _bill_run_held_then_approved(node: Node) -> None:
    status, doc = await node.http("GET", "/v1/disconnects")
    assert status == 200 and doc["waves"] == [] and doc["switch"]["paused"] is False
    # one wave of 3 leaves; the next would make 6 > 5 in the hour: 9 held in one wave
    wave_id = await _bill_run(node)
    cut_first = node.relays()
    held = [i for i in range(METERS) if i not in cut_first]

    # held for hours (past every command's expiry): no retry, no failure, no work order
    await node.clock(LAWFUL + 3 * 3600)
    await node.clock(LAWFUL + 3 * 3600 + 60)
    for i in held:
        events = await node.call(lambda c, i=i: c.history(account(i), limit=100))  # type: ignore[misc]
        assert sum(isinstance(e, RelayCommandIssued) for e in events) == 1, i
        assert not any(isinstance(e, RelayCommandFailed | WorkOrderOpened) for e in events), i
    assert len(node.relays()) == 3

    # the gateway crashes: its wave is in the store, the shards re-send what they parked
    status, _ = await node.http("POST", "/v1/admin/fault", {"kind": "crash", "target": f"gateway-{HEAD_END}",
                                                             "on": True})
    assert status == 200
    await eventually(lambda: node.stack.backend is not None and node.stack.backend.ready(), timeout=60,
                     what="the node ready after the gateway's restart")
    assert await _kept(node, wave_id, 9)

    # the kill switch, from the CLI: durable, audited
    done = await node.cli("pause", "--by", "ravi", "--reason", "checking the bill run")
    assert done.returncode == 0, done.stderr
    assert "paused by ravi" in done.stdout

    # reconnections pass during the pause: a first-wave meter pays and its relay closes
    payer = cut_first[0]
    await node.pay(payer, await node.dues(payer), LAWFUL + 3 * 3600 + 120)
    await eventually(lambda: payer not in node.relays(), what="a reconnection during the pause")
    # a held meter pays: it leaves the wave
    leaver = held[0]
    await node.pay(leaver, await node.dues(leaver), LAWFUL + 3 * 3600 + 130)
    await eventually(lambda: _kept(node, wave_id, 8), what="the paid meter to leave the wave")

    # two distinct approvers: asha (CLI, $USER), asha again refused, ravi (admin API)
    done = await node.cli("approve", wave_id)
    assert done.returncode == 0 and "recorded" in done.stdout, done.stdout + done.stderr
    done = await node.cli("approve", wave_id, "--by", "asha")
    assert done.returncode == 3 and "approved it already" in done.stderr, done.stderr
    status, answer = await node.http("POST", f"/v1/disconnects/waves/{wave_id}/approve", {"approver": "ravi"})
    assert status == 200 and answer["outcome"] == "approved" and answer["approvers"] == ["asha", "ravi"]
    # still paused: the approved wave does not leave (observed over several gateway ticks)
    observed_until = time.monotonic() + 2.0
    while time.monotonic() < observed_until:
        assert sorted(node.relays()) == sorted(cut_first[1:]), "a wave left during the pause"
        await asyncio.sleep(0.1)
    status, _ = await node.http("POST", "/v1/disconnects/resume",
                                {"by": "ravi", "reason": "bill run checked"})
    assert status == 200
    expected = sorted(set(range(METERS)) - {payer, leaver})
    await eventually(lambda: sorted(node.relays()) == expected, timeout=60,
                     what="the approved wave's relays to open after resume")

    # the audit trail
    done = await node.cli("show", wave_id, "--json")
    shown = json.loads(done.stdout)
    assert shown["status"] == "released" and shown["left"] == 8 and shown["cancelled"] == 1
    assert [a["approver"] for a in shown["approvals"]] == ["asha", "ravi"]
    assert {a["via"] for a in shown["approvals"]} == {"admin-api"}
    listed = json.loads((await node.cli("list", "--json")).stdout)
    assert listed["switch"] == {**listed["switch"], "paused": False, "by": "ravi"}
    metrics = await _metrics(node)
    assert 'jodo_disconnect_approvals_total{outcome="approved"} 1.0' in metrics
    assert 'jodo_disconnect_approvals_total{outcome="refused"} 1.0' in metrics
    assert f'jodo_disconnect_waves_held{{head_end="{HEAD_END}"}} 0.0' in metrics


async def _kept(node: Node, wave_id: str, n: int) -> bool:
    status, doc = await node.http("GET", f"/v1/disconnects/waves/{wave_id}")
    return status == 200 and doc["kept"] == n


async def _metrics(node: Node) -> str:
    async with aiohttp.ClientSession() as s, s.get(node.url + "/metrics") as r:
        return await r.text()


def test_a_real_bill_run_is_held_paused_approved_by_two_and_the_relays_open(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _killed_and_restarted(tmp: Path) -> None:
    node, runner = await _started(tmp)
    try:
        wave_id = await _bill_run(node)
        held = [i for i in range(METERS) if i not in node.relays()]
        assert node.stack.backend is not None and node.stack.backend.node is not None
        for ref in node.stack.backend.node.known_processes():  # the whole actor system: admin, logger,
            kill_process(ref, signal.SIGKILL)  # every actor, at once
    finally:
        await _stopped(node, runner)
    # a new node on the same data dir (and a new simulated head-end: every relay closed again)
    node, runner = await _started(tmp, start_at=LAWFUL + 600)
    try:
        (wave,) = await eventually(node.held, what="the held wave after the restart")
        assert wave["wave_id"] == wave_id and wave["kept"] == 9
        assert node.relays() == []
        for approver in ("asha", "ravi"):
            status, answer = await node.http("POST", f"/v1/disconnects/waves/{wave_id}/approve",
                                             {"approver": approver})
            assert status == 200, answer
        await eventually(lambda: sorted(node.relays()) == held, timeout=60,
                         what="the held wave's relays to open after the restart and approval")
    finally:
        await _stopped(node, runner)


def test_a_held_wave_survives_a_kill_9_of_the_node(tmp_path: Path) -> None:
    asyncio.run(_killed_and_restarted(tmp_path))
