"""Node ids as long as the cluster can tell apart, and longer or unprintable ones refused.

A member is recognised by its lease session's PostgreSQL ``application_name``,
``dw-shard-leases:<node id>``, which the server cuts to 63 bytes and in which it rewrites every
byte that is not printable ASCII: 47 printable ASCII characters of node id survive whole. An id
at that length works (here and in tests/contract/test_long_node_ids.py, against PostgreSQL). A
longer one could not be told apart from another id with the same first 47 characters, so the
configuration refuses it, naming ``DW_NODE_ID``, instead of running a cluster that keeps a dead
member live; ``decide_round`` compares ids exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from persistence.pg_shard_leases import MAX_NODE_ID_LENGTH, ShardLeases
from runtime.config import Config, ConfigError
from runtime.shard_manager import decide_round

MAX_NODE_ID = 63 - len("dw-shard-leases:")
NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Node:
    node_id: str
    heartbeat_at: float = NOW - 1
    status: str = "active"
    advertise_url: str | None = None
    started_at: float = NOW - 100


def test_the_maximum_is_what_an_application_name_leaves() -> None:
    assert MAX_NODE_ID == MAX_NODE_ID_LENGTH == 47


def test_a_node_id_at_the_maximum_is_accepted_and_counted_live(monkeypatch: pytest.MonkeyPatch) -> None:
    node_id = "n" * (MAX_NODE_ID - 2) + "-1"
    monkeypatch.setenv("DW_NODE_ID", node_id)
    assert Config.from_env().node_id == node_id
    session_name = f"dw-shard-leases:{node_id}"[:63]
    sessions = {session_name.removeprefix("dw-shard-leases:")}
    d = decide_round(
        node_id="other", shard_count=4, now=NOW, node_ttl=10.0, nodes=[Node("other"), Node(node_id)],
        sessions=sessions | {"other"}, epochs={s: (None, 0) for s in range(4)}, held={},
    )
    assert sorted(d.live) == sorted(["other", node_id]) and d.target == 2


@pytest.mark.parametrize("length", [MAX_NODE_ID + 1, 200])
def test_a_node_id_over_the_maximum_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    monkeypatch.setenv("DW_NODE_ID", "n" * length)
    with pytest.raises(ValueError, match="DW_NODE_ID"):
        Config.from_env()


def test_two_long_ids_with_one_prefix_are_two_members() -> None:
    """Were an over-long id to get past the configuration, a cut session name keeps no one live."""
    prefix = "cluster-node-" + "x" * (MAX_NODE_ID - len("cluster-node-"))
    dead, alive = prefix + "-dead", prefix + "-alive"
    sessions = {"me", alive[:MAX_NODE_ID]}  # the dead one's session is gone
    d = decide_round(
        node_id="me", shard_count=4, now=NOW, node_ttl=10.0, nodes=[Node("me"), Node(dead), Node(alive)],
        sessions=sessions, epochs={s: (dead, 1) for s in range(4)}, held={},
    )
    assert dead not in d.live


@pytest.mark.parametrize("length", [MAX_NODE_ID + 1, 200])
def test_an_over_long_node_id_flag_is_refused_too(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    monkeypatch.delenv("DW_NODE_ID", raising=False)
    with pytest.raises(ConfigError, match=r"--node-id.*at most 47"):
        Config.from_env(node_id="n" * length)


@pytest.mark.parametrize("node_id", ["nœud-1", "node\t1", "node\n1", "node\x7f1", "ノード"])
def test_a_node_id_postgresql_would_rewrite_is_refused(monkeypatch: pytest.MonkeyPatch, node_id: str) -> None:
    monkeypatch.setenv("DW_NODE_ID", node_id)
    with pytest.raises(ConfigError, match=r"DW_NODE_ID.*printable ASCII"):
        Config.from_env()


def test_the_lease_session_refuses_an_id_it_cannot_name_exactly() -> None:
    """The persistence side holds the same line for callers that bypass the configuration."""
    assert ShardLeases("postgresql://unused", "n" * MAX_NODE_ID).application_name == "dw-shard-leases:" + "n" * MAX_NODE_ID
    for bad in ("n" * (MAX_NODE_ID + 1), "nœud", ""):
        with pytest.raises(ValueError, match="node id"):
            ShardLeases("postgresql://unused", bad)


@pytest.mark.parametrize("host", ["h" * 80, "a-very-long-kubernetes-pod-name-" + "x" * 40, "hôte"])
def test_the_default_id_of_an_unfit_host_name_is_cut_stably_and_kept_apart(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """Without DW_NODE_ID the id comes from the host name: a long or non-ASCII one must still
    start the node, with an id that is the same on every restart and differs from that of a host
    whose name only shares the beginning."""
    monkeypatch.delenv("DW_NODE_ID", raising=False)

    def ids(name: str) -> str:
        monkeypatch.setattr("os.uname", lambda: type("U", (), {"nodename": name})())
        return Config.from_env(port=8080).node_id

    node_id = ids(host)
    assert len(node_id) <= MAX_NODE_ID and node_id.isascii() and node_id.isprintable()
    assert node_id.endswith(":8080")
    assert ids(host) == node_id
    assert ids(host + "2") != node_id


def test_a_short_host_name_is_the_default_id_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DW_NODE_ID", raising=False)
    monkeypatch.setattr("os.uname", lambda: type("U", (), {"nodename": "worker-3"})())
    assert Config.from_env(port=9000).node_id == "worker-3:9000"
