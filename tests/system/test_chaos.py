"""Chaos on real processes: SIGKILL a shard, the desk, a gateway (and several) while payments flow.

Afterwards: no payment lost or credited twice, every paid meter connected at the simulator, the
restart counted by the supervisor, and the node serving again. Pids come from the node's own status.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.facade import AskTimeout
from domain.enums import RelayState
from jodo.client import Saturated
from jodo.node import Node
from protocols.headend import HesControlState
from protocols.payments import PaymentReceived, PaymentResultCode
from tests.system.jodo_fixtures import Jodo, account, eventually, payment, register, running_jodo, serial

pytestmark = [pytest.mark.system, pytest.mark.slow]

METERS = 240
DUES = 150_000


def pay_until_recorded(j: Jodo, payments: list[PaymentReceived]) -> None:
    """Submit a batch; on a dead or restarting desk, look it up again and submit the same batch again
    (the ledger deduplicates, so a batch recorded before the crash comes back as duplicates)."""
    j.client.timeout = 3.0

    def attempt() -> bool:
        try:
            results = j.client.pay(payments)
        except AskTimeout:
            j.client.refresh()
            return False
        if isinstance(results, Saturated):
            return False
        return all(r.code in (PaymentResultCode.ACCEPTED, PaymentResultCode.DUPLICATE) for r in results)

    eventually(attempt, timeout=60, what="the desk to record a payment batch")


def pid_of(j: Jodo, path: str) -> int:
    pid = j.node.status().child(path).pid
    assert pid is not None
    return pid


def restarts(j: Jodo, kind: str) -> int:
    return sum(dict(view.status.restarts_by_kind).get(kind, 0) for view in j.node.status().supervisors())


def run_with_kills(j: Jodo, victims: list[str]) -> None:
    assert j.client.send(register(METERS, dues=DUES)) == []
    before = {v: pid_of(j, v) for v in victims}
    paid = list(range(0, METERS, 2))
    batches = [paid[k : k + 15] for k in range(0, len(paid), 15)]
    for n, batch in enumerate(batches):
        pay_until_recorded(j, [payment(i, amount=DUES) for i in batch])
        if n == 2:  # a few batches are in flight: kill now
            for v in victims:
                os.kill(before[v], signal.SIGKILL)
        if n == 4:  # gateways re-deliver: some payments arrive twice
            pay_until_recorded(j, [payment(i, amount=DUES) for i in batches[0]])

    def moved() -> bool:
        try:
            return all(pid_of(j, v) != before[v] for v in victims)
        except (StopIteration, AssertionError):
            return False

    eventually(moved, timeout=60, what="every victim restarted with a new pid")
    j.client.refresh()
    serials = [serial(i) for i in paid]
    eventually(
        lambda: all(s.control_state == HesControlState.CONNECTED for s in j.sim.relay_states(serials)),
        timeout=90, what="every paid meter connected at the simulator",
    )
    unpaid = [serial(i) for i in range(1, METERS, 2)]
    assert all(s.control_state == HesControlState.DISCONNECTED for s in j.sim.relay_states(unpaid))

    def settled() -> bool:
        try:
            j.client.refresh()
            return all(
                (m := j.client.meter(account(i))) is not None and m.relay is RelayState.CONNECTED
                for i in paid
            )
        except AskTimeout:
            return False

    eventually(settled, timeout=60, what="every paid meter connected in its shard")
    for i in paid:  # credited exactly once: a double credit would leave -150 000 paise
        m = j.client.meter(account(i))
        assert m is not None and m.dues_paise == 0, (account(i), m and m.dues_paise)
    status = eventually(lambda: (lambda s: s if dict(s.counts)["applied"] == len(paid) else None)(
        j.client.desk_status()), timeout=60, what="the ledger to mark every payment applied")
    assert dict(status.counts)["pending"] == 0
    # and the node serves again: one more meter pays and reconnects
    pay_until_recorded(j, [payment(1, amount=DUES, pid="after-chaos")])
    eventually(lambda: j.sim.relay_state(serial(1)).control_state == HesControlState.CONNECTED,
               what="a payment after the chaos to reconnect")
    # no intent ran twice on a meter: one connect per paid meter reached the relays, whatever was
    # re-sent after the kills (the head-end answers a re-sent command id from its record)
    assert j.sim.stats().executed == len(paid) + 1


@pytest.mark.parametrize(
    ("victims", "kind"),
    [
        (["shards/shard-0"], "MeterShard"),
        (["desk"], "PaymentDesk"),
        (["gateways/gateway-hes-1"], "HeadEndGateway"),
    ],
    ids=["shard", "desk", "gateway"],
)
def test_sigkill_during_payments_loses_and_doubles_nothing(
    start_node: Callable[..., Node], tmp_path: Path, victims: list[str], kind: str
) -> None:
    with running_jodo(start_node, tmp_path, meters=METERS, resend_after_s=5) as j:
        run_with_kills(j, victims)
        assert restarts(j, kind) >= 1


def test_sigkill_of_several_processes_at_once_loses_and_doubles_nothing(
    start_node: Callable[..., Node], tmp_path: Path
) -> None:
    victims = ["shards/shard-0", "shards/shard-1", "desk", "gateways/gateway-hes-1"]
    with running_jodo(start_node, tmp_path, meters=METERS, resend_after_s=5) as j:
        run_with_kills(j, victims)
        assert restarts(j, "MeterShard") >= 2 and restarts(j, "PaymentDesk") >= 1
