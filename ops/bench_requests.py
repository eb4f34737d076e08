"""Server CPU per request, per kind of request (not a test: it measures).

    python -m ops.bench requests -n 2000
    python -m ops.bench requests --compare /tmp/before --rounds 3

Drives the worker and control planes directly over HTTP (no SDK: the load generator's own cost
does not matter, only the server's is read, from /proc) through one workflow's life, each kind of
request in its own batch: start, describe, signal, workflow-task poll with a task ready, workflow-
task completion, activity poll with a task ready, activity completion. Each kind is split into
five slices; the report gives the median of the slices' server CPU per request, in ms.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx

from .bench_procs import Server

CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}
SLICES = 5
LANES = 8  # requests in flight: a few, as a worker's pollers and a client's calls would be
ENVELOPE = {"codec": "avro", "blob": "AA=="}


async def _lanes(items: list[Any], call: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    out: list[Any] = [None] * len(items)
    order = iter(range(len(items)))

    async def lane() -> None:
        for i in order:
            out[i] = await call(items[i])

    await asyncio.gather(*(lane() for _ in range(LANES)))
    return out


async def _measure(server: Server, items: list[Any], call: Callable[[Any], Awaitable[Any]]) -> tuple[list[Any], float]:
    """Run ``call`` over ``items`` in slices; the median server CPU per request (ms)."""
    size = max(1, len(items) // SLICES)
    per_request, results = [], []
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        before = server.cpu()
        results += await _lanes(chunk, call)
        per_request.append((server.cpu() - before) / len(chunk) * 1000)
    return results, statistics.median(per_request)


def _ok(r: httpx.Response, *codes: int) -> dict[str, Any]:
    if r.status_code not in codes:
        raise RuntimeError(f"{r.request.method} {r.request.url.path} answered {r.status_code}: {r.text[:300]}")
    return r.json()  # type: ignore[no-any-return]


async def _drive(server: Server, n: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    tq, worker = f"bench-req-{tag}", f"bench-worker-{tag}"
    ids = [f"req-{tag}-{i}" for i in range(n)]
    cpu: dict[str, float] = {}
    limits = httpx.Limits(max_connections=LANES, max_keepalive_connections=LANES)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        _ok(await http.post("/api/worker/register", headers=WP, json={"worker_id": worker, "task_queue": tq, "runtime": "python"}), 201)

        async def start(wid: str) -> str:
            body = {"workflow_type": "bench_req", "workflow_id": wid, "task_queue": tq, "input": []}
            return str(_ok(await http.post("/api/workflows", headers=CP, json=body), 201)["run_id"])

        _, cpu["start"] = await _measure(server, ids, start)

        async def describe(wid: str) -> None:
            _ok(await http.get(f"/api/workflows/{wid}", headers=CP), 200)

        _, cpu["describe"] = await _measure(server, ids, describe)

        async def signal(wid: str) -> None:
            _ok(await http.post(f"/api/workflows/{wid}/signal/poke", headers=CP, json={"input": []}), 202)

        _, cpu["signal"] = await _measure(server, ids, signal)

        poll = {"worker_id": worker, "task_queue": tq, "timeout_seconds": 5}

        async def poll_for(kind: str, _: Any) -> dict[str, Any]:
            task = _ok(await http.post(f"/api/worker/{kind}-tasks/poll", headers=WP, json=poll), 200)["task"]
            assert task is not None, f"a {kind} task was ready for every poll"
            return task  # type: ignore[no-any-return]

        tasks, cpu["poll_workflow_task_ready"] = await _measure(server, ids, partial(poll_for, "workflow"))

        async def complete_workflow(task: dict[str, Any]) -> None:
            body = {"lease_owner": worker, "workflow_task_attempt": task["workflow_task_attempt"],
                    "commands": [{"type": "schedule_activity", "activity_type": "bench_act", "arguments": ENVELOPE}]}
            _ok(await http.post(f"/api/worker/workflow-tasks/{task['task_id']}/complete", headers=WP, json=body), 200)

        _, cpu["complete_workflow_task"] = await _measure(server, tasks, complete_workflow)

        activities, cpu["poll_activity_task_ready"] = await _measure(server, ids, partial(poll_for, "activity"))

        async def complete_activity(task: dict[str, Any]) -> None:
            body = {"activity_attempt_id": task["activity_attempt_id"], "lease_owner": worker, "result": ENVELOPE}
            _ok(await http.post(f"/api/worker/activity-tasks/{task['task_id']}/complete", headers=WP, json=body), 200)

        _, cpu["complete_activity_task"] = await _measure(server, activities, complete_activity)
    return {k: round(v, 3) for k, v in cpu.items()}


def run_requests(build: str, database: str | None, n: int) -> dict[str, Any]:
    with Server(build=build, database=database) as server:
        t0 = time.perf_counter()
        cpu = asyncio.run(_drive(server, n))
        return {"build": build, "journal": "postgresql" if database else "sqlite", "requests_per_kind": n,
                "wall_s": round(time.perf_counter() - t0, 1), "server_cpu_ms_per_request": cpu}
