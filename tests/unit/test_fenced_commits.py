"""What a node does when a commit is fenced out: another node claimed the shard meanwhile.

Every commit carries the epochs this node holds (``Batch.fence``); once another member's
claim has bumped a shard's epoch, the journal refuses the batch with ``FencedError``. The
run actor must then stop and drop the shard, and the client must not be told the command
was accepted (here, with no other member to forward to: 503 ``shard_not_owned`` with
Retry-After); a schedule's commit with the stale epoch likewise changes nothing and drops
the shard. In-process node on the SQLite journal, whose ``shards`` table fences like
PostgreSQL's (the journal contract covers both); ``engine.owned`` plays the shard manager.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.records import from_stored
from persistence import codec
from persistence.ids import shard_of_run
from runtime.node import Node
from tests.unit.inprocess import CP, node_app

SHARDS = 8


def _claim_behind_the_nodes_back(node: Node, shard: int) -> None:
    """What another member's claim does to the table: a higher epoch, another owner."""
    conn = sqlite3.connect(node.cfg.sqlite_path, timeout=10)
    try:
        with conn:
            conn.execute("UPDATE shards SET epoch = epoch + 1, owner_node = 'other' WHERE shard_id = ?", (shard,))
    finally:
        conn.close()


async def _record_types(node: Node, key: str) -> list[str]:
    return [from_stored(codec.loads(b)).kind for b in await node.journal.read_records(key)]


@pytest.fixture
async def fenced_node(tmp_path: Path) -> AsyncIterator[tuple[Node, Any]]:
    async with node_app(tmp_path, shard_count=SHARDS) as (node, http):
        assert await node.journal.ensure_cluster(SHARDS) == SHARDS
        node.engine.owned = dict.fromkeys(range(SHARDS), 0)  # every shard, at the epoch the table holds
        yield node, http


async def test_a_fenced_out_run_commit_stops_the_actor_drops_the_shard_and_acknowledges_nothing(
    fenced_node: tuple[Node, Any],
) -> None:
    node, http = fenced_node
    r = await http.post("/api/workflows", json={"workflow_type": "t", "workflow_id": "fenced", "task_queue": "q"}, headers=CP)
    assert r.status_code == 201, await r.get_data()
    run_id = (await r.get_json())["run_id"]
    shard = shard_of_run(run_id)
    assert shard is not None
    r = await http.post("/api/workflows/fenced/signal/first", json={"input": []}, headers=CP)
    assert r.status_code < 300, await r.get_data()  # fenced with the current epoch: accepted
    assert run_id in node.engine.actors
    before = await _record_types(node, run_id)
    assert "SignalReceived" in before

    _claim_behind_the_nodes_back(node, shard)
    r = await http.post("/api/workflows/fenced/signal/second", json={"input": []}, headers=CP)

    assert r.status_code == 503, await r.get_data()
    assert (await r.get_json())["reason"] == "shard_not_owned"
    assert r.headers.get("Retry-After")
    assert await _record_types(node, run_id) == before  # nothing of the refused command was written
    assert shard not in (node.engine.owned or {})  # the shard is dropped ...
    assert run_id not in node.engine.actors  # ... with its actor
    assert all(s in node.engine.owned for s in range(SHARDS) if s != shard)  # and nothing else is


async def test_a_schedule_commit_with_a_stale_epoch_changes_nothing_and_drops_the_shard(
    fenced_node: tuple[Node, Any],
) -> None:
    node, http = fenced_node
    spec = {"schedule_id": "nightly", "spec": {"cron_expressions": ["@yearly"]}, "action": {"workflow_type": "t", "task_queue": "q"}}
    r = await http.post("/api/schedules", json=spec, headers=CP)
    assert r.status_code == 201, await r.get_data()
    key = ("default", "nightly")
    shard = node.schedules.shard(*key)
    assert key in node.schedules.active
    stream = "schedule:default:nightly"
    before = await _record_types(node, stream)
    stored = [o.body for o in await node.journal.list_objects("schedule", "default")]

    _claim_behind_the_nodes_back(node, shard)
    r = await http.post("/api/schedules/nightly/pause", json={"note": "stale"}, headers=CP)

    assert r.status_code == 503, await r.get_data()
    assert (await r.get_json())["reason"] == "shard_not_owned"
    assert await _record_types(node, stream) == before
    assert [o.body for o in await node.journal.list_objects("schedule", "default")] == stored
    assert stored[0]["status"] != "paused"
    assert shard not in (node.engine.owned or {})
    assert key not in node.schedules.active  # the schedule service let go of it too


async def test_a_trigger_with_a_stale_schedule_epoch_starts_nothing(fenced_node: tuple[Node, Any]) -> None:
    node, http = fenced_node
    spec = {"schedule_id": "manual", "spec": {"cron_expressions": ["@yearly"]}, "action": {"workflow_type": "t", "task_queue": "q"}}
    r = await http.post("/api/schedules", json=spec, headers=CP)
    assert r.status_code == 201, await r.get_data()
    shard = node.schedules.shard("default", "manual")
    runs_before = await node.journal.list_runs("default", workflow_type=None, statuses=None, query=None, offset=0, limit=100)

    _claim_behind_the_nodes_back(node, shard)
    r = await http.post("/api/schedules/manual/trigger", json={}, headers=CP)

    assert r.status_code == 503, await r.get_data()
    runs = await node.journal.list_runs("default", workflow_type=None, statuses=None, query=None, offset=0, limit=100)
    assert runs == runs_before, "the refused trigger started a workflow"
