"""The audit chain's operations: the signing key, signed checkpoints, and verifying a whole node.

The chain itself lives in the storage layer (storage/audit.py: its encoding and verification). This
module is what runs on top of it:

- **Key.** An Ed25519 private key in a PEM file (``[audit] key_file``, default
  ``<data_dir>/audit/signing.key``, created mode 0600 on first use). ``jodo audit pubkey`` prints the
  public key to publish; a verifier needs only that.
- **Checkpoints.** Every ``[audit] checkpoint_every_s`` the node (`Checkpointer`, a thread of the
  serving process) reads the head of every chain of every store (the heads tables: no chain is
  walked), signs them and stores the checkpoint in the desk store's checkpoint outbox; it is then
  appended to ``<data_dir>/outbox/audit-checkpoints.jsonl`` (one JSON object a line: body,
  signature, key id) and marked sent. Ship that file off-site: a database rewritten whole, hashes
  and all, no longer reproduces a checkpoint kept elsewhere.
- **Verify.** `verify` walks every chain and row (storage/audit.py), checks every stored
  checkpoint's signature, and that the chains still reproduce the newest stored checkpoint and,
  with ``--from-checkpoint F``, the checkpoints in F (an off-site copy).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from jodo.config import Config
from storage import StorageError, backend
from storage.audit import (
    DESK_STORE,
    AuditSource,
    ChainHead,
    CheckpointStore,
    Finding,
    Verdict,
    audit_store_name,
    checkpoint_body,
    parse_checkpoint_body,
    verify_checkpoint_heads,
)
from storage.sqlite import desk_path, shard_group_path

__all__ = [
    "CHECKPOINT_FILE",
    "AuditStores",
    "Checkpointer",
    "Report",
    "SignedCheckpoint",
    "key_id",
    "key_path",
    "load_or_create_key",
    "load_public_key",
    "open_stores",
    "public_pem",
    "read_checkpoint_file",
    "verify",
    "write_checkpoint",
]

log = logging.getLogger("jodo.audit")
CHECKPOINT_FILE = "audit-checkpoints.jsonl"
_CHECKED = 100  # stored checkpoints whose signatures verify checks (newest first)


# ---------------------------------------------------------------- keys


def key_path(config: Config) -> Path:
    return config.audit.key_file or config.node.data_dir / "audit" / "signing.key"


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The private key in `path` (PEM, PKCS#8); a new one is written there (mode 0600) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with contextlib.suppress(FileExistsError):  # another process made it first: use that one
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            log.info("audit: created the checkpoint signing key %s", path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key from a PEM file holding either the public key or the private key."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 key")
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return public


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 of the raw public key: names the key in each checkpoint."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# ---------------------------------------------------------------- stores


@dataclass
class AuditStores:
    """The desk store and every shard group's store of a node (or of the cluster's database)."""

    desk: CheckpointStore
    shards: list[tuple[str, AuditSource]] = field(default_factory=list)  # (store name, store)
    missing: list[int] = field(default_factory=list)  # SQLite groups with no file yet

    def named(self) -> list[tuple[str, AuditSource]]:
        return [(DESK_STORE, self.desk), *self.shards]

    def all(self) -> list[AuditSource]:
        return [store for _name, store in self.named()]

    def close(self) -> None:
        for store in self.all():
            cast(Any, store).close()


@contextlib.contextmanager
def open_stores(config: Config) -> Iterator[AuditStores]:
    """Open the desk and every shard group's store read for audit (SQLite groups without a file are
    skipped: nothing was ever written there). Raises StorageError."""
    kind = config.storage.backend
    chosen: Any = backend(kind)
    location: Any = config.storage.resolved_dsn() if kind == "postgresql" else config.node.data_dir
    if kind == "sqlite" and not desk_path(location).exists():
        raise FileNotFoundError(f"no desk store at {desk_path(location)}: wrong [node] data_dir?")
    stores = AuditStores(desk=chosen.open_desk_store(location))
    try:
        for group in range(config.shards.groups):
            if kind == "sqlite" and not shard_group_path(location, group).exists():
                stores.missing.append(group)
                continue
            stores.shards.append((audit_store_name(group), chosen.open_shard_store(location, group)))
        yield stores
    finally:
        stores.close()


def chain_heads(stores: AuditStores) -> list[ChainHead]:
    return [head for store in stores.all() for head in store.audit_heads()]


# ---------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    body: bytes
    signature: bytes
    label: str  # where it came from, for messages ("checkpoint 12", "file F line 3")

    def line(self) -> str:
        return json.dumps({"body": self.body.decode(), "signature": self.signature.hex()}, sort_keys=True)


def write_checkpoint(stores: AuditStores, key: Ed25519PrivateKey, *, at: int, outbox_dir: Path) -> int:
    """Sign the heads of every chain, store the checkpoint, ship every unsent one to the outbox file;
    returns the new checkpoint's id."""
    heads = chain_heads(stores)
    body = checkpoint_body(heads, at=at, key_id=key_id(key))
    checkpoint_id = stores.desk.put_audit_checkpoint(at=at, body=body, signature=key.sign(body))
    unsent = sorted(stores.desk.audit_checkpoints(unsent=True, limit=1_000), key=lambda c: c.id)
    if unsent:
        outbox_dir.mkdir(parents=True, exist_ok=True)
        with (outbox_dir / CHECKPOINT_FILE).open("a", encoding="utf-8") as f:
            f.write("".join(SignedCheckpoint(c.body, c.signature, "").line() + "\n" for c in unsent))
            f.flush()
            os.fsync(f.fileno())
        stores.desk.mark_checkpoints_sent([c.id for c in unsent], at=at)
    return checkpoint_id


