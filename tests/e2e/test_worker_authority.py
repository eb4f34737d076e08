"""Worker registrations and claims through the official SDK (extended spec §11): worker sessions, fenced
deregistration with the registration token, activity lease renewal keeping a long activity's
claim without heartbeats, query-task status for workers that require query authority, and one
staleness setting; on both journals. Three nodes: tests/cluster/test_cluster_operator.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker, WorkerSessionOptions, activity, workflow
from durable_workflow.errors import ServerError

from .harness import unique
from .server import ServerProcess
from .stores import BACKENDS, store
from .workflows import Inspectable

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
MANIFEST = {"local_activities": {"supported": True, "minimum_protocol_version": "1.18", "implementation": "record_local_activity"}}


@activity.defn(name="wa_long")
async def wa_long(seconds: float) -> str:
    await asyncio.sleep(seconds)  # no heartbeat: only the SDK's lease renewals keep the claim
    return f"done after {seconds}"


RAN_ON: Counter[str] = Counter()


def _infer(worker: str) -> object:
    @activity.defn(name="wa_infer")
    async def wa_infer(n: int) -> str:
        RAN_ON[worker] += 1
        return f"{n} on {worker}"

    return wa_infer


@workflow.defn(name="wa_model_job")
class ModelJob:
    def run(self, ctx, n):  # type: ignore[no-untyped-def]
        session = WorkerSessionOptions(session_id=f"model-{ctx.workflow_id}", requirements=("gpu:l4",))
        results = []
        for i in range(n):
            results.append((yield ctx.schedule_activity("wa_infer", [i], worker_session=session)))
        return results


@workflow.defn(name="wa_long_job")
class LongJob:
    def run(self, ctx, seconds):  # type: ignore[no-untyped-def]
        return (yield ctx.schedule_activity("wa_long", [seconds]))


def test_a_late_deregistration_of_an_older_generation_is_refused_and_a_repeat_gets_its_receipt(server_url: str) -> None:
    tq, worker_id = unique("wa"), unique("worker")

    async def scenario() -> tuple:
        async with Client(server_url) as client:
            first = await client.register_worker(worker_id=worker_id, task_queue=tq, capability_manifest=MANIFEST)
            second = await client.register_worker(worker_id=worker_id, task_queue=tq, capability_manifest=MANIFEST)
            with pytest.raises(ServerError) as stale:
                await client.deregister_worker_registration(worker_id, registration_token=first["registration_token"])
            async with httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
                still = (await http.get(f"/api/workers/{worker_id}")).status_code
                done = await client.deregister_worker_registration(worker_id, registration_token=second["registration_token"])
                again = await client.deregister_worker_registration(worker_id, registration_token=second["registration_token"])
                gone = (await http.get(f"/api/workers/{worker_id}")).status_code
            return first, second, stale.value, still, done, again, gone

    first, second, stale, still, done, again, gone = asyncio.run(scenario())
    assert first["registration_token"] != second["registration_token"], "a new token per registration generation"
    assert stale.status == 409 and stale.body["reason"] == "registration_token_mismatch"
    assert still == 200, "the current registration stayed"
    assert done["outcome"] == "deregistered" and done["registration_token"] == second["registration_token"]
    assert again == done, "a repeat gets the same receipt"
    assert gone == 404


@pytest.mark.parametrize("backend", BACKENDS)
def test_renewals_keep_a_silent_activitys_claim_past_its_lease_and_workers_stop_fenced(tmp_path: Path, backend: str) -> None:
    """With a 1 s activity lease, a 3 s activity that never heartbeats completes on its first
    attempt: without the SDK's renew-lease calls the lease would run out and the attempt be retried."""
    tq, wid = unique("wa-lease"), unique("wa-lease")
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), env={"DW_ACTIVITY_LEASE_SECONDS": "1"},
                               database=database)
        url = server.start()
        _lease_scenario(server, url, tq, wid)


