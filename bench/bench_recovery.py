"""One shard group's recovery, in process: ``python -m bench.bench_recovery [--meters N --groups G]``.

What a MeterShard does after a SIGKILL, without the actor around it. For each ``--config meters:groups``
(default 362500:2 and 1250000:8, i.e. 7.25 lakh and 1 crore meters per node):

1. a `ShardService` for group 0 of G on a fresh SQLite store registers N meters of that group
   (`apply`, batches of 10 000: journaled), every one disconnected and owing DUES;
2. every logical shard of the group is snapshotted (`ShardService.snapshot`, CPU timed per shard:
   the shard actor allows itself 50 ms of snapshots per tick);
3. for each ``--tails`` point (cumulative): payments journaled after the snapshots (`apply`, batches
   of 1 000), each reconnecting a meter (three events and a relay command in flight each); then the
   service is dropped and a fresh one on the same files runs `recover()`, timed (wall and this
   process's CPU), with the split the service reports (``recovery_stages`` / ``recovery_cpu``:
   snapshots read and loaded, tail read and replayed, timers, follow: commands in flight), and
   `in_flight()` after it (what the shard sends again once it learns its gateways). The recovered
   service journals the next tail point.

While the tail is journaled, one shard "tick" follows every batch of 1 000 payments: the snapshots the
service's rule calls for, within the 50 ms a `MeterShard` tick allows itself (`ShardService.snapshot_some`;
on code without it, the loop the actor ran: `snapshot_due` then `snapshot` one shard at a time). Their
CPU is reported (``tick_snapshot_cpu_s``: what the rule costs the running shard) with the tail actually
left to replay (``tail_events``). ``--no-rule`` journals the tail without any snapshot (the worst
case: the whole tail is replayed); ``--snapshot-every`` is the per-shard cap (ShardInit's 2 000).

``--v1`` writes the snapshots in the v1 body (`codec.encode_many` of the meters, as before the
compact resident form) to time the first recovery of a data directory written by older code.
Prints one JSON object per stage; asserts only that recovery found every meter and command.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.shard_service import ShardService
from domain.commands import ClearPayment, RegisterMeter
from domain.enums import RelayState
from domain.policy import load_policy
from domain.sharding import logical_shard, shards_of_group
from protocols import codec
from storage.api import StoreOptions
from storage.records import Snapshot
from storage.sqlite import open_shard_store

POLICY = load_policy()
DUES = 150_000
NOW = 1_772_500_000  # 2026-03-03 06:36 IST


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def accounts_of_group(n: int, group: int, groups: int, shards: int) -> list[str]:
    """The first ``n`` accounts (N0000000000, N0000000001, ...) that the group hosts."""
    owned = set(shards_of_group(group, groups, shards))
    out: list[str] = []
    i = 0
    while len(out) < n:
        account = f"N{i:010d}"
        if logical_shard(account, shards) in owned:
            out.append(account)
        i += 1
    return out


SNAPSHOT_BUDGET_S = 0.05  # as actors/shard.py: seconds of snapshotting per tick
_every = 2_000  # --snapshot-every
_rule = True  # --no-rule: False


def service(data: Path, groups: int) -> ShardService:
    store = open_shard_store(data, 0, StoreOptions(synchronous="normal"))
    return ShardService(group=0, groups=groups, shards=256, store=store, policy=POLICY,
                        snapshot_every=_every if _rule else 10**9)


def tick(s: ShardService, now: int) -> int:
    """One MeterShard tick's snapshots; returns the shards saved."""
    if not _rule:
        return 0
    if hasattr(s, "snapshot_some"):
        return int(s.snapshot_some(now, SNAPSHOT_BUDGET_S))
    deadline, done = time.perf_counter() + SNAPSHOT_BUDGET_S, 0  # the actor's loop before snapshot_some
    for shard in s.snapshot_due():
        s.snapshot([shard], now)
        done += 1
        if time.perf_counter() > deadline:
            break
    return done


