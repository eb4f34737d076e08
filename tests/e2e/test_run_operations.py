"""Operator commands through the official SDK (extended spec §9): repair a run nobody picked
up, redrive a run that failed on an activity (only the failed step runs again, also across a
server SIGKILL right after the redrive), archive a closed run; on both journals."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, NonRetryableError, Worker, activity, workflow
from durable_workflow.errors import ServerError, WorkflowFailed

from .harness import current_history, unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
EXTRACTS: collections.Counter[str] = collections.Counter()
FIXED: set[str] = set()


@activity.defn(name="ro_extract")
async def ro_extract(key: str) -> str:
    EXTRACTS[key] += 1
    return f"rows of {key}"


@activity.defn(name="ro_load")
async def ro_load(key: str, rows: str) -> str:
    if key not in FIXED:
        raise NonRetryableError(f"the warehouse refused {key}")
    return f"loaded {rows}"


@workflow.defn(name="ro_pipeline")
class Pipeline:
    def run(self, ctx, key):  # type: ignore[no-untyped-def]
        rows = yield ctx.schedule_activity("ro_extract", [key])
        loaded = yield ctx.schedule_activity("ro_load", [key, rows])
        return [rows, loaded]


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Pipeline], activities=[ro_extract, ro_load], poll_timeout=2)


async def _failed(client: Client, wid: str) -> str:
    with pytest.raises(WorkflowFailed):
        await client.get_workflow_handle(wid).result(timeout=60)
    return (await client.describe_workflow(wid)).run_id


def test_repair_re_offers_a_task_nobody_took_and_the_sdk_replays_past_it(server_url: str) -> None:
    tq, wid = unique("ro"), unique("ro-repair")
    FIXED.add(wid)

    async def scenario() -> tuple:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            await client.start_workflow(workflow_type="ro_pipeline", workflow_id=wid, task_queue=tq, input=[wid])
            fresh = await client.repair_workflow(wid)
            await asyncio.sleep(3.5)  # longer than a ready task may wait untaken (actors.decide_operator)
            stale = await client.repair_workflow(wid)
            worker = _worker(client, tq)
            task = asyncio.create_task(worker.run())
            try:
                result = await client.get_workflow_handle(wid).result(timeout=60)
            finally:
                await worker.stop()
                await task
            with pytest.raises(ServerError) as closed:
                await client.repair_workflow(wid)
            return fresh, stale, result, await current_history(http, wid), closed.value

    fresh, stale, result, events, closed = asyncio.run(scenario())
    assert fresh.outcome == "repair_not_needed" and fresh.workflow_id == wid
    assert stale.outcome == "repair_dispatched" and stale.command_status == "accepted" and stale.command_id
    repair = next(e for e in events if e["event_type"] == "RepairRequested")
    assert repair["payload"]["liveness_state"] == "workflow_task_not_claimed" and repair["payload"]["task_type"] == "workflow"
    assert result == [f"rows of {wid}", f"loaded rows of {wid}"], "the worker replayed past RepairRequested"
    assert closed.status == 409 and closed.body["reason"] == "run_not_active"


def test_archive_of_a_closed_run_once_and_never_of_an_open_one(server_url: str) -> None:
    tq, wid, open_wid = unique("ro"), unique("ro-arch"), unique("ro-open")
    FIXED.add(wid)

    async def scenario() -> tuple:
        async with Client(server_url) as client:
            worker = _worker(client, tq)
            task = asyncio.create_task(worker.run())
            try:
                await client.start_workflow(workflow_type="ro_pipeline", workflow_id=wid, task_queue=tq, input=[wid])
                await client.get_workflow_handle(wid).result(timeout=60)
            finally:
                await worker.stop()
                await task
            await client.start_workflow(workflow_type="ro_pipeline", workflow_id=open_wid, task_queue=unique("nobody"), input=["x"])
            with pytest.raises(ServerError) as refused:
                await client.archive_workflow(open_wid)
            first = await client.archive_workflow(wid, reason="retention tier")
            second = await client.archive_workflow(wid)
            return refused.value, first, second, await client.describe_workflow(wid)

    refused, first, second, described = asyncio.run(scenario())
    assert refused.status == 409 and refused.body["reason"] == "run_not_closed"
    assert first.outcome == "archived" and second.outcome == "archive_not_needed"
    assert described.status == "completed", "archiving never changes the status"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_redriven_run_reruns_only_its_failed_step_across_a_server_sigkill(tmp_path: Path, backend: str) -> None:
    tq, wid = unique("ro-kill"), unique("ro-redrive")
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database)
        url = server.start()

        async def scenario() -> tuple:
            async with Client(url) as client:
                worker = _worker(client, tq)
                task = asyncio.create_task(worker.run())
                await client.start_workflow(workflow_type="ro_pipeline", workflow_id=wid, task_queue=tq, input=[wid])
                failed_run = await _failed(client, wid)
                await worker.stop()
                await task
                FIXED.add(wid)
                receipt = await client.redrive_workflow(wid, failed_run, request_id="fix-1")
                await asyncio.to_thread(server.kill)  # the new run exists; nothing ran in it yet
                await asyncio.to_thread(server.start)
                repeat = await client.redrive_workflow(wid, failed_run, request_id="fix-1")
                with pytest.raises(ServerError) as not_current:
                    await client.redrive_workflow(wid, failed_run, request_id="fix-2")
                worker = _worker(client, tq)
                task = asyncio.create_task(worker.run())
                try:
                    result = await client.get_workflow_handle(wid).result(timeout=60)
                finally:
                    await worker.stop()
                    await task
                runs = await client.list_workflow_runs(wid)
                return failed_run, receipt, repeat, not_current.value, result, runs

        try:
            failed_run, receipt, repeat, not_current, result, runs = asyncio.run(scenario())
        finally:
            server.stop()
        assert receipt.outcome == "redriven" and receipt.run_id != failed_run and receipt.raw["redriven_from_run_id"] == failed_run
        assert repeat.run_id == receipt.run_id, "a repeated request id gets the first receipt, after the restart too"
        assert not_current.status == 409 and not_current.body["reason"] == "selected_run_not_current"
        assert result == [f"rows of {wid}", f"loaded rows of {wid}"]
        assert EXTRACTS[wid] == 1, "the completed step was replayed from the copy, not run again"
        assert [r.status for r in runs.runs] == ["failed", "completed"]
        assert "Traceback" not in server.log(), server.log()
