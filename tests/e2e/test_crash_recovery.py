"""Crash test: 50 workflows in flight, the server killed with SIGKILL and restarted.

Every workflow must complete with the right result, every history must be gap-free
with no duplicated step event, and everything a client saw acknowledged before the
kill (starts, signals, history events) must still be there afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker, activity, workflow

from .harness import await_until, current_history, unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N = 50
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
STEP_EVENTS = (
    "ActivityScheduled", "ActivityCompleted", "TimerScheduled", "TimerFired", "ConditionWaitOpened",
    "ConditionWaitSatisfied", "WorkflowStarted", "WorkflowCompleted", "StartAccepted",
)


@activity.defn(name="crash_echo")
def crash_echo(value: int) -> int:
    time.sleep(random.uniform(0.3, 1.5))  # slow enough that some are always mid-way at the kill
    return value


@workflow.defn(name="crashy")
class Crashy:
    def __init__(self) -> None:
        self.signals: list[str] = []

    @workflow.signal("poke")
    def poke(self, value: str) -> None:
        self.signals.append(value)

    def run(self, ctx, i):
        a = yield ctx.schedule_activity("crash_echo", [i])
        yield ctx.sleep(2)
        yield ctx.wait_condition(lambda: len(self.signals) >= 1, key="poke")
        b = yield ctx.schedule_activity("crash_echo", [i * 10])
        return [a, b, self.signals[0]]


def _checkcurrent_history(events: list[dict]) -> None:
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1)), "history has a gap"
    seen = collections.Counter(
        (e["event_type"], e["payload"].get("sequence"), e["payload"].get("condition_wait_id"))
        for e in events
        if e["event_type"] in STEP_EVENTS
    )
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"duplicated events: {dupes}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_with_fifty_workflows_in_flight(tmp_path: Path, backend: str) -> None:
    with store(backend) as database:
        _crash_scenario(tmp_path, database)


def _crash_scenario(tmp_path: Path, database: str | None) -> None:
    port = ServerProcess.free_port()
    env = {"DW_WORKFLOW_TASK_LEASE_SECONDS": "4", "DW_ACTIVITY_LEASE_SECONDS": "4"}
    server = ServerProcess(tmp_path / "data", env=env, port=port, database=database)
    url = server.start()
    tq = unique("crash")
    ids = [unique(f"crash{i}") for i in range(N)]

    async def scenario() -> None:
        async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=30) as http:
            worker = Worker(client, task_queue=tq, workflows=[Crashy], activities=[crash_echo], poll_timeout=2,
                            max_concurrent_activity_tasks=10)
            worker_task = asyncio.create_task(worker.run())
            for i, wid in enumerate(ids):
                await client.start_workflow(workflow_type="crashy", workflow_id=wid, task_queue=tq, input=[i])
            acked_signals = set()
            for i, wid in enumerate(ids[: N // 2]):  # buffered: they arrive while activities and timers are pending
                r = await http.post(f"/api/workflows/{wid}/signal/poke", json={"input": [f"sig-{i}"]})
                assert r.status_code == 202
                acked_signals.add(wid)
            before: dict[str, list[dict]] = {}

            async def mid_way() -> bool:
                # Kill only once activities have started and some are still running: a kill
                # before any progress, or after all of it, would test nothing.
                before.update({wid: await current_history(http, wid) for wid in ids})
                kinds = collections.Counter(e["event_type"] for h in before.values() for e in h)
                return 0 < kinds["ActivityCompleted"] < kinds["ActivityScheduled"]

            await await_until(mid_way, timeout=60, what="some activities done and some mid-way", interval=0.2)
            await asyncio.to_thread(server.kill)  # returns once the process is gone
            await asyncio.to_thread(server.start)
            for i, wid in enumerate(ids[N // 2 :], start=N // 2):
                r = await http.post(f"/api/workflows/{wid}/signal/poke", json={"input": [f"sig-{i}"]})
                assert r.status_code == 202, r.text
            results = {}
            for wid in ids:
                results[wid] = await client.get_workflow_handle(wid).result(timeout=90, poll_interval=0.25)
            after = {wid: await current_history(http, wid) for wid in ids}
            await worker.stop()
            await worker_task

        for i, wid in enumerate(ids):
            assert results[wid] == [i, i * 10, f"sig-{i}"], (wid, results[wid])
            _checkcurrent_history(after[wid])
            old = before[wid]
            assert [(e["sequence"], e["event_type"], e["payload"]) for e in after[wid][: len(old)]] == [
                (e["sequence"], e["event_type"], e["payload"]) for e in old
            ], f"{wid}: an event acknowledged before the kill changed or vanished"
            if wid in acked_signals:
                assert any(e["event_type"] == "SignalReceived" for e in old)

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
    # log() holds both processes' logs: the killed one's too, not only the restarted one's.
    assert len(server.logs) == 2 and any("listening on" in line for line in server.logs[0]), server.log()
    assert "Traceback" not in server.log(), server.log()
