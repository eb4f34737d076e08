"""Queries through query tasks: the official SDK's Client asks, its Worker answers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from durable_workflow import Client
from durable_workflow.errors import QueryFailed

from . import workflows as wf
from .harness import await_until, run, unique, with_worker

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def test_queries_with_and_without_arguments_read_the_running_state(server_url: str) -> None:
    tq = unique("tq")

    async def body(client: Client) -> tuple:
        wid = unique("inspect")
        handle = await client.start_workflow(workflow_type="inspectable", workflow_id=wid, task_queue=tq, input=["q1"])
        await handle.signal("add", ["apple"])
        await handle.signal("add", ["pear"])

        async def both_recorded() -> bool:
            events = (await client.get_history(wid, handle.run_id, page_size=1000))["events"]
            return [e["event_type"] for e in events].count("SignalReceived") == 2

        await await_until(both_recorded, timeout=30, what="both signals in the run's history")
        status = await client.query_workflow(wid, "status")
        second = await client.query_workflow(wid, "item_at", args=[1])
        with pytest.raises(QueryFailed) as unknown:
            await client.query_workflow(wid, "no_such_query")
        history_before = (await client.get_history(wid, handle.run_id or status["run_id"], page_size=1000))["events"]
        await client.query_workflow(wid, "status")
        history_after = (await client.get_history(wid, handle.run_id or status["run_id"], page_size=1000))["events"]
        await handle.signal("add", ["plum"])
        result = await handle.result(timeout=30)
        return status, second, unknown.value, history_before, history_after, result

    status, second, unknown, before, after, result = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert status["result"] == {"stage": "waiting (q1)", "items": ["apple", "pear"]}
    assert status["query_name"] == "status" and status["control_plane"]["operation"] == "query"
    assert status["result_envelope"]["codec"] == "avro"
    assert second["result"] == "pear"
    assert (unknown.status, unknown.reason) == (404, "rejected_unknown_query"), repr(unknown)  # control-plane §4.8 step 6
    assert before == after  # a query writes nothing to the journal
    assert result == ["apple", "pear", "plum"]


def test_query_errors_are_in_the_envelope(server_url: str) -> None:
    tq = unique("tq")

    async def body(client: Client) -> tuple:
        wid = unique("inspect")
        handle = await client.start_workflow(workflow_type="inspectable", workflow_id=wid, task_queue=tq, input=["q2"])
        for item in ("a", "b", "c"):
            await handle.signal("add", [item])
        await handle.result(timeout=30)
        return wid, handle.run_id

    wid, run_id = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    with httpx.Client(base_url=server_url, headers=CP) as http:
        closed = http.post(f"/api/workflows/{wid}/query/status", json={})
        assert closed.status_code == 409 and closed.json()["reason"] == "run_not_active", closed.text
        missing = http.post(f"/api/workflows/{unique('nobody')}/query/status", json={})
        assert missing.status_code == 404 and missing.json()["reason"] == "instance_not_found"
        historical = http.post(f"/api/workflows/{wid}/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/query/status", json={})
        assert historical.status_code == 409 and historical.json()["reason"] == "historical_run_command_rejected"
        assert http.post(f"/api/workflows/{wid}/query/status", json={"input": "nope"}).status_code == 422

        started = http.post("/api/workflows", json={"workflow_type": "inspectable", "workflow_id": unique("lonely"), "task_queue": unique("empty"), "input": ["x"]})
        lonely = started.json()["workflow_id"]
        none = http.post(f"/api/workflows/{lonely}/query/status", json={})
        assert none.status_code == 409 and none.json()["reason"] == "query_worker_unavailable", none.text
        http.post(f"/api/workflows/{lonely}/terminate", json={})


def test_query_task_guard(server_url: str) -> None:
    """The worker plane's checks on a query answer (§7.3), driven by raw HTTP."""
    tq = unique("raw")
    worker_headers = {"X-Durable-Workflow-Protocol-Version": "1.20"}

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
            reg = await http.post("/api/worker/register", headers=worker_headers, json={"worker_id": "qw-1", "task_queue": tq, "runtime": "python"})
            assert reg.status_code in (200, 201), reg.text
            started = await http.post("/api/workflows", headers=CP, json={"workflow_type": "inspectable", "workflow_id": unique("guard"), "task_queue": tq, "input": ["g"]})
            wid = started.json()["workflow_id"]
            caller = asyncio.create_task(http.post(f"/api/workflows/{wid}/query/status", headers=CP, json={"input": [1, "two"]}))
            poll = await http.post("/api/worker/query-tasks/poll", headers=worker_headers, json={"worker_id": "qw-1", "task_queue": tq, "timeout_seconds": 5})
            task = poll.json()["task"]
            assert task["lease_owner"] == "qw-1" and task["task_queue"] == tq and task["query_task_attempt"] == 1
            assert task["query_name"] == "status" and task["workflow_id"] == wid
            assert [e["event_type"] for e in task["history_events"]][:2] == ["StartAccepted", "WorkflowStarted"]
            qid = task["query_task_id"]
            url = f"/api/worker/query-tasks/{qid}"
            wrong_owner = await http.post(f"{url}/complete", headers=worker_headers, json={"lease_owner": "qw-2", "query_task_attempt": 1, "result": 1})
            assert wrong_owner.status_code == 409 and wrong_owner.json()["reason"] == "lease_owner_mismatch"
            wrong_attempt = await http.post(f"{url}/complete", headers=worker_headers, json={"lease_owner": "qw-1", "query_task_attempt": 2, "result": 1})
            assert wrong_attempt.status_code == 409 and wrong_attempt.json()["reason"] == "query_task_attempt_mismatch"
            unknown = await http.post("/api/worker/query-tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/complete", headers=worker_headers, json={"lease_owner": "qw-1", "query_task_attempt": 1})
            assert unknown.status_code == 404 and unknown.json()["reason"] == "query_task_not_found"
            failed = await http.post(f"{url}/fail", headers=worker_headers, json={"lease_owner": "qw-1", "query_task_attempt": 1, "failure": {"message": "not today", "reason": "query_rejected"}})
            assert failed.status_code == 200 and failed.json()["outcome"] == "failed", failed.text
            answer = await caller
            assert answer.status_code == 409 and answer.json()["reason"] == "query_rejected" and answer.json()["message"] == "not today"
            late = await http.post(f"{url}/complete", headers=worker_headers, json={"lease_owner": "qw-1", "query_task_attempt": 1, "result": 1})
            assert late.status_code == 409 and late.json()["reason"] == "query_task_not_leased"
            await http.post(f"/api/workflows/{wid}/terminate", headers=CP, json={})

    run(scenario())