def build(data: Path, accounts: list[str], groups: int, v1: bool) -> tuple[ShardService, dict[str, Any]]:
    """Register the meters and snapshot every logical shard; returns the live service."""
    s = service(data, groups)
    s.recover(NOW)
    started = time.process_time()
    for lo in range(0, len(accounts), 10_000):
        s.apply([
            RegisterMeter(account=a, serial=f"S{a[1:]}", head_end=("hes-a", "hes-b")[i & 1],
                          install_year=2020 + i % 5, relay_capable=True, control_mode=2,
                          relay=RelayState.DISCONNECTED, opening_dues_paise=DUES)
            for i, a in enumerate(accounts[lo : lo + 10_000], start=lo)
        ], NOW)
    register_cpu = time.process_time() - started
    per_shard: list[float] = []
    for shard in s.shards:
        t = time.process_time()
        if v1:  # the body older code wrote: every meter through the codec
            body = codec.encode_many(s.host.shard_meters(shard))
            s.store.save_snapshots([Snapshot(shard=shard, upto_seq=s.heads[shard], at=NOW, body=body)])
        else:
            s.snapshot([shard], NOW)
        per_shard.append(time.process_time() - t)
    per_shard.sort()
    return s, {
        "register_cpu_s": round(register_cpu, 2),
        "snapshot_cpu_s_per_shard_median": round(per_shard[len(per_shard) // 2], 4),
        "snapshot_cpu_s_per_shard_max": round(per_shard[-1], 4),
    }


def pay(s: ShardService, accounts: list[str]) -> dict[str, Any]:
    """Journal a payment from each account (batches of 1 000, a tick after each); returns the CPU
    seconds of the journaling and of the ticks' snapshots."""
    journal = ticks = 0.0
    saved = 0
    for lo in range(0, len(accounts), 1_000):
        started = time.process_time()
        s.apply([
            ClearPayment(account=a, payment_id=f"P{a}", amount_paise=DUES, channel="upi", cashless=True,
                         paid_at=NOW + 60)
            for a in accounts[lo : lo + 1_000]
        ], NOW + 60)
        journal += time.process_time() - started
        started = time.process_time()
        saved += tick(s, NOW + 60)
        ticks += time.process_time() - started
    left = sum(getattr(s, "_since_snapshot", {}).values())
    return {"tail_journal_cpu_s": round(journal, 2), "tick_snapshot_cpu_s": round(ticks, 3),
            "tick_snapshots": saved, "tail_events": left}


def recover(data: Path, groups: int, paid: list[str]) -> tuple[ShardService, dict[str, Any]]:
    gc.collect()
    s = service(data, groups)
    receipts = {f"P{a}": 1.0 for a in paid}  # the ledger's answer (the actor asks SQLite: not timed here)
    cpu = time.process_time()
    seconds = s.recover(NOW + 120, receipt_of=receipts.get)
    cpu = time.process_time() - cpu
    t, c = time.perf_counter(), time.process_time()
    again = s.in_flight()  # what the shard sends again once it learns its gateways
    in_flight_s, in_flight_cpu = time.perf_counter() - t, time.process_time() - c
    stages = getattr(s, "recovery_stages", {})
    stages_cpu = getattr(s, "recovery_cpu", {})
    return s, {
        "recover_s": round(seconds, 3),
        "recover_cpu_s": round(cpu, 3),
        **{f"{k}_s": round(v, 3) for k, v in stages.items()},
        **{f"{k}_cpu_s": round(v, 3) for k, v in stages_cpu.items()},
        "in_flight": len(again),
        "in_flight_s": round(in_flight_s, 3),
        "in_flight_cpu_s": round(in_flight_cpu, 3),
        "meters_recovered": len(s.host),
        "gc_tracked_objects": len(gc.get_objects()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_recovery",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=None,
                        help="meters:groups, repeatable (default 362500:2 and 1250000:8)")
    parser.add_argument("--tails", default="0,20000,50000",
                        help="payments journaled after the snapshots, cumulative, comma separated")
    parser.add_argument("--runs", type=int, default=1, help="recoveries timed per configuration and tail")
    parser.add_argument("--v1", action="store_true", help="write v1 snapshot bodies (older data dirs)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the store files")
    parser.add_argument("--snapshot-every", type=int, default=2_000,
                        help="events per logical shard that call for its snapshot anyway (ShardInit)")
    parser.add_argument("--no-rule", action="store_true", help="no snapshot while the tail is journaled")
    parser.add_argument("--label", default="", help="free text for the start record (e.g. a commit)")
    args = parser.parse_args(argv)
    global _every, _rule
    _every, _rule = args.snapshot_every, not args.no_rule
    configs = [tuple(map(int, c.split(":"))) for c in (args.config or ["362500:2", "1250000:8"])]
    tails = sorted(int(t) for t in args.tails.split(",") if t)
    root = args.dir or Path(tempfile.mkdtemp(prefix="jodo-recovery-"))
    emit(stage="start", bench="recovery", python=sys.version.split()[0], cpus=os.cpu_count(),
         load=os.getloadavg()[0], dir=str(root), tails=tails, v1=args.v1, rule=_rule,
         snapshot_every=_every, label=args.label)
    for meters, groups in configs:
        data = root / f"m{meters}-g{groups}{'-v1' if args.v1 else ''}"
        data.mkdir(parents=True, exist_ok=True)
        accounts = accounts_of_group(meters, 0, groups, 256)
        if max(tails) > meters:
            parser.error(f"a tail of {max(tails)} payments needs as many meters, not {meters}")
        live, built = build(data, accounts, groups, args.v1)
        emit(stage="built", meters=meters, groups=groups, **built)
        paid = 0
        for tail in tails:
            journaled = pay(live, accounts[paid:tail])
            in_flight = len(live.host.pending) if hasattr(live.host, "pending") else len(live.in_flight())
            paid = tail
            live.store.close()
            for r in range(args.runs):
                s, result = recover(data, groups, accounts[:tail])
                assert result["meters_recovered"] == meters and result["in_flight"] == in_flight, result
                emit(stage="recovered", meters=meters, groups=groups, tail_payments=tail, **journaled,
                     run=r + 1, load=os.getloadavg()[0], **result)
                live = s
        live.store.close()
        del live


if __name__ == "__main__":
    main()
