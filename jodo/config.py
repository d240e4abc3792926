"""Node configuration: one TOML file plus ``JODO_*`` environment overrides, as frozen dataclasses.

Every key has a default, so ``load_config()`` with no file and no variables gives a working
single-node configuration on 127.0.0.1 (no gateways and no tokens: webhooks answer 404, admin 403).

File (see ``deploy/jodo.example.toml``)::

    [node]      data_dir, bind, admin_port, start_timeout_s
    [http]      host, port, max_body_bytes, max_batch_body_bytes, max_batch_items,
                batch_window_ms, batch_max_items, max_in_flight, max_batches_in_flight,
                submit_timeout_s
    [shards]    logical, groups
    [[head_ends]]        name, kind ("sim" | "reference" | "dlms" | "cim"), host, port, rate_limit_per_s,
                         dlms_* (kind "dlms": docs/dlms.md), cim_* (kind "cim": docs/cim.md)
    [gateways.<name>]    format ("razorpay" | "jodo"), secret, account_field, tolerance_s, cashless
    [gateways.<name>.reconcile]  enabled, every_s, window_s, settle_s, key_id, key_secret,
                         key_secret_file, base_url, timeout_s (razorpay only; jodo/reconcile/)
    [tokens]    admin, payments
    [logging]   level, format ("json" | "text")
    [policy]    path
    [storage]   backend ("sqlite" | "postgresql"), dsn, dsn_file
    [cluster]   enabled, node_id, advertise, lease_ttl_s, renew_every_s, suspect_after_s, max_moves
    [audit]     key_file, checkpoint_every_s

Environment overrides, applied after the file: ``JODO_<SECTION>__<KEY>`` (two underscores between
parts, names case-insensitive)::

    JODO_HTTP__PORT=8081                    [http] port = 8081
    JODO_TOKENS__ADMIN=...                  [tokens] admin
    JODO_GATEWAYS__RAZORPAY__SECRET=...     [gateways.razorpay] secret (creates the gateway if new)
    JODO_GATEWAYS__RAZORPAY__RECONCILE__KEY_SECRET=...   [gateways.razorpay.reconcile] key_secret
    JODO_HEAD_ENDS__0__PORT=9000            port of the first [[head_ends]]; index len(list) appends one
    JODO_TOKENS__ADMIN=                     an empty value unsets an optional key

Values from the environment are parsed to the key's type (``true``/``false``/``1``/``0`` for booleans).
``JODO_CONFIG`` names the file when no path is given. A variable that looks like an override but has a
single underscore (``JODO_HTTP_PORT``) is an error rather than silently ignored.

Relative paths in the file are relative to the file's directory; from the environment or the defaults,
to the working directory. Secrets (gateway secrets, tokens) are `Secret` objects: their repr and str are
``***``; call `Secret.reveal` where the value is used. `Config.redacted` is what ``jodo config show``
prints.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jodo.errors import ConfigError
from protocols.cim import CimGatewayOptions
from protocols.dlms import DlmsGatewayOptions

__all__ = [
    "AuditConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DisconnectsConfig",
    "FrozenMap",
    "GatewayConfig",
    "HeadEndConfig",
    "HttpConfig",
    "LoggingConfig",
    "NodeConfig",
    "PolicyConfig",
    "ReconcileConfig",
    "Secret",
    "ShardsConfig",
    "StorageConfig",
    "TokensConfig",
    "load_config",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
_MIN_TOKEN_CHARS = 16


class Secret:
    """A configured secret. Prints as ``***`` everywhere; `reveal` gives the value to the code using it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The secret itself: use it, never log or format it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


