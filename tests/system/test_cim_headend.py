"""The CIM adapter over real HTTP on 127.0.0.1 against the CIM head-end simulator: requests, replies,
authenticated callbacks, faults — and never two outcomes for one command."""

from __future__ import annotations

import asyncio
import select
import time
from collections import Counter

import aiohttp
import pytest

from headend.cim.core import CimCoreConfig
from headend.cim.driver import CimHttpDriver, CimSettings
from headend.cim.messages import TOKEN_HEADER, CimEvent, EventResult, build_events, soap_wrap
from headend.cim.sim import CimSimConfig, CimSimThread
from headend.outcome import HeadEndOutcome, OutcomeKind
from protocols.headend import HesAction, HesCommand


def collect(driver: CimHttpDriver, want: int, timeout: float = 20.0) -> list[HeadEndOutcome]:
    out: list[HeadEndOutcome] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        out += driver.on_readable()
        select.select([driver.fileno()], [], [], max(0.0, min(0.1, deadline - time.monotonic())))
    return out


@pytest.fixture
def pair(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    sim_config = getattr(request, "param", CimSimConfig())
    sim = CimSimThread(sim_config).start()
    driver = CimHttpDriver(CimSettings(url=sim.url, token=sim_config.token,
                                       core=CimCoreConfig(callback_timeout=2.0)))
    yield sim, driver
    driver.close()
    sim.stop()


def commands(n: int, action: HesAction = HesAction.DISCONNECT, meters: int = 1000) -> list[HesCommand]:
    serial = CimSimConfig().serial
    return [HesCommand(f"k{i}", serial(i % meters), action, time.time() + 60) for i in range(n)]


def test_commands_are_accepted_then_called_back_with_the_contactor(pair) -> None:  # type: ignore[no-untyped-def]
    sim, driver = pair
    driver.submit([*commands(300), HesCommand("x", "nobody", HesAction.CONNECT, time.time() + 60)])
    out = collect(driver, 301)
    kinds = Counter(o.kind for o in out)
    assert kinds == {OutcomeKind.DISCONNECTED: 300, OutcomeKind.REJECTED: 1}
    assert next(o for o in out if o.command_id == "x").reason == "unknown_meter"
    assert all(o.output_state is False for o in out if o.kind is OutcomeKind.DISCONNECTED)
    assert sim.sim.fleet.state(CimSimConfig().serial(1)).output_state is False


@pytest.mark.parametrize("pair", [CimSimConfig(fail_rate=0.2, silent_rate=0.1, duplicate_rate=0.2,
                                               reply_fail_rate=0.1, seed=7)], indirect=True)
def test_under_faults_every_command_ends_exactly_once(pair) -> None:  # type: ignore[no-untyped-def]
    _sim, driver = pair
    batch = commands(2000)
    for i in range(0, len(batch), 100):
        driver.submit(batch[i:i + 100])
    out = collect(driver, len(batch))
    ids = Counter(o.command_id for o in out)
    assert len(ids) == len(batch) and max(ids.values()) == 1
    errors = Counter(o.error for o in out)
    assert errors["timeout"] > 0 and errors["relay_stuck"] > 0 and errors["no_communication"] > 0
    assert driver.core is not None and driver.core.stats.refused_duplicate > 0
    assert collect(driver, 1, timeout=0.3) == []  # nothing more, ever


def test_the_callback_refuses_a_bad_token_a_bad_body_and_an_unknown_control(pair) -> None:  # type: ignore[no-untyped-def]
    _, driver = pair
    url = f"http://127.0.0.1:{driver.callback_port}/cim/events"
    stray = soap_wrap(build_events("nope", [CimEvent("zz", "m1", EventResult.PROCESSED, "Opened", None)],
                                   now=time.time(), source="x", message_id="e"))

    async def post(body: bytes, token: str | None) -> int:
        async with aiohttp.ClientSession() as s:
            headers = {TOKEN_HEADER: token} if token is not None else {}
            async with s.post(url, data=body, headers=headers) as r:
                return r.status

    assert asyncio.run(post(stray, None)) == 401
    assert asyncio.run(post(stray, "wrong")) == 401
    assert asyncio.run(post(b"<x", "sim-token")) == 400
    assert asyncio.run(post(stray, "sim-token")) == 200
    assert driver.core is not None
    s = driver.core.stats
    assert (s.refused_unauthorised, s.refused_malformed, s.refused_unknown) == (2, 1, 1)


def test_jodo_hes_sim_protocol_cim_serves_the_adapter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    port_file, token_file = tmp_path / "port", tmp_path / "token"
    token_file.write_text("t0ken\n")
    proc = subprocess.Popen([sys.executable, "-m", "jodo.cli", "hes-sim", "--protocol", "cim", "--port", "0",
                             "--port-file", str(port_file), "--meters", "50", "--cim-token-file",
                             str(token_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "listening on http://127.0.0.1:" in proc.stdout.readline()  # printed once it listens
        port = int(port_file.read_text())
        driver = CimHttpDriver(CimSettings(url=f"http://127.0.0.1:{port}/cim/EndDeviceControls",
                                           token="t0ken"))
        try:
            driver.submit(commands(50, HesAction.CONNECT, meters=50))
            out = collect(driver, 50)
            assert Counter(o.kind for o in out) == {OutcomeKind.CONNECTED: 50}
        finally:
            driver.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
