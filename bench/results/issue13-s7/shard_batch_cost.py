"""What a shard group's service spends per payment on the webhook path's small batches, no actors.

Run from a worktree (its code is what is measured): ``python bench/results/issue13-s7/shard_batch_cost.py
[--batch 16] [--rounds 300] [--meters 200000]``. One process, one `ShardService` over a real SQLite
shard store (synchronous=full, as served) and a `FileNoticeSender`, as `MeterShard` drives them: a
batch of ``--batch`` payments (each reconnects a distinct meter) staged and flushed, its notices
delivered and marked done on the next commit, then the relay results of its commands staged and
flushed. Prints process CPU µs per payment of the steady rounds (the first tenth is warm-up), one
line per ``--repeat``, and their median.
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

from actors.notices import FileNoticeSender
from actors.shard_service import ShardService
from domain.commands import ClearPayment, RegisterMeter, ReportRelayResult
from domain.effects import SendRelayCommand
from domain.enums import ControlState, RelayResultStatus, RelayState
from domain.policy import load_policy
from storage.api import StoreOptions
from storage.sqlite import open_shard_store

T0 = 1_772_000_000
PROFILE: cProfile.Profile | None = None  # set by a caller: profiles the steady rounds


def delivered(s: ShardService, ids: list[str]) -> None:
    if hasattr(s, "notices_sent"):  # (this session's service; the code before it kept a list)
        s.notices_sent(ids)
    else:
        s.notices_delivered += ids


def run(meters: int, batch: int, rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        store = open_shard_store(data, 0, StoreOptions(synchronous="full"))
        s = ShardService(group=0, groups=1, shards=256, store=store, policy=load_policy())
        s.recover(T0)
        notices = FileNoticeSender(data / "outbox", 0)
        for lo in range(0, meters, 10_000):
            s.apply([RegisterMeter(account=f"N{i:010d}", serial=f"S{i}", head_end="hes-1", install_year=2022,
                                   relay_capable=True, control_mode=2, relay=RelayState.DISCONNECTED,
                                   opening_dues_paise=150_000)
                     for i in range(lo, min(meters, lo + 10_000))], T0)
        s.snapshot(s.shards, T0)
        warm = max(1, rounds // 10)
        started = 0.0
        now = T0 + 10
        for r in range(rounds):
            if r == warm:
                started = time.process_time()
                if PROFILE is not None:
                    PROFILE.enable()
            payments = [ClearPayment(account=f"N{i:010d}", payment_id=f"P{i}", amount_paise=150_000,
                                     channel="upi", cashless=True, paid_at=now)
                        for i in range(r * batch, (r + 1) * batch)]
            s.note_payments((p.payment_id, float(now)) for p in payments)
            s.stage(payments, now)
            out = s.flush(now)
            delivered(s, notices.send(out.notices))
            commands = [c for cs in out.relay.values() for c in cs if isinstance(c, SendRelayCommand)]
            s.mark_sent(commands)
            s.stage([ReportRelayResult(account=c.account, command_id=c.command_id,
                                       status=RelayResultStatus.PROCESSED,
                                       control_state=ControlState.CONNECTED, output_state=True)
                     for c in commands], now)
            out = s.flush(now)
            delivered(s, notices.send(out.notices))
            now += 1
        spent = time.process_time() - started
        if PROFILE is not None:
            PROFILE.disable()
        store.close()
    return spent / ((rounds - warm) * batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.batch * args.rounds > args.meters:
        raise SystemExit("--batch x --rounds must not exceed --meters (each payment reconnects a new meter)")
    figures = []
    for _ in range(args.repeat):
        figures.append(run(args.meters, args.batch, args.rounds))
        print(f"batch {args.batch}: {figures[-1]:.1f} us CPU per payment", flush=True)
    median = statistics.median(figures)
    print(f"median of {len(figures)}: {median:.1f} us CPU per payment (batch {args.batch})")


if __name__ == "__main__":
    main()
