"""Workflow memo updates through the official SDK (extended spec §3).

``ctx.upsert_memo`` merges keys into the run's memo through history (``MemoUpserted``); a null
value removes a key. What a user relies on: describe and list show the current memo, replay
agrees with it (a worker replacement replays the same updates), continue-as-new keeps it, and
an update the SDK's replay would refuse is refused when it is recorded, not later.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from durable_workflow import Client, Worker, workflow

from .harness import unique

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}


@workflow.defn(name="memo_stages")
class MemoStages:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal("go")
    def on_go(self) -> None:
        self.go = True

    def run(self, ctx, continued=False):  # type: ignore[no-untyped-def]
        if continued:
            yield ctx.upsert_memo({"generation": 2})
            return "continued"
        yield ctx.upsert_memo({"stage": "packing", "items": [1, 2], "drop": "me"})
        yield ctx.upsert_memo({"stage": "shipping", "drop": None})
        yield ctx.wait_condition(lambda: self.go, key="go")
        return (yield ctx.continue_as_new(True))


def test_memo_updates_show_in_describe_and_list_and_survive_replay_and_continue_as_new(server_url: str) -> None:
    tq, wid = unique("memo"), unique("memo")

    async def scenario() -> tuple[dict, dict, list[dict], dict, object]:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            worker = Worker(client, task_queue=tq, workflows=[MemoStages], activities=[], poll_timeout=2)
            task = asyncio.create_task(worker.run())
            try:
                await client.start_workflow(workflow_type="memo_stages", workflow_id=wid, task_queue=tq, memo={"owner": "ada"})
                for _ in range(300):
                    described = (await http.get(f"/api/workflows/{wid}")).json()
                    if described.get("memo", {}).get("stage") == "shipping":
                        break
                    await asyncio.sleep(0.05)
            finally:
                await worker.stop()
                await task
            listed = (await http.get("/api/workflows", params={"query": f'WorkflowId = "{wid}"'})).json()
            run_id = described["run_id"]
            events = (await http.get(f"/api/workflows/{wid}/runs/{run_id}/history")).json()["events"]
            replacement = Worker(client, task_queue=tq, workflows=[MemoStages], activities=[], poll_timeout=2)
            task = asyncio.create_task(replacement.run())  # a cold worker replays both updates
            try:
                await client.signal_workflow(wid, "go", args=[])
                result = await client.get_workflow_handle(wid).result(timeout=60)
                final = (await http.get(f"/api/workflows/{wid}")).json()
            finally:
                await replacement.stop()
                await task
            return described, listed, events, final, result

    described, listed, events, final, result = asyncio.run(scenario())
    assert described["memo"] == {"owner": "ada", "stage": "shipping", "items": [1, 2]}
    [row] = [w for w in listed["workflows"] if w["workflow_id"] == wid]
    assert row["memo"] == described["memo"]
    upserts = [e for e in events if e["event_type"] == "MemoUpserted"]
    assert [e["payload"]["sequence"] for e in upserts] == [1, 2]
    assert set(upserts[0]["payload"]["entries"]) == {"codec", "blob"}
    assert result == "continued"
    assert final["memo"] == {"owner": "ada", "stage": "shipping", "items": [1, 2], "generation": 2}, "continue-as-new keeps it"


def test_a_memo_update_replay_would_refuse_is_refused_with_the_field_named(server_url: str) -> None:
    from persistence import avro

    tq, wid = unique("memo-bad"), unique("memo-bad")
    with httpx.Client(base_url=server_url, timeout=30) as http:
        http.post("/api/worker/register", json={"worker_id": "w-memo", "task_queue": tq, "runtime": "python"}, headers=WP).raise_for_status()
        http.post("/api/workflows", json={"workflow_type": "memo_stages", "workflow_id": wid, "task_queue": tq},
                  headers=CP).raise_for_status()
        task = http.post("/api/worker/workflow-tasks/poll", json={"worker_id": "w-memo", "task_queue": tq, "timeout_seconds": 5},
                         headers=WP).json()["task"]
        bad = [
            {"codec": "avro", "blob": avro.encode([1, 2])},
            {"codec": "avro", "blob": avro.encode({})},
            {"codec": "avro", "blob": avro.encode({"42": "numeric key"})},
            {"codec": "avro", "blob": avro.encode({f"k{i}": i for i in range(101)})},
            {"codec": "avro", "blob": avro.encode({"big": "x" * 11_000})},
            {"codec": "avro", "blob": "not avro"},
            {"codec": "json", "blob": "e30="},
        ]
        for entries in bad:
            body = {"lease_owner": "w-memo", "workflow_task_attempt": task["workflow_task_attempt"],
                    "commands": [{"type": "upsert_memo", "entries": entries}]}
            r = http.post(f"/api/worker/workflow-tasks/{task['task_id']}/complete", json=body, headers=WP)
            assert r.status_code == 422 and "commands.0.entries" in r.json()["errors"], r.text
        run_id = http.get(f"/api/workflows/{wid}", headers=CP).json()["run_id"]
        events = http.get(f"/api/workflows/{wid}/runs/{run_id}/history", headers=CP).json()["events"]
        assert "MemoUpserted" not in [e["event_type"] for e in events]
