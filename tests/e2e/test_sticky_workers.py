"""Sticky workers through the official SDK (extended spec §12).

``Worker(sticky_cache_capacity=N)`` starts only against a server that advertises sticky
execution. What a user relies on: the same results and the same history as a cold worker,
cache hits while the worker lives, and a correct cold replay when another worker takes over.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from durable_workflow import Client, Worker, activity, workflow

from .harness import await_until, current_history, unique

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@activity.defn(name="st_add")
def st_add(a: int, b: int) -> int:
    return a + b


@workflow.defn(name="st_steps")
class Steps:
    def run(self, ctx, n):
        total = 0
        for i in range(n):
            total = yield ctx.schedule_activity("st_add", [total, i + 1])
        return total


@workflow.defn(name="st_wait")
class StepsAroundAWait:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal("go")
    def on_go(self) -> None:
        self.go = True

    def run(self, ctx):
        a = yield ctx.schedule_activity("st_add", [1, 2])
        yield ctx.wait_condition(lambda: self.go, key="go")
        b = yield ctx.schedule_activity("st_add", [a, 10])
        return b


def _worker(client: Client, tq: str, sticky: bool, worker_id: str | None = None) -> Worker:
    extra = {"sticky_cache_capacity": 16} if sticky else {}
    return Worker(client, task_queue=tq, workflows=[Steps, StepsAroundAWait], activities=[st_add], poll_timeout=2,
                  worker_id=worker_id, **extra)


def _shape(events: list[dict]) -> list[tuple[str, tuple[str, ...]]]:
    """A history with its ids and times taken out: what a sticky run must share with a cold one."""
    return [(e["event_type"], tuple(sorted(e["payload"]))) for e in events]


def test_a_sticky_worker_hits_its_cache_and_leaves_the_history_a_cold_worker_would(server_url: str) -> None:
    async def go() -> tuple[list, dict, list, list]:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            results, histories, metrics = [], [], {}
            for sticky in (True, False):
                tq, wid = unique("st"), unique("st-steps")
                worker = _worker(client, tq, sticky)
                task = asyncio.create_task(worker.run())
                try:
                    await client.start_workflow(workflow_type="st_steps", workflow_id=wid, task_queue=tq, input=[5])
                    results.append(await client.get_workflow_handle(wid).result(timeout=30))
                    histories.append(await current_history(http, wid))
                    if sticky:
                        metrics = worker.sticky_cache_metrics()
                finally:
                    await worker.stop()
                    await task
            return results, metrics, histories[0], histories[1]

    results, metrics, sticky_history, cold_history = asyncio.run(go())
    assert results == [15, 15]
    assert metrics["hit"] >= 1, metrics
    assert _shape(sticky_history) == _shape(cold_history)
    assert not any("sticky" in key for e in sticky_history for key in e["payload"]), "affinity is not history"


def test_another_worker_takes_over_a_sticky_run_with_a_cold_replay(server_url: str) -> None:
    tq, wid = unique("st"), unique("st-wait")

    async def go() -> tuple[int, dict]:
        async with Client(server_url) as client, httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            first = _worker(client, tq, True, worker_id=unique("st-first"))
            task = asyncio.create_task(first.run())
            await client.start_workflow(workflow_type="st_wait", workflow_id=wid, task_queue=tq, input=[])

            async def waiting() -> bool:
                return any(e["event_type"] == "ConditionWaitOpened" for e in await current_history(http, wid))

            await await_until(waiting, timeout=30, what="the run parked on its wait, cached by the first worker")
            await first.stop()
            await task
            second = _worker(client, tq, True, worker_id=unique("st-second"))
            task = asyncio.create_task(second.run())
            try:
                r = await http.post(f"/api/workflows/{wid}/signal/go", json={"input": []})
                assert r.status_code == 202, r.text
                result = await client.get_workflow_handle(wid).result(timeout=30)
                return result, second.sticky_cache_metrics()
            finally:
                await second.stop()
                await task

    result, metrics = asyncio.run(go())
    assert result == 13
    assert metrics["forced_cold_replay"] >= 1 and metrics["miss"] >= 1, metrics
