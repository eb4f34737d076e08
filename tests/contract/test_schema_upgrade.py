"""Upgrading a store an older release made: its data stays readable and the new version is applied.

The old store is built the way that release left it: only the migrations before the newest
one (``persistence.migrations``) applied and recorded in ``schema_version``, then rows written
with plain SQL in that schema's shape (no current journal code involved). Opening it with the
current journal must apply exactly the missing version, keep every row readable through the
journal interface, and make the new version's tables usable. Both backends, through the
journal contract's ``backend``/``harness`` fixtures (PostgreSQL: a fresh schema per test).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import astuple
from typing import Any

import asyncpg
import trio_asyncio

from persistence.journal import Batch, InstanceRow, NamespaceRow, NodeRow, ObjectRow, RunRow, WorkerRow
from persistence.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from tests.contract import test_journal as contract
from tests.contract.test_journal import Backend, Harness

# the journal contract's fixtures: both backends, a fresh store per test
aio_loop, backend, harness = contract.aio_loop, contract.backend, contract.harness

T0 = 1_800_000_000.0
NS = "upgrade-ns"
CURRENT = max(v for v, _ in SQLITE_MIGRATIONS)
assert CURRENT == max(v for v, _ in POSTGRES_MIGRATIONS), "both backends are at the same schema version"
OLD = CURRENT - 1

RUN = RunRow(
    run_id="old-run", namespace=NS, workflow_id="wf-old", run_number=1, workflow_type="Order", task_queue="q",
    status="running", closed_reason=None, business_key="bk-1", started_at=T0, closed_at=None, wake_at=T0 + 60,
    attention=True, last_seq=3, search_attributes={"Customer": "ada", "n": [1, 2]}, memo={"note": "kept"},
)
INSTANCE = InstanceRow(NS, "wf-old", "Order", "old-run", 1, T0)
NAMESPACE = NamespaceRow(NS, "made by the old release", 7, "active", T0, T0)
WORKER = WorkerRow(NS, "w-1", "q", "python", T0, T0 + 1, {"sdk_version": "2.12.0"})
NODE = NodeRow("old-node", "http://127.0.0.1:9", T0, T0 + 2, "active")
OBJECT = ObjectRow(NS, "schedule", "nightly", {"schedule_id": "nightly", "status": "active"}, T0)
BODIES = [f"record-{i}".encode() + b"\x00\xff" for i in range(1, 4)]
SHARD_COUNT = 4


def _old_rows(placeholder: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Rows in the shape of the schema at ``OLD`` (tables of versions 1 to 3)."""

    def sql(text: str, n: int) -> str:
        marks = ", ".join("?" if placeholder == "?" else f"${i + 1}" for i in range(n))
        return text.replace("{}", marks)

    r = RUN
    rows: list[tuple[str, tuple[Any, ...]]] = [
        (sql("INSERT INTO records(run_id, jseq, body) VALUES ({})", 3), ("old-run", i + 1, b)) for i, b in enumerate(BODIES)
    ]
    rows.append((
        sql(
            "INSERT INTO runs(run_id, namespace, workflow_id, run_number, workflow_type, task_queue, status, closed_reason,"
            " business_key, started_at, closed_at, wake_at, attention, last_seq, search_attributes, memo) VALUES ({})", 16,
        ),
        (r.run_id, r.namespace, r.workflow_id, r.run_number, r.workflow_type, r.task_queue, r.status, r.closed_reason,
         r.business_key, r.started_at, r.closed_at, r.wake_at, 1 if placeholder == "?" else True, r.last_seq,
         json.dumps(r.search_attributes), json.dumps(r.memo)),
    ))
    rows.append((
        sql("INSERT INTO instances(namespace, workflow_id, workflow_type, current_run_id, run_count, created_at) VALUES ({})", 6),
        astuple(INSTANCE),
    ))
    rows.append((
        sql("INSERT INTO namespaces(name, description, retention_days, status, created_at, updated_at) VALUES ({})", 6),
        astuple(NAMESPACE),
    ))
    w = WORKER
    rows.append((
        sql("INSERT INTO workers(namespace, worker_id, task_queue, runtime, registered_at, last_seen, info) VALUES ({})", 7),
        (w.namespace, w.worker_id, w.task_queue, w.runtime, w.registered_at, w.last_seen, json.dumps(w.info)),
    ))
    rows.append((sql("INSERT INTO cluster_settings(key, value) VALUES ({})", 2), ("shard_count", str(SHARD_COUNT))))
    for shard in range(SHARD_COUNT):
        rows.append((
            sql("INSERT INTO shards(shard_id, owner_node, epoch, updated_at) VALUES ({})", 4),
            (shard, "old-node" if shard == 2 else None, 5 if shard == 2 else 0, T0 if shard == 2 else None),
        ))
    rows.append((sql("INSERT INTO nodes(node_id, advertise_url, started_at, heartbeat_at, status) VALUES ({})", 5), astuple(NODE)))
    o = OBJECT
    rows.append((
        sql("INSERT INTO objects(namespace, kind, name, body, updated_at) VALUES ({})", 5),
        (o.namespace, o.kind, o.name, json.dumps(o.body), o.updated_at),
    ))
    return rows


