"""Prepared local activities through the official SDK (extended spec §2.2–2.5).

A worker that opts into prepared mode asks the server before each attempt of a local call:
the server admits it, renews the claim while it runs, records heartbeats and decides what its
outcome means. What a user relies on: the result reaches the workflow, retries follow the
policy with the server's backoff, a side effect before the call and a parallel group with
local members are recorded first, a cooperative cancellation stops the callback — and a
recorded local step never runs again after a worker replacement or a server SIGKILL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker

from . import prepared_workflows as pw
from .harness import await_until, current_history, unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
CAPABILITIES = ["cooperative_cancellation", "prepared_local_activities", "prepared_local_activity_groups",
                "prepared_local_activity_cancellation_policies"]


def _of(events: list[dict], activity_type: str) -> list[str]:
    return [e["event_type"] for e in events if e["payload"].get("activity_type") == activity_type]


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=pw.WORKFLOWS, activities=pw.ACTIVITIES, poll_timeout=2,
                  capabilities=CAPABILITIES)


async def _with_worker(url: str, tq: str, body) -> object:  # type: ignore[no-untyped-def]
    async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
        worker = _worker(client, tq)
        task = asyncio.create_task(worker.run())
        try:
            return await body(client, http)
        finally:
            await worker.stop()
            await task


def _run(server_url: str, workflow_type: str, ledger: Path, key: str) -> tuple[object, list[dict]]:
    tq, wid = unique("pla"), unique(workflow_type)

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        await client.start_workflow(workflow_type=workflow_type, workflow_id=wid, task_queue=tq, input=[str(ledger), key])
        return await client.get_workflow_handle(wid).result(timeout=60), await current_history(http, wid)

    return asyncio.run(_with_worker(server_url, tq, body))  # type: ignore[return-value]


def test_an_admitted_local_attempt_runs_once_and_its_result_reaches_the_workflow(server_url: str, tmp_path: Path) -> None:
    ledger, key = tmp_path / "runs", unique("k")
    result, events = _run(server_url, "pla_then_remote", ledger, key)
    assert result == [1, "remote after 1"]
    assert pw.runs(str(ledger), key) == 1
    assert _of(events, "pla_count") == ["ActivityScheduled", "ActivityStarted", "ActivityCompleted"]
    local = [e for e in events if e["payload"].get("activity_type") == "pla_count"]
    assert all(e["payload"]["execution_mode"] == "local" and e["payload"]["local_activity"] for e in local)
    remote = next(e for e in events if e["payload"].get("activity_type") == "pla_remote")
    assert remote["payload"]["sequence"] == local[0]["payload"]["sequence"] + 1


def test_the_server_retries_a_failed_attempt_after_the_policy_backoff(server_url: str, tmp_path: Path) -> None:
    ledger, key = tmp_path / "runs", unique("k")
    result, events = _run(server_url, "pla_retrying", ledger, key)
    assert result == "ok after 2"
    assert _of(events, "pla_flaky") == ["ActivityScheduled", "ActivityStarted", "ActivityRetryScheduled", "ActivityStarted",
                                        "ActivityCompleted"]
    retry = next(e for e in events if e["event_type"] == "ActivityRetryScheduled")
    assert retry["payload"]["retry_backoff_seconds"] == 1 and retry["payload"]["message"] == "transient 1"


def test_heartbeats_are_recorded_and_a_prefix_and_a_group_are_checkpointed(server_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "runs"
    result, events = _run(server_url, "pla_heartbeats", ledger, unique("k"))
    assert result == 3
    beats = [e for e in events if e["event_type"] == "ActivityHeartbeatRecorded"]
    assert [b["payload"]["progress"]["details"]["page"] for b in beats] == [0, 1, 2]
    result, events = _run(server_url, "pla_after_side_effect", ledger, unique("k"))
    assert result == ["tok", 1]
    assert [e["event_type"] for e in events][-5:-1] == ["SideEffectRecorded", "ActivityScheduled", "ActivityStarted",
                                                          "ActivityCompleted"]
    key = unique("k")
    result, events = _run(server_url, "pla_group", ledger, key)
    assert result == [1, 1, "remote member"]
    scheduled = [e for e in events if e["event_type"] == "ActivityScheduled"]
    assert [e["payload"]["sequence"] for e in scheduled] == [1, 2, 3]
    assert {e["payload"]["parallel_group_id"] for e in scheduled} == {scheduled[0]["payload"]["parallel_group_id"]}
    assert pw.runs(str(ledger), key + "-a") == pw.runs(str(ledger), key + "-b") == 1


def test_a_cooperative_request_stops_a_running_local_callback(server_url: str, tmp_path: Path) -> None:
    ledger, key = tmp_path / "runs", unique("k")
    tq, wid = unique("pla"), unique("pla-cancel")

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        handle = await client.start_workflow(workflow_type="pla_cancelled", workflow_id=wid, task_queue=tq,
                                             input=[str(ledger), key])
        await await_until(lambda: asyncio.sleep(0, pw.runs(str(ledger), key) == 1), timeout=30, what="the callback to start")
        await handle.request_cancellation(reason="enough")
        return await handle.result(timeout=60), await current_history(http, wid)

    result, events = asyncio.run(_with_worker(server_url, tq, body))
    assert result == "stopped"
    types = [e["event_type"] for e in events]
    cancelled = next(e for e in events if e["event_type"] == "ActivityCancelled")
    assert cancelled["payload"]["callback_state"] == "stopped" and cancelled["payload"]["local_activity"] is True
    assert "CooperativeCancellationDelivered" in types and "ActivityCompleted" not in types


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_recorded_prepared_step_is_not_run_again_after_a_worker_replacement_and_a_server_sigkill(
    tmp_path: Path, backend: str,
) -> None:
    ledger, key = tmp_path / "runs", unique("k")
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database)
        url = server.start()
        tq, wid = unique("pla-crash"), unique("pla-crash")

        async def scenario() -> object:
            async with httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
                async with Client(url) as client:
                    first = _worker(client, tq)
                    task = asyncio.create_task(first.run())
                    await client.start_workflow(workflow_type="pla_then_wait", workflow_id=wid, task_queue=tq,
                                                input=[str(ledger), key])

                    async def waiting() -> bool:
                        return "ConditionWaitOpened" in [e["event_type"] for e in await current_history(http, wid)]

                    await await_until(waiting, timeout=30, what="the workflow to wait after its local step")
                    await first.stop()
                    await task
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
                assert (await http.post(f"/api/workflows/{wid}/signal/go", json={"input": []})).status_code == 202
                async with Client(url) as client:
                    second = _worker(client, tq)
                    task = asyncio.create_task(second.run())
                    try:
                        return await client.get_workflow_handle(wid).result(timeout=60)
                    finally:
                        await second.stop()
                        await task

        try:
            result = asyncio.run(scenario())
        finally:
            server.stop()
        assert result == 1
        assert pw.runs(str(ledger), key) == 1, "the prepared local step ran again on replay"
        assert "Traceback" not in server.log(), server.log()
