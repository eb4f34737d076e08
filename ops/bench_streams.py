"""Message-stream and workflow-stream round trips through the official SDK (not a test: it measures).

``python -m ops.bench streams --server -n 200`` starts a server on a fresh data dir (or uses
``--url``) and one SDK worker process (sticky cache on, as a long-running relay would run), then:

* **message round trip**: a relay workflow receives each message of its message stream and
  appends it to its workflow stream; the client appends message k
  (``Client.append_message_stream``) and waits, parked on ``subscribe_workflow_stream``, for
  item k. That is append → signal record → workflow task → worker → completion with the stream
  append → the parked read woken: the whole path a message takes through both features.
* **workflow-stream tail**: a client appends an item to a stream (``append_workflow_stream``)
  while another read is parked on it; the time until the parked read returns it (server only).

Each is N sequential round trips; p50/p99 in ms as the caller sees them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from durable_workflow import Client, workflow
from durable_workflow.client import WorkflowStreamAppendItem

from .bench_procs import pct, serve_worker, with_worker_process


@workflow.defn(name="bench_relay")
class RelayWorkflow:
    def run(self, ctx, want):  # type: ignore[no-untyped-def]
        for _ in range(want):
            message = yield from ctx.message_stream("in").receive_one()
            yield ctx.append_workflow_stream("out", [WorkflowStreamAppendItem(payload=message.position)])
        yield ctx.close_workflow_stream("out")
        return want


def _worker_main(url: str, task_queue: str, ready: Any, stop: Any) -> None:
    serve_worker(url, ready, stop, task_queue=task_queue, workflows=[RelayWorkflow], activities=[], poll_timeout=5,
                 sticky_cache_capacity=16)


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 0.5) * 1000, 2), "p99_ms": round(pct(values, 0.99) * 1000, 2)}


async def _relay(client: Client, task_queue: str, n: int) -> list[float]:
    wid = f"bench-relay-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(workflow_type="bench_relay", workflow_id=wid, task_queue=task_queue, input=[n])
    trips = []
    for k in range(1, n + 1):
        t0 = time.perf_counter()
        await client.append_message_stream(wid, "in", f"m-{k}", args=[k])
        while True:
            page = await client.subscribe_workflow_stream(wid, handle.run_id, "out", from_offset=k - 1, wait_seconds=30)
            if page.items:
                break
        trips.append(time.perf_counter() - t0)
        if page.items[0].payload != k:
            raise RuntimeError(f"item {k - 1} is {page.items[0].payload!r}, not {k}")
    await handle.result(timeout=60)
    return trips


async def _tail(client: Client, task_queue: str, n: int) -> list[float]:
    wid = f"bench-tail-{uuid.uuid4().hex[:8]}"  # an open run nobody works on (a queue without workers): clients write its stream
    handle = await client.start_workflow(workflow_type="bench_relay", workflow_id=wid, task_queue=f"{task_queue}-idle", input=[1])
    trips = []
    for k in range(n):
        read = asyncio.create_task(client.subscribe_workflow_stream(wid, handle.run_id, "tail", from_offset=k, wait_seconds=30))
        await asyncio.sleep(0.005)  # let the read park first
        t0 = time.perf_counter()
        await client.append_workflow_stream(wid, handle.run_id, "tail", [WorkflowStreamAppendItem(payload=k)])
        page = await read
        trips.append(time.perf_counter() - t0)
        if [i.offset for i in page.items] != [k]:
            raise RuntimeError(f"the parked read returned {[i.offset for i in page.items]}, not [{k}]")
    await client.terminate_workflow(wid, reason="benchmark done")
    return trips


async def _drive(url: str, task_queue: str, n: int) -> dict[str, Any]:
    async with Client(url) as client:
        await _relay(client, task_queue, 3)  # warm: worker registered, caches primed
        relay = await _relay(client, task_queue, n)
        tail = await _tail(client, task_queue, n)
    return {"messages": n, "message_round_trip": _ms(relay), "workflow_stream_tail": _ms(tail)}


def streams(url: str, n: int) -> dict[str, Any]:
    task_queue = f"bench-streams-{uuid.uuid4().hex[:8]}"
    return with_worker_process(_worker_main, url, task_queue,
                               lambda: {"workload": "streams", **asyncio.run(_drive(url, task_queue, n))})
