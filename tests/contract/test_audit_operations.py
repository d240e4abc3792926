"""The node's checkpointer and the `jodo audit` commands on real SQLite stores: a checkpoint at start
with its key created mode 0600, shipped to the outbox file and counted; a failure counted and retried;
the CLI's exit statuses."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from jodo import audit
from jodo.cli import main
from jodo.config import Config, load_config
from storage import NewEvent, NewPayment, open_desk_store, open_shard_store
from telemetry import metrics


def _config(data: Path, **env: str) -> Config:
    return load_config(None, env={"JODO_NODE__DATA_DIR": str(data), "JODO_SHARDS__GROUPS": "2", **env})


def _write(data: Path) -> None:
    with open_shard_store(data, 1) as store:
        store.commit([NewEvent(shard=7, account="a", kind="RelayCommandIssued", ref="c1", at=5, body=b"x")])
    with open_desk_store(data) as desk:
        desk.record_payments([NewPayment(payment_id="p1", gateway="g", event_id=None, account="a",
                                         amount_paise=100, channel="upi", paid_at=1, received_at=1,
                                         body=b"{}")], at=5)


@pytest.fixture(autouse=True)
def _series() -> None:
    metrics.configure_labels(gateways=[], head_ends=[])  # every labelled series exists, as on a node


def _sample(name: str, **labels: str) -> float:
    for family in metrics._REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_the_checkpointer_signs_ships_and_counts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data)
    written = _sample("jodo_audit_checkpoints_total", outcome="written")
    checkpointer = audit.Checkpointer(_config(data), clock=lambda: 1_234)
    assert checkpointer.once() == 1
    key = data / "audit" / "signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    [shipped] = audit.read_checkpoint_file(data / "outbox" / audit.CHECKPOINT_FILE)
    assert b'"at":1234' in shipped.body
    assert _sample("jodo_audit_checkpoints_total", outcome="written") == written + 1
    assert _sample("jodo_audit_last_checkpoint_timestamp_seconds") == 1_234
    assert _sample("jodo_audit_chains", kind="journal") == 1
    assert _sample("jodo_audit_chains", kind="desk") == 1
    assert _sample("jodo_audit_chain_records", kind="journal") == 1


def test_a_failed_checkpoint_is_counted_and_the_thread_keeps_going(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data)
    bad_key = tmp_path / "not-a-key.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    failed = _sample("jodo_audit_checkpoints_total", outcome="failed")
    checkpointer = audit.Checkpointer(_config(data, JODO_AUDIT__KEY_FILE=str(bad_key),
                                              JODO_AUDIT__CHECKPOINT_EVERY_S="1")).start()
    try:
        deadline = time.monotonic() + 10
        while _sample("jodo_audit_checkpoints_total", outcome="failed") < failed + 2:
            assert time.monotonic() < deadline, "no second failed attempt within 10 s"
            time.sleep(0.05)
    finally:
        checkpointer.stop()
    assert not (data / "outbox" / audit.CHECKPOINT_FILE).exists()  # nothing signed with a broken key


def test_the_cli_verifies_checkpoints_and_prints_the_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("JODO_NODE__DATA_DIR", str(data))
    monkeypatch.setenv("JODO_SHARDS__GROUPS", "2")
    monkeypatch.delenv("JODO_CONFIG", raising=False)
    assert main(["audit", "verify"]) == 2  # no store there yet
    assert "no desk store" in capsys.readouterr().err
    _write(data)
    assert main(["audit", "checkpoint"]) == 0
    assert main(["audit", "pubkey"]) == 0
    pem = capsys.readouterr().out.split("written\n", 1)[1]
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    (tmp_path / "pub.pem").write_text(pem)
    off_site = data / "outbox" / audit.CHECKPOINT_FILE
    assert main(["audit", "verify", "--public-key", str(tmp_path / "pub.pem"),
                 "--from-checkpoint", str(off_site)]) == 0
    out = capsys.readouterr().out
    assert "INTACT: 2 chains, 3 records verified, 2 checkpoint(s) checked" in out
    assert "note: shard groups [0] have no store yet (nothing written)" in out