def _lease_scenario(server: ServerProcess, url: str, tq: str, wid: str) -> None:

    async def scenario() -> tuple:
        async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
            worker = Worker(client, task_queue=tq, workflows=[LongJob], activities=[wa_long], poll_timeout=2)
            task = asyncio.create_task(worker.run())
            try:
                result = await client.start_workflow(workflow_type="wa_long_job", workflow_id=wid, task_queue=tq, input=[3])
                value = await result.result(timeout=60)
            finally:
                await worker.stop()
                await task
            run_id = (await http.get(f"/api/workflows/{wid}")).json()["run_id"]
            events = (await http.get(f"/api/workflows/{wid}/runs/{run_id}/history")).json()["events"]
            workers = (await http.get("/api/workers", params={"task_queue": tq})).json()["workers"]
            return value, events, workers

    try:
        value, events, workers = asyncio.run(scenario())
    finally:
        server.stop()
    assert value == "done after 3"
    kinds = [e["event_type"] for e in events]
    assert kinds.count("ActivityStarted") == 1 and "ActivityRetryScheduled" not in kinds, kinds
    assert workers == [], "Worker.stop() deregistered with its registration token"
    assert "registration_token_mismatch" not in server.log()


def test_a_worker_that_requires_query_authority_answers_queries(server_url: str) -> None:
    tq, wid = unique("wa-query"), unique("wa-query")

    async def scenario() -> object:
        async with Client(server_url) as client:
            worker = Worker(client, task_queue=tq, workflows=[Inspectable], poll_timeout=2, require_query_task_authority=True)
            task = asyncio.create_task(worker.run())
            try:
                handle = await client.start_workflow(workflow_type="inspectable", workflow_id=wid, task_queue=tq, input=["q"])
                await client.signal_workflow(wid, "add", args=["first"])
                for _ in range(100):
                    status = (await client.query_workflow(wid, "status"))["result"]
                    if status["items"] == ["first"]:
                        break
                    await asyncio.sleep(0.05)
                await handle.signal("add", ["b"])
                await handle.signal("add", ["c"])
                await handle.result(timeout=30)
                return status
            finally:
                await worker.stop()
                await task

    assert asyncio.run(scenario()) == {"stage": "waiting (q)", "items": ["first"]}


def test_one_staleness_setting_governs_registrations_views_and_queries(tmp_path: Path) -> None:
    """A setting, not a journal feature: on SQLite only."""
    tq, worker_id = unique("wa-stale"), unique("worker")
    with store("sqlite") as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database,
                               env={"DW_WORKER_STALE_AFTER_SECONDS": "2"})
        url = server.start()

        async def scenario() -> tuple:
            async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
                ack = await client.register_worker(worker_id=worker_id, task_queue=tq, capability_manifest=MANIFEST,
                                                   supported_workflow_types=["inspectable"], capabilities=["query_tasks"])
                fresh = (await http.get(f"/api/workers/{worker_id}")).json()
                await asyncio.sleep(2.5)
                stale = (await http.get(f"/api/workers/{worker_id}")).json()
                queue = (await http.get(f"/api/task-queues/{tq}")).json()
                return ack, fresh, stale, queue

        try:
            ack, fresh, stale, queue = asyncio.run(scenario())
        finally:
            server.stop()
        assert ack["stale_after_seconds"] == 2 and fresh["stale_after_seconds"] == 2
        assert fresh["status"] == "active" and stale["status"] == "stale"
        assert queue["stats"]["pollers"]["stale_after_seconds"] == 2 and queue["stats"]["pollers"]["stale_count"] == 1


def test_in_session_activities_run_on_the_capable_holder_and_stop_closes_its_session(server_url: str) -> None:
    tq, wid = unique("wa-session"), unique("wa-session")

    async def scenario() -> tuple:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            gpu = Worker(client, task_queue=tq, workflows=[ModelJob], activities=[_infer("gpu")], poll_timeout=1,
                         capabilities=["gpu:l4"])
            cpu = Worker(client, task_queue=tq, workflows=[ModelJob], activities=[_infer("cpu")], poll_timeout=1)
            tasks = [asyncio.create_task(w.run()) for w in (gpu, cpu)]
            try:
                handle = await client.start_workflow(workflow_type="wa_model_job", workflow_id=wid, task_queue=tq, input=[4])
                result = await handle.result(timeout=60)
            finally:
                for w in (gpu, cpu):
                    await w.stop()
                for t in tasks:
                    await t
            metrics = (await http.get("/api/system/operator-metrics")).json()["operator_metrics"]["worker_sessions"]
            failures = (await http.get("/api/system/metrics")).json()["metrics"]["dw_workflow_task_consecutive_failures"]
            return result, metrics, failures

    result, metrics, failures = asyncio.run(scenario())
    assert isinstance(failures["failed_task_count"], int) and failures["workflow_type_limit"] == 20
    assert result == [f"{i} on gpu" for i in range(4)], "every in-session attempt ran on the session's capable holder"
    assert RAN_ON["cpu"] == 0
    assert metrics["closed"] >= 1, "Worker.stop() closed the session it held"
