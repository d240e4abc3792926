"""The shard's serial question with the index vs the scan it replaced (docs/prepaid-headend.md).

`python -m bench.bench_serial_index [--meters 200000] [--asked 10000] [--runs 3] [--stall-meters 125000]`

In one process, no actors: a `MeterHost` of ``--meters`` packed meters (protocols.registry, half of
them prepaid, every logical shard compacted as after a snapshot). Prints JSON lines:

- ``scan``: seconds for ``--asked`` serials by the scan of every meter (`with_serials` before the
  index, reproduced here), each run;
- ``index``: seconds to build the index (all its slices), then seconds per question of ``--asked``;
  ``eighth_hosted``: the same question when only 1 in 8 asked serials is the host's (a group of 8);
  the index's bytes a meter (its array) and the traced Python memory it added and peaked at;
- ``stall``: on a host of ``--stall-meters``: the shard's slices (actors/shard_serials.py) for a
  first question of ``--asked`` serials and one of every serial: the longest slice (wall and the
  thread's CPU: on a shared machine the wall includes preemption), and how many.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Collection, Sequence

from actors.shard_serials import SerialAnswers
from bench.common import emit
from domain.commands import RegisterMeter, SetBillingMode
from domain.enums import BillingMode
from domain.policy import load_policy
from domain.shard import MeterHost
from domain.state import Meter
from protocols.registry import METER_PACKING
from protocols.runtime import MeterSerialsQuery

HEAD_END = "h1"


def account(i: int) -> str:
    return f"N{i:08d}"


def serial(i: int) -> str:
    return f"SR{i:010d}"


def _prototypes() -> tuple[Meter, Meter]:
    host = MeterHost(load_policy())
    now = 1_740_000_000
    cmds = [RegisterMeter(account=account(k), serial=serial(k), head_end=HEAD_END, install_year=2022,
                          relay_capable=True, control_mode=2) for k in (0, 1)]
    cmds.append(SetBillingMode(account=account(1), mode=BillingMode.PREPAID, opening_balance_paise=50_000,
                               request_id="BM1"))
    host.assign(host.step(cmds, now), now)
    post, pre = host.get(account(0)), host.get(account(1))
    assert post is not None and pre is not None and pre.prepaid is not None
    return post, pre


def hosted(meters: int) -> MeterHost:
    """A host of ``meters`` packed meters, every logical shard compacted (as after a snapshot)."""
    post, pre = _prototypes()
    host = MeterHost(load_policy(), packing=METER_PACKING)
    host.restore(dataclasses.replace(pre if i % 2 else post, account=account(i), serial=serial(i))
                 for i in range(meters))
    for shard in host.shard_sizes():
        host.image(shard)
    gc.collect()
    return host


def scan(host: MeterHost, head_end: str, serials: Collection[str]) -> list[tuple[str, str, bool]]:
    """`MeterHost.with_serials` before the index (d3c011d): every meter unpacked."""
    wanted = serials if isinstance(serials, (set, frozenset)) else set(serials)
    return [(m.serial, m.account, m.prepaid is not None) for m in host.meters()
            if m.serial in wanted and m.profile.head_end == head_end]


def _asked(meters: int, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [serial(i) for i in rng.sample(range(meters), min(n, meters))]


def _timed_build(host: MeterHost) -> float:
    began = time.perf_counter()
    while not host.build_serial_index(0.02):
        pass
    return time.perf_counter() - began


def measure(meters: int, asked_n: int, runs: int) -> None:
    host = hosted(meters)
    asked = _asked(meters, asked_n, 1)
    scans = []
    for _ in range(runs):
        began = time.perf_counter()
        want = scan(host, HEAD_END, asked)
        scans.append(time.perf_counter() - began)
    emit(bench="serial_index", mode="scan", meters=meters, asked=len(asked),
         runs=[round(s, 4) for s in scans], median_s=round(statistics.median(scans), 4))
    builds, queries = [], []
    for r in range(runs):
        host._serials = None  # build again (the bench only)
        builds.append(_timed_build(host))
        for k in range(runs):
            q = _asked(meters, asked_n, 100 * r + k + 2)
            began = time.perf_counter()
            host.with_serials(HEAD_END, q)
            queries.append(time.perf_counter() - began)
    assert sorted(host.with_serials(HEAD_END, asked)) == sorted(want)
    # a group of 8 is asked every serial of the round: 1 in 8 is its own, the rest miss
    eighth = []
    for r in range(runs):
        q = _asked(meters, asked_n // 8, 1000 + r) + [f"XX{r}-{i}" for i in range(asked_n - asked_n // 8)]
        began = time.perf_counter()
        host.with_serials(HEAD_END, q)
        eighth.append(time.perf_counter() - began)
    index = host.serial_index
    assert index is not None
    # traced memory: what the index adds once built, and its peak while building (the sort's ints)
    host._serials = None
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _timed_build(host)
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    emit(bench="serial_index", mode="index", meters=meters, asked=len(asked),
         build_runs=[round(s, 4) for s in builds], build_median_s=round(statistics.median(builds), 4),
         query_runs=[round(s, 4) for s in queries], query_median_s=round(statistics.median(queries), 4),
         eighth_hosted_runs=[round(s, 4) for s in eighth],
         eighth_hosted_median_s=round(statistics.median(eighth), 4),
         array_bytes_per_meter=round(index.nbytes() / meters, 2),
         traced_bytes_per_meter=round((after - before) / meters, 2),
         traced_peak_bytes_per_meter=round((peak - before) / meters, 2))


def stall(meters: int, asked_n: int) -> None:
    host = hosted(meters)
    every = [serial(i) for i in range(meters)]
    for label, serials in (("first", _asked(meters, asked_n, 3)), ("all", every)):
        answers = SerialAnswers()
        answers.ask(MeterSerialsQuery(request_id=label, head_end=HEAD_END, serials=tuple(serials)),
                    "gateway")  # type: ignore[arg-type]
        slices: list[float] = []
        cpu: list[float] = []  # the thread's CPU seconds: the slice's own work, without preemption
        began = time.perf_counter()
        found = 0
        while len(answers):
            t, c = time.perf_counter(), time.thread_time()
            found += sum(len(r.found) for _, r in answers.run(host, 0))
            slices.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        total = time.perf_counter() - began
        assert found == len(serials)
        emit(bench="serial_index", mode="stall", meters=meters, question=label, asked=len(serials),
             built_here=label == "first", slices=len(slices), longest_slice_s=round(max(slices), 4),
             median_slice_s=round(statistics.median(slices), 4), longest_slice_cpu_s=round(max(cpu), 4),
             total_s=round(total, 3))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=200_000)
    ap.add_argument("--asked", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stall-meters", type=int, default=125_000)
    a = ap.parse_args(argv)
    measure(a.meters, a.asked, a.runs)
    stall(a.stall_meters, a.asked)


if __name__ == "__main__":
    main()
