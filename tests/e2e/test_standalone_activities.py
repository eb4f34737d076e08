"""Standalone activities through the official SDK (extended spec §8): ``Client.start_activity``
runs a registered activity as a top-level job with the same workers, retries, the four
timeouts, heartbeats and cancellation as an activity in a workflow; describe, list and the
result wait read it; the job survives a SIGKILL of the server.

Three nodes: tests/cluster/test_cluster_operator.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker, activity
from durable_workflow.errors import ServerError, WorkflowCancelled, WorkflowFailed

from .harness import await_until, unique, with_worker
from .server import ServerProcess
from .stores import BACKENDS, store
from .workflows import OneActivity, greet

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
_attempts: dict[str, int] = {}
_release: dict[str, asyncio.Event] = {}


@activity.defn(name="sa_render")
async def sa_render(name: str, pages: int) -> dict:
    return {"report": f"{name}.pdf", "pages": pages}


@activity.defn(name="sa_flaky")
async def sa_flaky(key: str, failures: int) -> str:
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] <= failures:
        raise RuntimeError(f"attempt {_attempts[key]} of {key} fails")
    return f"{key} after {_attempts[key]}"


class Rejected(Exception):
    pass


@activity.defn(name="sa_refuse")
async def sa_refuse() -> str:
    raise Rejected("the input is not acceptable")


@activity.defn(name="sa_sleep")
async def sa_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@activity.defn(name="sa_progress")
async def sa_progress(key: str) -> str:
    """Heartbeats its progress, then waits (heartbeating) until the test lets it finish or the
    job is cancelled (the heartbeat then raises ActivityCancelled)."""
    release = _release.setdefault(key, asyncio.Event())
    step = 0
    while not release.is_set():
        step += 1
        await activity.context().heartbeat({"step": step})
        await asyncio.sleep(0.2)
    return f"{key} done at {step}"


ACTIVITIES = [sa_render, sa_flaky, sa_refuse, sa_sleep, sa_progress]


async def _job(http: httpx.AsyncClient, activity_id: str) -> dict:
    r = await http.get(f"/api/activities/{activity_id}")
    r.raise_for_status()
    return dict(r.json())


def test_a_job_runs_once_on_a_worker_and_reads_like_the_spec_says(server_url: str) -> None:
    tq, job_id = unique("sa"), unique("job")

    async def body(client: Client) -> tuple:
        handle = await client.start_activity(activity_type="sa_render", task_queue=tq, activity_id=job_id,
                                             input=["q3", 12], business_key="report-q3")
        result = await handle.result(timeout=30, poll_interval=0.1)
        described = await client.describe_activity(job_id)
        listed = await client.list_activities(status="completed", page_size=200)
        async with httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            raw = await _job(http, job_id)
            workflows = (await http.get("/api/workflows", params={"page_size": 200})).json()["workflows"]
            hosts = (await http.get("/api/workflows", params={"workflow_type": "dw.standalone_activity", "page_size": 200})).json()
            history = (await http.get(f"/api/workflows/{job_id}/runs/{handle.workflow_run_id}/history")).json()["events"]
        return handle, result, described, listed, raw, workflows, hosts["workflows"], history

    handle, result, described, listed, raw, workflows, hosts, history = asyncio.run(with_worker(server_url, tq, [], ACTIVITIES, body))
    assert result == {"report": "q3.pdf", "pages": 12}
    assert handle.activity_id == job_id and handle.workflow_type == "dw.standalone_activity" and handle.workflow_run_id
    assert described.status == "completed" and described.activity_status == "completed" and described.attempt_count == 1
    assert described.result == result and described.activity_type == "sa_render" and described.task_queue == tq
    assert described.business_key == "report-q3" and described.closed_reason == "completed"
    assert raw["activity_execution_id"] == handle.activity_execution_id and raw["result"]["codec"] == "avro"
    assert [e["event_type"] for e in history] == [
        "StartAccepted", "WorkflowStarted", "ActivityScheduled", "ActivityStarted", "ActivityCompleted", "WorkflowCompleted"]
    assert history[2]["payload"]["activity_type"] == "sa_render" and history[2]["payload"]["sequence"] == 1
    mine = [a for a in listed.activities if a.activity_id == job_id]
    assert len(mine) == 1 and mine[0].activity_type == "sa_render" and mine[0].status == "completed" and mine[0].result is None
    assert job_id not in {w["workflow_id"] for w in workflows}, "workflow listings leave jobs out"
    assert job_id in {w["workflow_id"] for w in hosts}, "unless their type is asked for"


def test_retries_and_a_final_failure_follow_the_retry_policy(server_url: str) -> None:
    tq, ok_id, refused_id, spent_id = unique("sa"), unique("job-ok"), unique("job-no"), unique("job-spent")

    async def body(client: Client) -> tuple:
        ok = await client.start_activity(activity_type="sa_flaky", task_queue=tq, activity_id=ok_id, input=[ok_id, 2],
                                         retry_policy={"max_attempts": 3, "backoff_seconds": [0]})
        refused = await client.start_activity(activity_type="sa_refuse", task_queue=tq, activity_id=refused_id,
                                              retry_policy={"max_attempts": 5, "non_retryable_error_types": ["Rejected"]})
        spent = await client.start_activity(activity_type="sa_flaky", task_queue=tq, activity_id=spent_id, input=[spent_id, 9],
                                            retry_policy={"max_attempts": 2, "backoff_seconds": [0]})
        value = await ok.result(timeout=30, poll_interval=0.1)
        errors = []
        for handle in (refused, spent):
            with pytest.raises(WorkflowFailed) as caught:
                await handle.result(timeout=30, poll_interval=0.1)
            errors.append(str(caught.value))
        return value, errors, [await client.describe_activity(i) for i in (ok_id, refused_id, spent_id)]

    value, errors, (ok, refused, spent) = asyncio.run(with_worker(server_url, tq, [], ACTIVITIES, body))
    assert value == f"{ok_id} after 3" and ok.attempt_count == 3
    assert refused.status == "failed" and refused.activity_status == "failed" and refused.attempt_count == 1, "non-retryable"
    assert spent.status == "failed" and spent.attempt_count == 2 and _attempts[spent_id] == 2, "the budget, not more"
    assert all("failed" in e for e in errors)


def test_schedule_to_start_schedule_to_close_and_start_to_close_timeouts_end_a_job(sqlite_url: str) -> None:
    """Deadlines are the actor's, not the journal's: on SQLite only (both journals run the rest)."""
    server_url = sqlite_url
    tq, idle_tq = unique("sa"), unique("sa-nobody")
    ids = {k: unique(f"job-{k}") for k in ("s2s", "s2c", "stc")}

    async def body(client: Client) -> dict:
        began = asyncio.get_running_loop().time()
        await client.start_activity(activity_type="sa_render", task_queue=idle_tq, activity_id=ids["s2s"], input=["x", 1],
                                    schedule_to_start_timeout_seconds=1)
        await client.start_activity(activity_type="sa_sleep", task_queue=tq, activity_id=ids["s2c"], input=[4],
                                    schedule_to_close_timeout_seconds=2)
        await client.start_activity(activity_type="sa_sleep", task_queue=tq, activity_id=ids["stc"], input=[3],
                                    start_to_close_timeout_seconds=1)
        out = {}
        for key, job_id in ids.items():
            with pytest.raises(WorkflowFailed):
                await client.get_activity_handle(job_id).result(timeout=30, poll_interval=0.1)
            out[key] = await client.describe_activity(job_id)
        out["elapsed"] = asyncio.get_running_loop().time() - began
        return out

    out = asyncio.run(with_worker(server_url, tq, [], ACTIVITIES, body))
    for key in ids:
        assert out[key].status == "failed" and out[key].activity_status == "timed_out", (key, out[key])
    assert out["s2s"].attempt_count == 0, "nobody ever claimed it"
    assert out["stc"].attempt_count == 1 and out["s2c"].attempt_count == 1
    assert out["elapsed"] < 15, "deadlines are enforced when due, not by a slow sweep"


def test_a_silent_activity_is_timed_out_by_its_heartbeat_deadline(sqlite_url: str) -> None:
    server_url = sqlite_url
    tq, job_id = unique("sa"), unique("job-hb")

    async def body(client: Client) -> object:
        await client.start_activity(activity_type="sa_sleep", task_queue=tq, activity_id=job_id, input=[3],
                                    heartbeat_timeout_seconds=1, start_to_close_timeout_seconds=60)
        with pytest.raises(WorkflowFailed):
            await client.get_activity_handle(job_id).result(timeout=30, poll_interval=0.1)
        return await client.describe_activity(job_id)

    job = asyncio.run(with_worker(server_url, tq, [], ACTIVITIES, body))
    assert job.status == "failed" and job.activity_status == "timed_out"


def test_heartbeat_details_show_and_a_cancel_stops_the_job(server_url: str) -> None:
    tq, job_id = unique("sa"), unique("job-cancel")

    async def body(client: Client) -> tuple:
        handle = await client.start_activity(activity_type="sa_progress", task_queue=tq, activity_id=job_id, input=[job_id])

        async def beating() -> object:
            job = await client.describe_activity(job_id)
            return job if job.activity_status == "running" and job.last_heartbeat_at else None

        running = await await_until(beating, timeout=30, what="the job's first heartbeat")
        async with httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            progress = (await _job(http, job_id))["last_heartbeat_progress"]
        await handle.cancel(reason="not needed any more")
        with pytest.raises(WorkflowCancelled):
            await handle.result(timeout=30, poll_interval=0.1)
        return running, progress, await client.describe_activity(job_id)

    running, progress, cancelled = asyncio.run(with_worker(server_url, tq, [], ACTIVITIES, body))
    assert running.status == "running" and running.attempt_count == 1
    assert progress["details"]["step"] >= 1
    assert cancelled.status == "cancelled" and cancelled.activity_status == "cancelled"


def test_an_id_is_one_job_at_a_time_and_never_a_workflows(server_url: str) -> None:
    tq, job_id, wid = unique("sa"), unique("job-id"), unique("wf")

    async def body(client: Client) -> tuple:
        first = await client.start_activity(activity_type="sa_progress", task_queue=tq, activity_id=job_id, input=[job_id])
        with pytest.raises(ServerError) as running:
            await client.start_activity(activity_type="sa_render", task_queue=tq, activity_id=job_id, input=["x", 1])
        _release.setdefault(job_id, asyncio.Event()).set()
        await first.result(timeout=30, poll_interval=0.1)
        again = await client.start_activity(activity_type="sa_render", task_queue=tq, activity_id=job_id, input=["again", 2])
        second = await again.result(timeout=30, poll_interval=0.1)
        await client.start_workflow(workflow_type="one_activity", workflow_id=wid, task_queue=tq, input=["x"])
        with pytest.raises(ServerError) as reserved:
            await client.start_activity(activity_type="sa_render", task_queue=tq, activity_id=wid, input=["x", 1])
        async with httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            missing = await http.get(f"/api/activities/{wid}")
        return running.value, first, again, second, reserved.value, missing

    running, first, again, second, reserved, missing = asyncio.run(with_worker(server_url, tq, [OneActivity], [*ACTIVITIES, greet], body))
    assert running.status == 409 and running.body["reason"] == "activity_already_running"
    assert running.body["workflow_run_id"] == first.workflow_run_id
    assert again.workflow_run_id != first.workflow_run_id and second == {"report": "again.pdf", "pages": 2}
    assert reserved.status == 409 and reserved.body["reason"] == "activity_id_reserved"
    assert missing.status_code == 404 and missing.json()["reason"] == "activity_not_found", "a workflow is not a job"


def test_the_result_wait_answers_when_the_job_closes_not_at_its_deadline(server_url: str) -> None:
    tq, job_id = unique("sa"), unique("job-wait")

    async def body(client: Client) -> tuple:
        await client.start_activity(activity_type="sa_progress", task_queue=tq, activity_id=job_id, input=[job_id])
        async with httpx.AsyncClient(base_url=server_url, headers=CP, timeout=60) as http:
            async def release_soon() -> None:
                await asyncio.sleep(1.0)
                _release.setdefault(job_id, asyncio.Event()).set()

            started = time.monotonic()
            waiter = asyncio.create_task(http.get(f"/api/activities/{job_id}", params={"wait_seconds": 25}))
            await release_soon()
            answer = await waiter
            return answer.json(), time.monotonic() - started

    job, elapsed = asyncio.run(with_worker(server_url, tq, [], ACTIVITIES, body))
    assert job["status"] == "completed" and job["result"] is not None
    assert elapsed < 10, f"the parked read answered at the close ({elapsed:.1f}s), not at its 25 s deadline"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_job_survives_a_server_sigkill_before_and_while_it_runs(tmp_path: Path, backend: str) -> None:
    tq, waiting_id, running_id = unique("sa-kill"), unique("job-wait"), unique("job-run")
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database,
                               env={"DW_ACTIVITY_LEASE_SECONDS": "3"})
        url = server.start()

        async def scenario() -> tuple:
            async with Client(url) as client:
                await client.start_activity(activity_type="sa_render", task_queue=tq, activity_id=waiting_id, input=["w", 1])
                worker = Worker(client, task_queue=tq, activities=ACTIVITIES, poll_timeout=2)
                task = asyncio.create_task(worker.run())
                await client.start_activity(activity_type="sa_progress", task_queue=tq, activity_id=running_id,
                                            input=[running_id], retry_policy={"max_attempts": 3, "backoff_seconds": [0]})

                async def claimed() -> bool:
                    return (await client.describe_activity(running_id)).activity_status == "running"

                await await_until(claimed, timeout=30, what="the job's attempt running")
                await asyncio.to_thread(server.kill)  # one job done or waiting, one mid-attempt
                _release.setdefault(running_id, asyncio.Event()).set()  # its worker reports to the restarted server, or
                await asyncio.to_thread(server.start)  # the attempt's lease runs out and another worker retries it
                await worker.stop()
                await task
                worker = Worker(client, task_queue=tq, activities=ACTIVITIES, poll_timeout=2)
                task = asyncio.create_task(worker.run())
                try:
                    waited = await client.get_activity_handle(waiting_id).result(timeout=60, poll_interval=0.2)
                    ran = await client.get_activity_handle(running_id).result(timeout=60, poll_interval=0.2)
                    return waited, ran, await client.describe_activity(running_id)
                finally:
                    await worker.stop()
                    await task

        try:
            waited, ran, job = asyncio.run(scenario())
        finally:
            server.stop()
        assert waited == {"report": "w.pdf", "pages": 1}
        assert ran.startswith(running_id) and job.status == "completed"
        assert job.attempt_count >= 1
        assert "Traceback" not in server.log(), server.log()
