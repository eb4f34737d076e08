"""End-to-end: the official SDK's Client and Worker against a real dw-server process."""

from __future__ import annotations

import time

import httpx
import pytest
from durable_workflow import Client
from durable_workflow.errors import (
    WorkflowAlreadyStarted,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowTerminated,
)

from . import workflows as wf
from .harness import await_until, run, unique, with_worker

pytestmark = pytest.mark.e2e


def _run_one(url: str, workflow_type: str, args: list, *, timeout: float = 30) -> object:
    tq = unique("tq")

    async def body(client: Client) -> object:
        handle = await client.start_workflow(workflow_type=workflow_type, workflow_id=unique(workflow_type), task_queue=tq, input=args)
        return await client.get_workflow_handle(handle.workflow_id).result(timeout=timeout)

    return run(with_worker(url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))


def _history(url: str, workflow_id: str, run_id: str) -> list[dict]:
    headers = {"X-Durable-Workflow-Control-Plane-Version": "2"}
    r = httpx.get(f"{url}/api/workflows/{workflow_id}/runs/{run_id}/history", params={"page_size": 1000}, headers=headers)
    r.raise_for_status()
    return r.json()["events"]


def test_one_activity(server_url: str) -> None:
    assert _run_one(server_url, "one_activity", ["Ada"]) == "hello, Ada"


def test_three_sequential_and_five_parallel_activities(server_url: str) -> None:
    result = _run_one(server_url, "sequential_then_parallel", [])
    assert result == {"sequential": 6, "parallel": [1, 4, 9, 16, 25]}


async def _until_status(client: Client, wid: str, status: str, timeout: float = 30) -> None:
    """Until the run of ``wid`` has ``status``; fails with the last status seen at the deadline."""
    seen: list[str] = []

    async def reached() -> bool:
        seen.append((await client.describe_workflow(wid)).status)
        return seen[-1] == status

    try:
        await await_until(reached, timeout=timeout, what=f"{wid} {status}")
    except AssertionError:
        raise AssertionError(f"{wid} not {status} within {timeout:g}s (last status: {seen[-1:]})") from None


def test_durable_timer(server_url: str) -> None:
    started = time.monotonic()
    assert _run_one(server_url, "sleeper", [2]).startswith("woke")
    assert time.monotonic() - started >= 2


def test_signal_awaited_with_wait_condition(server_url: str) -> None:
    tq = unique("tq")

    async def body(client: Client) -> object:
        wid = unique("approval")
        handle = await client.start_workflow(workflow_type="approval", workflow_id=wid, task_queue=tq, input=[])
        await _until_status(client, wid, "waiting")  # the signal wakes a wait already open
        await handle.signal("approve", ["Grace"])
        return await handle.result(timeout=30)

    assert run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body)) == "hello, Grace"


def test_condition_wait_times_out(server_url: str) -> None:
    assert _run_one(server_url, "impatient", []) == "timed out"


def test_child_workflow(server_url: str) -> None:
    assert _run_one(server_url, "parent", ["Linus"]) == "child said: hello, Linus"


def test_continue_as_new_three_times_lists_the_chain(server_url: str) -> None:
    tq = unique("tq")
    wid = unique("counter")

    async def body(client: Client) -> object:
        await client.start_workflow(workflow_type="counter", workflow_id=wid, task_queue=tq, input=[0, 3])
        result = await client.get_workflow_handle(wid).result(timeout=30)
        runs = await client.list_workflow_runs(wid)
        return result, runs

    result, runs = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert result == "finished at 3"
    assert runs.run_count == 4
    statuses = [r.status for r in runs.runs]
    assert statuses == ["completed"] * 4
    events = _history(server_url, wid, runs.runs[0].run_id)
    assert events[-1]["event_type"] == "WorkflowContinuedAsNew"
    assert events[-1]["payload"]["continued_to_run_id"] == runs.runs[1].run_id


def test_activity_fails_twice_then_succeeds_under_retry_policy(server_url: str) -> None:
    key = unique("flaky")
    assert _run_one(server_url, "retrying", [key]) == "ok after 3"
    assert wf.ATTEMPTS[key] == 3


def test_non_retryable_activity_failure_fails_the_workflow(server_url: str) -> None:
    key = unique("doomed")
    with pytest.raises(WorkflowFailed) as info:
        _run_one(server_url, "non_retryable", [key])
    assert "card declined" in str(info.value)
    assert wf.ATTEMPTS[key] == 1


def test_workflow_that_raises(server_url: str) -> None:
    with pytest.raises(WorkflowFailed) as info:
        _run_one(server_url, "raiser", [])
    assert "workflow gave up" in str(info.value)


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_cancel_and_terminate_a_waiting_workflow(server_url: str, kind: str) -> None:
    tq = unique("tq")
    wid = unique(f"waiter-{kind}")

    async def body(client: Client) -> object:
        await client.start_workflow(workflow_type="waiter", workflow_id=wid, task_queue=tq, input=[])
        await _until_status(client, wid, "waiting")
        if kind == "cancel":
            await client.cancel_workflow(wid, reason="no longer needed")
        else:
            await client.terminate_workflow(wid, reason="operator stop")
        desc = await client.describe_workflow(wid)
        try:
            await client.get_workflow_handle(wid).result(timeout=10)
        except (WorkflowCancelled, WorkflowTerminated) as exc:
            return desc.status, type(exc).__name__
        return desc.status, None

    status, raised = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    expected = "cancelled" if kind == "cancel" else "terminated"
    assert status == expected
    assert raised == ("WorkflowCancelled" if kind == "cancel" else "WorkflowTerminated")


