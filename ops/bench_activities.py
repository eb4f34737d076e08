"""Standalone activities through the official SDK (not a test: it measures).

``python -m ops.bench activities --server -n 1000 -c 50`` starts a server on a fresh data dir (or
uses ``--url``) and one SDK worker process serving a trivial activity, then:

* **starts/s**: N ``Client.start_activity`` calls, at most C in flight, timed alone (the worker
  is running, so jobs also complete meanwhile, as they would in production);
* **start→result**: for each of N further jobs, the time from the start call until its result
  is read, waited for with ``GET /api/activities/{id}?wait_seconds=`` (the server-side result
  long-poll; the SDK's ``result()`` polls describe every ``poll_interval`` instead, which would
  measure that interval). p50/p99 in ms as the caller sees them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from durable_workflow import Client, activity

from .bench_procs import pct, serve_worker, with_worker_process

CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@activity.defn(name="bench_job")
def bench_job(n: int) -> int:
    return n + 1


def _worker_main(url: str, task_queue: str, ready: Any, stop: Any) -> None:
    serve_worker(url, ready, stop, task_queue=task_queue, activities=[bench_job], poll_timeout=5, max_concurrent_activity_tasks=100)


async def _starts(client: Client, task_queue: str, n: int, concurrency: int, tag: str) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await client.start_activity(activity_type="bench_job", task_queue=task_queue, activity_id=f"{tag}-{i}", input=[i])

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - began


async def _round_trips(client: Client, http: httpx.AsyncClient, task_queue: str, n: int, concurrency: int, tag: str) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    trips: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            job_id = f"{tag}-{i}"
            t0 = time.perf_counter()
            await client.start_activity(activity_type="bench_job", task_queue=task_queue, activity_id=job_id, input=[i])
            while True:
                job = (await http.get(f"/api/activities/{job_id}", params={"wait_seconds": 30})).json()
                if job["status"] != "running":
                    break
            trips.append(time.perf_counter() - t0)
            if job["status"] != "completed":
                raise RuntimeError(f"job {job_id} ended {job['status']}")

    await asyncio.gather(*(one(i) for i in range(n)))
    return trips


async def _drive(url: str, task_queue: str, n: int, concurrency: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    async with Client(url) as client, httpx.AsyncClient(base_url=url, headers=CP, timeout=60,
                                                        limits=httpx.Limits(max_connections=concurrency + 10)) as http:
        await _round_trips(client, http, task_queue, 20, 10, f"warm-{tag}")
        elapsed = await _starts(client, task_queue, n, concurrency, f"start-{tag}")
        trips = await _round_trips(client, http, task_queue, n, concurrency, f"trip-{tag}")
    return {
        "workload": "activities", "jobs": n, "concurrency": concurrency,
        "starts_per_second": round(n / elapsed, 1),
        "start_to_result": {"p50_ms": round(pct(trips, 0.5) * 1000, 2), "p99_ms": round(pct(trips, 0.99) * 1000, 2)},
    }


def activities(url: str, n: int, concurrency: int) -> dict[str, Any]:
    task_queue = f"bench-jobs-{uuid.uuid4().hex[:8]}"
    return with_worker_process(_worker_main, url, task_queue, lambda: asyncio.run(_drive(url, task_queue, n, concurrency)))
