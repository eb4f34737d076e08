"""Signals, the pending-signal limit and the retention purge on an in-process node, through
the HTTP pipeline (Quart's test client) where the answer's shape matters.

A signal's ``request_id`` is journaled with its answer, so a client retry is recognised
after the run was passivated and after the node restarted; the background retention pass
purges expired closed runs with nobody asking for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quart.typing import TestClientProtocol as HttpClient

from api.app import create_app
from runtime.node import Node

from .node_harness import ShiftedClock, running_node, wait_for

CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
DAY = 86400.0


async def start(client: HttpClient, workflow_id: str) -> dict[str, Any]:
    answer = await client.post("/api/workflows", json={"workflow_type": "waiter", "workflow_id": workflow_id, "task_queue": "nobody-polls"}, headers=CP)
    assert answer.status_code == 201, await answer.get_data()
    return await answer.get_json()


async def signal(client: HttpClient, workflow_id: str, **body: Any) -> tuple[int, dict[str, Any]]:
    answer = await client.post(f"/api/workflows/{workflow_id}/signal/poke", json=body, headers=CP)
    return answer.status_code, await answer.get_json()


async def received(node: Node, workflow_id: str) -> int:
    described = await node.workflows.describe("default", workflow_id)
    history = await node.workflows.history("default", workflow_id, described.run.run_id, page_size=1000, token=None, wait=False, hold=0)
    return [e["event_type"] for e in history["events"]].count("SignalReceived")


async def passivated(node: Node, run_id: str) -> None:
    await wait_for(f"run {run_id} to passivate", lambda: run_id not in node.engine.actors)


async def test_a_signal_retry_is_recognised_after_passivation_and_after_a_restart(tmp_path: Path) -> None:
    async with running_node(tmp_path, idle_seconds=0.3) as node:
        client = create_app(node).test_client()
        run_id = (await start(client, "retried"))["run_id"]
        first = await signal(client, "retried", request_id="retry-1", input=["a"])
        assert first[0] == 202 and first[1]["outcome"] == "signal_received"
        await passivated(node, run_id)
        after_passivation = await signal(client, "retried", request_id="retry-1", input=["a"])
        other = await signal(client, "retried", request_id="retry-2", input=["b"])
    async with running_node(tmp_path) as node:
        client = create_app(node).test_client()
        after_restart = await signal(client, "retried", request_id="retry-1", input=["a"])
        count = await received(node, "retried")
    for retry in (after_passivation, after_restart):
        assert retry[0] == 202
        assert (retry[1]["command_id"], retry[1]["command_sequence"]) == (first[1]["command_id"], first[1]["command_sequence"])
    assert other[1]["command_id"] != first[1]["command_id"]
    assert count == 2  # retry-1 once, retry-2 once


async def test_the_pending_signal_limit_is_a_422_with_its_limit(tmp_path: Path) -> None:
    async with running_node(tmp_path, max_pending_signals=2) as node:
        client = create_app(node).test_client()
        run_id = (await start(client, "flooded"))["run_id"]
        accepted = [await signal(client, "flooded", request_id=f"s-{i}") for i in range(2)]
        refused = await signal(client, "flooded", request_id="s-2")
        retried = await signal(client, "flooded", request_id="s-0")  # a retry of an accepted signal is no new signal
        count = await received(node, "flooded")
    assert [status for status, _ in accepted] == [202, 202]
    status, body = refused
    assert status == 422 and body["reason"] == "pending_signal_limit_exceeded"
    assert body["limit"] == 2 and body["workflow_id"] == "flooded" and body["run_id"] == run_id
    assert "2 signals" in body["message"]
    assert retried[0] == 202 and retried[1]["command_id"] == accepted[0][1]["command_id"]
    assert count == 2


async def test_the_background_pass_purges_expired_closed_runs_without_a_request(tmp_path: Path) -> None:
    clock = ShiftedClock()
    async with running_node(tmp_path, clock, retention_interval=1.0, history_retention_days=30) as node:
        client = create_app(node).test_client()
        closed = (await start(client, "closed-long-ago"))["run_id"]
        still_open = (await start(client, "still-open"))["run_id"]
        recent = (await start(client, "closed-recently"))["run_id"]
        for workflow_id in ("closed-long-ago",):
            assert (await client.post(f"/api/workflows/{workflow_id}/terminate", json={}, headers=CP)).status_code == 200
        clock.offset += 31 * DAY  # the first run closed 31 days ago by the node's clock
        assert (await client.post("/api/workflows/closed-recently/terminate", json={}, headers=CP)).status_code == 200

        async def purged() -> bool:
            return await node.journal.get_run(closed) is None

        await wait_for("the retention pass to purge the expired run", purged)
        gone = await client.get("/api/workflows/closed-long-ago", headers=CP)
        kept = [await node.journal.get_run(run_id) for run_id in (still_open, recent)]
    assert gone.status_code == 404
    assert all(row is not None for row in kept)  # open runs and runs inside the retention stay