def test_a_query_no_worker_answers_times_out_with_504(tmp_path) -> None:
    """A worker is registered on the queue (so the query is admitted) but never polls query
    tasks: the caller gets 504 query_worker_timeout after DW_QUERY_TASK_TIMEOUT, and the SDK
    raises QueryFailed."""
    from .server import ServerProcess

    server = ServerProcess(tmp_path / "q", env={"DW_QUERY_TASK_TIMEOUT": "1"}, port=ServerProcess.free_port())
    server.start()
    try:
        tq = unique("deaf")
        wp = {"X-Durable-Workflow-Protocol-Version": "1.20"}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/api/worker/register", headers=wp, json={"worker_id": "deaf-1", "task_queue": tq, "runtime": "python"}).status_code in (200, 201)
            wid = http.post("/api/workflows", headers=CP, json={"workflow_type": "inspectable", "workflow_id": unique("deaf"), "task_queue": tq, "input": ["d"]}).json()["workflow_id"]
            answer = http.post(f"/api/workflows/{wid}/query/status", headers=CP, json={})
            assert answer.status_code == 504, answer.text
            assert answer.json()["reason"] == "query_worker_timeout"
            assert answer.json()["message"] == "Timed out waiting for a worker to execute the workflow query."

        async def via_sdk() -> BaseException:
            async with Client(server.url) as client:
                with pytest.raises(QueryFailed) as failed:
                    await client.query_workflow(wid, "status")
                return failed.value

        failure = run(via_sdk())
        # What the SDK's caller sees of the 504 (control-plane §4.8 step 4), reason and message.
        assert isinstance(failure, QueryFailed) and (failure.status, failure.reason) == (504, "query_worker_timeout"), repr(failure)
        assert str(failure) == "Timed out waiting for a worker to execute the workflow query.", repr(failure)
    finally:
        server.stop()