def read_checkpoint_file(path: Path) -> list[SignedCheckpoint]:
    """The checkpoints in a JSON-lines file (the outbox file, or an off-site copy of it)."""
    out = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            doc = json.loads(text)
            out.append(SignedCheckpoint(doc["body"].encode(), bytes.fromhex(doc["signature"]),
                                        f"{path.name} line {number}"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} line {number}: not a checkpoint ({exc})") from None
    return out


# ---------------------------------------------------------------- verify


@dataclass
class Report:
    verdict: Verdict
    checkpoints_checked: int = 0
    newest_checkpoint_at: int | None = None
    missing_groups: list[int] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.verdict.intact

    def lines(self) -> list[str]:
        v = self.verdict
        out = [f.line() for f in v.findings]
        chains = len(v.heads)
        head = "INTACT" if v.intact else f"TAMPERED: {len(v.findings)} finding(s)"
        out.append(f"{head}: {chains} chains, {v.records} records verified, {self.checkpoints_checked}"
                   f" checkpoint(s) checked" + (f", newest at {self.newest_checkpoint_at}"
                                                if self.newest_checkpoint_at is not None else ""))
        out += [f"note: {n}" for n in v.notes]
        if self.missing_groups:
            out.append(f"note: shard groups {self.missing_groups} have no store yet (nothing written)")
        return out


def _signature_findings(
    checkpoints: Sequence[SignedCheckpoint], keys: dict[str, Ed25519PublicKey]
) -> tuple[list[Finding], list[tuple[SignedCheckpoint, int, list[ChainHead]]]]:
    """Findings for checkpoints whose signature fails, and the valid ones parsed."""
    findings, valid = [], []
    for c in checkpoints:
        try:
            at, kid, heads = parse_checkpoint_body(c.body)
        except (ValueError, KeyError, TypeError) as exc:
            findings.append(Finding(store=DESK_STORE, chain="checkpoints", seq=0, what="edited",
                                    detail=f"{c.label}: the body is not a checkpoint ({exc})"))
            continue
        key = keys.get(kid)
        if key is None:
            findings.append(Finding(store=DESK_STORE, chain="checkpoints", seq=0, what="edited",
                                    detail=f"{c.label}: signed by key {kid}, not the key given"))
            continue
        try:
            key.verify(c.signature, c.body)
        except InvalidSignature:
            findings.append(Finding(store=DESK_STORE, chain="checkpoints", seq=0, what="edited",
                                    detail=f"{c.label}: the signature does not verify"
                                    " (body or signature edited)"))
            continue
        valid.append((c, at, heads))
    return findings, valid


def verify(
    stores: AuditStores, public_key: Ed25519PublicKey, *, from_checkpoints: Sequence[SignedCheckpoint] = ()
) -> Report:
    """Verify every chain and row, every stored checkpoint's signature, and that the chains still
    reproduce the newest stored checkpoint and every checkpoint in `from_checkpoints`."""
    stored = stores.desk.audit_checkpoints(limit=_CHECKED)
    ours = [SignedCheckpoint(c.body, c.signature, f"checkpoint {c.id}") for c in stored]
    keys = {key_id(public_key): public_key}
    findings, valid = _signature_findings([*ours, *from_checkpoints], keys)
    external = {id(c) for c in from_checkpoints}
    # the newest valid stored checkpoint, and every one given from outside, must still be reproduced
    to_match = [v for v in valid if id(v[0]) in external]
    newest_stored = [v for v in valid if id(v[0]) not in external][:1]
    to_match += newest_stored
    wanted: dict[str, set[tuple[str, int]]] = {}
    for _c, _at, heads in to_match:
        for h in heads:
            wanted.setdefault(h.store, set()).add((h.chain, h.seq))
    verdict = Verdict()
    for name, store in stores.named():
        verdict.extend(store.audit_verify(wanted.get(name, set())))
    current = {(h.store, h.chain): h for h in verdict.heads}
    broken = {(f.store, f.chain) for f in verdict.findings}  # already named: not again per checkpoint
    for c, _at, heads in to_match:
        unbroken = [h for h in heads if (h.store, h.chain) not in broken]
        verdict.findings.extend(verify_checkpoint_heads(c.label, unbroken, verdict.hash_at, current))
    verdict.findings[:0] = findings
    newest = max((at for _c, at, _h in valid), default=None)
    return Report(verdict=verdict, checkpoints_checked=len(ours) + len(from_checkpoints),
                  newest_checkpoint_at=newest, missing_groups=list(stores.missing))


# ---------------------------------------------------------------- the node's checkpointer


#: the first checkpoint waits this long after start (at most one period): a starting node's shards
#: open their stores then, and a checkpoint opens every group's store too (PostgreSQL: a connection and
#: a migration check each, under one advisory lock the whole cluster shares)
FIRST_AFTER_S = 30.0


class Checkpointer:
    """A daemon thread of the serving process: a checkpoint `FIRST_AFTER_S` after start (or one
    period, if shorter) and every `every_s` after. A failure is logged and counted
    (jodo_audit_checkpoints_total{outcome="failed"}) and retried on the next period; the node keeps
    serving."""

    def __init__(self, config: Config, *, clock: Any = time.time) -> None:
        self.config = config
        self.every_s = config.audit.checkpoint_every_s
        self.first_after_s = min(self.every_s, FIRST_AFTER_S)
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jodo-audit-checkpoints", daemon=True)
        self.last_id: int | None = None

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def once(self) -> int:
        from telemetry import metrics

        key = load_or_create_key(key_path(self.config))
        at = int(self.clock())
        with open_stores(self.config) as stores:
            checkpoint_id = write_checkpoint(stores, key, at=at,
                                             outbox_dir=self.config.node.data_dir / "outbox")
            heads = chain_heads(stores)
        metrics.audit_checkpoint_written(at, heads)
        log.info("audit: checkpoint %d signed %d chain heads", checkpoint_id, len(heads))
        self.last_id = checkpoint_id
        return checkpoint_id

    def _run(self) -> None:
        from telemetry import metrics

        self._stop.wait(self.first_after_s)
        while not self._stop.is_set():
            wait = self.every_s
            try:
                self.once()
            except FileNotFoundError:  # the node has not created its desk store yet: soon
                wait = min(1.0, self.every_s)
            except (StorageError, OSError, ValueError) as exc:
                metrics.audit_checkpoint_failed()
                log.error("audit: checkpoint failed: %s: %s", type(exc).__name__, exc)
            self._stop.wait(wait)
