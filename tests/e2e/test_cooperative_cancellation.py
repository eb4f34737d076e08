"""Cooperative cancellation through the official SDK (extended spec §5).

A client *requests* cancellation; the workflow code gets ``WorkflowCancelled`` at the call it
is blocked on, may clean up under a shield, and decides how the run ends. What a user relies
on: the request reaches the right call (timer, condition wait, activity), activities are
stopped per their cancellation policy, an uncaught cancellation closes the run as cancelled,
and a request survives a SIGKILL of the server.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker
from durable_workflow.errors import WorkflowCancelled

from . import coop_workflows
from .harness import await_until, current_history, unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@pytest.fixture(autouse=True)
def _sdk_log(caplog: pytest.LogCaptureFixture) -> None:
    """The SDK's INFO lines (tasks taken, completed, drained at stop) go in the report of a failed
    test: a worker stop that timed out once in CI, not since, is told apart by them."""
    caplog.set_level(logging.INFO, logger="durable_workflow")


def _types(events: list[dict]) -> list[str]:
    return [e["event_type"] for e in events]


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=coop_workflows.WORKFLOWS, activities=coop_workflows.ACTIVITIES,
                  poll_timeout=2, capabilities=["cooperative_cancellation"])


async def _with_worker(url: str, tq: str, body) -> object:  # type: ignore[no-untyped-def]
    async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
        worker = _worker(client, tq)
        task = asyncio.create_task(worker.run())
        try:
            return await body(client, http)
        finally:
            await worker.stop()
            await task


async def _started(http: httpx.AsyncClient, wid: str, kind: str) -> None:
    async def seen() -> bool:
        if (await http.get(f"/api/workflows/{wid}")).status_code == 404:
            return False  # a child whose start its shard's owner commits right after the parent's ChildRunStarted
        return kind in _types(await current_history(http, wid))

    await await_until(seen, timeout=30, what=f"{kind} in {wid}'s history")


def test_a_request_reaches_the_blocked_timer_and_the_workflow_cleans_up_under_a_shield(server_url: str) -> None:
    tq, wid = unique("coop"), unique("coop-timer")

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        handle = await client.start_workflow(workflow_type="coop_timer", workflow_id=wid, task_queue=tq)
        await _started(http, wid, "TimerScheduled")
        first = await handle.request_cancellation(reason="customer asked", cleanup_timeout_seconds=120)
        again = await client.request_workflow_cancellation(wid, reason="twice")
        result = await handle.result(timeout=60)
        described = (await http.get(f"/api/workflows/{wid}")).json()
        return first, again, result, described, await current_history(http, wid)

    first, again, result, described, events = asyncio.run(_with_worker(server_url, tq, body))
    assert result == "cleanup customer asked"
    assert described["status"] == "completed"
    assert first["duplicate"] is False and again["duplicate"] is True
    request_id = first["cancellation_request"]["request_id"]
    assert again["cancellation_request"] == first["cancellation_request"], "a repeat returns the standing request"
    types = _types(events)
    assert types.count("CooperativeCancellationRequested") == 1
    requested = next(e for e in events if e["event_type"] == "CooperativeCancellationRequested")
    delivered = next(e for e in events if e["event_type"] == "CooperativeCancellationDelivered")
    assert requested["workflow_command_id"] == request_id == delivered["payload"]["workflow_command_id"]
    assert delivered["payload"]["call_kind"] == "timer" and delivered["payload"]["sequence"] == 1
    assert types.index("CooperativeCancellationDelivered") < types.index("TimerCancelled")
    cleanup = [e for e in events if e["payload"].get("activity_type") == "coop_quick"]
    assert _types(cleanup) == ["ActivityScheduled", "ActivityStarted", "ActivityCompleted"]


def test_an_uncaught_request_stops_the_running_activity_and_closes_the_run_cancelled(server_url: str) -> None:
    tq, wid = unique("coop"), unique("coop-act")

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        handle = await client.start_workflow(workflow_type="coop_activity", workflow_id=wid, task_queue=tq)
        await _started(http, wid, "ActivityStarted")
        await handle.request_cancellation(reason="stop it")
        with pytest.raises(WorkflowCancelled):
            await handle.result(timeout=60)
        described = (await http.get(f"/api/workflows/{wid}")).json()
        events = await current_history(http, wid)
        task_id = next(e for e in events if e["event_type"] == "ActivityStarted")["payload"]["activity_execution_id"]
        return described, events, task_id

    described, events, _task = asyncio.run(_with_worker(server_url, tq, body))
    assert described["status"] == "cancelled"
    types = _types(events)
    assert types[-1] == "WorkflowCancelled"
    assert events[-1]["payload"]["reason"] == "stop it"
    cancelled = next(e for e in events if e["event_type"] == "ActivityCancelled")
    assert cancelled["payload"]["cancellation_request_id"] == events[-1]["payload"]["cancellation_request_id"]
    assert "ActivityCompleted" not in types and "ActivityFailed" not in types


def test_wait_cancellation_completed_delivers_only_after_the_activity_stopped(server_url: str) -> None:
    tq, wid = unique("coop"), unique("coop-wait")

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        handle = await client.start_workflow(workflow_type="coop_waiting_activity", workflow_id=wid, task_queue=tq)
        await _started(http, wid, "ActivityStarted")
        await handle.request_cancellation()
        return await handle.result(timeout=60), await current_history(http, wid)

    result, events = asyncio.run(_with_worker(server_url, tq, body))
    assert result == "stopped, then cleaned"
    types = _types(events)
    scheduled = next(e for e in events if e["event_type"] == "ActivityScheduled")
    assert scheduled["payload"]["cancellation_policy"] == "wait_cancellation_completed"
    cancelled = next(e for e in events if e["event_type"] == "ActivityCancelled")
    assert cancelled["payload"]["callback_state"] == "stopped", "acknowledged by the worker before the delivery"
    assert types.index("ActivityCancelled") < types.index("CooperativeCancellationDelivered")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_request_survives_a_server_sigkill_and_is_delivered_to_the_condition_wait(tmp_path: Path, backend: str) -> None:
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database)
        url = server.start()
        tq, wid = unique("coop-kill"), unique("coop-kill")

        async def scenario() -> object:
            async with httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
                async with Client(url) as client:
                    worker = _worker(client, tq)
                    task = asyncio.create_task(worker.run())
                    handle = await client.start_workflow(workflow_type="coop_condition", workflow_id=wid, task_queue=tq)
                    await _started(http, wid, "ConditionWaitOpened")
                    await worker.stop()
                    await task
                    request = await handle.request_cancellation(reason="while nobody listens")
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
                async with Client(url) as client:
                    worker = _worker(client, tq)
                    task = asyncio.create_task(worker.run())
                    try:
                        result = await client.get_workflow_handle(wid).result(timeout=60)
                    finally:
                        await worker.stop()
                        await task
                return request, result, await current_history(http, wid)

        try:
            request, result, events = asyncio.run(scenario())
        finally:
            server.stop()
        assert result == "cancelled while waiting"
        delivered = next(e for e in events if e["event_type"] == "CooperativeCancellationDelivered")
        assert delivered["payload"]["workflow_command_id"] == request["cancellation_request"]["request_id"]
        assert delivered["payload"]["call_kind"] == "condition"
        assert "Traceback" not in server.log(), server.log()


def test_request_cancellation_refuses_bad_input_and_closed_runs(server_url: str) -> None:
    tq, wid = unique("coop-bad"), unique("coop-bad")
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        http.post("/api/workflows", json={"workflow_type": "coop_timer", "workflow_id": wid, "task_queue": tq}).raise_for_status()
        run_id = http.get(f"/api/workflows/{wid}").json()["run_id"]
        for body, field in (({"cleanup_timeout_seconds": 0}, "cleanup_timeout_seconds"),
                            ({"cleanup_timeout_seconds": "5"}, "cleanup_timeout_seconds"),
                            ({"reason": "x" * 1001}, "reason")):
            r = http.post(f"/api/workflows/{wid}/request-cancellation", json=body)
            assert r.status_code == 422 and field in r.json()["errors"], r.text
        assert http.post("/api/workflows/nope-unknown/request-cancellation", json={}).status_code == 404
        r = http.post(f"/api/workflows/{wid}/runs/01J0000000000000000000000X/request-cancellation", json={})
        assert r.status_code == 409 and r.json()["reason"] == "historical_run_command_rejected"
        assert not [e for e in http.get(f"/api/workflows/{wid}/runs/{run_id}/history").json()["events"]
                    if e["event_type"].startswith("Cooperative")], "a refused request recorded nothing"
        http.post(f"/api/workflows/{wid}/terminate", json={}).raise_for_status()
        r = http.post(f"/api/workflows/{wid}/request-cancellation", json={})
        assert r.status_code == 409 and r.json()["reason"] == "run_not_active", r.text


@pytest.mark.parametrize("policy", ["try_cancel", "wait_cancellation_completed"])
def test_a_request_at_a_child_boundary_asks_the_child_to_stop_per_its_policy(sqlite_url: str, policy: str) -> None:
    """On SQLite here; on PostgreSQL across three nodes in tests/cluster/test_cluster_extended.py."""
    tq, wid = unique("coop"), unique(f"coop-parent-{policy[:4]}")

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        handle = await client.start_workflow(workflow_type="coop_parent", workflow_id=wid, task_queue=tq, input=[policy])
        await _started(http, wid, "ChildRunStarted")
        events = await current_history(http, wid)
        child_id = next(e for e in events if e["event_type"] == "ChildRunStarted")["payload"]["child_workflow_instance_id"]
        await _started(http, child_id, "TimerScheduled")
        await handle.request_cancellation(reason="stop the family")
        result = await handle.result(timeout=60)
        child = await client.get_workflow_handle(child_id).result(timeout=60)
        return result, child, await current_history(http, wid), await current_history(http, child_id)

    result, child, parent_events, child_events = asyncio.run(_with_worker(sqlite_url, tq, body))
    assert result == "parent stopped"
    parent_request = next(e for e in parent_events if e["event_type"] == "CooperativeCancellationRequested")
    assert child == {"parent_request_id": parent_request["workflow_command_id"], "lineage": 2}, "the child's context links to the parent's"
    scheduled = next(e for e in parent_events if e["event_type"] == "ChildWorkflowScheduled")
    assert scheduled["payload"]["cancellation_policy"] == policy
    child_request = next(e for e in child_events if e["event_type"] == "CooperativeCancellationRequested")
    assert child_request["payload"]["cancellation"]["root_request_id"] == parent_request["workflow_command_id"]
    types = _types(parent_events)
    delivered = types.index("CooperativeCancellationDelivered")
    if policy == "wait_cancellation_completed":
        assert "ChildRunCompleted" in types and types.index("ChildRunCompleted") < delivered, "delivered once the child closed"
    else:
        assert "ChildRunCompleted" not in types[:delivered], "delivered at once; the child stops on its own time"


def test_parent_close_policy_request_cancellation_asks_the_child_to_stop_cooperatively(sqlite_url: str) -> None:
    tq, wid = unique("coop"), unique("coop-leaves")

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        await client.start_workflow(workflow_type="coop_parent", workflow_id=wid, task_queue=tq, input=["abandon", "request_cancellation"])
        await _started(http, wid, "ChildRunStarted")
        events = await current_history(http, wid)
        child_id = next(e for e in events if e["event_type"] == "ChildRunStarted")["payload"]["child_workflow_instance_id"]
        await _started(http, child_id, "TimerScheduled")
        (await http.post(f"/api/workflows/{wid}/terminate", json={"reason": "operator"})).raise_for_status()
        child = await client.get_workflow_handle(child_id).result(timeout=60)
        await _started(http, wid, "ParentClosePolicyApplied")
        return child, await current_history(http, wid), await current_history(http, child_id)

    child, parent_events, child_events = asyncio.run(_with_worker(sqlite_url, tq, body))
    assert child == {"parent_request_id": None, "lineage": 1}, "a cooperative request, cleaned up by the child's own code"
    applied = next(e for e in parent_events if e["event_type"] == "ParentClosePolicyApplied")
    assert applied["payload"]["policy"] == "request_cancellation"
    scheduled = next(e for e in parent_events if e["event_type"] == "ChildWorkflowScheduled")
    assert scheduled["payload"]["parent_close_policy"] == "request_cancellation"
    assert _types(child_events)[-1] == "WorkflowCompleted"