class FrozenMap(Mapping[str, "GatewayConfig"]):
    """A read-only, picklable name → gateway mapping (``types.MappingProxyType`` does not pickle, and a
    Config may travel to actors in an init message)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, GatewayConfig] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> GatewayConfig:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))


def _key(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A config key: its default and checks (``min``, ``max``, ``upper``, ``min_len``) as metadata."""
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """``[node]``: this node's data directory and the interface/port of Thespian's admin."""

    data_dir: Path = Path("./data")
    bind: str = "127.0.0.1"
    admin_port: int = _key(1900, min=1, max=65535)  # Thespian multiprocTCPBase's conventional admin port
    # how long the tree may take to be ready: each shard group loads its snapshots first, ~9 µs of CPU
    # per meter (bench/bench_fleet.py): 1 crore meters took 48.5 s on 2 idle cores, 100-200 s loaded
    start_timeout_s: float = _key(600.0, min=1.0, max=86_400.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    """``[http]``: the front door's listener, body limits and webhook micro-batching."""

    host: str = "127.0.0.1"
    port: int = _key(8080, min=0, max=65535)  # 0: any free port (tests)
    max_body_bytes: int = _key(64 * 1024, min=256, max=16 * 1024 * 1024)  # one webhook
    max_batch_body_bytes: int = _key(8 * 1024 * 1024, min=1024, max=256 * 1024 * 1024)  # /v1/payments
    max_batch_items: int = _key(10_000, min=1, max=1_000_000)  # items in one /v1/payments request
    batch_window_ms: float = _key(2.0, min=0.0, max=1000.0)  # how long a webhook waits for company
    batch_max_items: int = _key(256, min=1, max=100_000)  # a full window is submitted at once
    max_in_flight: int = _key(20_000, min=1, max=10_000_000)  # webhooks waiting: more → 503
    max_batches_in_flight: int = _key(4, min=1, max=1024)  # concurrent submit_payments calls
    submit_timeout_s: float = _key(5.0, min=0.1, max=600.0)  # Razorpay wants a reply within 5 s


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardsConfig:
    """``[shards]``: logical shard count (fixed for the fleet's life) and MeterShard groups."""

    logical: int = _key(256, min=1, max=65_536)
    groups: int = _key(2, min=1, max=65_536)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadEndConfig:
    """One ``[[head_ends]]`` entry: a head-end system the gateway actors talk to."""

    name: str = _key(pattern=_NAME)
    kind: Literal["sim", "reference", "dlms", "cim"] = "sim"
    host: str = "127.0.0.1"
    port: int = _key(min=1, max=65535)
    rate_limit_per_s: float = _key(200.0, min=0.001, max=1_000_000.0)  # commands per second
    # kind = "dlms" (docs/dlms.md): LLS password (or a file holding it), client SAP, meter addressing
    dlms_password: Secret | None = None
    dlms_password_file: Path | None = None
    dlms_client_wport: int = _key(16, min=1, max=65535)
    dlms_wport_base: int = _key(256, min=0, max=65535)
    dlms_address_book: Path | None = None  # serial,wport CSV; unset = wport_base + trailing digits
    dlms_pool_size: int = _key(64, min=1, max=10_000)
    dlms_response_timeout_s: float = _key(3.0, min=0.01, max=600.0)
    # kind = "cim" (docs/cim.md): the HES's EndDeviceControls URL, jodo's callback listener, its token
    cim_url: str = ""
    cim_callback_host: str = "127.0.0.1"
    cim_callback_port: int = _key(8470, min=1, max=65535)
    cim_callback_url: str = ""  # the ReplyAddress the HES is given; "" = http://host:port/cim/events
    cim_token: Secret | None = None
    cim_token_file: Path | None = None
    cim_max_batch: int = _key(500, min=1, max=100_000)
    cim_callback_timeout_s: float = _key(120.0, min=0.1, max=86_400.0)

    def cim_options(self) -> CimGatewayOptions | None:
        """The gateway's CIM options (kind "cim"), the token read from its file; else None."""
        if self.kind != "cim":
            return None
        token = self.cim_token.reveal() if self.cim_token is not None else None
        if token is None and self.cim_token_file is not None:
            try:
                token = self.cim_token_file.read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise ConfigError(f"head_ends.{self.name}.cim_token_file: cannot read "
                                  f"{self.cim_token_file}: {exc.strerror}") from None
        if not self.cim_url.startswith(("http://", "https://")):
            raise ConfigError(f"head_ends.{self.name}.cim_url: an http(s) URL is needed for kind \"cim\"")
        if not token:
            raise ConfigError(f"head_ends.{self.name}: kind \"cim\" needs cim_token or cim_token_file "
                              "(the head-end's callbacks are refused without it)")
        return CimGatewayOptions(
            url=self.cim_url, callback_host=self.cim_callback_host, callback_port=self.cim_callback_port,
            callback_url=self.cim_callback_url, token=token, max_batch=self.cim_max_batch,
            callback_timeout=self.cim_callback_timeout_s,
        )

    def dlms_options(self) -> DlmsGatewayOptions | None:
        """The gateway's DLMS options (kind "dlms"), the password read from its file; else None."""
        if self.kind != "dlms":
            return None
        password = self.dlms_password.reveal() if self.dlms_password is not None else None
        if password is None and self.dlms_password_file is not None:
            try:
                password = self.dlms_password_file.read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise ConfigError(f"head_ends.{self.name}.dlms_password_file: cannot read "
                                  f"{self.dlms_password_file}: {exc.strerror}") from None
        return DlmsGatewayOptions(
            password=password, client_wport=self.dlms_client_wport, wport_base=self.dlms_wport_base,
            address_book=str(self.dlms_address_book or ""), pool_size=self.dlms_pool_size,
            response_timeout=self.dlms_response_timeout_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileConfig:
    """``[gateways.<name>.reconcile]``: pull the gateway's captured payments through its own API and
    credit those whose webhook was lost (`jodo.reconcile`). Razorpay format only.

    ``enabled`` unset: on exactly when API credentials are given (``key_id`` and ``key_secret`` or
    ``key_secret_file``: the API key, not the webhook secret). Each run reads
    [now - window_s, now - settle_s]: Razorpay retries a webhook for 24 h and then gives up
    (research/domain.md §6.2), so a payment still missing after a day will never be notified.
    """

    enabled: bool | None = None
    every_s: float = _key(300.0, min=1.0, max=86_400.0)  # a lost webhook leaves a consumer dark this long
    window_s: float = _key(86_400.0, min=60.0, max=31 * 86_400.0)
    settle_s: float = _key(60.0, min=0.0, max=3_600.0)  # webhooks of the last minute are still in flight
    key_id: str | None = None
    key_secret: Secret | None = None
    key_secret_file: Path | None = None
    base_url: str = "https://api.razorpay.com"
    timeout_s: float = _key(10.0, min=0.5, max=120.0)  # per API request

    @property
    def has_credentials(self) -> bool:
        return self.key_id is not None and (self.key_secret is not None or self.key_secret_file is not None)

    @property
    def active(self) -> bool:
        return self.has_credentials if self.enabled is None else self.enabled

    def resolved_secret(self) -> Secret:
        """The API key secret (``key_secret``, else read from ``key_secret_file``); ConfigError if none."""
        if self.key_secret is not None:
            return self.key_secret
        if self.key_secret_file is None:
            raise ConfigError("reconcile: no key_secret or key_secret_file")
        try:
            text = self.key_secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"reconcile.key_secret_file: cannot read {self.key_secret_file}: "
                              f"{exc.strerror}") from None
        if not text:
            raise ConfigError(f"reconcile.key_secret_file: {self.key_secret_file} is empty")
        return Secret(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """One ``[gateways.<name>]`` section; ``<name>`` is the ``{gateway}`` of ``/v1/webhooks/{gateway}``."""

    name: str = _key(pattern=_NAME)
    format: Literal["razorpay", "jodo"]
    secret: Secret
    account_field: str = "account"  # razorpay: the payment's notes[<field>] holds the consumer account
    tolerance_s: int = _key(300, min=1, max=86_400)  # jodo: |now - t| allowed in Jodo-Signature
    cashless: bool = True  # online gateways are cashless (earns the regulator's rebate)
    reconcile: ReconcileConfig = field(default=ReconcileConfig(), metadata={"derived": True})  # sub-table


@dataclass(frozen=True, slots=True, kw_only=True)
class TokensConfig:
    """``[tokens]``: bearer tokens. Unset → that API is disabled (403), never open."""

    admin: Secret | None = field(default=None, metadata={"min_len": _MIN_TOKEN_CHARS})
    payments: Secret | None = field(default=None, metadata={"min_len": _MIN_TOKEN_CHARS})


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    """``[logging]``: level name and line format."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = _key("INFO", upper=True)
    format: Literal["json", "text"] = "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """``[policy]``: the tariff/rollout policy file (parsed by domain/); ``text`` is read at load."""

    path: Path | None = None
    text: str | None = _key(None, derived=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """``[storage]``: where durable state lives. SQLite files under the data dir (one node), or one
    PostgreSQL database shared by every node of a cluster (``dsn``, or ``dsn_file``: a file holding
    the DSN, so the password stays out of the config; either way it is never logged)."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    dsn: Secret | None = None
    dsn_file: Path | None = None

    def resolved_dsn(self) -> str | None:
        """The DSN to connect with (from ``dsn``, else read from ``dsn_file``), or None."""
        if self.dsn is not None:
            return self.dsn.reveal()
        if self.dsn_file is not None:
            try:
                dsn = self.dsn_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"storage.dsn_file: cannot read {self.dsn_file}: {exc.strerror}") from None
            if not dsn:
                raise ConfigError(f"storage.dsn_file: {self.dsn_file} is empty")
            return dsn
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """``[cluster]``: this node as a member of a cluster over one PostgreSQL (docs/cluster.md).

    Failure detection is the lease: a node that stops renewing loses its shard groups
    ``lease_ttl_s`` after its last renewal and the survivors take them on their next tick
    (``renew_every_s``). Orleans detects a dead silo in ~15 s and Akka's split-brain resolver waits
    20 s (research/cluster-and-prepaid.md); 3 s + 1 s here keeps failover under the 5 s objective,
    at the price of a node pausing > 2 s (GC, a stalled disk) losing its groups and recovering them.
    """

    enabled: bool = False
    node_id: str = ""  # unique in the cluster; letters, digits, '-', '_'
    advertise: str = ""  # the address peers and operators reach this node's front door on
    lease_ttl_s: float = _key(3.0, min=0.5, max=600.0)
    renew_every_s: float = _key(1.0, min=0.05, max=60.0)
    suspect_after_s: float = _key(3.0, min=0.1, max=3600.0)  # heartbeat older than this: not live
    max_moves: int = _key(1, min=1, max=1024)  # hand-overs a node starts per tick when rebalancing


@dataclass(frozen=True, slots=True, kw_only=True)
class DisconnectsConfig:
    """``[disconnects]``: the mass-disconnect guard (domain/guard.py; every default is ours)."""

    guard: bool = True  # false: automatic disconnections leave at once, never paced or held
    wave_size: int = _key(500, min=1, max=1_000_000)  # per head-end per step
    wave_spacing_s: float = _key(60.0, min=0.0, max=86_400.0)
    max_per_hour: int = _key(2000, min=1, max=100_000_000)  # per head-end, in the last window_s
    max_per_hour_total: int = _key(5000, min=1, max=100_000_000)  # this node's head-ends together
    approvals_required: int = _key(1, min=1, max=2)  # distinct approvers of a held wave
    window_s: float = _key(3600.0, min=1.0, max=7 * 86_400.0)

    def policy_json(self) -> str:
        """What each gateway gets (GatewayInit.guard): "" when the guard is off."""
        if not self.guard:
            return ""
        import json

        return json.dumps({
            "enabled": True, "wave_size": self.wave_size, "wave_spacing_s": self.wave_spacing_s,
            "max_per_hour": self.max_per_hour, "max_per_hour_total": self.max_per_hour_total,
            "approvals_required": self.approvals_required, "window_s": self.window_s,
        })


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    """``[audit]``: the audit chain's signed checkpoints (jodo/audit.py). ``key_file`` is the Ed25519
    private key (PEM; default ``<data_dir>/audit/signing.key``, created mode 0600 on first use)."""

    key_file: Path | None = None
    checkpoint_every_s: float = _key(300.0, min=1.0, max=86_400.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole node configuration. Build it with `load_config`."""

    node: NodeConfig = NodeConfig()
    http: HttpConfig = HttpConfig()
    shards: ShardsConfig = ShardsConfig()
    head_ends: tuple[HeadEndConfig, ...] = ()
    gateways: Mapping[str, GatewayConfig] = field(default_factory=FrozenMap)
    tokens: TokensConfig = TokensConfig()
    logging: LoggingConfig = LoggingConfig()
    policy: PolicyConfig = PolicyConfig()
    storage: StorageConfig = StorageConfig()
    cluster: ClusterConfig = ClusterConfig()
    disconnects: DisconnectsConfig = DisconnectsConfig()
    audit: AuditConfig = AuditConfig()
    source: Path | None = None  # the file it came from, if any

    def redacted(self) -> dict[str, Any]:
        """Plain JSON/TOML-able data with every secret replaced by ``"***"`` (for ``jodo config show``)."""
        out = {
            name: _plain(getattr(self, name))
            for name in ("node", "http", "shards", "head_ends", "gateways", "tokens", "logging", "storage",
                         "cluster", "disconnects", "audit")
        }
        out["policy"] = {"path": _plain(self.policy.path)}  # the policy text is domain/'s to show
        out["source"] = _plain(self.source)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- loading


class _EnvValue(str):
    """A raw string from a ``JODO_*`` variable: parsed to the key's type, and named in errors."""

    var: str

    def __new__(cls, value: str, var: str) -> _EnvValue:
        obj = super().__new__(cls, value)
        obj.var = var
        return obj


_SECTIONS: dict[str, type[Any]] = {
    "node": NodeConfig,
    "http": HttpConfig,
    "shards": ShardsConfig,
    "tokens": TokensConfig,
    "logging": LoggingConfig,
    "policy": PolicyConfig,
    "storage": StorageConfig,
    "cluster": ClusterConfig,
    "disconnects": DisconnectsConfig,
    "audit": AuditConfig,
}
_ALL_SECTIONS = (*_SECTIONS, "head_ends", "gateways")
_DEFAULT_HEAD_END = {"name": "hes-sim", "kind": "sim", "host": "127.0.0.1", "port": 8471}
_LOOKS_LIKE_OVERRIDE = re.compile(
    r"^JODO_(" + "|".join(s.upper() for s in _ALL_SECTIONS) + r")_[A-Z0-9]", re.IGNORECASE
)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or ``$JODO_CONFIG``, or nothing) and apply ``JODO_*`` overrides from ``env``.

    ``env`` defaults to ``os.environ``; pass ``{}`` to ignore the environment. Raises `ConfigError`
    naming the key and its file or variable.
    """
    env = os.environ if env is None else env
    if path is None and env.get("JODO_CONFIG"):
        path = env["JODO_CONFIG"]
    source = Path(path) if path is not None else None
    raw: dict[str, Any] = _read_file(source) if source is not None else {}
    raw.setdefault("head_ends", [dict(_DEFAULT_HEAD_END)])
    _apply_env(raw, env)
    return _build_config(raw, source)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for var in sorted(env):
        if not var.upper().startswith("JODO_"):
            continue
        if "__" not in var:
            if _LOOKS_LIKE_OVERRIDE.match(var):
                raise ConfigError(
                    f"environment variable {var} looks like an override but needs two underscores "
                    "between section and key, e.g. JODO_HTTP__PORT"
                )
            continue
        value = _EnvValue(env[var], var)
        parts = [p.lower() for p in var[len("JODO_") :].split("__")]
        section = parts[0]
        if section in _SECTIONS and len(parts) == 2:
            _table(raw, section, var)[parts[1]] = value
        elif section == "gateways" and len(parts) == 3:
            gateways = _table(raw, "gateways", var)
            gw = gateways.setdefault(parts[1], {})
            if not isinstance(gw, dict):
                raise ConfigError(f"gateways.{parts[1]} is not a table; cannot apply {var}")
            gw[parts[2]] = value
        elif section == "gateways" and len(parts) == 4 and parts[2] == "reconcile":
            gw = _table(raw, "gateways", var).setdefault(parts[1], {})
            sub = gw.setdefault("reconcile", {}) if isinstance(gw, dict) else None
            if not isinstance(sub, dict):
                raise ConfigError(f"gateways.{parts[1]}.reconcile is not a table; cannot apply {var}")
            sub[parts[3]] = value
        elif section == "head_ends" and len(parts) == 3:
            _apply_head_end_env(raw, parts[1], parts[2], value)
        else:
            raise ConfigError(
                f"environment variable {var} does not name a config key "
                f"(JODO_<SECTION>__<KEY>; sections: {', '.join(_ALL_SECTIONS)})"
            )


def _table(raw: dict[str, Any], section: str, var: str) -> dict[str, Any]:
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] is not a table; cannot apply {var}")
    return table


def _apply_head_end_env(raw: dict[str, Any], index: str, key: str, value: _EnvValue) -> None:
    entries = raw["head_ends"]
    if not isinstance(entries, list):
        raise ConfigError(f"head_ends is not an array of tables; cannot apply {value.var}")
    if not index.isdigit() or int(index) > len(entries):
        raise ConfigError(
            f"{value.var}: head-end index {index!r} must be 0..{len(entries)} "
            f"({len(entries)} appends a new head-end)"
        )
    if int(index) == len(entries):
        entries.append({})
    entry = entries[int(index)]
    if not isinstance(entry, dict):
        raise ConfigError(f"head_ends[{index}] is not a table; cannot apply {value.var}")
    entry[key] = value


def _build_config(raw: dict[str, Any], source: Path | None) -> Config:
    origin = f"config file {source}" if source else "the environment (no config file)"
    base = source.parent if source else None
    unknown = sorted(set(raw) - set(_ALL_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}] in {origin} (known: {', '.join(_ALL_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        sections[name] = _build(cls, _as_table(raw.get(name, {}), name, origin), name, origin, base)
    sections["head_ends"] = _build_head_ends(raw["head_ends"], origin, base)
    sections["gateways"] = _build_gateways(raw.get("gateways", {}), origin, base)
    config = Config(**sections, source=source)
    _check_whole(config, origin)
    return _with_policy_text(config, origin)


def _as_table(value: Any, where: str, origin: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table in {origin}, got {_describe(value)}")
    return value


def _build_head_ends(value: Any, origin: str, base: Path | None) -> tuple[HeadEndConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"head_ends must be an array of tables ([[head_ends]]) in {origin}")
    entries = tuple(
        _build(HeadEndConfig, _as_table(e, f"head_ends[{i}]", origin), f"head_ends[{i}]", origin, base)
        for i, e in enumerate(value)
    )
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry.name in seen:
            raise ConfigError(f"head_ends[{i}].name: duplicate head-end name {entry.name!r} in {origin}")
        seen.add(entry.name)
    return entries


def _build_gateways(value: Any, origin: str, base: Path | None) -> Mapping[str, GatewayConfig]:
    table = _as_table(value, "gateways", origin)
    out: dict[str, GatewayConfig] = {}
    for name, body in table.items():
        where = f"gateways.{name}"
        fields = dict(_as_table(body, where, origin))
        if "name" in fields:
            raise ConfigError(f"{where}.name: unknown key (the name is the table's name) in {origin}")
        fields["name"] = name
        reconcile = fields.pop("reconcile", None)
        out[name] = _build(GatewayConfig, fields, where, origin, base)
        if reconcile is not None:
            table_ = _as_table(reconcile, f"{where}.reconcile", origin)
            out[name] = _with_reconcile(out[name], table_, origin, base)
    return FrozenMap(out)


def _with_reconcile(
    gateway: GatewayConfig, table: dict[str, Any], origin: str, base: Path | None
) -> GatewayConfig:
    where = f"gateways.{gateway.name}.reconcile"
    rc: ReconcileConfig = _build(ReconcileConfig, table, where, origin, base)
    if rc.active and gateway.format != "razorpay":
        raise ConfigError(f"{where}: only razorpay-format gateways have a payments API to pull ({origin})")
    if rc.active and not rc.has_credentials:
        raise ConfigError(f"{where}: enabled needs key_id and key_secret (or key_secret_file) in {origin}")
    if rc.settle_s >= rc.window_s:
        raise ConfigError(f"{where}: settle_s must be less than window_s in {origin}")
    return dataclasses.replace(gateway, reconcile=rc)


def _check_whole(config: Config, origin: str) -> None:
    if config.shards.groups > config.shards.logical:
        raise ConfigError(
            f"shards.groups ({config.shards.groups}) must not exceed shards.logical "
            f"({config.shards.logical}) in {origin}"
        )
    if config.http.batch_max_items > config.http.max_in_flight:
        raise ConfigError(f"http.batch_max_items must not exceed http.max_in_flight in {origin}")
    storage, cluster = config.storage, config.cluster
    if storage.backend == "postgresql" and storage.dsn is None and storage.dsn_file is None:
        raise ConfigError(f"storage.backend = 'postgresql' needs storage.dsn or storage.dsn_file in {origin}")
    if cluster.enabled:
        if storage.backend != "postgresql":
            raise ConfigError(f"cluster.enabled needs storage.backend = 'postgresql' (the nodes share it) "
                              f"in {origin}")
        if not _NAME.match(cluster.node_id):
            raise ConfigError(f"cluster.node_id: {cluster.node_id!r} must be 1-32 of a-z, 0-9, '-', '_' "
                              f"(unique in the cluster) in {origin}")
        if cluster.renew_every_s * 2 > cluster.lease_ttl_s:
            raise ConfigError(f"cluster.renew_every_s ({cluster.renew_every_s}) must be at most half of "
                              f"cluster.lease_ttl_s ({cluster.lease_ttl_s}) in {origin}")


def _with_policy_text(config: Config, origin: str) -> Config:
    path = config.policy.path
    if path is None:
        return config
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy.path: cannot read policy file {path} (from {origin}): {exc}") from None
    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, text=text))


def _build(cls: type[Any], table: dict[str, Any], section: str, origin: str, base: Path | None) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
    for key in table:
        if key not in known:
            raise ConfigError(
                f"unknown key {section}.{key} {_origin(table[key], origin)} (known: {', '.join(known)})"
            )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        where = f"{section}.{name}"
        if name not in table:
            if f.default is dataclasses.MISSING:
                env_vars = sorted(v.var for v in table.values() if isinstance(v, _EnvValue))
                also = f"; the table is set by {', '.join(env_vars)}" if env_vars else ""
                raise ConfigError(f"missing key {where} in {origin}{also}")
            continue
        value = table[name]
        try:
            kwargs[name] = _convert(value, hints[name], f.metadata, base)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc} {_origin(value, origin)}") from None
    return cls(**kwargs)


def _origin(value: Any, origin: str) -> str:
    return f"(from environment variable {value.var})" if isinstance(value, _EnvValue) else f"(in {origin})"


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"str {'***' if len(value) > 40 else repr(str(value))}"
    return f"{type(value).__name__} {value!r}"


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(value: Any, hint: Any, meta: Mapping[str, Any], base: Path | None) -> Any:
    """Check/parse one value for a key of type ``hint``; ValueError says what is wrong."""
    from_env = isinstance(value, _EnvValue)
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):  # X | None
        if from_env and value == "":
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if meta.get("upper") and isinstance(value, str):
        value = _EnvValue(value.upper(), value.var) if isinstance(value, _EnvValue) else value.upper()
    result: Any
    if hint is bool:
        if from_env and value.lower() in _TRUE | _FALSE:
            result = value.lower() in _TRUE
        elif isinstance(value, bool) and not from_env:
            result = value
        else:
            raise ValueError(f"expected true or false, got {_describe(value)}")
    elif hint is int:
        result = _int(value, from_env)
    elif hint is float:
        result = _float(value, from_env)
    elif typing.get_origin(hint) is Literal:
        if value not in args:
            raise ValueError(f"expected one of {', '.join(map(repr, args))}, got {_describe(value)}")
        result = str(value)
    elif hint in (str, Path, Secret):
        if not isinstance(value, str) or not value:
            shown = "a secret, not shown" if hint is Secret else _describe(value)
            raise ValueError(f"expected a non-empty string, got {shown}")
        result = _string_kind(str(value), hint, meta, base if not from_env else None)
    else:  # a key type this loader does not know is a bug in this module
        raise TypeError(f"config key of unsupported type {hint!r}")
    _check_range(result, meta)
    return result


def _int(value: Any, from_env: bool) -> int:
    if from_env:
        try:
            return int(value, 10)
        except ValueError:
            raise ValueError(f"expected an integer, got {_describe(str(value))}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_describe(value)}")
    return value


def _float(value: Any, from_env: bool) -> float:
    if from_env:
        try:
            parsed = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {_describe(str(value))}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_describe(value)}")
    else:
        parsed = float(value)
    if parsed != parsed or parsed in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return parsed


def _string_kind(value: str, hint: Any, meta: Mapping[str, Any], base: Path | None) -> Any:
    pattern = meta.get("pattern")
    if pattern is not None and not pattern.match(value):
        raise ValueError(f"{value!r} must be 1-32 of a-z, 0-9, _ and -, starting with a letter or digit")
    if hint is Path:
        p = Path(value).expanduser()
        return base / p if base is not None and not p.is_absolute() else p
    if hint is Secret:
        if len(value) < meta.get("min_len", 1):
            raise ValueError(f"must be at least {meta['min_len']} characters")
        return Secret(value)
    return value


def _check_range(value: Any, meta: Mapping[str, Any]) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"must be between {lo} and {hi}, got {value!r}")
