"""`jodo audit verify | pubkey | checkpoint`: the audit chain from the command line (jodo/audit.py).

Reads the stores directly (the SQLite files under ``[node] data_dir``, or the PostgreSQL database of
``[storage]``), so it works with the node running or stopped. Exit status of ``verify``: 0 intact
(a summary is printed), 1 tampered (each finding names store, chain, seq and what differs), 2 a
usage error (no store, no key).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from jodo import audit
from jodo.config import Config
from storage import StorageError

__all__ = ["add_arguments", "run"]


def add_arguments(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("audit", help="the tamper-evident audit chain: verify, public key, checkpoint")
    views = parser.add_subparsers(dest="view", required=True, metavar="VIEW")
    check = views.add_parser("verify", parents=[common],
                             help="walk every chain and row; name the first edited, deleted, inserted or"
                                  " reordered record (exit 1)")
    check.add_argument("--from-checkpoint", type=Path, default=None, metavar="F",
                       help="a checkpoint file kept off-site (JSON lines, as the node's outbox writes them):"
                            " the chains must still reproduce each of its checkpoints")
    check.add_argument("--public-key", type=Path, default=None, metavar="PEM",
                       help="verify signatures with this public key (default: the one of [audit] key_file)")
    views.add_parser("pubkey", parents=[common], help="print the checkpoint signing key's public key (PEM)")
    views.add_parser("checkpoint", parents=[common], help="sign and store a checkpoint now")


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        if args.view == "pubkey":
            print(audit.public_pem(audit.load_or_create_key(audit.key_path(config))), end="")
            return 0
        if args.view == "checkpoint":
            with audit.open_stores(config) as stores:
                key = audit.load_or_create_key(audit.key_path(config))
                number = audit.write_checkpoint(stores, key, at=int(time.time()),
                                                outbox_dir=config.node.data_dir / "outbox")
            print(f"checkpoint {number} written")
            return 0
        public = (audit.load_public_key(args.public_key) if args.public_key
                  else audit.load_or_create_key(audit.key_path(config)).public_key())
        given = audit.read_checkpoint_file(args.from_checkpoint) if args.from_checkpoint else []
        with audit.open_stores(config) as stores:
            report = audit.verify(stores, public, from_checkpoints=given)
    except (OSError, ValueError) as exc:
        print(f"jodo audit {args.view}: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"jodo audit {args.view}: storage: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    return 0 if report.intact else 1
