"""Update validators through the official SDK (extended spec §4).

A workflow that declares a validator for an update gets it run by a worker before the update
is recorded: a rejection reaches the caller as ``UpdateRejected`` and nothing enters the run's
history; an approved update is accepted and applied as any other — and survives a SIGKILL of
the server once accepted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker, workflow
from durable_workflow.errors import UpdateRejected

from .harness import unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@workflow.defn(name="uv_limits")
class Limits:
    def __init__(self) -> None:
        self.limit = 10
        self.done = False

    @workflow.update("set_limit")
    def set_limit(self, value: int) -> int:
        self.limit = value
        return self.limit

    @set_limit.validator
    def check_limit(self, value: int) -> None:
        if value < 0 or value > 100:
            raise ValueError(f"limit {value} is outside 0..100")

    @workflow.signal("finish")
    def finish(self) -> None:
        self.done = True

    def run(self, ctx):  # type: ignore[no-untyped-def]
        yield ctx.wait_condition(lambda: self.done, key="done")
        return self.limit


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Limits], activities=[], poll_timeout=2)


async def _kinds(http: httpx.AsyncClient, wid: str) -> list[str]:
    run_id = (await http.get(f"/api/workflows/{wid}")).json()["run_id"]
    return [e["event_type"] for e in (await http.get(f"/api/workflows/{wid}/runs/{run_id}/history")).json()["events"]]


async def _parked(http: httpx.AsyncClient, wid: str) -> None:
    for _ in range(300):
        if "ConditionWaitOpened" in await _kinds(http, wid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{wid} never parked")


def test_a_rejected_update_is_refused_before_history_and_an_approved_one_applies(server_url: str) -> None:
    tq, wid = unique("uv"), unique("uv")

    async def scenario() -> tuple[str, list[str], object, object]:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            worker = _worker(client, tq)
            task = asyncio.create_task(worker.run())
            try:
                await client.start_workflow(workflow_type="uv_limits", workflow_id=wid, task_queue=tq)
                await _parked(http, wid)
                with pytest.raises(UpdateRejected) as rejected:
                    await client.update_workflow(wid, "set_limit", args=[500], wait_for="completed")
                kinds = await _kinds(http, wid)
                applied = await client.update_workflow(wid, "set_limit", args=[42], wait_for="completed")
                await client.signal_workflow(wid, "finish", args=[])
                result = await client.get_workflow_handle(wid).result(timeout=30)
            finally:
                await worker.stop()
                await task
            return str(rejected.value), kinds, applied, result

    message, kinds, applied, result = asyncio.run(scenario())
    assert "outside 0..100" in message
    assert not [k for k in kinds if k.startswith("Update")], "a rejected update wrote nothing"
    assert applied["result"] == 42 if isinstance(applied, dict) else applied == 42
    assert result == 42


def test_a_validated_update_needs_a_request_id_and_a_live_validating_worker(server_url: str) -> None:
    tq, wid = unique("uv-raw"), unique("uv-raw")

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            worker = _worker(client, tq)
            task = asyncio.create_task(worker.run())
            try:
                await client.start_workflow(workflow_type="uv_limits", workflow_id=wid, task_queue=tq)
                await _parked(http, wid)
                no_request_id = await http.post(f"/api/workflows/{wid}/update/set_limit", json={"input": [5]})
            finally:
                await worker.stop()
                await task
            # the registration stays (and is fresh) but nobody polls: the validation is never claimed
            unclaimed = await http.post(f"/api/workflows/{wid}/update/set_limit", json={"input": [5], "request_id": "r-1"},
                                        timeout=70)
            return no_request_id, unclaimed

    no_request_id, unclaimed = asyncio.run(scenario())
    assert no_request_id.status_code == 422 and no_request_id.json()["reason"] == "update_validation_request_id_required"
    assert unclaimed.status_code in (409, 504), unclaimed.text
    assert unclaimed.json()["reason"] in ("update_validation_task_not_claimed", "update_validator_worker_unavailable")
    assert unclaimed.json()["retryable"] is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_approved_update_survives_a_server_sigkill(tmp_path: Path, backend: str) -> None:
    tq, wid = unique("uv-kill"), unique("uv-kill")
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database)
        url = server.start()

        async def scenario() -> object:
            async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
                worker = _worker(client, tq)
                task = asyncio.create_task(worker.run())
                await client.start_workflow(workflow_type="uv_limits", workflow_id=wid, task_queue=tq)
                await _parked(http, wid)
                accepted = await client.update_workflow(wid, "set_limit", args=[7], wait_for="accepted", request_id="kill-1")
                await worker.stop()
                await task
                await asyncio.to_thread(server.kill)  # accepted, maybe not applied yet
                await asyncio.to_thread(server.start)
                assert "UpdateAccepted" in await _kinds(http, wid)
                worker = _worker(client, tq)
                task = asyncio.create_task(worker.run())
                try:
                    await client.signal_workflow(wid, "finish", args=[])
                    return accepted, await client.get_workflow_handle(wid).result(timeout=60)
                finally:
                    await worker.stop()
                    await task

        try:
            accepted, result = asyncio.run(scenario())
        finally:
            server.stop()
        assert result == 7
        assert "Traceback" not in server.log(), server.log()
