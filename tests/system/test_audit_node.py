"""The audit chain on a real node: payments credited and relays commanded through real actor
processes, then `jodo audit checkpoint` and `jodo audit verify` (the real CLI, in its own process)
pass; a money row and a relay command's journal record edited in the SQLite files are named."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from domain.enums import RelayState
from jodo.node import Node
from storage.sqlite import desk_path, shard_group_path
from tests.system.jodo_fixtures import account, eventually, payment, register, running_jodo


def _jodo(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JODO_NODE__DATA_DIR": str(data_dir), "JODO_SHARDS__GROUPS": "2"}
    env.pop("JODO_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "jodo.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_node_s_chains_verify_and_a_tampered_row_or_command_is_named(
    start_node: Callable[..., Node], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    with running_jodo(start_node, tmp_path, meters=10) as j:
        assert j.client.send(register(10)) == []
        j.client.pay([payment(i) for i in range(5)])
        for i in range(5):
            eventually(lambda i=i: (lambda m: m if m and m.relay is RelayState.CONNECTED else None)(  # type: ignore[misc]
                j.client.meter(account(i))), what=f"meter {i} reconnected")
            eventually(lambda i=i: (lambda t: t if t and t["status"] == "applied" else None)(  # type: ignore[misc]
                j.client.trace(f"pay_{i}")), what=f"pay_{i} applied in the ledger")

        made = _jodo(data, "audit", "checkpoint")
        assert made.returncode == 0, made.stderr
        intact = _jodo(data, "audit", "verify")
        assert intact.returncode == 0, intact.stdout + intact.stderr
        assert "INTACT" in intact.stdout and "1 checkpoint(s) checked" in intact.stdout

        # a relay command's record: the segment journaling the connect command sent for account 3 (a
        # payment that reconnects is one fused PaymentReconnect record: domain/fused.py)
        group = next(g for g in range(2) if b"PaymentReconnect" in b"".join(
            bytes(r[0]) for r in sqlite3.connect(shard_group_path(data, g)).execute(
                "SELECT events FROM journal_segments WHERE instr(events, ?) > 0", (account(3).encode(),))))
        with sqlite3.connect(shard_group_path(data, group)) as db:
            seg_id, shard, first, events = db.execute(
                "SELECT segment_id, shard, first_seq, events FROM journal_segments"
                " WHERE instr(events, ?) > 0 AND instr(events, 'PaymentReconnect') > 0"
                " ORDER BY segment_id LIMIT 1", (account(3).encode(),)).fetchone()
            db.execute("UPDATE journal_segments SET events = ? WHERE segment_id = ?",
                       (bytes(events).replace(account(3).encode(), account(9).encode()), seg_id))
        with sqlite3.connect(desk_path(data)) as db:
            db.execute("UPDATE payments SET amount_paise = 1 WHERE payment_id = 'pay_2'")

        tampered = _jodo(data, "audit", "verify")
        assert tampered.returncode == 1, tampered.stdout + tampered.stderr
        lines = tampered.stdout.splitlines()
        named = f"group:{group} journal:{shard} seq {first}: edited: the events of seqs {first}"
        assert named in tampered.stdout
        assert any(line.startswith("desk desk:0 seq ") and "payment pay_2: amount_paise 150000 in the chain,"
                   " 1 in the table" in line for line in lines), lines
        assert lines[2].startswith("TAMPERED: 2 finding(s): 10 chains"), lines
