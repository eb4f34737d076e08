"""Commands through a node that does not own the run: a signal's ``request_id`` dedupe holds
when the request is forwarded, and an accepted update outlives its shard moving to another node.

Two nodes on one PostgreSQL; the workflow id is chosen so its shard belongs to node 2 while
every request goes to node 1, which forwards it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from durable_workflow import Client

from persistence.ids import shard_of
from tests.e2e import workflows as wf
from tests.e2e.harness import run, unique, with_worker
from tests.e2e.server import ServerProcess, stop_all
from tests.e2e.stores import store

pytestmark = pytest.mark.e2e
SHARDS = 16
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def start_node(tmp_path: Path, name: str, dsn: str) -> ServerProcess:
    port = ServerProcess.free_port()
    env = {"DW_NODE_ID": name, "DW_SHARD_COUNT": str(SHARDS), "DW_ADVERTISE_URL": f"http://127.0.0.1:{port}"}
    node = ServerProcess(tmp_path / name, env=env, port=port, database=dsn)
    node.start()
    return node


def shards_owned_by(dsn: str, node_id: str) -> set[int]:
    async def query() -> set[int]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r["shard_id"] for r in await conn.fetch("SELECT shard_id FROM shards WHERE owner_node = $1", node_id)}
        finally:
            await conn.close()

    return asyncio.run(query())


def split_evenly(http: httpx.Client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        view = http.get("/api/cluster/info").json()["cluster"]
        if {n["node_id"]: n["shards_owned"] for n in view["nodes"]}.get("node-2") == SHARDS // 2:
            return
        assert time.monotonic() < deadline, view
        time.sleep(0.25)


def workflow_id_on(shards: set[int], prefix: str) -> str:
    return next(w for w in (unique(prefix) for _ in range(10_000)) if shard_of("default", w, SHARDS) in shards)


def test_a_signal_retry_through_a_forwarding_node_is_applied_once(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [start_node(tmp_path, f"node-{i}", dsn) for i in (1, 2)]
        try:
            with httpx.Client(base_url=nodes[0].url, headers=CP, timeout=30) as http, \
                    httpx.Client(base_url=nodes[1].url, headers=CP, timeout=30) as owner:
                split_evenly(http)
                wid = workflow_id_on(shards_owned_by(dsn, "node-2"), "fwd-signal")
                started = http.post("/api/workflows", json={"workflow_type": "waiter", "workflow_id": wid, "task_queue": unique("idle")})
                assert started.status_code == 201, started.text
                answers = [http.post(f"/api/workflows/{wid}/signal/never", json={"request_id": "once"}) for _ in range(2)]
                answers.append(owner.post(f"/api/workflows/{wid}/signal/never", json={"request_id": "once"}))  # asked of the owner itself
                other = http.post(f"/api/workflows/{wid}/signal/never", json={"request_id": "twice"})
                run_id = started.json()["run_id"]
                events = http.get(f"/api/workflows/{wid}/runs/{run_id}/history", params={"page_size": 1000}).json()["events"]
                still_theirs = shard_of("default", wid, SHARDS) in shards_owned_by(dsn, "node-2")
        finally:
            stop_all(nodes)
    assert still_theirs  # every request to node 1 was forwarded
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert len({(a.json()["command_id"], a.json()["command_sequence"]) for a in answers}) == 1
    assert other.status_code == 202 and other.json()["command_id"] != answers[0].json()["command_id"]
    assert [e["event_type"] for e in events].count("SignalReceived") == 2
    for node in nodes:
        assert "Traceback" not in node.log(), node.log()


def test_an_accepted_update_is_applied_after_its_shard_moves(tmp_path: Path) -> None:
    """Node 2 owns the run and accepted the update (forwarded by node 1); node 2 leaves, node 1
    takes the shard over, and the update is applied there: the caller's retry gets its result."""
    tq = unique("tq")
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [start_node(tmp_path, f"node-{i}", dsn) for i in (1, 2)]
        try:
            with httpx.Client(base_url=nodes[0].url, headers=CP, timeout=30) as http:
                split_evenly(http)
                wid = workflow_id_on(shards_owned_by(dsn, "node-2"), "moving-update")
                started = http.post("/api/workflows", json={"workflow_type": "inspectable", "workflow_id": wid, "task_queue": tq, "input": ["m"]})
                assert started.status_code == 201, started.text
                accepted = http.post(f"/api/workflows/{wid}/update/push", json={"input": ["moved"], "request_id": "push-1"})
                assert accepted.status_code == 202 and accepted.json()["update_status"] == "accepted", accepted.text
            nodes[1].proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            assert nodes[1].proc.wait(15) == 0  # type: ignore[union-attr]

            async def body(client: Client) -> tuple:
                async with httpx.AsyncClient(base_url=nodes[0].url, headers=CP, timeout=60) as http:
                    retry = await http.post(f"/api/workflows/{wid}/update/push", json={
                        "input": ["moved"], "request_id": "push-1", "wait_for": "completed", "wait_timeout_seconds": 30})
                status = await client.query_workflow(wid, "status")
                await client.terminate_workflow(wid)
                return retry, status

            retry, status = run(with_worker(nodes[0].url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
            with httpx.Client(base_url=nodes[0].url, headers=CP, timeout=30) as http:
                run_id = started.json()["run_id"]
                events = http.get(f"/api/workflows/{wid}/runs/{run_id}/history", params={"page_size": 1000}).json()["events"]
        finally:
            for node in nodes:
                node.kill()
    assert retry.status_code == 200, retry.text
    assert retry.json()["update_id"] == accepted.json()["update_id"] and retry.json()["result"] == 1
    assert status["result"]["items"] == ["moved"]
    kinds = [e["event_type"] for e in events]
    assert kinds.count("UpdateAccepted") == 1 and kinds.count("UpdateCompleted") == 1
    assert "Traceback" not in nodes[0].log(), nodes[0].log()
