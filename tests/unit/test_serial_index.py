"""The serial index gives `MeterHost.with_serials` the answer a scan of every meter gives."""

from __future__ import annotations

import random
import zlib
from collections.abc import Collection

from domain.commands import MeterCommand, RegisterMeter, SetBillingMode, UpdateMeter
from domain.enums import BillingMode
from domain.policy import load_policy
from domain.shard import OBJECTS, MeterHost, Packing
from domain.sharding import logical_shard, stable_hash
from protocols.registry import METER_PACKING
from tests.unit.test_meter_support import at

POLICY = load_policy()
T0 = at(2026, 1, 5, 10)
HEADS = ("hes-1", "hes-2")


def scan(host: MeterHost, head_end: str, serials: Collection[str]) -> list[tuple[str, str, bool]]:
    """What `with_serials` answered before the index: every meter unpacked."""
    wanted = set(serials)
    return sorted((m.serial, m.account, m.prepaid is not None) for m in host.meters()
                  if m.serial in wanted and m.profile.head_end == head_end)


def apply(host: MeterHost, commands: list[MeterCommand]) -> None:
    step = host.step(commands, T0)
    assert not step.failures, step.failures[:3]
    host.assign(step, T0)


def fleet(rng: random.Random, n: int, packing: Packing, start: int = 0) -> list[MeterCommand]:
    out: list[MeterCommand] = []
    for i in range(start, start + n):
        account = f"A{i:08d}"
        # a few serials shared by two meters (two head-ends, or a data error): both are answered
        serial = f"SER{rng.randrange(n * 2) if rng.random() < 0.05 else i + 10**6}"
        out.append(RegisterMeter(account=account, serial=serial, head_end=rng.choice(HEADS),
                                 install_year=2022, relay_capable=True, control_mode=2))
        if rng.random() < 0.4:
            out.append(SetBillingMode(account=account, mode=BillingMode.PREPAID,
                                      opening_balance_paise=10_000))
    return out


def check(host: MeterHost, rng: random.Random, n: int) -> None:
    asked = [f"SER{rng.randrange(n * 2)}" for _ in range(200)] + [f"SER{i + 10**6}" for i in range(n)]
    asked += ["nope", "SER-1"]
    for head_end in HEADS:
        assert sorted(host.with_serials(head_end, asked)) == scan(host, head_end, asked)


