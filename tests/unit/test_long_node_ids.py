"""Node ids as long as the cluster can tell apart, and longer ones refused.

A member is recognised by its lease session's PostgreSQL ``application_name``,
``dw-shard-leases:<node id>``, which the server cuts to 63 bytes: 47 characters of ASCII node
id survive (``decide_round`` compares ``node_id[:47]``). An id at that length works (here and
in tests/contract/test_long_node_ids.py, against PostgreSQL). A longer one cannot be told apart
from another id with the same first 47 characters, so the configuration should refuse it,
naming ``DW_NODE_ID``, instead of running a cluster that keeps a dead member live.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from runtime.config import Config
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
    assert MAX_NODE_ID == 47


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


@pytest.mark.xfail(
    strict=True,
    reason="bug: DW_NODE_ID/--node-id has no length limit (runtime/config.py); ids over 47 characters are cut "
    "in the lease session's application_name, so two of them sharing a prefix are one member to the cluster",
)
@pytest.mark.parametrize("length", [MAX_NODE_ID + 1, 200])
def test_a_node_id_over_the_maximum_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    monkeypatch.setenv("DW_NODE_ID", "n" * length)
    with pytest.raises(ValueError, match="DW_NODE_ID"):
        Config.from_env()


@pytest.mark.xfail(
    strict=True,
    reason="bug: what an over-long id costs today: a dead member is kept live by the lease session of a live one "
    "whose id has the same first 47 characters (runtime/shard_manager.decide_round compares node_id[:47])",
)
def test_two_long_ids_with_one_prefix_are_two_members() -> None:
    prefix = "cluster-node-" + "x" * (MAX_NODE_ID - len("cluster-node-"))
    dead, alive = prefix + "-dead", prefix + "-alive"
    sessions = {"me", alive[:MAX_NODE_ID]}  # the dead one's session is gone
    d = decide_round(
        node_id="me", shard_count=4, now=NOW, node_ttl=10.0, nodes=[Node("me"), Node(dead), Node(alive)],
        sessions=sessions, epochs={s: (dead, 1) for s in range(4)}, held={},
    )
    assert dead not in d.live
