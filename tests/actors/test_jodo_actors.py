"""The jodo actors' protocols on simpleSystemBase (one process, fake gateway): desk, shards, results."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from actors.desk_service import DeskService
from actors.facade import RuntimeConfig, SystemBaseName, new_request_id
from actors.fakes import FakeGatewayMode, FakeGatewayQuery, FakeGatewayReport
from domain.commands import PostBill, RegisterMeter, ReportRelayResult
from domain.enums import RelayResultStatus, RelayState
from jodo.client import NodeClient, Saturated
from jodo.node import Node, NodeSetup
from jodo.tree import HeadEnd, TreeOptions, jodo_tree, root_flags
from protocols import codec
from protocols.payments import CreditBatch, PaymentReceived, PaymentResultCode
from protocols.relay import RelayResultBatch
from protocols.runtime import MeterCommandBatch, MeterCommandBatchResult, RelayResultsApplied
from storage.memory import MemoryBackend
from storage.sqlite import open_desk_store

T0 = 1_767_000_000


def eventually(check: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
    """Poll with a deadline; on simpleSystemBase each ask also lets due wakeups run."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def options(tmp_path: Path, **kw: object) -> TreeOptions:
    return TreeOptions(
        data_dir=str(tmp_path / "data"), groups=2, synchronous="normal", manual_clock=True, start_at=T0,
        head_ends=(HeadEnd(name="hes-1", host="127.0.0.1", port=1),),
        gateway_class="actors.fakes.FakeGateway",
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def jodo(tmp_path: Path) -> Iterator[NodeClient]:
    node = Node(NodeSetup(runtime=RuntimeConfig(base=SystemBaseName.SIMPLE), root_flags=root_flags(),
                          children=jodo_tree(options(tmp_path)), ready_timeout=10.0))
    node.start()
    try:
        yield NodeClient(node, groups=2)
    finally:
        node.shutdown()


def meters(n: int, dues: int = 100_000) -> list[RegisterMeter]:
    return [
        RegisterMeter(account=f"A{i}", serial=f"S{i}", head_end="hes-1", install_year=2021,
                      relay_capable=True, control_mode=2, relay=RelayState.DISCONNECTED,
                      opening_dues_paise=dues)
        for i in range(n)
    ]


def pay(i: int, amount: int = 100_000, pid: str | None = None) -> PaymentReceived:
    return PaymentReceived(payment_id=pid or f"P{i}", account=f"A{i}", amount_paise=amount, channel="upi",
                           gateway="razorpay", paid_at=T0, received_at=T0)


def test_a_payment_flows_desk_to_shard_to_gateway_and_back(jodo: NodeClient) -> None:
    assert jodo.send(meters(6)) == []
    results = jodo.pay([pay(1), pay(4)])
    assert isinstance(results, list) and {r.code for r in results} == {PaymentResultCode.ACCEPTED}
    jodo.set_clock(T0 + 1)  # lets the simple system deliver what is queued
    for i in (1, 4):
        m = jodo.meter(f"A{i}")
        assert m is not None and m.relay is RelayState.CONNECTED and m.dues_paise == 0
    m = jodo.meter("A0")
    assert m is not None and m.relay is RelayState.DISCONNECTED
    eventually(lambda: (jodo.trace("P1") or {}).get("status") == "applied", what="P1 marked applied")
    report = jodo.runtime.ask(jodo.gateway["hes-1"], FakeGatewayQuery(request_id=new_request_id()),
                              FakeGatewayReport, 5.0)
    assert all(n == 1 for _, n in report.executed) and len(report.executed) == 2


def test_a_payment_for_an_unknown_account_ends_in_suspense(jodo: NodeClient) -> None:
    jodo.send(meters(1))
    jodo.pay([PaymentReceived(payment_id="PX", account="NOBODY", amount_paise=500, channel="upi",
                              gateway="razorpay", paid_at=T0, received_at=T0)])
    jodo.set_clock(T0 + 1)
    eventually(lambda: (jodo.trace("PX") or {}).get("status") == "suspense", what="PX in suspense")


def test_failed_commands_are_retried_with_backoff_then_succeed(jodo: NodeClient) -> None:
    jodo.send(meters(1))
    jodo.runtime.tell(jodo.gateway["hes-1"], FakeGatewayMode(fail=True))
    jodo.pay([pay(0)])
    jodo.set_clock(T0 + 1)
    m = jodo.meter("A0")
    assert m is not None and m.relay is RelayState.CONNECTING and m.pending is not None
    assert m.pending.retry_at is not None
    jodo.runtime.tell(jodo.gateway["hes-1"], FakeGatewayMode())
    jodo.set_clock(m.pending.retry_at + 1)
    jodo.set_clock(m.pending.retry_at + 2)
    m = jodo.meter("A0")
    assert m is not None and m.relay is RelayState.CONNECTED


def test_undecodable_meter_commands_are_refused_and_the_shard_lives_on(jodo: NodeClient) -> None:
    batch = MeterCommandBatch(batch_id=uuid.uuid4().hex, payload=b"\x93\xa3bad")
    reply = jodo.runtime.ask(jodo.shard[0], batch, MeterCommandBatchResult, 5.0)
    assert reply.accepted == 0 and reply.rejected[0][0] == -1 and "msgpack" in reply.rejected[0][1]
    assert jodo.send(meters(2)) == []
    assert jodo.meter("A1") is not None


def test_a_bad_command_in_a_batch_is_rejected_alone(jodo: NodeClient) -> None:
    good = codec.to_wire(meters(1)[0])
    bad = codec.to_wire(meters(2)[1])
    bad[2][3] = "twenty-twenty"  # install_year must be an int
    payload = msgpack.packb([good, bad], default=codec.to_wire, use_bin_type=True)
    batch = MeterCommandBatch(batch_id=uuid.uuid4().hex, payload=payload)
    reply = jodo.runtime.ask(jodo.shard[jodo.group_of("A0")], batch, MeterCommandBatchResult, 5.0)
    assert reply.accepted == 1 and [i for i, _ in reply.rejected] == [1]
    assert "install_year" in reply.rejected[0][1]
    assert jodo.meter("A0") is not None and jodo.meter("A1") is None


def test_the_desk_refuses_new_payments_when_saturated(tmp_path: Path) -> None:
    tree = jodo_tree(options(tmp_path, desk_max_queued=5))
    shards_free = tuple(spec for spec in tree if spec.id != "shards")  # no shard ever acknowledges
    node = Node(NodeSetup(runtime=RuntimeConfig(base=SystemBaseName.SIMPLE), root_flags=root_flags(),
                          children=shards_free, ready_timeout=10.0))
    node.start()
    try:
        client = NodeClient(node, groups=2)
        first = client.pay([pay(i) for i in range(5)])
        assert isinstance(first, list) and len(first) == 5
        assert isinstance(client.pay([pay(9)]), Saturated)
        status = client.desk_status()
        assert status.saturated and dict(status.counts)["pending"] == 5
    finally:
        node.shutdown()


def test_an_empty_desk_takes_a_batch_larger_than_its_limit(tmp_path: Path) -> None:
    # bench_storm found it: a batch over desk_max_queued was refused on every retry, queue empty or not
    tree = jodo_tree(options(tmp_path, desk_max_queued=5))
    shards_free = tuple(spec for spec in tree if spec.id != "shards")
    node = Node(NodeSetup(runtime=RuntimeConfig(base=SystemBaseName.SIMPLE), root_flags=root_flags(),
                          children=shards_free, ready_timeout=10.0))
    node.start()
    try:
        client = NodeClient(node, groups=2)
        first = client.pay([pay(i) for i in range(8)])
        assert isinstance(first, list) and len(first) == 8
        assert isinstance(client.pay([pay(9)]), Saturated)  # the queue is past its limit now
        assert dict(client.desk_status().counts)["pending"] == 8
    finally:
        node.shutdown()


def test_a_disconnect_still_queued_in_the_shard_is_dropped_when_the_consumer_pays(tmp_path: Path) -> None:
    # no gateway at all: every relay command waits in the shard's queue
    tree = tuple(spec for spec in jodo_tree(options(tmp_path)) if spec.id != "gateways")
    node = Node(NodeSetup(runtime=RuntimeConfig(base=SystemBaseName.SIMPLE), root_flags=root_flags(),
                          children=tree, ready_timeout=10.0))
    node.start()
    try:
        client = NodeClient(node, groups=2)
        start = 1_767_248_400  # Thu 1 Jan 2026 12:00 IST
        client.set_clock(start)
        client.send([RegisterMeter(account="A0", serial="S0", head_end="hes-1", install_year=2021,
                                   relay_capable=True, control_mode=2)])
        client.send([PostBill(account="A0", bill_id="B0", amount_paise=200_000, due_date="2026-01-02",
                              issued_at=start)])
        group = client.group_of("A0")
        for day in range(1, 40):  # notice, 15 clear days, then a weekday at noon
            client.set_clock(start + day * 86_400)
            m = client.meter("A0")
            if m is not None and m.relay is RelayState.DISCONNECTING:
                break
        assert client.shard_status(group).queued_commands == 1  # the disconnect, unsent
        client.pay([PaymentReceived(payment_id="P0", account="A0", amount_paise=300_000, channel="upi",
                                    gateway="razorpay", paid_at=start, received_at=start)])

        def only_the_connect_left() -> bool:
            m = client.meter("A0")
            return m is not None and m.relay is RelayState.CONNECTING and (
                client.shard_status(group).queued_commands == 1
            )

        eventually(only_the_connect_left, what="only the connect left in the queue")
    finally:
        node.shutdown()


def test_an_undecodable_batch_between_actors_becomes_a_stored_dead_letter(
    jodo: NodeClient, tmp_path: Path
) -> None:
    jodo.runtime.tell(jodo.shard[0], CreditBatch(batch_id="garbled", payload=b"\xc1\xc1"))
    assert jodo.send(meters(1)) == []  # the shard lives on

    def stored() -> bool:
        with open_desk_store(tmp_path / "data") as desk:
            return any(d.message_type == "CreditBatch" for d in desk.dead_letters())

    eventually(stored, what="the garbled batch in the dead-letter store")


def test_the_shard_acknowledges_a_result_batch_to_its_gateway_once_journaled(jodo: NodeClient) -> None:
    assert jodo.send(meters(6)) == []
    account = next(f"A{i}" for i in range(6) if jodo.group_of(f"A{i}") == 0)
    result = ReportRelayResult(account=account, command_id=f"{account}:stale",
                               status=RelayResultStatus.PROCESSED)  # a result nobody waits for: ignored
    batch = RelayResultBatch(batch_id="results-1", head_end="hes-1", payload=codec.encode_many([result]),
                             count=1)
    reply = jodo.runtime._system.ask(jodo.shard[0], batch, 5.0)  # the gateway's result window slot
    assert isinstance(reply, RelayResultsApplied)
    assert (reply.batch_id, reply.group) == ("results-1", 0)
    m = jodo.meter(account)
    assert m is not None and m.relay is RelayState.DISCONNECTED


def test_payment_latency_starts_when_the_batch_reaches_the_desk_not_after_its_commit(tmp_path: Path) -> None:
    service = DeskService(store=MemoryBackend().open_desk_store(tmp_path), groups=1, wall=lambda: 2_000.0)
    service.receive_many([[pay(1)], [pay(2)]], T0, received_wall=[1_000.0, 1_500.0])
    (credit,) = service.batches(0)
    assert credit.received_wall == (1_000.0, 1_500.0)
    service.receive_many([[pay(3)]], T0)  # without arrival times: the commit's
    (credit,) = service.batches(0)
    assert credit.received_wall == (2_000.0,)
