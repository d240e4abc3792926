"""A local admin token without ceremony, for a node only this machine can reach.

When ``[tokens] admin`` is not configured and the front door binds only loopback (and the node is
not a cluster member), `jodo serve` creates a random token in ``<data_dir>/admin.token`` (mode 0600,
reused on the next start) and says so; every `jodo` command run with the same config (so the same
data dir) reads it from there. A front door bound beyond loopback gets no such token: its admin API
stays off (403) until a token is configured, as before.

    config, note = with_local_admin_token(config)   # jodo serve, before the node starts
    token = admin_token(config)                     # the CLI: configured, else the local file
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import stat
from pathlib import Path

from jodo.config import Config, Secret

__all__ = ["TOKEN_FILE", "admin_token", "loopback_only", "token_path", "with_local_admin_token"]

TOKEN_FILE = "admin.token"


def loopback_only(config: Config) -> bool:
    """True when the front door can be reached from this machine only (and no cluster peer needs it)."""
    if config.cluster.enabled:
        return False
    host = config.http.host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond loopback


def token_path(config: Config) -> Path:
    """Where the local admin token lives for this config."""
    return config.node.data_dir.resolve() / TOKEN_FILE


def with_local_admin_token(config: Config) -> tuple[Config, str]:
    """``config`` with an admin token (the configured one, else the local file's, created if need be)
    and a sentence for the operator. Raises OSError if the data dir or the file cannot be written."""
    if config.tokens.admin is not None:
        return config, "admin API: token from [tokens] admin"
    if not loopback_only(config):
        return config, (f"admin API off: no [tokens] admin configured and the front door binds "
                        f"{config.http.host}, beyond loopback (configure one: JODO_TOKENS__ADMIN)")
    path = token_path(config)
    token = _read(path)
    if token is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # an empty file: start again
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        note = f"admin API: no [tokens] admin configured, loopback only: created a local token in {path}"
    else:
        note = f"admin API: no [tokens] admin configured, loopback only: using the local token in {path}"
    tokens = dataclasses.replace(config.tokens, admin=Secret(token))
    return dataclasses.replace(config, tokens=tokens), note + " (jodo commands with this config find it)"


def admin_token(config: Config) -> str | None:
    """The admin token a `jodo` command sends: the configured one, else the local file's, else None."""
    if config.tokens.admin is not None:
        return config.tokens.admin.reveal()
    if not loopback_only(config):
        return None
    try:
        return _read(token_path(config))
    except OSError:
        return None


def _read(path: Path) -> str | None:
    """The token in ``path``, None if there is none; OSError if it is readable by others (0600 only)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{path} has mode {stat.S_IMODE(info.st_mode):o}: only 600 is used "
                              "(chmod 600 it, or delete it and restart jodo serve)")
    token = path.read_text(encoding="utf-8").strip()
    return token or None
