"""Two clusters in two schemas (or databases) of one PostgreSQL server must not see each other's members.

A cluster's shard manager counts a member live only while its lease session is connected
(``PostgresJournal.lease_sessions``, read from ``pg_stat_activity``). ``pg_stat_activity`` lists
every session of the server, whatever the schema (or database) it works in, so the journal of
one cluster must only report the lease sessions of its own schema: otherwise a dead member of
cluster A is kept "live" by a namesake in cluster B, and its shards are not taken over until
its heartbeat ages out. A lease session counts only while it holds its cluster's membership lock
(``MEMBER_LOCK_KEY`` in the schema's lock namespace) in the journal's own database. PostgreSQL only; skipped without ``DW_TEST_DATABASE_URL`` except in CI.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio
import trio_asyncio

from persistence.pg_shard_leases import MEMBER_LOCK_KEY, ShardLeases
from persistence.postgres_journal import PostgresJournal
from runtime.shard_manager import decide_round
from tests.contract.test_journal import _pg_fetch, _postgres_store
from tests.postgres_required import postgres_url

SHARDS = 4


@pytest.fixture
async def two_clusters(tmp_path: Path) -> AsyncIterator[tuple[PostgresJournal, PostgresJournal, trio.Nursery]]:
    postgres_url()  # skips outside CI without a database, fails in CI
    async with trio_asyncio.open_loop(), AsyncExitStack() as stack:
        journals = []
        for name in ("a", "b"):
            location = await stack.enter_async_context(_postgres_store(tmp_path / name))
            journal = PostgresJournal(location)
            await journal.open()
            stack.push_async_callback(journal.aclose)
            journals.append(journal)
        async with trio.open_nursery() as nursery:
            for journal in journals:
                await nursery.start(journal.run_writer)
                await journal.ensure_cluster(SHARDS)
            yield journals[0], journals[1], nursery
            nursery.cancel_scope.cancel()


async def _open_leases(journal: PostgresJournal, node_id: str, nursery: trio.Nursery) -> ShardLeases:
    leases = ShardLeases(journal.dsn, node_id, lock_namespace=await journal.lease_namespace())
    await leases.open(nursery)
    return leases


async def test_lease_sessions_of_another_schema_are_not_counted(
    two_clusters: tuple[PostgresJournal, PostgresJournal, trio.Nursery],
) -> None:
    a, b, nursery = two_clusters
    node = f"same-name-{uuid.uuid4().hex[:8]}"  # unique in the server: no other test's session matches
    leases = await _open_leases(b, node, nursery)
    try:
        assert node in await b.lease_sessions()  # its own cluster sees it
        sessions_a = await a.lease_sessions()
        assert node not in sessions_a, "cluster A counts a lease session of cluster B"

        # What it costs: cluster A's member of that name died (no session) but its heartbeat
        # row is still fresh; A must take its shards over now, not after the heartbeat ages.
        now = 1_800_000_000.0
        await a.upsert_node("survivor", None, now - 50, now - 0.5, "active")
        await a.upsert_node(node, None, now - 50, now - 0.5, "active")
        decision = decide_round(
            node_id="survivor", shard_count=SHARDS, now=now, node_ttl=10.0, nodes=await a.list_nodes(),
            sessions=sessions_a | {"survivor"}, epochs={s: (node, 1) for s in range(SHARDS)}, held={},
        )
        assert decision.live == ["survivor"]
        assert decision.claims == list(range(SHARDS))
    finally:
        await leases.aclose()


async def test_a_lease_session_of_its_own_schema_is_counted_and_forgotten_when_closed(
    two_clusters: tuple[PostgresJournal, PostgresJournal, trio.Nursery],
) -> None:
    a, b, nursery = two_clusters
    # membership rows are per schema
    await b.upsert_node("only-in-b", None, 1.0, 2.0, "active")
    assert "only-in-b" not in [n.node_id for n in await a.list_nodes()]
    assert "only-in-b" in [n.node_id for n in await b.list_nodes()]
    node = f"own-{uuid.uuid4().hex[:8]}"
    leases = await _open_leases(a, node, nursery)
    assert node in await a.lease_sessions()
    await leases.aclose()
    with trio.fail_after(10):
        while node in await a.lease_sessions():
            await trio.sleep(0.05)


async def test_a_lease_session_of_another_database_is_not_counted(
    two_clusters: tuple[PostgresJournal, PostgresJournal, trio.Nursery],
) -> None:
    """Advisory locks and pg_stat_activity span databases: a cluster in another database whose
    schema has the same name (so the same lock namespace) must not count as this one's."""
    a, _b, nursery = two_clusters
    url = postgres_url()
    assert url is not None
    sql = trio_asyncio.aio_as_trio(_pg_fetch)
    other = f"{urlsplit(url).path.lstrip('/')}_x{uuid.uuid4().hex[:8]}"
    await sql(url, f'CREATE DATABASE "{other}"')
    try:
        parts = urlsplit(a.dsn)  # the same search_path: the same schema name there
        elsewhere = urlunsplit(parts._replace(path=f"/{other}"))
        namespace = await a.lease_namespace()
        node = f"other-db-{uuid.uuid4().hex[:8]}"
        leases = ShardLeases(elsewhere, node, lock_namespace=namespace)
        await leases.open(nursery)
        try:
            rows = await sql(
                url,
                "SELECT a.datname FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory'"
                " WHERE a.pid = $1 AND l.classid = $2::int8::oid AND l.objid = $3::int8::oid AND l.granted",
                leases.backend_pid, namespace & 0xFFFFFFFF, MEMBER_LOCK_KEY & 0xFFFFFFFF,
            )
            assert [r[0] for r in rows] == [other], "the session holds the same membership key, in the other database"
            assert node not in await a.lease_sessions()
        finally:
            await leases.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await sql(url, f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
