"""Releases a held wave of N members in one GuardStore.save_step; prints the seconds and the UPDATE's plan.

    .venv/bin/python bench/results/guard-s7/release_cost.py 25192
"""

import sys
import tempfile
import time

from domain.guard import Kept
from storage.sqlite_guard import GuardStore

n = int(sys.argv[1])
store = GuardStore.in_dir(tempfile.mkdtemp())
kept = [(Kept(f"A{i:07d}", f"c{i}", i % 2), "hes-sim.4") for i in range(n)]
store.save_step("hes-sim", 1.0, kept=kept)
t = time.perf_counter()
store.save_step("hes-sim", 2.0, released=[k for k, _ in kept])
print(n, "release", round(time.perf_counter() - t, 3), "s")
plan = store._db().execute(
    "EXPLAIN QUERY PLAN UPDATE guard_members SET state='released', at=1 "
    "WHERE account='A1' AND command_id='c1' AND state='kept'").fetchall()
print(plan)
