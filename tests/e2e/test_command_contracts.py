"""Command contracts (worker-plane registration ``workflow_command_contracts``): a signal or an
update whose name no live worker of the run's queue declares for its workflow type is refused
at once (404 ``unknown_signal`` / ``unknown_update``) and nothing is recorded; with no contract
reported, commands are accepted as before and the workflow code decides."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from durable_workflow import Client, Worker, workflow

from .harness import unique

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@workflow.defn(name="cc_waiter")
class Waiter:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal("go")
    def on_go(self) -> None:
        self.go = True

    @workflow.update("bump")
    def bump(self) -> int:
        return 1

    def run(self, ctx):  # type: ignore[no-untyped-def]
        yield ctx.wait_condition(lambda: self.go, key="go")
        return "done"


def test_undeclared_signals_and_updates_are_refused_when_workers_report_contracts(server_url: str) -> None:
    tq, wid, bare = unique("cc"), unique("cc"), unique("cc-bare")

    async def scenario() -> tuple[list[httpx.Response], list[str], httpx.Response, object]:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            r = await http.post("/api/workflows", json={"workflow_type": "cc_waiter", "workflow_id": bare, "task_queue": unique("none")})
            assert r.status_code == 201
            no_contract = await http.post(f"/api/workflows/{bare}/signal/anything", json={})
            worker = Worker(client, task_queue=tq, workflows=[Waiter], activities=[], poll_timeout=2)
            task = asyncio.create_task(worker.run())
            try:
                await client.start_workflow(workflow_type="cc_waiter", workflow_id=wid, task_queue=tq)
                for _ in range(300):  # its first task done: the worker registered (with its contracts) before polling
                    run_id = (await http.get(f"/api/workflows/{wid}")).json()["run_id"]
                    events = (await http.get(f"/api/workflows/{wid}/runs/{run_id}/history")).json()["events"]
                    if "ConditionWaitOpened" in [e["event_type"] for e in events]:
                        break
                    await asyncio.sleep(0.05)
                refused = [
                    await http.post(f"/api/workflows/{wid}/signal/nope", json={}),
                    await http.post(f"/api/workflows/{wid}/update/nope", json={"wait_for": "accepted"}),
                ]
                run_id = (await http.get(f"/api/workflows/{wid}")).json()["run_id"]
                kinds = [e["event_type"] for e in (await http.get(f"/api/workflows/{wid}/runs/{run_id}/history")).json()["events"]]
                assert (await http.post(f"/api/workflows/{wid}/signal/go", json={})).status_code == 202
                result = await client.get_workflow_handle(wid).result(timeout=30)
            finally:
                await worker.stop()
                await task
            return refused, kinds, no_contract, result

    refused, kinds, no_contract, result = asyncio.run(scenario())
    signal, update = refused
    assert signal.status_code == 404 and signal.json()["reason"] == "unknown_signal", signal.text
    assert signal.json()["outcome"] == "rejected_unknown_signal" and "nope" in signal.json()["message"]
    assert update.status_code == 404 and update.json()["reason"] == "unknown_update", update.text
    assert "SignalReceived" not in kinds and "UpdateAccepted" not in kinds, "a refused command records nothing"
    assert no_contract.status_code == 202, "no worker reported a contract: accepted as before"
    assert result == "done"