def test_side_effect_and_version_marker_survive_a_worker_replacement(server_url: str) -> None:
    tq = unique("tq")
    wid = unique("markers")

    async def first(client: Client) -> None:
        await client.start_workflow(workflow_type="markers", workflow_id=wid, task_queue=tq, input=[])
        await _until_status(client, wid, "waiting")

    async def second(client: Client) -> object:
        await client.signal_workflow(wid, "go")
        return await client.get_workflow_handle(wid).result(timeout=30)

    run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, first))
    result = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, second))
    describe = httpx.get(f"{server_url}/api/workflows/{wid}", headers={"X-Durable-Workflow-Control-Plane-Version": "2"}).json()
    events = _history(server_url, wid, describe["run_id"])
    recorded = next(e for e in events if e["event_type"] == "SideEffectRecorded")
    from persistence.avro import decode

    assert result["token"] == decode(recorded["payload"]["result"])
    assert result["version"] == 2
    assert describe["search_attributes"] == {"Stage": "waiting"}


def test_vanished_worker_lease_expires_and_another_worker_completes(server_url: str) -> None:
    tq = unique("tq")
    wid = unique("orphan")
    headers = {"X-Durable-Workflow-Protocol-Version": "1.20", "Content-Type": "application/json"}
    with httpx.Client(base_url=server_url, headers=headers, timeout=30) as http:
        http.post("/api/worker/register", json={"worker_id": "ghost", "task_queue": tq, "runtime": "python"}).raise_for_status()

        async def body(client: Client) -> object:
            await client.start_workflow(workflow_type="one_activity", workflow_id=wid, task_queue=tq, input=["Ghost"])
            return None

        async def start_only() -> None:
            async with Client(server_url) as client:
                await body(client)

        run(start_only())
        task = http.post("/api/worker/workflow-tasks/poll", json={"worker_id": "ghost", "task_queue": tq, "timeout_seconds": 5}).json()["task"]
        assert task is not None and task["lease_owner"] == "ghost"

    async def finish(client: Client) -> object:
        return await client.get_workflow_handle(wid).result(timeout=30)

    assert run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, finish)) == "hello, Ghost"


def test_activity_heartbeat_timeout_is_retried(server_url: str) -> None:
    key = unique("stall")
    assert _run_one(server_url, "heartbeat_timeout", [key]) == "attempt 2"


def test_duplicate_start_policies(server_url: str) -> None:
    tq = unique("tq")
    wid = unique("dup")
    done_wid = unique("dup-done")

    async def body(client: Client) -> object:
        first = await client.start_workflow(workflow_type="waiter", workflow_id=wid, task_queue=tq, input=[])
        with pytest.raises(WorkflowAlreadyStarted):
            await client.start_workflow(workflow_type="waiter", workflow_id=wid, task_queue=tq, input=[])
        with pytest.raises(WorkflowAlreadyStarted):
            await client.start_workflow(workflow_type="waiter", workflow_id=wid, task_queue=tq, input=[], duplicate_policy="fail")
        again = await client.start_workflow(
            workflow_type="waiter", workflow_id=wid, task_queue=tq, input=[], duplicate_policy="use-existing"
        )
        assert again.run_id == first.run_id
        await client.terminate_workflow(wid)
        await client.start_workflow(workflow_type="one_activity", workflow_id=done_wid, task_queue=tq, input=["x"])
        await client.get_workflow_handle(done_wid).result(timeout=30)
        with pytest.raises(WorkflowAlreadyStarted):
            await client.start_workflow(
                workflow_type="one_activity", workflow_id=done_wid, task_queue=tq, input=["x"], duplicate_policy="use-existing"
            )
        return True

    assert run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))


def test_children_continue_fail_and_follow_the_parent_close_policy(server_url: str) -> None:
    assert _run_one(server_url, "parent_of_many", [None]) == {"counted": "finished at 2", "failed": "ChildWorkflowFailed"}

    tq = unique("tq")
    wid = unique("policy")

    async def body(client: Client) -> object:
        handle = await client.start_workflow(workflow_type="parent_of_many", workflow_id=wid, task_queue=tq, input=["terminate"])
        async def three_children() -> list[dict]:
            events = _history(server_url, wid, handle.run_id)
            scheduled = [e for e in events if e["event_type"] == "ChildWorkflowScheduled"]
            return scheduled if len(scheduled) == 3 else []

        scheduled = await await_until(three_children, timeout=30, what="the parent's third child scheduled")
        child_id = scheduled[-1]["payload"]["child_workflow_instance_id"]
        await _until_status(client, child_id, "waiting")
        await client.terminate_workflow(wid, reason="parent stopped")
        # The parent close policy terminates the waiting child; a child left running fails here.
        await _until_status(client, child_id, "terminated")

        async def applied() -> list[dict]:
            events = _history(server_url, wid, handle.run_id)
            return events if events[-1]["event_type"] == "ParentClosePolicyApplied" else []

        events = await await_until(applied, timeout=30, what="the parent-close policy recorded on the parent")
        return (await client.describe_workflow(child_id)).status, events, child_id

    status, parent_events, child_id = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert status == "terminated"
    kinds = [e["event_type"] for e in parent_events]
    assert kinds.count("ChildRunStarted") == 5  # counter ran three runs (two continues), raiser and waiter one each
    assert kinds[-2:] == ["WorkflowTerminated", "ParentClosePolicyApplied"]
    applied = parent_events[-1]["payload"]
    assert applied["child_instance_id"] == child_id and applied["policy"] == "terminate" and applied["outcome"] == "applied"
