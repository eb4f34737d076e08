"""Updates that outlive the process that accepted them, and updates to a passivated run.

An accepted update is journaled before the caller hears 202, so a SIGKILL does not lose it:
after the restart a worker applies it, and the caller's retry (same ``request_id``) waits for
that very update instead of adding a second one. A passivated run is brought back for an
update and answers it like a live one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client

from . import workflows as wf
from .harness import run, unique, with_worker
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def update(http: httpx.Client, workflow_id: str, item: str, **extra: object) -> httpx.Response:
    return http.post(f"/api/workflows/{workflow_id}/update/push", json={"input": [item], **extra})


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_accepted_update_survives_a_sigkill_and_is_applied_once_after_the_restart(tmp_path: Path, backend: str) -> None:
    tq = unique("tq")
    wid = unique("pending-update")
    with store(backend) as dsn:
        port = ServerProcess.free_port()
        server = ServerProcess(tmp_path / "data", port=port, database=dsn)
        server.start()
        try:
            with httpx.Client(base_url=server.url, headers=CP, timeout=30) as http:
                started = http.post("/api/workflows", json={"workflow_type": "inspectable", "workflow_id": wid, "task_queue": tq, "input": ["p"]})
                assert started.status_code == 201, started.text
                accepted = update(http, wid, "kept", request_id="push-1")  # no worker yet: accepted, not applied
                assert accepted.status_code == 202 and accepted.json()["update_status"] == "accepted", accepted.text
            server.kill()
            server = ServerProcess(tmp_path / "data", port=port, database=dsn)
            server.start()

            async def body(client: Client) -> tuple:
                async with httpx.AsyncClient(base_url=server.url, headers=CP, timeout=60) as http:
                    retry = await http.post(f"/api/workflows/{wid}/update/push",
                                            json={"input": ["kept"], "request_id": "push-1", "wait_for": "completed", "wait_timeout_seconds": 30})
                second = await client.update_workflow(wid, "push", args=["next"], wait_for="completed")
                status = await client.query_workflow(wid, "status")
                await client.terminate_workflow(wid)
                return retry, second, status

            retry, second, status = run(with_worker(server.url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
            with httpx.Client(base_url=server.url, headers=CP, timeout=30) as http:
                run_id = http.get(f"/api/workflows/{wid}").json()["run_id"]
                events = http.get(f"/api/workflows/{wid}/runs/{run_id}/history", params={"page_size": 1000}).json()["events"]
        finally:
            server.stop()
    assert retry.status_code == 200, retry.text
    assert retry.json()["update_id"] == accepted.json()["update_id"] and retry.json()["result"] == 1  # the pending one, applied
    assert second["result"] == 2 and status["result"]["items"] == ["kept", "next"]
    kinds = [e["event_type"] for e in events]
    assert kinds.count("UpdateAccepted") == 2 and kinds.count("UpdateApplied") == 2 and kinds.count("UpdateCompleted") == 2


def live_actors(http: httpx.Client) -> int:
    return http.get("/api/cluster/info").json()["actors"]["live"]


def wait_passivated(http: httpx.Client, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while live_actors(http) != 0:
        assert time.monotonic() < deadline, "the run never passivated"
        time.sleep(0.1)


def test_updates_and_signals_reach_a_passivated_run(tmp_path: Path) -> None:
    tq = unique("tq")
    wid = unique("sleepy")
    server = ServerProcess(tmp_path / "data", env={"DW_ACTOR_IDLE_SECONDS": "1"}, port=ServerProcess.free_port())
    server.start()
    try:
        async def body(client: Client) -> tuple:
            handle = await client.start_workflow(workflow_type="inspectable", workflow_id=wid, task_queue=tq, input=["idle"])
            answers = []
            with httpx.Client(base_url=server.url, headers=CP, timeout=30) as http:
                for item in ("first", "second"):
                    await asyncio.to_thread(wait_passivated, http)
                    answers.append(await client.update_workflow(wid, "push", args=[item], wait_for="completed"))
                await asyncio.to_thread(wait_passivated, http)
                signalled = http.post(f"/api/workflows/{wid}/signal/add", json={"input": ["third"], "request_id": "last"})
            result = await handle.result(timeout=30)
            return answers, signalled, result

        answers, signalled, result = run(with_worker(server.url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    finally:
        assert server.stop() == 0
    assert [a["update_status"] for a in answers] == ["completed", "completed"]
    assert [a["result"] for a in answers] == [1, 2]
    assert signalled.status_code == 202
    assert result == ["first", "second", "third"]
    assert "Traceback" not in server.log(), server.log()
