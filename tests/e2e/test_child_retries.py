"""Child workflow retry policies through the official SDK (extended spec §6).

A child started with a retry policy is retried by the server — each attempt a fresh run of the
same child workflow id — and the parent awaits one step: it sees the first success, or the last
failure once the budget is spent or the failure is non-retryable. A retry waiting out its backoff
survives a SIGKILL of the server.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker, activity, workflow

from .harness import current_history, unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
RUNS: collections.Counter[str] = collections.Counter()


@activity.defn(name="cr_count")
def cr_count(key: str) -> int:
    RUNS[key] += 1
    return RUNS[key]


@workflow.defn(name="cr_flaky_child")
class FlakyChild:
    def run(self, ctx, key, succeed_on):  # type: ignore[no-untyped-def]
        n = yield ctx.schedule_activity("cr_count", [key])
        if n < succeed_on:
            raise RuntimeError(f"attempt {n} failed")
        return f"child ok after {n}"


@workflow.defn(name="cr_parent")
class Parent:
    def run(self, ctx, key, succeed_on, max_attempts, backoff):  # type: ignore[no-untyped-def]
        try:
            return (yield ctx.start_child_workflow(
                "cr_flaky_child", [key, succeed_on],
                retry_policy={"max_attempts": max_attempts, "backoff_seconds": [backoff]},
            ))
        except Exception as exc:  # noqa: BLE001 - the parent sees the final failure only
            return f"child failed: {exc}"


@workflow.defn(name="cr_sleepy_child")
class SleepyChild:
    def run(self, ctx):  # type: ignore[no-untyped-def]
        yield ctx.start_timer(3600)
        return "woke"


@workflow.defn(name="cr_timeout_parent")
class TimeoutParent:
    """A child that never finishes in time: its run timeout ends each attempt, the policy retries it."""

    def run(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return (yield ctx.start_child_workflow("cr_sleepy_child", [], run_timeout_seconds=1, execution_timeout_seconds=30,
                                                   retry_policy={"max_attempts": 2, "backoff_seconds": [0]}))
        except Exception as exc:  # noqa: BLE001 - the parent sees the final failure only
            return f"child failed: {type(exc).__name__}"


WORKFLOWS, ACTIVITIES = [FlakyChild, Parent, SleepyChild, TimeoutParent], [cr_count]


async def _scenario(url: str, wid: str, key: str, succeed_on: int, max_attempts: int, backoff: int = 0) -> tuple[object, list, dict]:
    tq = unique("cr")
    async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
        worker = Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=ACTIVITIES, poll_timeout=2)
        task = asyncio.create_task(worker.run())
        try:
            await client.start_workflow(workflow_type="cr_parent", workflow_id=wid, task_queue=tq,
                                        input=[key, succeed_on, max_attempts, backoff])
            result = await client.get_workflow_handle(wid).result(timeout=60)
            events = await current_history(http, wid)
            child_id = next(e for e in events if e["event_type"] == "ChildWorkflowScheduled")["payload"]["child_workflow_instance_id"]
            runs = (await http.get(f"/api/workflows/{child_id}/runs")).json()
            return result, events, runs
        finally:
            await worker.stop()
            await task


def test_a_failed_child_is_retried_as_a_new_run_and_the_parent_sees_only_the_success(server_url: str) -> None:
    key = unique("k")
    result, events, runs = asyncio.run(_scenario(server_url, unique("cr-ok"), key, succeed_on=3, max_attempts=3))
    assert result == "child ok after 3"
    kinds = [e["event_type"] for e in events if e["event_type"].startswith("Child")]
    assert kinds == ["ChildWorkflowScheduled", "ChildRunStarted", "ChildRunStarted", "ChildRunStarted", "ChildRunCompleted"]
    retries = [e["payload"] for e in events if e["event_type"] == "ChildRunStarted"][1:]
    assert [r["retry_attempt"] for r in retries] == [2, 3]
    assert [r["child_run_number"] for r in retries] == [2, 3]
    assert retries[0]["retry_of_child_workflow_run_id"] != retries[0]["child_workflow_run_id"]
    scheduled = next(e for e in events if e["event_type"] == "ChildWorkflowScheduled")["payload"]
    assert scheduled["retry_policy"]["max_attempts"] == 3 and scheduled["retry_policy"]["snapshot_version"] == 1
    assert [r["status"] for r in runs["runs"]] == ["failed", "failed", "completed"], runs


def test_the_parent_sees_the_last_failure_once_the_budget_is_spent(server_url: str) -> None:
    result, events, runs = asyncio.run(_scenario(server_url, unique("cr-fail"), unique("k"), succeed_on=9, max_attempts=2))
    assert isinstance(result, str) and result.startswith("child failed") and "attempt 2 failed" in result
    kinds = [e["event_type"] for e in events if e["event_type"].startswith("Child")]
    assert kinds == ["ChildWorkflowScheduled", "ChildRunStarted", "ChildRunStarted", "ChildRunFailed"]
    assert len(runs["runs"]) == 2


def test_a_child_run_timeout_ends_each_attempt_and_the_parent_sees_the_last_one(server_url: str) -> None:
    wid, tq = unique("cr-timeout"), unique("cr")

    async def scenario() -> tuple[object, list, dict]:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            worker = Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=ACTIVITIES, poll_timeout=2)
            task = asyncio.create_task(worker.run())
            try:
                await client.start_workflow(workflow_type="cr_timeout_parent", workflow_id=wid, task_queue=tq)
                result = await client.get_workflow_handle(wid).result(timeout=60)
                events = await current_history(http, wid)
                child_id = next(e for e in events if e["event_type"] == "ChildWorkflowScheduled")["payload"]["child_workflow_instance_id"]
                return result, events, (await http.get(f"/api/workflows/{child_id}/runs")).json()
            finally:
                await worker.stop()
                await task

    result, events, runs = asyncio.run(scenario())
    assert isinstance(result, str) and result.startswith("child failed")
    scheduled = next(e for e in events if e["event_type"] == "ChildWorkflowScheduled")["payload"]
    assert scheduled["timeout_policy"]["run_timeout_seconds"] == 1 and scheduled["timeout_policy"]["execution_timeout_seconds"] == 30
    failed = next(e for e in events if e["event_type"] == "ChildRunFailed")["payload"]
    assert failed["closed_reason"] == "timed_out"
    assert [e["event_type"] for e in events if e["event_type"].startswith("Child")] == [
        "ChildWorkflowScheduled", "ChildRunStarted", "ChildRunStarted", "ChildRunFailed"]
    assert [r["closed_reason"] for r in runs["runs"]] == ["timed_out", "timed_out"], runs


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_retry_waiting_out_its_backoff_survives_a_server_sigkill(tmp_path: Path, backend: str) -> None:
    key, wid, tq = unique("k"), unique("cr-kill"), unique("cr-kill")
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database)
        url = server.start()

        async def scenario() -> object:
            async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
                worker = Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=ACTIVITIES, poll_timeout=2)
                task = asyncio.create_task(worker.run())
                await client.start_workflow(workflow_type="cr_parent", workflow_id=wid, task_queue=tq, input=[key, 2, 2, 3])
                for _ in range(600):
                    if sum(e["event_type"] == "ChildRunStarted" for e in await current_history(http, wid)) == 2:
                        break
                    await asyncio.sleep(0.05)
                await worker.stop()
                await task
                await asyncio.to_thread(server.kill)  # the retry run waits out its 3 s backoff
                await asyncio.to_thread(server.start)
                worker = Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=ACTIVITIES, poll_timeout=2)
                task = asyncio.create_task(worker.run())
                try:
                    return await client.get_workflow_handle(wid).result(timeout=60)
                finally:
                    await worker.stop()
                    await task

        try:
            result = asyncio.run(scenario())
        finally:
            server.stop()
        assert result == "child ok after 2"
        assert "Traceback" not in server.log(), server.log()
