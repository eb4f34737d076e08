from __future__ import annotations

import collections

from runtime.shards import fair_share, plan, shard_of


def test_shard_of_is_stable_and_in_range() -> None:
    assert shard_of("default", "order-42", 64) == shard_of("default", "order-42", 64)
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


def test_plan_claims_free_shards_up_to_the_share() -> None:
    claims, releases = plan(8, ["a", "b"], "a", {s: None for s in range(8)})
    assert claims == [0, 1, 2, 3] and releases == []


def test_plan_takes_over_a_dead_nodes_shards() -> None:
    owners = {s: ("a" if s < 4 else "dead") for s in range(8)}
    claims, releases = plan(8, ["a"], "a", owners)
    assert claims == [4, 5, 6, 7] and releases == []


def test_plan_hands_surplus_to_a_new_node_and_then_settles() -> None:
    owners = {s: "a" for s in range(8)}
    claims, releases = plan(8, ["a", "b"], "a", owners)
    assert claims == [] and releases == [4, 5, 6, 7]
    for s in releases:
        owners[s] = "b"
    assert plan(8, ["a", "b"], "a", owners) == ([], [])
    assert plan(8, ["a", "b"], "b", owners) == ([], [])


def test_run_ids_carry_their_shard() -> None:
    from persistence.ids import run_ulid, shard_of_run

    for shard in (0, 1, 31, 32, 63, 1023):
        run_id = run_ulid(shard)
        assert len(run_id) == 26 and shard_of_run(run_id) == shard
    assert shard_of_run("short") is None
