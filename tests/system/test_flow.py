"""End to end on real processes: payment in → ledger → shard → head-end simulator → relay connected."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from domain.commands import RegisterMeter
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


def test_duplicates_and_out_of_order_parts_credit_once_and_ineligible_meters_get_one_work_order(
    start_node: Callable[..., Node], tmp_path: Path
) -> None:
    eligible, ineligible = 20, 6
    with running_jodo(start_node, tmp_path, meters=eligible + ineligible) as j:
        meters = register(eligible) + [
            RegisterMeter(account=account(i), serial=serial(i), head_end="hes-1", install_year=2017,
                          relay_capable=True, control_mode=2, relay=RelayState.DISCONNECTED,
                          opening_dues_paise=150_000)
            for i in range(eligible, eligible + ineligible)
        ]
        assert j.client.send(meters) == []
        everyone = range(eligible + ineligible)
        # each meter pays in two parts that arrive second-part first, and the first part twice
        j.client.pay([payment(i, amount=50_000, pid=f"part2-{i}") for i in reversed(everyone)])
        j.client.pay([payment(i, amount=100_000, pid=f"part1-{i}") for i in everyone])
        again = j.client.pay([payment(i, amount=100_000, pid=f"part1-{i}") for i in everyone])
        assert isinstance(again, list) and {r.code for r in again} == {PaymentResultCode.DUPLICATE}
        serials = [serial(i) for i in range(eligible)]
        eventually(
            lambda: all(s.control_state == HesControlState.CONNECTED for s in j.sim.relay_states(serials)),
            what="every eligible paid meter connected",
        )

        def settled() -> bool:
            ms = [j.client.meter(account(i)) for i in everyone]
            return all(m is not None and m.dues_paise == 0 for m in ms) and all(
                m is not None and m.work_order is not None for m in ms[eligible:]
            )

        eventually(settled, what="every meter credited exactly once and field meters handed to a crew")
        files = sorted((Path(j.options.data_dir) / "outbox").glob("work-orders-*.jsonl"))
        orders = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        opened = [o for o in orders if o["type"] == "open"]
        field = [account(i) for i in range(eligible, eligible + ineligible)]
        assert sorted(o["account"] for o in opened) == field  # exactly one each
        assert {o["action"] for o in opened} == {"reconnect"}
        stuck = [serial(i) for i in range(eligible, eligible + ineligible)]
        assert all(s.control_state == HesControlState.DISCONNECTED for s in j.sim.relay_states(stuck))
