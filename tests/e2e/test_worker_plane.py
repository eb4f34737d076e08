"""End-to-end: worker-plane behaviours the SDK relies on but rarely exercises."""

from __future__ import annotations

import httpx
import pytest
from durable_workflow import Client

from . import workflows as wf
from .harness import await_until, run, unique, wait_all_passivated, with_worker

pytestmark = pytest.mark.e2e
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def _start(url: str, workflow_type: str, wid: str, tq: str, args: list) -> str:
    async def go() -> str:
        async with Client(url) as client:
            return (await client.start_workflow(workflow_type=workflow_type, workflow_id=wid, task_queue=tq, input=args)).run_id

    return run(go())


def test_poll_request_id_replays_the_same_lease(server_url: str) -> None:
    tq, wid = unique("tq"), unique("replay")
    with httpx.Client(base_url=server_url, headers=WP, timeout=30) as http:
        http.post("/api/worker/register", json={"worker_id": "w-replay", "task_queue": tq, "runtime": "python"}).raise_for_status()
        _start(server_url, "one_activity", wid, tq, ["x"])
        poll = {"worker_id": "w-replay", "task_queue": tq, "timeout_seconds": 5, "poll_request_id": "poll-1"}
        first = http.post("/api/worker/workflow-tasks/poll", json=poll).json()["task"]
        again = http.post("/api/worker/workflow-tasks/poll", json=poll).json()["task"]
        fresh = http.post("/api/worker/workflow-tasks/poll", json={**poll, "poll_request_id": "poll-2", "timeout_seconds": 0}).json()
    assert first is not None and again is not None
    assert (again["task_id"], again["workflow_task_attempt"]) == (first["task_id"], first["workflow_task_attempt"]) == (
        first["task_id"],
        1,
    )
    assert fresh["task"] is None  # the one task is leased, not duplicated


def test_inline_history_page_and_history_paging_route(server_url: str) -> None:
    tq, wid2 = unique("tq"), unique("paging")
    with httpx.Client(base_url=server_url, headers=WP, timeout=30) as http:
        http.post("/api/worker/register", json={"worker_id": "w-pager", "task_queue": tq, "runtime": "python"}).raise_for_status()
        _start(server_url, "approval", wid2, tq, [])
        for n in range(4):
            httpx.post(f"{server_url}/api/workflows/{wid2}/signal/noise", headers=CP, json={"input": [n]}).raise_for_status()
        task = http.post(
            "/api/worker/workflow-tasks/poll",
            json={"worker_id": "w-pager", "task_queue": tq, "timeout_seconds": 5, "history_page_size": 2},
        ).json()["task"]
        assert [e["sequence"] for e in task["history_events"]] == [1, 2]
        events, token, tokens = list(task["history_events"]), task["next_history_page_token"], []
        while token:
            tokens.append(token)
            page = http.post(
                f"/api/worker/workflow-tasks/{task['task_id']}/history",
                json={"next_history_page_token": token, "lease_owner": "w-pager",
                      "workflow_task_attempt": task["workflow_task_attempt"], "history_page_size": 2},
            ).json()
            events += page["history_events"]
            token = page["next_history_page_token"]
    assert len(tokens) == len(set(tokens))  # the SDK aborts on a repeated token
    assert [e["sequence"] for e in events] == list(range(1, task["last_history_sequence"] + 1))
    assert [e["event_type"] for e in events].count("SignalReceived") == 4


def test_signal_reaches_a_passivated_run(server_url: str) -> None:
    tq, wid = unique("tq"), unique("passive")

    async def body(client: Client) -> object:
        await client.start_workflow(workflow_type="approval", workflow_id=wid, task_queue=tq, input=[])

        async def waiting() -> bool:
            return (await client.describe_workflow(wid)).status == "waiting"

        await await_until(waiting, timeout=30, what=f"{wid} waiting for its approval")
        async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
            await wait_all_passivated(http)  # the run is out of memory: the signal has to bring it back
        await client.signal_workflow(wid, "approve", args=["Barbara"])
        # A signal lost on the way to a passivated run never wakes it: this times out and fails.
        return await client.get_workflow_handle(wid).result(timeout=30, poll_interval=0.1)

    result = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert result == "hello, Barbara"
