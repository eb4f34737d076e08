"""Message streams through the official SDK (extended spec §7.1): durable, ordered input.

``Client.append_message_stream`` appends to a named stream of a workflow instance; the workflow's
``ctx.message_stream(name).receive()`` gets each message once, in append order, across replays,
a worker replacement, continue-as-new and a SIGKILL of the server; a repeated message id is the
same message (deduplicated), never a second one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker, workflow

from .harness import unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@workflow.defn(name="ms_collector")
class Collector:
    def run(self, ctx, want, seen=None):  # type: ignore[no-untyped-def]
        seen = list(seen or [])
        while len(seen) < want:
            message = yield from ctx.message_stream("inbox").receive_one()
            seen.append([message.position, message.message_id, *message.arguments])
            if len(seen) == 2 and want > 2:
                return (yield ctx.continue_as_new(want, seen))  # the stream's cursor and unread messages carry over
        return seen


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Collector], activities=[], poll_timeout=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_messages_arrive_once_in_order_across_continue_as_new_and_a_server_sigkill(tmp_path: Path, backend: str) -> None:
    tq, wid = unique("ms"), unique("ms")
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database)
        url = server.start()

        async def scenario() -> tuple[list[dict], object]:
            receipts = []
            async with Client(url) as client:
                worker = _worker(client, tq)
                task = asyncio.create_task(worker.run())
                await client.start_workflow(workflow_type="ms_collector", workflow_id=wid, task_queue=tq, input=[4])
                receipts.append(await client.append_message_stream(wid, "inbox", "m-1", args=["a"]))
                receipts.append(await client.append_message_stream(wid, "inbox", "m-1", args=["ignored"]))  # the same id
                receipts.append(await client.append_message_stream(wid, "inbox", "m-2", args=["b"]))
                receipts.append(await client.append_message_stream(wid, "inbox", "m-3", args=["c"]))
                await worker.stop()
                await task
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
                receipts.append(await client.append_message_stream(wid, "inbox", "m-4", args=["d"]))
                worker = _worker(client, tq)
                task = asyncio.create_task(worker.run())
                try:
                    return receipts, await client.get_workflow_handle(wid).result(timeout=60)
                finally:
                    await worker.stop()
                    await task

        try:
            receipts, result = asyncio.run(scenario())
        finally:
            server.stop()
        assert [(r["position"], r["duplicate"]) for r in receipts] == [(1, False), (1, True), (2, False), (3, False), (4, False)]
        assert result == [[1, "m-1", "a"], [2, "m-2", "b"], [3, "m-3", "c"], [4, "m-4", "d"]]
        assert "Traceback" not in server.log(), server.log()


def test_appends_refuse_bad_names_ids_unknown_and_closed_workflows_and_the_reserved_signal_but_answer_retries(server_url: str) -> None:
    wid = unique("ms-bad")
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        http.post("/api/workflows", json={"workflow_type": "ms_collector", "workflow_id": wid, "task_queue": unique("none")}
                  ).raise_for_status()
        run_id = http.get(f"/api/workflows/{wid}").json()["run_id"]
        url = f"/api/workflows/{wid}/message-streams/inbox/messages"
        for body, field in (({}, "message_id"), ({"message_id": ""}, "message_id"), ({"message_id": "é" * 200}, "message_id"),
                            ({"message_id": "m", "input": "x"}, "input")):
            r = http.post(url, json=body)
            assert r.status_code == 422 and field in r.json()["errors"], r.text
        r = http.post(f"/api/workflows/{wid}/message-streams/bad%20name/messages", json={"message_id": "m"})
        assert r.status_code == 422 and "stream_name" in r.json()["errors"], r.text
        assert http.post(f"/api/workflows/{unique('ghost')}/message-streams/inbox/messages", json={"message_id": "m"}).status_code == 404
        r = http.post(f"/api/workflows/{wid}/signal/__durable_workflow_message_stream", json={})
        assert r.status_code == 404 and r.json()["reason"] == "unknown_signal", r.text
        kinds = [e["event_type"] for e in http.get(f"/api/workflows/{wid}/runs/{run_id}/history").json()["events"]]
        assert "SignalReceived" not in kinds, "nothing refused was recorded"
        landed = http.post(url, json={"message_id": "landed"})
        assert landed.status_code == 202, landed.text
        http.post(f"/api/workflows/{wid}/terminate", json={}).raise_for_status()
        r = http.post(url, json={"message_id": "m"})
        assert r.status_code == 409 and r.json()["reason"] == "run_not_active", r.text
        retry = http.post(url, json={"message_id": "landed"})  # a client's retry of an append that had landed
        assert retry.status_code == 200, retry.text
        assert (retry.json()["duplicate"], retry.json()["position"]) == (True, landed.json()["position"])
