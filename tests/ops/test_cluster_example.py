"""deploy/cluster: the three node configs load and agree on everything that must be the same cluster-wide,
secrets stay out of them, the firewall rules pass ``nft -c``, and the capacity figures are placeholders
until bench_cluster fills them. (The unit jodo@.service is checked in test_systemd_units.py.)"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ops_tools import ROOT, run

from jodo.config import Config, load_config

CLUSTER = ROOT / "deploy" / "cluster"
NODES = ("node1", "node2", "node3")
PER_NODE = {("cluster", "node_id"), ("cluster", "advertise"), ("http", "host")}


def _config(node: str) -> Config:
    return load_config(CLUSTER / f"jodo-{node}.toml", env={})


def _shared(config: Config) -> dict[str, Any]:
    """The config without what may differ per node (and without secrets revealed: they are ***)."""
    plain = config.redacted()
    plain.pop("source")
    for section, key in PER_NODE:
        plain[section].pop(key)
    return plain


def test_there_are_three_node_configs() -> None:
    assert sorted(p.name for p in CLUSTER.glob("*.toml")) == [f"jodo-{n}.toml" for n in NODES]


@pytest.mark.parametrize("node", NODES)
def test_each_node_is_a_cluster_member_over_postgresql(node: str) -> None:
    config = _config(node)
    assert config.storage.backend == "postgresql"
    assert config.storage.dsn is None, "the DSN belongs in the dsn_file, never in the TOML"
    assert config.storage.dsn_file == Path("/etc/jodo/pg.dsn")
    cluster = config.cluster
    assert cluster.enabled and cluster.node_id == node
    assert (cluster.lease_ttl_s, cluster.renew_every_s, cluster.suspect_after_s) == (3.0, 1.0, 3.0)
    advertise = ipaddress.ip_address(cluster.advertise)
    assert advertise.is_private and not advertise.is_loopback
    assert config.http.host == cluster.advertise, "the others forward to http://<advertise>:<port>"
    assert ipaddress.ip_address(config.node.bind).is_loopback, "actor ports never on the network"


def test_the_nodes_differ_only_in_identity_and_address() -> None:
    configs = [_config(node) for node in NODES]
    first = _shared(configs[0])
    for config in configs[1:]:
        assert _shared(config) == first
    assert len({c.cluster.node_id for c in configs}) == len({c.cluster.advertise for c in configs}) == 3
    # Identical and real: the unredacted tokens and the shard layout.
    assert len({(c.tokens.admin, c.tokens.payments) for c in configs}) == 1
    assert len({(c.shards.logical, c.shards.groups) for c in configs}) == 1


def test_no_secret_is_written_into_the_cluster_files() -> None:
    for path in sorted(CLUSTER.iterdir()):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"postgres(ql)?://\S+:\S+@", text), path.name
        if path.suffix == ".toml":
            assert not re.search(r"^\s*(dsn|password|secret)\s*=", text, re.MULTILINE), path.name


def test_the_firewall_rules_parse(tool: Callable[[str], str]) -> None:
    result = run(tool("nft"), "-c", "-f", str(CLUSTER / "firewall.nft"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_firewall_opens_only_the_front_door_postgresql_and_ssh() -> None:
    text = (CLUSTER / "firewall.nft").read_text(encoding="utf-8")
    assert "policy drop;" in text
    accepted = set(re.findall(r"^\s*tcp dport (\S+) .*\baccept\b", text, re.MULTILINE))
    assert accepted == {"22", "$FRONT_DOOR_PORT", "$POSTGRES_PORT"}
    assert re.search(r'^\s*iifname "lo" accept', text, re.MULTILINE)
    assert re.search(r"^\s*tcp dport \$POSTGRES_PORT ip saddr \$JODO_NODES accept", text, re.MULTILINE)
    nodes = re.search(r"define JODO_NODES = \{([^}]*)\}", text)
    assert nodes is not None
    addresses = {a.strip() for a in nodes.group(1).split(",")}
    assert addresses == {_config(node).cluster.advertise for node in NODES}


def test_pg_hba_lets_in_only_the_nodes_and_rejects_the_rest() -> None:
    text = (CLUSTER / "postgresql.md").read_text(encoding="utf-8")
    lines = [line.split() for line in text.splitlines() if re.match(r"^host(ssl)?\s", line)]
    allowed = {line[3].removesuffix("/32") for line in lines if line[-1] == "scram-sha-256"}
    assert allowed == {_config(node).cluster.advertise for node in NODES}
    reject = [["host", "all", "all", "0.0.0.0/0", "reject"], ["host", "all", "all", "::/0", "reject"]]
    assert lines[-2:] == reject
    assert "password_encryption = scram-sha-256" in text


def test_the_capacity_section_invents_no_numbers() -> None:
    """Every value is a placeholder or names the measurement it comes from."""
    text = (CLUSTER / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Capacity") :]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows, "the capacity table"
    for row in rows:
        value = row.rstrip(" |").rsplit("|", 1)[1].strip()
        assert value == "_to be filled from bench_cluster_" or "bench_cluster" in value \
            or "test" in value, row
