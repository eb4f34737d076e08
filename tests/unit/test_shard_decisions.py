"""The shard manager's decisions for one round (``decide_round``): pure, no database, no processes.

Who counts as a live member, which owner marks are stale, what the router is told, what to
claim and what to hand over. The I/O around it (lease sessions, claims) is covered by the
contract and cluster tests; these pin the rules themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.shard_manager import decide_round

NOW = 1_800_000_000.0
TTL = 10.0


@dataclass(frozen=True)
class Node:
    node_id: str
    heartbeat_at: float | None = NOW - 1
    status: str = "active"
    advertise_url: str | None = None
    started_at: float | None = NOW - 100


def decide(me: str, nodes: list[Node], sessions: set[str], owners: dict[int, str | None], held: set[int], count: int = 8):  # noqa: ANN201
    return decide_round(
        node_id=me, shard_count=count, now=NOW, node_ttl=TTL, nodes=nodes, sessions=sessions,
        epochs={s: (o, 1) for s, o in owners.items()}, held=dict.fromkeys(held, 1),
    )


def free(count: int = 8) -> dict[int, str | None]:
    return dict.fromkeys(range(count))


def test_a_lone_node_claims_every_free_shard() -> None:
    d = decide("a", [Node("a")], {"a"}, free(), set())
    assert d.live == ["a"] and d.target == 8
    assert d.claims == list(range(8)) and d.releases == []
    assert d.stale == [] and d.directory == {}


def test_a_member_without_a_lease_session_is_not_live_and_its_shards_are_taken() -> None:
    """A killed node's session ends at once: its heartbeat row is still fresh, but it is not live."""
    owners = {s: ("a" if s < 4 else "b") for s in range(8)}
    d = decide("a", [Node("a"), Node("b")], {"a"}, owners, held=set(range(4)))
    assert d.live == ["a"]
    assert d.claims == [4, 5, 6, 7]
    assert d.directory == {s: "a" for s in range(4)}  # b's shards are routed nowhere


def test_this_node_counts_itself_live_before_its_session_is_listed() -> None:
    d = decide("a", [Node("a")], set(), free(), set())
    assert d.live == ["a"] and d.claims == list(range(8))


def test_a_member_whose_heartbeat_aged_or_that_left_is_not_live() -> None:
    nodes = [
        Node("a"),
        Node("old", heartbeat_at=NOW - TTL),  # exactly the ttl: aged out
        Node("never", heartbeat_at=None),
        Node("gone", status="left"),
        Node("fresh", heartbeat_at=NOW - TTL + 0.5),
    ]
    d = decide("a", nodes, {"a", "old", "never", "gone", "fresh"}, free(), set())
    assert d.live == ["a", "fresh"]
    assert d.target == 4


def test_sessions_are_matched_exactly_up_to_the_longest_node_id() -> None:
    """A PostgreSQL application name holds 63 bytes; ``dw-shard-leases:`` leaves 47 for the id,
    and the configuration refuses longer ids, so a session names its node whole. A session name
    that is only a prefix of a member's id (what a cut name would be) keeps nobody live."""
    longest = "n" * 46 + "1"
    d = decide("a", [Node("a"), Node(longest)], {"a", longest}, free(), set())
    assert d.live == ["a", longest]
    too_long = "n" * 60
    d = decide("a", [Node("a"), Node(too_long)], {"a", too_long[:47]}, free(), set())
    assert d.live == ["a"]


def test_owner_marks_an_earlier_session_left_are_stale_and_free() -> None:
    """After a restart the shards table still names this node, but the new session holds none of it."""
    owners = {s: "a" for s in range(8)}
    d = decide("a", [Node("a"), Node("b")], {"a", "b"}, owners, held={0, 1})
    assert d.stale == [2, 3, 4, 5, 6, 7]
    assert d.owners == {0: "a", 1: "a", 2: None, 3: None, 4: None, 5: None, 6: None, 7: None}
    assert d.target == 4 and d.claims == [2, 3]
    assert d.directory == {0: "a", 1: "a"}


def test_shards_held_by_this_session_count_as_ours_before_the_table_says_so() -> None:
    d = decide("a", [Node("a"), Node("b")], {"a", "b"}, free(), held={5, 6})
    assert d.owners[5] == "a" and d.owners[6] == "a"
    assert d.claims == [0, 1] and d.directory == {5: "a", 6: "a"}


def test_a_live_members_shards_are_never_claimed_and_surplus_goes_to_a_hungry_member() -> None:
    owners: dict[int, str | None] = {s: "a" for s in range(8)}
    d = decide("a", [Node("a"), Node("b")], {"a", "b"}, owners, held=set(range(8)))
    assert d.claims == [] and d.releases == [4, 5, 6, 7]
    # b, the hungry one, claims nothing a live member owns
    d = decide("b", [Node("a"), Node("b")], {"a", "b"}, owners, held=set())
    assert d.claims == [] and d.releases == [] and d.target == 4
    assert d.directory == owners


def test_a_settled_cluster_does_nothing() -> None:
    owners = {s: ("a" if s < 4 else "b") for s in range(8)}
    for me, held in (("a", set(range(4))), ("b", set(range(4, 8)))):
        d = decide(me, [Node("a"), Node("b")], {"a", "b"}, owners, held)
        assert (d.claims, d.releases, d.stale) == ([], [], [])


def test_a_node_not_in_the_table_yet_owns_nothing() -> None:
    d = decide("a", [Node("b")], {"b"}, free(), set())
    assert d.live == ["b"] and d.target == 0 and d.claims == []
