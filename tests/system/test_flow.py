"""End to end on real processes: payment in → ledger → shard → head-end simulator → relay connected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from domain.enums import RelayState
from jodo.node import Node
from protocols.headend import HesControlState
from protocols.payments import PaymentResultCode
from tests.system.jodo_fixtures import account, eventually, payment, register, running_jodo, serial

pytestmark = pytest.mark.system


def test_paid_meters_reconnect_at_the_simulator(start_node: Callable[..., Node], tmp_path: Path) -> None:
    with running_jodo(start_node, tmp_path, meters=40) as j:
        assert j.client.send(register(40)) == []
        results = j.client.pay([payment(i) for i in range(0, 40, 2)])
        assert isinstance(results, list)
        assert {r.code for r in results} == {PaymentResultCode.ACCEPTED}
        paid = [serial(i) for i in range(0, 40, 2)]
        eventually(
            lambda: all(s.control_state == HesControlState.CONNECTED for s in j.sim.relay_states(paid)),
            what="paid meters connected at the simulator",
        )
        unpaid = [serial(i) for i in range(1, 40, 2)]
        assert all(s.control_state == HesControlState.DISCONNECTED for s in j.sim.relay_states(unpaid))
        m = eventually(lambda: (lambda m: m if m and m.relay is RelayState.CONNECTED else None)(
            j.client.meter(account(0))), what="the shard to see the confirmation")
        assert m.dues_paise <= 0
        trace = eventually(lambda: (lambda t: t if t and t["status"] == "applied" else None)(
            j.client.trace("pay_0")), what="ledger marks the payment applied")
        assert trace["account"] == account(0)


def test_duplicate_payments_credit_once(start_node: Callable[..., Node], tmp_path: Path) -> None:
    with running_jodo(start_node, tmp_path, meters=4) as j:
        j.client.send(register(4, dues=100_000))
        first = j.client.pay([payment(1, amount=40_000), payment(1, amount=40_000)])
        again = j.client.pay([payment(1, amount=40_000)])
        assert isinstance(first, list) and isinstance(again, list)
        assert [r.code for r in first] == [PaymentResultCode.ACCEPTED, PaymentResultCode.DUPLICATE]
        assert [r.code for r in again] == [PaymentResultCode.DUPLICATE]
        m = eventually(lambda: (lambda m: m if m and m.dues_paise == 60_000 else None)(
            j.client.meter(account(1))), what="one credit of 40 000 paise")
        assert m.relay is RelayState.DISCONNECTED


def test_every_listening_socket_of_the_node_is_on_loopback(
    start_node: Callable[..., Node], tmp_path: Path
) -> None:
    with running_jodo(start_node, tmp_path, meters=4) as j:
        sockets = j.node.listening_sockets()
        assert sockets, "the node should listen somewhere (admin, actors)"
        assert {s.host for s in sockets} == {"127.0.0.1"}, sockets
        pids = {s.pid for s in sockets}
        assert j.client.shard_status(0).pid in pids  # the actors themselves, not just the admin
