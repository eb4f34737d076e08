"""Heartbeat progress through the official SDK (extended spec §14): what an activity reports is
shown in the run's history export, survives a SIGKILL of the server (journaled, compacted to at
most one record per attempt per interval), and never enters the replayed history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker, activity, workflow

from .harness import unique
from .server import ServerProcess

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@activity.defn(name="hp_pages")
async def hp_pages(n: int) -> int:
    for page in range(1, n + 1):
        await activity.context().heartbeat({"page": page, "of": n})
    return n


@workflow.defn(name="hp_reader")
class Reader:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal("go")
    def on_go(self) -> None:
        self.go = True

    def run(self, ctx):  # type: ignore[no-untyped-def]
        pages = yield ctx.schedule_activity("hp_pages", [3])
        yield ctx.wait_condition(lambda: self.go, key="go")
        return pages


def _activities(http: httpx.Client, wid: str) -> list[dict]:
    run_id = http.get(f"/api/workflows/{wid}").json()["run_id"]
    r = http.get(f"/api/workflows/{wid}/runs/{run_id}/history/export")
    r.raise_for_status()
    return [a for a in r.json()["activities"] if a["activity_type"] == "hp_pages"]


def test_heartbeat_progress_shows_in_the_export_and_survives_a_server_sigkill(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port())
    url = server.start()
    tq, wid = unique("hp"), unique("hp")
    try:
        async def first_part() -> None:
            async with Client(url) as client:
                worker = Worker(client, task_queue=tq, workflows=[Reader], activities=[hp_pages], poll_timeout=2)
                task = asyncio.create_task(worker.run())
                try:
                    await client.start_workflow(workflow_type="hp_reader", workflow_id=wid, task_queue=tq)
                    with httpx.Client(base_url=url, headers=CP, timeout=30) as http:
                        for _ in range(300):
                            run_id = http.get(f"/api/workflows/{wid}").json()["run_id"]
                            events = http.get(f"/api/workflows/{wid}/runs/{run_id}/history").json()["events"]
                            if "ConditionWaitOpened" in [e["event_type"] for e in events]:
                                return
                            await asyncio.sleep(0.05)
                finally:
                    await worker.stop()
                    await task

        asyncio.run(first_part())
        with httpx.Client(base_url=url, headers=CP, timeout=30) as http:
            [live] = _activities(http, wid)
            assert live["last_heartbeat_progress"] == {"details": {"page": 3, "of": 3}}, live
            assert live["attempts"][0]["last_heartbeat_at"] == live["last_heartbeat_at"] is not None
            run_id = http.get(f"/api/workflows/{wid}").json()["run_id"]
            history = http.get(f"/api/workflows/{wid}/runs/{run_id}/history").json()["events"]
            assert "ActivityHeartbeatRecorded" not in [e["event_type"] for e in history], "progress is not replayed history"
        server.kill()
        server.start()
        with httpx.Client(base_url=url, headers=CP, timeout=30) as http:
            [after] = _activities(http, wid)
        # The first heartbeat of the attempt was journaled; the two within the next 10 s were kept
        # in memory only (compaction), so after a crash the journaled one is what remains.
        assert after["last_heartbeat_progress"] == {"details": {"page": 1, "of": 3}}, after
        assert "Traceback" not in server.log(), server.log()
    finally:
        server.stop()
