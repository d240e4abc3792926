"""The disconnect guard inside the HeadEndGateway, driven by hand over a real guard store (SQLite in
a temp dir): held answers go back to the shard group, reconnections reach the head-end at once,
an approval or the kill switch written to the store is in force on the next tick, and a restarted
gateway finds its held wave again."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from thespian.actors import WakeupMessage

from actors.gateway import _TICK, HeadEndGateway
from actors.guard_shell import GatewayGuard
from domain.commands import ReportRelayResult
from domain.effects import CancelRelayCommand, SendRelayCommand
from domain.enums import CommandOrigin, RelayAction, RelayResultStatus
from domain.guard import GuardPolicy
from protocols import codec
from protocols.headend import HesCommand
from protocols.relay import RelayCommandBatch, RelayResultBatch
from storage.sqlite_guard import GuardStore

POLICY = GuardPolicy(wave_size=5, wave_spacing_s=0.0, max_per_hour=8, max_per_hour_total=1000)


class _Core:
    breaker_phase = "closed"


class _Driver:
    """Enough of the socket driver: records what is submitted to the head-end."""

    core = _Core()

    def __init__(self) -> None:
        self.submitted: list[HesCommand] = []

    def on_tick(self) -> list[object]:
        return []

    def next_tick_in(self) -> float | None:
        return None

    def submit(self, commands: list[HesCommand]) -> list[object]:
        self.submitted.extend(commands)
        return []


def gateway(data_dir: Path, policy: GuardPolicy = POLICY) -> tuple[HeadEndGateway, list[Any], _Driver]:
    g = HeadEndGateway()
    sent: list[Any] = []
    g.tell = lambda target, message: sent.append((target, message))  # type: ignore[method-assign]
    driver = _Driver()
    g.driver = driver  # type: ignore[assignment]
    g.metric = lambda *a, **k: None  # type: ignore[method-assign]
    g.sample_memory = lambda: None  # type: ignore[method-assign]
    g.guard = GatewayGuard("hes-1", policy, GuardStore.in_dir(data_dir), time.time())
    g.reply_to[0] = "shard-0"
    return g, sent, driver


def command(account: str, action: RelayAction = RelayAction.DISCONNECT, n: int = 1) -> SendRelayCommand:
    return SendRelayCommand(command_id=f"{account}:c{n}", account=account, meter_serial=f"SM-{account}",
                            head_end="hes-1", action=action, expires_at=int(time.time()) + 3600,
                            reason="dues", correlation_id="B1", attempt=1, origin=CommandOrigin.AUTOMATIC)


def offer(g: HeadEndGateway, effects: list[object]) -> None:
    g.receiveMsg_RelayCommandBatch(RelayCommandBatch(batch_id="b", group=0, head_end="hes-1", now=0,
                                                     payload=codec.encode_many(effects)), "shard-0")


def answers(g: HeadEndGateway, sent: list[Any]) -> list[ReportRelayResult]:
    g._send_results()
    out: list[ReportRelayResult] = []
    for _, m in sent:
        if isinstance(m, RelayResultBatch):
            out += codec.decode_many(m.payload, expect=ReportRelayResult)
    sent.clear()
    g.results_unacked.clear()
    return out


def test_a_bill_run_is_held_after_the_threshold_and_reconnections_reach_the_head_end(tmp_path: Path) -> None:
    g, sent, driver = gateway(tmp_path)
    cuts = [command(f"A{i:02d}") for i in range(20)]
    offer(g, [*cuts, command("P1", RelayAction.CONNECT)])
    assert [c.meter for c in driver.submitted] == [*(f"SM-A{i:02d}" for i in range(5)), "SM-P1"]
    held = answers(g, sent)
    assert len(held) == 15 and {r.status for r in held} == {RelayResultStatus.HELD}
    assert g.guard is not None
    tick(g)  # the next wave of 5 would make 10 > 8 in the hour
    assert answers(g, sent) == []
    store = GuardStore.in_dir(tmp_path)
    (wave,) = store.waves(status="held")
    assert wave["kept"] == 15 and "max_per_hour 8" in wave["reason"]
    # a reconnection during the hold still goes at once
    offer(g, [command("P2", RelayAction.CONNECT)])
    assert driver.submitted[-1].meter == "SM-P2"
    # a payment cancels one kept disconnect: it leaves the wave
    offer(g, [CancelRelayCommand(command_id="A19:c1", account="A19", head_end="hes-1")])
    assert store.wave(wave["wave_id"])["kept"] == 14  # type: ignore[index]
    # approved (through the store, as the admin API does): released on the next tick, a step at a time
    outcome = store.approve(wave["wave_id"], "asha", at=time.time(), required=1, via="test")
    assert outcome is not None and str(outcome.kind) == "approved"
    tick(g)
    assert [r.status for r in answers(g, sent)] == [RelayResultStatus.RELEASED] * 5
    # the meters' fresh commands pass at once
    offer(g, [command("A08", n=2)])
    assert driver.submitted[-1].meter == "SM-A08"


def test_pause_holds_the_next_step_until_resume(tmp_path: Path) -> None:
    g, sent, driver = gateway(tmp_path, GuardPolicy(wave_size=2, wave_spacing_s=0.0, max_per_hour=100))
    store = GuardStore.in_dir(tmp_path)
    store.set_paused(True, by="ravi", at=time.time(), reason="tariff bug")
    assert g.guard is not None
    tick(g)  # the gateway reads the switch on its tick
    offer(g, [command("A1"), command("A2"), command("P1", RelayAction.CONNECT)])
    assert [c.meter for c in driver.submitted] == ["SM-P1"]
    tick(g)
    assert [r.status for r in answers(g, sent)] == [RelayResultStatus.HELD] * 2
    store.set_paused(False, by="ravi", at=time.time())
    tick(g)
    assert [r.status for r in answers(g, sent)] == [RelayResultStatus.RELEASED] * 2


def test_a_restarted_gateway_finds_its_held_wave_and_the_re_sent_commands_rejoin_it(tmp_path: Path) -> None:
    g, _, _ = gateway(tmp_path)
    offer(g, [command(f"A{i:02d}") for i in range(20)])
    assert g.guard is not None
    for _ in range(2):
        tick(g)
    wave_id = g.guard.state.wave.wave_id if g.guard.state.wave else ""
    assert wave_id
    again, sent2, driver2 = gateway(tmp_path)  # a new process: only the store is left
    assert again.guard is not None and again.guard.state.wave is not None
    assert again.guard.state.wave.wave_id == wave_id and len(again.guard.state.wave.members) == 15
    offer(again, [command(f"A{i:02d}") for i in range(5, 20)])  # the shards re-send what they parked
    assert driver2.submitted == []
    assert {r.error_code for r in answers(again, sent2)} == {wave_id}
    assert len(again.guard.state.wave.members) == 15


def tick(g: HeadEndGateway) -> None:
    """The gateway's wake-up, with the guard's tick due."""
    assert g.guard is not None
    g.guard.last_tick = -1.0
    me: Any = "self"
    g.receiveMsg_WakeupMessage(WakeupMessage(0, _TICK), me)


def test_the_gateway_init_turns_the_guard_on_only_with_a_policy_and_a_data_dir(tmp_path: Path) -> None:
    assert json.loads(json.dumps({"wave_size": 3}))  # (the policy travels as JSON in GatewayInit)
    g = HeadEndGateway()
    assert g.guard is None
