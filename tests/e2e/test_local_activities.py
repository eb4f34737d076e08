"""Local activities through the official SDK (extended spec §2.1, plain mode).

``ctx.local_activity`` runs the callable in the workflow worker during the workflow task and
reports its outcome as a ``record_local_activity`` command. What a user relies on: the result
(or failure) reaches the workflow code, the step is recorded as a local step, and it is never
run again — not when the worker is replaced, not when the server is SIGKILLed and restarted.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker, activity, workflow

from .harness import await_until, current_history, unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
RUNS: collections.Counter[str] = collections.Counter()


@activity.defn(name="la_count")
def la_count(key: str) -> int:
    RUNS[key] += 1
    return RUNS[key]


@activity.defn(name="la_flaky")
def la_flaky(key: str) -> str:
    RUNS[key] += 1
    if RUNS[key] < 3:
        raise RuntimeError(f"transient {RUNS[key]}")
    return f"ok after {RUNS[key]}"


@activity.defn(name="la_greet")
def la_greet(name: str) -> str:
    return f"hello, {name}"


@workflow.defn(name="la_then_remote")
class LocalThenRemote:
    def run(self, ctx, key):
        n = yield ctx.local_activity("la_count", [key])
        greeting = yield ctx.schedule_activity("la_greet", [f"run {n}"])
        return [n, greeting]


@workflow.defn(name="la_retrying")
class LocalRetrying:
    def run(self, ctx, key):
        return (yield ctx.local_activity("la_flaky", [key], retry_policy={"max_attempts": 3, "backoff_seconds": [0, 0]}))


@workflow.defn(name="la_failing")
class LocalFailing:
    def run(self, ctx, key):
        try:
            yield ctx.local_activity("la_flaky", [key])  # one attempt: the first call fails
        except Exception as exc:  # noqa: BLE001 - the workflow sees the recorded failure
            return f"failed: {exc}"
        return "unexpected success"


@workflow.defn(name="la_then_wait")
class LocalThenWait:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal("go")
    def on_go(self) -> None:
        self.go = True

    def run(self, ctx, key):
        n = yield ctx.local_activity("la_count", [key])
        yield ctx.wait_condition(lambda: self.go, key="go")
        return n


WORKFLOWS = [LocalThenRemote, LocalRetrying, LocalFailing, LocalThenWait]
ACTIVITIES = [la_count, la_flaky, la_greet]


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=ACTIVITIES, poll_timeout=2)


async def _run_with_worker(url: str, tq: str, body) -> object:  # type: ignore[no-untyped-def]
    async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
        worker = _worker(client, tq)
        task = asyncio.create_task(worker.run())
        try:
            return await body(client, http)
        finally:
            await worker.stop()
            await task


def test_a_local_activity_result_reaches_the_workflow_and_is_recorded_as_a_local_step(server_url: str) -> None:
    tq, wid, key = unique("la"), unique("la-plain"), unique("k")

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        await client.start_workflow(workflow_type="la_then_remote", workflow_id=wid, task_queue=tq, input=[key])
        result = await client.get_workflow_handle(wid).result(timeout=30)
        return result, await current_history(http, wid)

    result, events = asyncio.run(_run_with_worker(server_url, tq, body))
    assert result == [1, "hello, run 1"]
    assert RUNS[key] == 1
    local = [e for e in events if e["payload"].get("activity_type") == "la_count"]
    assert [e["event_type"] for e in local] == ["ActivityScheduled", "ActivityStarted", "ActivityCompleted"]
    assert all(e["payload"]["execution_mode"] == "local" and e["payload"]["local_activity"] is True for e in local)
    assert len({e["payload"]["sequence"] for e in local}) == 1
    remote = [e for e in events if e["payload"].get("activity_type") == "la_greet"]
    assert [e["event_type"] for e in remote] == ["ActivityScheduled", "ActivityStarted", "ActivityCompleted"]
    assert remote[0]["payload"]["sequence"] == local[0]["payload"]["sequence"] + 1, "the local call took one step"


def test_local_retries_and_failures_are_recorded_as_the_worker_reported_them(server_url: str) -> None:
    tq, retried, failed = unique("la"), unique("la-retry"), unique("la-fail")
    retry_key, fail_key = unique("k"), unique("k")

    async def body(client: Client, http: httpx.AsyncClient) -> object:
        await client.start_workflow(workflow_type="la_retrying", workflow_id=retried, task_queue=tq, input=[retry_key])
        await client.start_workflow(workflow_type="la_failing", workflow_id=failed, task_queue=tq, input=[fail_key])
        results = [await client.get_workflow_handle(w).result(timeout=30) for w in (retried, failed)]
        return results, await current_history(http, retried), await current_history(http, failed)

    results, retry_events, fail_events = asyncio.run(_run_with_worker(server_url, tq, body))
    assert results == ["ok after 3", "failed: transient 1"]
    kinds = [e["event_type"] for e in retry_events if e["payload"].get("activity_type") == "la_flaky"]
    assert kinds == ["ActivityScheduled", "ActivityStarted", "ActivityRetryScheduled", "ActivityStarted",
                     "ActivityRetryScheduled", "ActivityStarted", "ActivityCompleted"]
    failure = next(e for e in fail_events if e["event_type"] == "ActivityFailed")
    assert failure["payload"]["message"] == "transient 1" and failure["payload"]["exception_type"] == "RuntimeError"
    assert failure["payload"]["execution_mode"] == "local"


def test_a_bad_local_activity_report_is_refused_with_the_field_named(server_url: str) -> None:
    """The report becomes history replay trusts: a malformed one is refused, nothing recorded."""
    tq, wid = unique("la-bad"), unique("la-bad")
    wp = {"X-Durable-Workflow-Protocol-Version": "1.20"}
    with httpx.Client(base_url=server_url, timeout=30) as http:
        http.post("/api/worker/register", json={"worker_id": "w-la", "task_queue": tq, "runtime": "python"}, headers=wp).raise_for_status()
        http.post("/api/workflows", json={"workflow_type": "la_then_remote", "workflow_id": wid, "task_queue": tq},
                  headers=CP).raise_for_status()
        task = http.post("/api/worker/workflow-tasks/poll", json={"worker_id": "w-la", "task_queue": tq, "timeout_seconds": 5},
                         headers=wp).json()["task"]
        good = {"type": "record_local_activity", "activity_type": "la_count", "execution_mode": "local",
                "arguments": {"codec": "avro", "blob": "AA=="}, "outcome": "completed", "result": {"codec": "avro", "blob": "Ag=="},
                "attempts": [{"attempt_id": "a" * 64, "attempt_number": 1, "outcome": "completed", "heartbeats": []}]}
        bad = [
            ({**good, "execution_mode": "remote"}, "execution_mode"),
            ({**good, "result": None}, "result"),
            ({**good, "outcome": "failed", "result": None}, "message"),
            ({**good, "attempts": []}, "attempts"),
            ({**good, "attempts": [{**good["attempts"][0], "attempt_number": 2}]}, "attempts.0.attempt_number"),
            ({**good, "queue": "elsewhere"}, "queue"),
            ({**good, "retry_policy": {"max_attempts": 1, "backoff_seconds": [1]}}, "retry_policy.backoff_seconds"),
        ]
        for command, field in bad:
            body = {"lease_owner": "w-la", "workflow_task_attempt": task["workflow_task_attempt"], "commands": [command]}
            r = http.post(f"/api/worker/workflow-tasks/{task['task_id']}/complete", json=body, headers=wp)
            assert r.status_code == 422, (field, r.status_code, r.text)
            assert r.json()["reason"] == "validation_failed" and f"commands.0.{field}" in r.json()["errors"], (field, r.json())
        run_id = http.get(f"/api/workflows/{wid}", headers=CP).json()["run_id"]
        events = http.get(f"/api/workflows/{wid}/runs/{run_id}/history", headers=CP).json()["events"]
        assert not [e for e in events if e["event_type"].startswith("Activity")], "a refused report recorded nothing"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_recorded_local_activity_is_not_run_again_after_a_worker_replacement_and_a_server_sigkill(
    tmp_path: Path, backend: str,
) -> None:
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", env={"DW_WORKFLOW_TASK_LEASE_SECONDS": "4"}, port=ServerProcess.free_port(),
                               database=database)
        url = server.start()
        tq, wid, key = unique("la-crash"), unique("la-crash"), unique("k")

        async def scenario() -> object:
            async with httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
                async with Client(url) as client:
                    first = _worker(client, tq)
                    task = asyncio.create_task(first.run())
                    await client.start_workflow(workflow_type="la_then_wait", workflow_id=wid, task_queue=tq, input=[key])

                    async def recorded() -> bool:
                        return any(e["event_type"] == "ActivityCompleted" for e in await current_history(http, wid))

                    await await_until(recorded, timeout=30, what="the local activity's outcome in history")
                    await first.stop()  # the worker that ran it is gone
                    await task
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
                r = await http.post(f"/api/workflows/{wid}/signal/go", json={"input": []})
                assert r.status_code == 202, r.text
                async with Client(url) as client:
                    second = _worker(client, tq)  # a new worker replays from history
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
        assert RUNS[key] == 1, "the local activity ran again on replay"
        assert "Traceback" not in server.log(), server.log()
