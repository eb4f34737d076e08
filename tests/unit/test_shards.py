"""Shard arithmetic. Expected values are the cluster's rules (ARCHITECTURE "Clustering": a fixed
hash to a fixed number of shards, each node aims for its fair share, surplus is released only
to a node below its share, a live node's shard is never taken), written out here rather than
recomputed with the code under test."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

from runtime.shards import fair_share, plan, shard_of

# Where these addresses live in every cluster ever created: the hash may never change, or an
# upgraded node would look for existing runs, queues and schedules on the wrong shards.
PINNED = [
    (("default", "order-42", 64), 42),
    (("ns", "wf-1", 64), 58),
    (("default", "workflow-queue:orders", 16), 13),
    (("billing", "order-42", 1024), 416),
]


def test_shard_of_is_pinned() -> None:
    assert [shard_of(*address) for address, _ in PINNED] == [shard for _, shard in PINNED]


def test_shard_of_is_the_same_in_another_process() -> None:
    """Every node computes it: a per-process hash (Python's str hash is salted) would split the cluster."""
    code = "from runtime.shards import shard_of; print([shard_of(*a) for a in %r])" % [a for a, _ in PINNED]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        cwd=Path(__file__).resolve().parents[2], env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == str([shard for _, shard in PINNED]), out.stderr


def test_shard_of_is_in_range() -> None:
    assert all(0 <= shard_of("ns", f"wf-{i}", 64) < 64 for i in range(1000))
    assert shard_of("a", "x", 64) != shard_of("b", "x", 64) or shard_of("a", "y", 64) != shard_of("b", "y", 64)


def test_shard_of_spreads_keys() -> None:
    counts = collections.Counter(shard_of("default", f"wf-{i}", 16) for i in range(16_000))
    assert len(counts) == 16
    assert max(counts.values()) < 1.2 * 1000 and min(counts.values()) > 0.8 * 1000


def test_fair_share_sums_to_the_count() -> None:
    nodes = ["n1", "n2", "n3"]
    shares = [fair_share(64, nodes, n) for n in nodes]
    assert sum(shares) == 64 and max(shares) - min(shares) <= 1
    assert fair_share(64, nodes, "ghost") == 0


def test_fair_shares_of_sixteen_shards() -> None:
    # 16 over 3 nodes is 6, 5, 5; the extra one goes to the first node in sorted order.
    assert [fair_share(16, ["n3", "n1", "n2"], n) for n in ("n1", "n2", "n3")] == [6, 5, 5]
    assert [fair_share(16, ["a", "b"], n) for n in ("a", "b")] == [8, 8]
    assert fair_share(16, ["a"], "a") == 16


def test_plan_claims_free_shards_up_to_the_share() -> None:
    claims, releases = plan(8, ["a", "b"], "a", {s: None for s in range(8)})
    assert len(claims) == 4 and len(set(claims)) == 4 and set(claims) <= set(range(8)) and releases == []


def test_plan_never_claims_a_live_nodes_shard() -> None:
    owners: dict[int, str | None] = {s: ("b" if s < 6 else None) for s in range(8)}  # b holds 6, its share is 4
    claims, releases = plan(8, ["a", "b"], "a", owners)
    assert claims == [6, 7] and releases == []  # only the free ones; b hands over its surplus itself


def test_plan_takes_over_a_dead_nodes_shards() -> None:
    owners = {s: ("a" if s < 4 else "dead") for s in range(8)}
    claims, releases = plan(8, ["a"], "a", owners)
    assert sorted(claims) == [4, 5, 6, 7] and releases == []


def test_plan_hands_surplus_to_a_new_node_and_then_settles() -> None:
    owners: dict[int, str | None] = {s: "a" for s in range(8)}
    claims, releases = plan(8, ["a", "b"], "a", owners)
    assert claims == [] and len(releases) == 4 and set(releases) <= set(range(8))
    for s in releases:
        owners[s] = None  # released: free until b claims them
    assert plan(8, ["a", "b"], "a", owners) == ([], [])  # a holds its share: no more releases
    b_claims, _ = plan(8, ["a", "b"], "b", owners)
    assert sorted(b_claims) == sorted(releases)
    for s in b_claims:
        owners[s] = "b"
    assert plan(8, ["a", "b"], "a", owners) == ([], [])  # a stable cluster does not churn
    assert plan(8, ["a", "b"], "b", owners) == ([], [])


def test_plan_releases_only_the_surplus() -> None:
    owners: dict[int, str | None] = {s: ("a" if s < 5 else "b") for s in range(8)}
    # Three alive, shares 3, 3, 2: a holds 5, so 2 go (c has none).
    _, releases = plan(8, ["a", "b", "c"], "a", owners)
    assert len(releases) == 2 and set(releases) <= set(range(5))
    # Two alive, shares 4 and 4: a holds 5, so 1 goes (b holds 3).
    _, releases = plan(8, ["a", "b"], "a", owners)
    assert len(releases) == 1 and set(releases) <= set(range(5))
