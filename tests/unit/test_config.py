"""jodo.config: TOML file, JODO_* overrides, errors that name the key and its source, redaction."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from jodo.config import Config, Secret, load_config
from jodo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GW_SECRET = "whsec-razorpay-0123456789"
ADMIN_TOKEN = "admin-token-abcdefghijklmnop"

FULL = f"""
[node]
data_dir = "state"
bind = "10.0.0.7"
admin_port = 1950

[http]
host = "0.0.0.0"
port = 9090
max_body_bytes = 32768
batch_window_ms = 5
batch_max_items = 128

[shards]
logical = 512
groups = 4

[[head_ends]]
name = "hes-a"
kind = "reference"
host = "hes-a.internal"
port = 7001
rate_limit_per_s = 50

[[head_ends]]
name = "hes-b"
port = 7002

[gateways.razorpay]
format = "razorpay"
secret = "{GW_SECRET}"
account_field = "ivrs"

[gateways.bbps]
format = "jodo"
secret = "bbps-secret"
tolerance_s = 120
cashless = false

[tokens]
admin = "{ADMIN_TOKEN}"

[logging]
level = "debug"
format = "json"

[policy]
path = "policy.toml"
"""


def write(tmp_path: Path, text: str, name: str = "jodo.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def full_file(tmp_path: Path) -> Path:
    (tmp_path / "policy.toml").write_text("[reconnect]\nthreshold_paise = 0\n", encoding="utf-8")
    return write(tmp_path, FULL)


def test_no_file_and_no_environment_gives_working_defaults() -> None:
    config = load_config(env={})
    assert config.http.host == "127.0.0.1" and config.http.port == 8080
    assert config.http.max_body_bytes == 64 * 1024 and config.http.batch_window_ms == 2.0
    assert (config.shards.logical, config.shards.groups) == (256, 2)
    assert config.node.data_dir == Path("data") and config.node.bind == "127.0.0.1"
    assert [h.name for h in config.head_ends] == ["hes-sim"] and config.head_ends[0].kind == "sim"
    assert dict(config.gateways) == {}
    assert config.tokens.admin is None and config.tokens.payments is None
    assert config.logging.level == "INFO" and config.logging.format == "text"
    assert config.policy.path is None and config.source is None


def test_every_section_of_a_file_is_read_into_typed_values(tmp_path: Path) -> None:
    config = load_config(full_file(tmp_path), env={})
    assert config.node.data_dir == tmp_path / "state"  # relative to the file's directory
    assert (config.node.bind, config.node.admin_port) == ("10.0.0.7", 1950)
    assert (config.http.host, config.http.port, config.http.max_body_bytes) == ("0.0.0.0", 9090, 32768)
    assert config.http.batch_window_ms == 5.0 and isinstance(config.http.batch_window_ms, float)
    assert (config.shards.logical, config.shards.groups) == (512, 4)
    a, b = config.head_ends
    assert (a.name, a.kind, a.host, a.port) == ("hes-a", "reference", "hes-a.internal", 7001)
    assert a.rate_limit_per_s == 50.0
    assert (b.kind, b.host, b.port) == ("sim", "127.0.0.1", 7002)
    rzp, bbps = config.gateways["razorpay"], config.gateways["bbps"]
    assert (rzp.name, rzp.format, rzp.account_field, rzp.tolerance_s) == ("razorpay", "razorpay", "ivrs", 300)
    assert rzp.secret.reveal() == GW_SECRET
    assert (bbps.format, bbps.tolerance_s, bbps.cashless) == ("jodo", 120, False)
    assert config.tokens.admin is not None and config.tokens.admin.reveal() == ADMIN_TOKEN
    assert config.logging.level == "DEBUG" and config.logging.format == "json"
    assert config.policy.path == tmp_path / "policy.toml"
    assert config.policy.text is not None and "threshold_paise" in config.policy.text
    assert config.source == tmp_path / "jodo.toml"


def test_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    env = {
        "JODO_HTTP__PORT": "8081",
        "JODO_HTTP__BATCH_WINDOW_MS": "0.5",
        "jodo_shards__groups": "8",  # names are case-insensitive
        "JODO_GATEWAYS__BBPS__CASHLESS": "yes",
        "JODO_HEAD_ENDS__1__HOST": "10.1.1.1",
        "JODO_LOGGING__LEVEL": "warning",
        "PATH": "/usr/bin",  # other variables are not ours
        "JODO_CONFIG_NOTE": "no double underscore, not a section: ignored",
    }
    config = load_config(full_file(tmp_path), env=env)
    assert config.http.port == 8081 and config.http.batch_window_ms == 0.5
    assert config.shards.groups == 8
    assert config.gateways["bbps"].cashless is True
    assert config.head_ends[1].host == "10.1.1.1" and config.head_ends[0].host == "hes-a.internal"
    assert config.logging.level == "WARNING"


def test_environment_alone_can_add_a_gateway_a_head_end_and_tokens() -> None:
    env = {
        "JODO_GATEWAYS__RAZORPAY__FORMAT": "razorpay",
        "JODO_GATEWAYS__RAZORPAY__SECRET": GW_SECRET,
        "JODO_HEAD_ENDS__1__NAME": "hes-2",
        "JODO_HEAD_ENDS__1__PORT": "9001",
        "JODO_TOKENS__PAYMENTS": "p" * 16,
    }
    config = load_config(env=env)
    assert config.gateways["razorpay"].secret.reveal() == GW_SECRET
    assert [(h.name, h.port) for h in config.head_ends] == [("hes-sim", 8471), ("hes-2", 9001)]
    assert config.tokens.payments is not None and config.tokens.payments.reveal() == "p" * 16


def test_an_empty_environment_value_unsets_an_optional_key(tmp_path: Path) -> None:
    config = load_config(full_file(tmp_path), env={"JODO_TOKENS__ADMIN": ""})
    assert config.tokens.admin is None


def test_jodo_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 7777\n")
    assert load_config(env={"JODO_CONFIG": str(path)}).http.port == 7777


def test_the_example_config_in_deploy_loads() -> None:
    config = load_config(ROOT / "deploy" / "jodo.example.toml", env={})
    assert set(config.gateways) == {"razorpay", "bbps"}
    assert config.http.port == 8080 and config.shards.logical == 256


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[http]\nprot = 80\n", "unknown key http.prot"),
        ("[htp]\nport = 80\n", "unknown section [htp]"),
        ('[http]\nport = "80"\n', "http.port: expected an integer, got str '80'"),
        ("[http]\nport = 70000\n", "http.port: must be between 0 and 65535"),
        ("[http]\nport = true\n", "http.port: expected an integer"),
        ("[http]\nbatch_window_ms = -1\n", "http.batch_window_ms: must be between"),
        ('[logging]\nformat = "xml"\n', "logging.format: expected one of 'json', 'text'"),
        ("[shards]\nlogical = 4\ngroups = 8\n", "shards.groups (8) must not exceed shards.logical (4)"),
        ('[gateways.rzp]\nformat = "razorpay"\n', "missing key gateways.rzp.secret"),
        ('[gateways.rzp]\nformat = "paypal"\nsecret = "s"\n', "gateways.rzp.format: expected one of"),
        ('[gateways."Bad Name"]\nformat = "jodo"\nsecret = "s"\n', "gateways.Bad Name.name"),
        ('[[head_ends]]\nname = "a"\nport = 1\n[[head_ends]]\nname = "a"\nport = 2\n', "duplicate head-end"),
        ('[[head_ends]]\nname = "a"\nport = 1\nkind = "modbus"\n', "head_ends[0].kind"),
        ('[[head_ends]]\nname = "a"\n', "missing key head_ends[0].port"),
        ('[tokens]\nadmin = "short"\n', "tokens.admin: must be at least 16 characters"),
        ('[policy]\npath = "nowhere.toml"\n', "policy.path: cannot read policy file"),
        ("http = 5\n", "http must be a table"),
        ("[http\n", "is not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"JODO_HTTP__PORT": "eighty"},
            "http.port: expected an integer, got str 'eighty' (from environment variable JODO_HTTP__PORT)",
        ),
        ({"JODO_HTTP__PROT": "80"}, "unknown key http.prot (from environment variable JODO_HTTP__PROT)"),
        ({"JODO_HTTP_PORT": "80"}, "JODO_HTTP_PORT looks like an override but needs two underscores"),
        ({"JODO_NOPE__X": "1"}, "JODO_NOPE__X does not name a config key"),
        ({"JODO_HTTP__PORT__X": "1"}, "JODO_HTTP__PORT__X does not name a config key"),
        ({"JODO_HEAD_ENDS__5__PORT": "1"}, "head-end index '5' must be 0..1"),
        (
            {
                "JODO_GATEWAYS__G__CASHLESS": "maybe",
                "JODO_GATEWAYS__G__FORMAT": "jodo",
                "JODO_GATEWAYS__G__SECRET": "s",
            },
            "gateways.g.cashless: expected true or false, got str 'maybe' (from environment variable",
        ),
        (
            {"JODO_GATEWAYS__G__FORMAT": "jodo"},
            "missing key gateways.g.secret in the environment (no config file); "
            "the table is set by JODO_GATEWAYS__G__FORMAT",
        ),
    ],
)
def test_a_bad_environment_variable_is_refused_naming_the_variable(
    env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    assert expected in str(caught.value)


def test_a_missing_file_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*absent\.toml"):
        load_config(tmp_path / "absent.toml", env={})


def test_redacted_view_replaces_every_secret_and_keeps_the_rest(tmp_path: Path) -> None:
    config = load_config(full_file(tmp_path), env={"JODO_TOKENS__PAYMENTS": "q" * 20})
    view = config.redacted()
    assert view["gateways"]["razorpay"]["secret"] == "***"
    assert view["gateways"]["bbps"]["secret"] == "***"
    assert view["tokens"] == {"admin": "***", "payments": "***"}
    assert view["http"]["port"] == 9090 and view["node"]["data_dir"] == str(tmp_path / "state")
    assert view["head_ends"][0]["name"] == "hes-a"
    flat = repr(view)
    for secret in (GW_SECRET, "bbps-secret", ADMIN_TOKEN, "q" * 20):
        assert secret not in flat


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    config = load_config(full_file(tmp_path), env={})
    for text in (repr(config), str(config), repr(config.gateways), f"{config.tokens}"):
        assert GW_SECRET not in text and ADMIN_TOKEN not in text and "bbps-secret" not in text
    assert "***" in repr(config.gateways["razorpay"])
    assert str(Secret("x" * 20)) == "***"


def test_a_refused_secret_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"JODO_TOKENS__ADMIN": "tooshort-secret"})
    assert "tooshort-secret" not in str(caught.value)


def test_secrets_compare_by_value() -> None:
    assert Secret("a" * 16) == Secret("a" * 16)
    assert Secret("a" * 16) != Secret("b" * 16)
    with pytest.raises(ValueError):
        Secret("")


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.http = config.http  # type: ignore[misc]


def test_a_config_survives_pickling_for_actor_init_messages(tmp_path: Path) -> None:
    config = load_config(full_file(tmp_path), env={})
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    assert copy.gateways["razorpay"].secret.reveal() == GW_SECRET
    with pytest.raises(TypeError):
        config.gateways["x"] = config.gateways["razorpay"]  # type: ignore[index]


def test_a_postgresql_dsn_file_is_read_when_the_node_starts_and_a_missing_or_empty_one_is_a_clear_error(
    tmp_path: Path,
) -> None:
    # read at start, not at load: `jodo config show` works on a machine without the secret file
    env = {"JODO_STORAGE__BACKEND": "postgresql", "JODO_STORAGE__DSN_FILE": str(tmp_path / "pg.dsn")}
    config = load_config(env=env)
    with pytest.raises(ConfigError, match=r"storage.dsn_file: cannot read"):
        config.storage.resolved_dsn()
    (tmp_path / "pg.dsn").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        config.storage.resolved_dsn()
    (tmp_path / "pg.dsn").write_text("host=db dbname=jodo user=jodo password=s3cret\n")
    assert config.storage.resolved_dsn() == "host=db dbname=jodo user=jodo password=s3cret"
    assert "s3cret" not in str(config.redacted())


def test_cluster_mode_needs_postgresql_a_node_id_and_a_renewal_well_inside_the_lease() -> None:
    pg = {"JODO_STORAGE__BACKEND": "postgresql", "JODO_STORAGE__DSN": "host=db password=x"}
    with pytest.raises(ConfigError, match=r"needs storage.backend"):
        load_config(env={"JODO_CLUSTER__ENABLED": "true", "JODO_CLUSTER__NODE_ID": "n1"})
    with pytest.raises(ConfigError, match=r"cluster.node_id"):
        load_config(env={**pg, "JODO_CLUSTER__ENABLED": "true", "JODO_CLUSTER__NODE_ID": "Node 1"})
    with pytest.raises(ConfigError, match="at most half"):
        load_config(env={**pg, "JODO_CLUSTER__ENABLED": "true", "JODO_CLUSTER__NODE_ID": "n1",
                         "JODO_CLUSTER__RENEW_EVERY_S": "2.0"})
    ok = load_config(env={**pg, "JODO_CLUSTER__ENABLED": "true", "JODO_CLUSTER__NODE_ID": "n1"})
    assert (ok.cluster.lease_ttl_s, ok.cluster.renew_every_s) == (3.0, 1.0)