def churn(host: MeterHost, rng: random.Random, n: int, start: int) -> None:
    """Meters registered after the index was built, serials re-assigned, head-ends moved."""
    changes: list[MeterCommand] = list(fleet(rng, n // 5, METER_PACKING, start))
    for _ in range(n // 4):
        account = f"A{rng.randrange(start):08d}"
        if rng.random() < 0.5:
            changes.append(UpdateMeter(account=account, serial=f"SER{rng.randrange(n * 2)}"))
        else:
            changes.append(UpdateMeter(account=account, head_end=rng.choice(HEADS)))
    apply(host, changes)


def test_index_answers_as_the_scan_on_random_fleets_with_churn() -> None:
    for seed in range(4):
        rng = random.Random(seed)
        for packing in (METER_PACKING, OBJECTS):
            host = MeterHost(POLICY, 16, packing)
            n = 600
            apply(host, fleet(rng, n, packing))
            for shard in host.shard_sizes():
                host.image(shard)  # most meters into their tables' bases
            check(host, rng, n)
            assert host.serial_index_ready
            churn(host, rng, n, n)
            check(host, rng, n + n // 5)
            for shard in host.shard_sizes():
                host.image(shard)  # folds the fresh entries
            check(host, rng, n + n // 5)


def test_collisions_forced_by_a_tiny_hash_are_verified_away() -> None:
    rng = random.Random(7)
    host = MeterHost(POLICY, 16, METER_PACKING)
    host.serial_hash = lambda s: zlib.crc32(s.encode()) & 0x7  # eight values for 500 serials
    n = 500
    apply(host, fleet(rng, n, METER_PACKING))
    for shard in host.shard_sizes():
        host.image(shard)
    check(host, rng, n)
    churn(host, rng, n, n)
    host.fold_serials()
    check(host, rng, n + n // 5)


def test_a_reassigned_serial_answers_under_its_new_serial_only() -> None:
    host = MeterHost(POLICY, 16, METER_PACKING)
    apply(host, fleet(random.Random(1), 50, METER_PACKING))
    for shard in host.shard_sizes():
        host.image(shard)
    m = host.get("A00000003")
    assert m is not None
    old, head = m.serial, m.profile.head_end
    assert [a for _, a, _ in host.with_serials(head, [old])] == ["A00000003"]
    apply(host, [UpdateMeter(account="A00000003", serial="NEW-3")])
    assert "A00000003" not in {a for _, a, _ in host.with_serials(head, [old])}
    assert [a for _, a, _ in host.with_serials(head, ["NEW-3"])] == ["A00000003"]
    host.fold_serials()
    assert [a for _, a, _ in host.with_serials(head, ["NEW-3"])] == ["A00000003"]


def test_built_in_slices_with_meters_assigned_between_them() -> None:
    rng = random.Random(3)
    host = MeterHost(POLICY, 16, METER_PACKING)
    n = 2_000
    apply(host, fleet(rng, n, METER_PACKING))
    for shard in host.shard_sizes():
        host.image(shard)
    slices = 0
    index_built = False
    while not index_built:
        index_built = host.build_serial_index(0.0)  # one pass of 128 meters a slice
        slices += 1
        if slices == 3:
            churn(host, rng, n, n)  # between slices: registrations and re-assignments
    assert slices > 5
    check(host, rng, n + n // 5)


def test_sliced_answers_add_up_to_the_whole() -> None:
    rng = random.Random(5)
    host = MeterHost(POLICY, 16, METER_PACKING)
    n = 1_000
    apply(host, fleet(rng, n, METER_PACKING))
    asked = list(dict.fromkeys(f"SER{i + 10**6}" for i in range(n)))
    whole = sorted(host.with_serials("hes-1", asked))
    parts: list[tuple[str, str, bool]] = []
    start = 0
    while start < len(asked):
        found, start = host.serials_from("hes-1", asked, start, 0.0)
        parts += found
    assert sorted(parts) == whole and whole


def test_a_loaded_shard_drops_the_index_to_build_again() -> None:
    host = MeterHost(POLICY, 16, METER_PACKING)
    apply(host, fleet(random.Random(2), 100, METER_PACKING))
    host.with_serials("hes-1", ["x"])
    assert host.serial_index_ready
    shard = next(iter(host.shard_sizes()))
    host.load(host.image(shard))
    assert not host.serial_index_ready


def test_the_account_hash_names_the_logical_shard() -> None:
    rng = random.Random(9)
    for _ in range(1000):
        account = "".join(rng.choice("AZ09-ॐ") for _ in range(rng.randrange(1, 20)))
        for shards in (1, 16, 256, 1000):
            assert stable_hash(account) % shards == logical_shard(account, shards)


def test_shard_answers_questions_in_order_in_slices() -> None:
    from actors.shard_serials import SerialAnswers
    from protocols.runtime import MeterSerialsQuery

    rng = random.Random(11)
    host = MeterHost(POLICY, 16, METER_PACKING)
    n = 3_000
    apply(host, fleet(rng, n, METER_PACKING))
    answers = SerialAnswers()
    asked = tuple(f"SER{i + 10**6}" for i in range(n))
    for request_id, head_end in (("q1", "hes-1"), ("q2", "hes-2")):
        answers.ask(MeterSerialsQuery(request_id=request_id, head_end=head_end, serials=asked),
                    "gateway")  # type: ignore[arg-type]
    replies = []
    runs = 0
    while len(answers):
        replies += answers.run(host, 7, budget_s=0.0)
        runs += 1
    assert runs > 10  # slices of at least one pass each, never the whole build at once
    assert [r.request_id for _, r in replies] == ["q1", "q2"]
    for (_, reply), head_end in zip(replies, HEADS, strict=True):
        assert reply.group == 7 and reply.serving
        assert sorted(reply.found) == scan(host, head_end, asked)


def test_a_question_that_fails_is_dropped_and_the_next_answered() -> None:
    from actors.shard_serials import SerialAnswers
    from protocols.runtime import MeterSerialsQuery

    host = MeterHost(POLICY, 16, METER_PACKING)
    apply(host, fleet(random.Random(4), 50, METER_PACKING))
    answers = SerialAnswers()
    bad = MeterSerialsQuery(request_id="bad", head_end="hes-1", serials=("SER1000001",))
    good = MeterSerialsQuery(request_id="good", head_end="hes-1", serials=("SER1000001",))
    answers.ask(bad, "gateway")  # type: ignore[arg-type]
    answers.ask(good, "gateway")  # type: ignore[arg-type]
    while not host.build_serial_index(1.0):
        pass
    real = host.serials_from
    calls = []

    def once_broken(*args: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a record that does not unpack")
        return real(*args, **kw)  # type: ignore[arg-type]

    host.serials_from = once_broken  # type: ignore[method-assign]
    replies = []
    while len(answers):
        replies += answers.run(host, 1)
    assert [r.request_id for _, r in replies] == ["good"]
