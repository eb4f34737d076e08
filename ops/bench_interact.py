"""Query and update round trips through the official SDK, one worker (not a test: it measures).

``python -m ops.bench interact --server -n 200`` starts a server on a fresh data dir (or uses
``--url``), one SDK worker process, one waiting workflow, then asks N queries one after
another and N updates one after another (``wait_for="completed"``), and prints the p50/p99
of each round trip as the caller sees it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from durable_workflow import Client, workflow

from .bench_procs import serve_worker, with_worker_process


@workflow.defn(name="bench_counter")
class CounterWorkflow:
    def __init__(self) -> None:
        self.count = 0
        self.done = False

    @workflow.query("count")
    def read(self) -> int:
        return self.count

    @workflow.update("add")
    def add(self, n: int) -> int:
        self.count += n
        return self.count

    @workflow.signal("finish")
    def finish(self) -> None:
        self.done = True

    def run(self, ctx):  # type: ignore[no-untyped-def]
        yield ctx.wait_condition(lambda: self.done, key="finish")
        return self.count


def _worker_main(url: str, task_queue: str, ready: Any, stop: Any) -> None:
    serve_worker(url, ready, stop, task_queue=task_queue, workflows=[CounterWorkflow], activities=[], poll_timeout=5)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _drive(url: str, task_queue: str, n: int) -> dict[str, Any]:
    async with Client(url) as client:
        wid = f"bench-counter-{uuid.uuid4().hex[:8]}"
        handle = await client.start_workflow(workflow_type="bench_counter", workflow_id=wid, task_queue=task_queue, input=[])
        await client.query_workflow(wid, "count")  # warm: the first task has run
        queries, updates = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            await client.query_workflow(wid, "count")
            queries.append(time.perf_counter() - t0)
        for _ in range(n):
            t0 = time.perf_counter()
            await client.update_workflow(wid, "add", args=[1], wait_for="completed")
            updates.append(time.perf_counter() - t0)
        final = await client.query_workflow(wid, "count")
        await handle.signal("finish")
        return {
            "queries": n, "updates": n, "final_count": final["result"],
            "query_p50_ms": round(_pct(queries, 0.5) * 1000, 1), "query_p99_ms": round(_pct(queries, 0.99) * 1000, 1),
            "update_p50_ms": round(_pct(updates, 0.5) * 1000, 1), "update_p99_ms": round(_pct(updates, 0.99) * 1000, 1),
        }


def interact(url: str, n: int) -> dict[str, Any]:
    task_queue = f"bench-interact-{uuid.uuid4().hex[:8]}"
    return with_worker_process(_worker_main, url, task_queue,
                               lambda: {"workload": "interact", **asyncio.run(_drive(url, task_queue, n))})
