"""Shard leases on PostgreSQL (``persistence.pg_shard_leases``), together with the journal's fencing.

PostgreSQL only. Like the journal contract's PostgreSQL cases, these run when
``DW_TEST_DATABASE_URL`` names a database, are skipped without it, and fail in CI without it
(``tests.postgres_required``). Each test gets a fresh schema and its own advisory-lock namespace (advisory locks
are per database, not per schema), so concurrent test runs on one database do not collide.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio_asyncio

# isort: split
import asyncpg

from persistence.journal import Batch, FencedError
from persistence.pg_shard_leases import LEASE_LOCK_NAMESPACE, LeasesLostError, ShardLeases
from persistence.postgres_journal import MIGRATION_LOCK_KEY, PostgresJournal
from tests.contract.test_journal import (
    _pg_fetch,
    _postgres_store,
    body,
    run_row,
)
from tests.postgres_required import postgres_url

SHARDS = 8
# Seconds within which a holder notices its terminated session, and a freed lock can be taken.
# The product reports the loss at once (asyncpg's termination listener, milliseconds); what a
# regression falls back on is the 10 s round-trip timeout (pg_shard_leases.OP_TIMEOUT) or
# nothing at all. 8 s stays under the first and is the margin for a loaded two-core machine
# running several lease processes.
LOST_WITHIN = 8.0


@dataclass
class Cluster:
    location: str
    journal: PostgresJournal
    lock_namespace: int
    nursery: trio.Nursery
    _leases: list[ShardLeases] = field(default_factory=list)

    async def leases(self, node_id: str, **kw: object) -> ShardLeases:
        leases = ShardLeases(self.location, node_id, lock_namespace=self.lock_namespace, **kw)  # type: ignore[arg-type]
        await leases.open(self.nursery)
        self._leases.append(leases)
        return leases

    async def sql(self, query: str, *args: object) -> list[asyncpg.Record]:
        """One statement on a third connection of its own."""
        return await trio_asyncio.aio_as_trio(_pg_fetch)(self.location, query, *args)

    async def lock_holder(self, shard: int) -> int | None:
        rows = await self.sql(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 2",
            self.lock_namespace & 0xFFFFFFFF, shard,
        )
        return rows[0]["pid"] if rows else None


def _lock_namespace() -> int:
    while True:
        ns = random.randint(1, 2**31 - 1)
        if ns != LEASE_LOCK_NAMESPACE:
            return ns


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    postgres_url()  # skips, or fails in CI, without a database
    async with trio_asyncio.open_loop(), _postgres_store(tmp_path) as location:
        journal = PostgresJournal(location)
        await journal.open()
        c: Cluster | None = None
        try:
            async with trio.open_nursery() as nursery:
                c = Cluster(location, journal, _lock_namespace(), nursery)
                await nursery.start(journal.run_writer)
                assert await journal.ensure_cluster(SHARDS) == SHARDS
                try:
                    yield c
                finally:
                    for leases in c._leases:  # while their readers still run
                        await leases.aclose()
                nursery.cancel_scope.cancel()
        finally:
            for leases in c._leases if c is not None else []:
                await leases.aclose()  # idempotent
            await journal.aclose()


def test_lease_namespace_is_not_the_migration_key() -> None:
    assert LEASE_LOCK_NAMESPACE != MIGRATION_LOCK_KEY
    assert -(2**31) <= LEASE_LOCK_NAMESPACE < 2**31
    with pytest.raises(ValueError):
        ShardLeases("postgresql://unused", "n", lock_namespace=2**31)


async def test_one_holder_at_a_time_and_release_hands_over_with_a_higher_epoch(cluster: Cluster) -> None:
    a = await cluster.leases("node-a")
    b = await cluster.leases("node-b")

    assert await a.claim(3) == 1
    assert await b.claim(3) is None
    assert a.owned() == {3: 1} and b.owned() == {}
    assert (await cluster.journal.shard_epochs())[3] == ("node-a", 1)
    assert await cluster.lock_holder(3) == a.backend_pid
    assert await a.claim(3) == 1, "the holder's second claim answers its epoch and changes nothing"
    assert (await cluster.journal.shard_epochs())[3] == ("node-a", 1)

    await a.release(3)
    assert a.owned() == {}
    assert (await cluster.journal.shard_epochs())[3] == (None, 1)
    assert await cluster.lock_holder(3) is None

    assert await b.claim(3) == 2
    assert b.owned() == {3: 2}
    assert await a.claim(3) is None
    assert (await cluster.journal.shard_epochs())[3] == ("node-b", 2)
    # Other shards are independent.
    assert await a.claim(4) == 1
    assert a.owned() == {4: 1}
    assert await a.heartbeat(5) is True and not a.lost.is_set()


async def test_concurrent_claims_of_one_shard_have_one_winner(cluster: Cluster) -> None:
    nodes = [await cluster.leases(f"node-{i}") for i in range(4)]
    got: dict[int, int | None] = {}

    async def claim(i: int) -> None:
        got[i] = await nodes[i].claim(5)

    async with trio.open_nursery() as nursery:
        for i in range(len(nodes)):
            nursery.start_soon(claim, i)
    winners = [i for i, epoch in got.items() if epoch is not None]
    assert len(winners) == 1 and got[winners[0]] == 1, got
    assert (await cluster.journal.shard_epochs())[5] == (f"node-{winners[0]}", 1)


async def test_claiming_a_shard_that_does_not_exist_holds_no_lock(cluster: Cluster) -> None:
    a = await cluster.leases("node-a")
    with pytest.raises(ValueError, match="does not exist"):
        await a.claim(SHARDS + 10)
    assert a.owned() == {}
    assert await cluster.lock_holder(SHARDS + 10) is None
    assert await a.claim(0) == 1  # the session is still fine


async def test_terminated_holder_loses_its_shards_and_cannot_write(cluster: Cluster) -> None:
    journal = cluster.journal
    a = await cluster.leases("node-a")
    b = await cluster.leases("node-b")
    assert await a.claim(0) == 1
    assert await a.claim(1) == 1
    old = a.owned()
    assert old == {0: 1, 1: 1}
    # While a holds the shard, its fenced writes commit.
    await journal.append(Batch(records=[("r0", 0, body("r0", 0))], runs=[run_row("r0")], fence={0: old[0]}))

    # The server ends a's lease session (as when a node dies or is cut off).
    pid = await cluster.lock_holder(0)
    assert pid == a.backend_pid
    assert (await cluster.sql("SELECT pg_terminate_backend($1)", pid))[0][0] is True

    with trio.fail_after(LOST_WITHIN):
        await a.lost.wait()
    assert a.owned() == {}
    assert a.lost_reason
    assert await a.heartbeat(1) is False
    with pytest.raises(LeasesLostError):
        await a.claim(2)

    # The lock is free once the backend has exited; b takes the shard with a higher epoch.
    with trio.fail_after(LOST_WITHIN):
        while (new := await b.claim(0)) is None:
            await trio.sleep(0.05)
    assert new > old[0]
    assert (await journal.shard_epochs())[0] == ("node-b", new)

    # a's late write, fenced with its old epoch, is refused and writes nothing ...
    with pytest.raises(FencedError) as caught:
        await journal.append(Batch(records=[("r0", 1, b"from the dead")], runs=[run_row("r0", last_seq=1)],
                                   fence={0: old[0]}))
    assert (caught.value.shard, caught.value.expected, caught.value.actual) == (0, old[0], new)
    # ... while b's write, fenced with the new epoch, commits.
    await journal.append(Batch(records=[("r0", 1, body("r0", 1))], runs=[run_row("r0", last_seq=1)],
                               fence={0: new}))
    assert await journal.read_records("r0") == [body("r0", 0), body("r0", 1)]
    assert (await journal.get_run("r0")).last_seq == 1

    # Shard 1 (claimed by nobody yet) still has a's epoch: nobody else writes there until a claim.
    assert (await journal.shard_epochs())[1] == ("node-a", 1)
    assert await b.claim(1) == 2


async def test_heartbeat_that_misses_its_deadline_drops_the_leases_and_frees_the_locks(cluster: Cluster) -> None:
    a = await cluster.leases("node-a")
    b = await cluster.leases("node-b")
    assert await a.claim(6) == 1
    assert await a.heartbeat(5) is True

    assert await a.heartbeat(0) is False  # a deadline it cannot meet
    assert a.lost.is_set() and a.owned() == {}
    # The session was terminated, so the lock frees without waiting for the server to notice.
    with trio.fail_after(LOST_WITHIN):
        while (epoch := await b.claim(6)) is None:
            await trio.sleep(0.05)
    assert epoch == 2


async def test_aclose_clears_ownership_and_frees_the_locks(cluster: Cluster) -> None:
    a = await cluster.leases("node-a")
    b = await cluster.leases("node-b")
    assert await a.claim(2) == 1
    assert await a.claim(7) == 1
    await a.aclose()
    assert a.owned() == {} and not a.lost.is_set(), "a deliberate close is not a loss"
    epochs = await cluster.journal.shard_epochs()
    assert epochs[2] == (None, 1) and epochs[7] == (None, 1)
    with trio.fail_after(LOST_WITHIN):
        while (epoch := await b.claim(2)) is None:
            await trio.sleep(0.05)
    assert epoch == 2


async def test_a_silent_lease_session_is_ended_by_the_server(cluster: Cluster) -> None:
    """With ``idle_session_timeout`` the server ends a session that stops heartbeating (a hung
    or cut-off node), so its shards free without waiting for TCP timeouts."""
    a = await cluster.leases("node-a", idle_session_timeout=1.0)
    b = await cluster.leases("node-b")
    rows = await cluster.sql("SELECT application_name FROM pg_stat_activity WHERE pid = $1", a.backend_pid)
    assert rows[0][0] == "dw-shard-leases:node-a"
    assert await a.claim(1) == 1
    assert await b.claim(1) is None
    with trio.fail_after(1.0 + LOST_WITHIN):
        await a.lost.wait()  # no heartbeat for a second: the server ended the session
    assert a.owned() == {}
    with trio.fail_after(LOST_WITHIN):
        while (epoch := await b.claim(1)) is None:
            await trio.sleep(0.05)
    assert epoch == 2


async def test_a_kept_alive_session_outlives_the_thread_that_started_its_process(cluster: Cluster) -> None:
    """The session's child process once died with the trio worker thread that spawned it (an
    idle worker thread ends after 10 s; PR_SET_PDEATHSIG follows the thread): every node lost
    its shards every ten seconds. Kept alive, it holds its shards for longer than that."""
    a = await cluster.leases("node-a", idle_session_timeout=5.0, heartbeat_interval=0.5, parent_timeout=4.0)
    assert await a.claim(1) == 1
    for _ in range(24):
        await trio.sleep(0.5)
        await a.keepalive()
        assert not a.lost.is_set(), a.lost_reason
    assert a.owned() == {1: 1} and a.stats["heartbeats"] >= 15


async def test_a_node_that_stops_talking_to_its_session_loses_it(cluster: Cluster) -> None:
    """A frozen node (SIGSTOP, a hung loop) sends nothing: its session ends after parent_timeout."""
    a = await cluster.leases("node-a", idle_session_timeout=30.0, heartbeat_interval=0.5, parent_timeout=1.5)
    b = await cluster.leases("node-b")
    assert await a.claim(2) == 1
    with trio.fail_after(1.5 + LOST_WITHIN):
        await a.lost.wait()
    assert "sent nothing" in (a.lost_reason or "")
    with trio.fail_after(LOST_WITHIN):
        while (epoch := await b.claim(2)) is None:
            await trio.sleep(0.05)
    assert epoch == 2


async def test_owner_marks_a_lost_session_left_are_cleared_for_the_others(cluster: Cluster) -> None:
    """A rejoining node claimed part of its old shards; the rest kept its name without a lock,
    and the other nodes never claimed them (shards unowned for good)."""
    a = await cluster.leases("node-a")
    for shard in (1, 2, 3):
        assert await a.claim(shard) == 1
    await cluster.sql("SELECT pg_terminate_backend($1)", a.backend_pid)
    with trio.fail_after(LOST_WITHIN):
        await a.lost.wait()
    again = await cluster.leases("node-a")
    assert await again.claim(1) == 2
    marks = {r[0]: r[1] for r in await cluster.sql("SELECT shard_id, owner_node FROM shards")}
    assert marks[2] == marks[3] == "node-a"  # what the others would read as a live node's shards
    assert await cluster.journal.clear_owner_marks("node-a", sorted(again.owned())) == 2
    marks = {r[0]: r[1] for r in await cluster.sql("SELECT shard_id, owner_node FROM shards")}
    assert marks[1] == "node-a" and marks[2] is None and marks[3] is None


async def test_nodes_starting_together_agree_on_one_cluster_secret(cluster: Cluster) -> None:
    """The secret was inserted-or-selected in one statement, which could return no row when
    another node inserted it at the same moment (IndexError: a node died at start)."""
    secrets: list[bytes] = []
    journals = [PostgresJournal(cluster.location) for _ in range(6)]
    for journal in journals:
        await journal.open()
    try:
        async with trio.open_nursery() as nursery:
            for journal in journals:
                nursery.start_soon(lambda j=journal: _append_secret(j, secrets))
    finally:
        for journal in journals:
            await journal.aclose()
    assert len(secrets) == 6 and len(set(secrets)) == 1 and len(secrets[0]) == 32


async def _append_secret(journal: PostgresJournal, out: list[bytes]) -> None:
    out.append(await journal.cluster_secret())