def _make_old_sqlite(location: str) -> None:
    conn = sqlite3.connect(location, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, statements in SQLITE_MIGRATIONS:
            if version <= OLD:
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
        for statement, args in _old_rows("?"):
            conn.execute(statement, args)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def _make_old_postgres(location: str) -> None:
    conn = await asyncpg.connect(location)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
            for version, statements in POSTGRES_MIGRATIONS:
                if version <= OLD:
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO schema_version(version) VALUES ($1)", version)
            for statement, args in _old_rows("$"):
                await conn.execute(statement, *args)
    finally:
        await conn.close()


async def _make_old_store(chosen: Backend, location: str) -> None:
    if chosen.name == "sqlite":
        _make_old_sqlite(location)
    else:
        await trio_asyncio.aio_as_trio(_make_old_postgres)(location)


async def test_a_store_of_the_previous_schema_version_upgrades_with_its_data(backend: Backend, harness: Harness) -> None:
    assert backend.applied_versions is not None
    await _make_old_store(backend, harness.location)
    assert await backend.applied_versions(harness.location) == list(range(1, OLD + 1))

    journal = await harness.open()

    # exactly the missing version was applied, once
    assert await backend.applied_versions(harness.location) == list(range(1, CURRENT + 1))

    # everything the old release wrote reads back through the current journal
    assert await journal.read_records("old-run") == BODIES
    assert await journal.get_run("old-run") == RUN
    assert await journal.get_instance(NS, "wf-old") == INSTANCE
    assert await journal.list_instance_runs(NS, "wf-old") == [RUN]
    assert NAMESPACE in await journal.list_namespaces()
    assert WORKER in await journal.list_workers()
    assert [r.run_id for r in await journal.runs_to_recover()] == ["old-run"]
    runs = await journal.list_runs(NS, workflow_type=None, statuses=None, query="bk-", offset=0, limit=10)
    assert runs == [RUN]
    assert await journal.list_objects("schedule", NS) == [OBJECT]
    assert await journal.list_nodes() == [NODE]
    epochs = await journal.shard_epochs()
    assert epochs == {0: (None, 0), 1: (None, 0), 2: ("old-node", 5), 3: (None, 0)}
    assert await journal.ensure_cluster(SHARD_COUNT) == SHARD_COUNT  # the stored count is kept

    # the old store keeps working: new records after the old ones, fenced with the stored epoch
    await journal.append(Batch(records=[("old-run", 4, b"after the upgrade")], fence={2: 5}))
    assert await journal.read_records("old-run") == [*BODIES, b"after the upgrade"]

    # the new version's table (seen signatures, version 4) is there and works
    assert await journal.claim_once([(b"sig-1", T0 + 600)], None) == [True]
    assert await journal.claim_once([(b"sig-1", T0 + 600)], None) == [False]

    # a second open of the upgraded store applies nothing again
    await harness.close(journal)
    again = await harness.open()
    assert await again.get_run("old-run") == RUN
    assert await backend.applied_versions(harness.location) == list(range(1, CURRENT + 1))
