"""Storage throughput: `python -m bench.bench_storage [--dir DIR] [--quick] [--backend postgres]`.
Prints, asserts nothing.

`--backend postgres` runs the same figures against a throwaway local PostgreSQL (jodo/pglocal.py,
fsync on, a fresh database per run; the SQLite-only figures — WAL bytes, the rejected design — are
left out).

Every figure is the median of 3 runs on a fresh store. Measured:
- journal events/s with group commit, batches of 100 / 1 000 / 10 000 events (~80-byte bodies,
  accounts spread over 256 logical shards), synchronous FULL and NORMAL;
- WAL bytes written per commit (load-independent);
- the rejected design for comparison: one row per event with account and ref indexes;
- record_payments payments/s;
- snapshot save and load, meters/s, for a 725 000-meter group (~100 B per meter, one blob per
  logical shard);
- recovery: that snapshot plus a 100 000-event tail, streamed through `recover()`;
- audit: events_for_account / events_for_ref on a group holding 1 000 000 events.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from storage import (
    DEFAULT_OPTIONS,
    DeskStore,
    NewEvent,
    NewPayment,
    PostgresBackend,
    ShardStore,
    Snapshot,
    StoreOptions,
)
from storage import open_desk_store as _sqlite_desk
from storage import open_shard_store as _sqlite_shard
from storage.api import Synchronous

SHARDS = 256

# where stores are opened: SQLite files under a directory, or (--backend postgres) one fresh
# database per directory on a throwaway server
_PG: object = None  # a jodo.pglocal.LocalPostgres while --backend postgres runs
_PG_DSNS: dict[Path, str] = {}
_PG_NAMES = itertools.count(1)


def _dsn(data: Path) -> str:
    from jodo.pglocal import LocalPostgres

    assert isinstance(_PG, LocalPostgres)
    if data not in _PG_DSNS:
        _PG_DSNS[data] = _PG.create_database(f"bench_{os.getpid()}_{next(_PG_NAMES)}")
    return _PG_DSNS[data]


def open_shard_store(data: Path, group: int, options: StoreOptions = DEFAULT_OPTIONS) -> ShardStore:
    if _PG is None:
        return _sqlite_shard(data, group, options)
    return PostgresBackend().open_shard_store(_dsn(data), group, options)


def open_desk_store(data: Path, options: StoreOptions = DEFAULT_OPTIONS) -> DeskStore:
    if _PG is None:
        return _sqlite_desk(data, options)
    return PostgresBackend().open_desk_store(_dsn(data), options)

METERS = 725_000
BODY = 80
SNAPSHOT_BYTES_PER_METER = 100
TAIL = 100_000


def _shard(account: str) -> int:
    return zlib.crc32(account.encode()) % SHARDS


def _accounts(n: int, rng: random.Random) -> list[str]:
    return [f"{rng.randrange(10**10):010d}" for _ in range(n)]


def _events(n: int, accounts: list[str], rng: random.Random, at: int = 1_700_000_000) -> list[NewEvent]:
    body = os.urandom(BODY)
    return [
        NewEvent(
            shard=_shard(a),
            account=a,
            kind="MeterCredited",
            ref=f"pay_{rng.randrange(10**12):012d}" if i % 2 else None,
            at=at + i // 1000,
            body=body,
        )
        for i, a in enumerate(rng.choices(accounts, k=n))
    ]


def _median(run: Callable[[Path], float], root: Path, runs: int = 3) -> float:
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(dir=root) as d:
            results.append(run(Path(d)))
    return statistics.median(results)


def bench_journal(root: Path, batch: int, total: int, sync: Synchronous) -> tuple[float, float]:
    """Median events/s by the wall clock, and by this process's CPU time (the capacity left
    when other processes compete for the CPUs)."""
    rng = random.Random(batch)
    accounts = _accounts(METERS, rng)
    batches = [_events(batch, accounts, rng) for _ in range(total // batch)]
    cpu_rates = []

    def run(data: Path) -> float:
        with open_shard_store(data, 0, StoreOptions(synchronous=sync)) as store:
            start, cpu = time.perf_counter(), time.process_time()
            for events in batches:
                store.commit(events)
            cpu_rates.append(total / (time.process_time() - cpu))
            return total / (time.perf_counter() - start)

    return _median(run, root), statistics.median(cpu_rates)


def wal_kib_per_commit(batch: int, commits: int = 40) -> float:
    """WAL written per commit once the store is warm: independent of CPU load, so comparable
    across machines. (Reaches into the connection to stop checkpoints while it counts.)"""
    rng = random.Random(batch)
    accounts = _accounts(METERS, rng)
    batches = [_events(batch, accounts, rng) for _ in range(2 * commits)]
    with tempfile.TemporaryDirectory() as d, _sqlite_shard(Path(d), 0) as store:
        db = store._db()
        db.execute("PRAGMA wal_autocheckpoint=0")
        for events in batches[:commits]:
            store.commit(events)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for events in batches[commits:]:
            store.commit(events)
        frames = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    return float(frames * (page_size + 24) / 1024 / commits)


def bench_rows_with_indexes(root: Path, batch: int, total: int) -> float:
    """The design not taken: one row per event, indexed by (shard, seq), account and ref."""
    rng = random.Random(batch)
    accounts = _accounts(METERS, rng)
    batches = [_events(batch, accounts, rng) for _ in range(total // batch)]

    def run(data: Path) -> float:
        db = sqlite3.connect(data / "rows.sqlite3", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "cache_size=-65536"):
            db.execute(f"PRAGMA {pragma}")
        db.execute(
            "CREATE TABLE journal (shard INTEGER NOT NULL, seq INTEGER NOT NULL, account TEXT"
            " NOT NULL, kind TEXT NOT NULL, ref TEXT, at INTEGER NOT NULL, body BLOB NOT NULL,"
            " PRIMARY KEY (shard, seq)) STRICT, WITHOUT ROWID"
        )
        db.execute("CREATE INDEX by_account ON journal (account, at)")
        db.execute("CREATE INDEX by_ref ON journal (ref) WHERE ref IS NOT NULL")
        heads: dict[int, int] = {}
        start = time.perf_counter()
        for events in batches:
            db.execute("BEGIN IMMEDIATE")
            rows = []
            for e in events:
                heads[e.shard] = seq = heads.get(e.shard, 0) + 1
                rows.append((e.shard, seq, e.account, e.kind, e.ref, e.at, e.body))
            db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        db.close()
        return total / elapsed

    return _median(run, root)


def bench_payments(root: Path, batch: int, total: int) -> float:
    rng = random.Random(7)
    accounts = _accounts(METERS, rng)
    body = os.urandom(300)  # a webhook payload
    batches = [
        [
            NewPayment(
                payment_id=f"pay_{b}_{i}_{rng.randrange(10**9)}",
                gateway="razorpay",
                event_id=f"evt_{b}_{i}",
                account=rng.choice(accounts),
                amount_paise=150_000,
                channel="upi",
                paid_at=1_700_000_000,
                received_at=1_700_000_001,
                body=body,
            )
            for i in range(batch)
        ]
        for b in range(total // batch)
    ]

    def run(data: Path) -> float:
        with open_desk_store(data) as desk:
            start = time.perf_counter()
            for payments in batches:
                desk.record_payments(payments, at=1_700_000_002)
            return total / (time.perf_counter() - start)

    return _median(run, root)


def _snapshots() -> list[Snapshot]:
    per_shard = METERS // SHARDS
    return [
        Snapshot(shard=s, upto_seq=0, at=1, body=os.urandom(per_shard * SNAPSHOT_BYTES_PER_METER))
        for s in range(SHARDS)
    ]


def bench_snapshots(root: Path) -> tuple[float, float]:
    snapshots = _snapshots()
    saves, loads = [], []
    for _ in range(3):
        with tempfile.TemporaryDirectory(dir=root) as d, open_shard_store(Path(d), 0) as store:
            start = time.perf_counter()
            store.save_snapshots(snapshots)
            saves.append(METERS / (time.perf_counter() - start))
            start = time.perf_counter()
            loaded = [store.latest_snapshot(s) for s in range(SHARDS)]
            loads.append(METERS / (time.perf_counter() - start))
            assert all(loaded)
    return statistics.median(saves), statistics.median(loads)


def bench_recovery(root: Path) -> tuple[float, int]:
    rng = random.Random(11)
    accounts = _accounts(METERS, rng)
    snapshots = _snapshots()
    tail = _events(TAIL, accounts, rng)
    times = []
    steps = 0
    for _ in range(3):
        with tempfile.TemporaryDirectory(dir=root) as d:
            with open_shard_store(Path(d), 0) as store:
                store.save_snapshots(snapshots)
                for i in range(0, TAIL, 1_000):
                    store.commit(tail[i : i + 1_000])
            start = time.perf_counter()
            with open_shard_store(Path(d), 0) as store:
                steps = sum(1 for _ in store.recover())
            times.append(time.perf_counter() - start)
    return statistics.median(times), steps


def bench_audit(root: Path, total: int) -> tuple[float, float, int]:
    rng = random.Random(13)
    accounts = _accounts(METERS, rng)
    with tempfile.TemporaryDirectory(dir=root) as d, open_shard_store(Path(d), 0) as store:
        for i in range(0, total, 10_000):
            store.commit(_events(10_000, accounts, rng, at=1_700_000_000 + i))
        probes = [e for e in _events(20, accounts, rng) if e.ref is not None]
        for e in probes:
            store.commit([e])
        start = time.perf_counter()
        for e in probes:
            assert store.events_for_account(e.shard, e.account, limit=20)
        by_account = (time.perf_counter() - start) / len(probes)
        start = time.perf_counter()
        for e in probes:
            assert e.ref is not None and store.events_for_ref(e.shard, e.ref)
        by_ref = (time.perf_counter() - start) / len(probes)
        per_shard = total // SHARDS
    return by_account * 1000, by_ref * 1000, per_shard


JSON = False


def record(**fields: object) -> None:
    """One machine-readable result line (with --json), next to the lines for humans."""
    if JSON:
        print(json.dumps({"bench": "storage", **fields}), flush=True)


def main() -> None:
    global JSON, _PG
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to put the bench files")
    parser.add_argument("--quick", action="store_true", help="smaller totals, for a smoke run")
    parser.add_argument("--json", action="store_true", help="also print a JSON line per figure")
    parser.add_argument("--scale", type=int, default=0,
                        help="divide the journal, ledger and audit totals by this (--quick: 10)")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                        help="postgres: a throwaway local server (Debian's postgresql package)")
    args = parser.parse_args()
    JSON = args.json
    root = args.dir or Path(tempfile.gettempdir())
    scale = args.scale or (10 if args.quick else 1)
    if args.backend == "postgres":
        from jodo.pglocal import LocalPostgres


        # its own prefix under /tmp (the postgres user must reach it; other runs clean jodo-pg-*)
        with LocalPostgres(tempfile.mkdtemp(prefix="bench-storage-pg-"), fsync=True) as pg:
            _PG = pg
            print(f"postgresql (throwaway, fsync on), {os.cpu_count()} CPUs")
            _run(root, scale, postgres=True)
        return
    print(f"sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, files under {root}")
    _run(root, scale, postgres=False)


def _run(root: Path, scale: int, *, postgres: bool) -> None:
    backend = "postgresql" if postgres else "sqlite"
    print("medians of 3 runs, fresh store each run\n")
    print("journal commit (events/s), ~80 B bodies, 256 logical shards, half the events ref'd")
    for sync in ("full", "normal"):
        for batch, total in ((100, 50_000), (1_000, 200_000), (10_000, 500_000)):
            rate, cpu_rate = bench_journal(root, batch, total // scale, sync)
            print(
                f"  synchronous={sync:<6} batch {batch:>6,}: {rate:>10,.0f} events/s"
                f"  ({cpu_rate:>9,.0f} per CPU-second)"
            )
            record(figure="journal_commit", backend=backend, synchronous=sync, batch=batch,
                   events_per_s=round(rate), events_per_cpu_s=round(cpu_rate))
    if not postgres:
        print("WAL written per commit (KiB), warm store")
        for batch in (100, 1_000, 10_000):
            kib = wal_kib_per_commit(batch)
            print(f"  batch {batch:>6,}: {kib:>8,.0f} KiB = {kib * 1024 / batch:,.0f} B/event")
            record(figure="wal_per_commit", batch=batch, kib=round(kib, 1),
                   bytes_per_event=round(kib * 1024 / batch))
        print("rejected design: a row per event + account and ref indexes, synchronous=full")
        for batch, total in ((1_000, 200_000), (10_000, 500_000)):
            rate = bench_rows_with_indexes(root, batch, total // scale)
            print(f"  batch {batch:>6,}: {rate:>10,.0f} events/s")
            record(figure="rejected_row_per_event", batch=batch, events_per_s=round(rate))
    print("record_payments (payments/s), synchronous=full, ~300 B bodies")
    for batch, total in ((100, 20_000), (1_000, 100_000)):
        rate = bench_payments(root, batch, total // scale)
        print(f"  batch {batch:>6,}: {rate:>10,.0f} payments/s")
        record(figure="record_payments", backend=backend, batch=batch, payments_per_s=round(rate))
    save, load = bench_snapshots(root)
    print(f"snapshots, {METERS:,} meters x {SNAPSHOT_BYTES_PER_METER} B in {SHARDS} blobs (one save)")
    print(f"  save: {save:>12,.0f} meters/s ({METERS / save:.2f} s)")
    print(f"  load: {load:>12,.0f} meters/s ({METERS / load:.2f} s)")
    record(figure="snapshots", meters=METERS, save_meters_per_s=round(save), load_meters_per_s=round(load))
    seconds, steps = bench_recovery(root)
    print(f"recovery: {SHARDS} snapshots ({METERS:,} meters) + {TAIL:,} tail events")
    print(f"  {seconds:.2f} s to open and stream {steps:,} steps")
    record(figure="recovery", meters=METERS, tail_events=TAIL, seconds=round(seconds, 2), steps=steps)
    audit_total = 1_000_000 // scale
    by_account, by_ref, per_shard = bench_audit(root, audit_total)
    print(f"audit on a group of {audit_total:,} events (~{per_shard:,} per logical shard)")
    print(f"  events_for_account(limit=20): {by_account:7.1f} ms")
    print(f"  events_for_ref:               {by_ref:7.1f} ms")
    record(figure="audit", events=audit_total, events_for_account_ms=round(by_account, 1),
           events_for_ref_ms=round(by_ref, 1))


if __name__ == "__main__":
    main()
