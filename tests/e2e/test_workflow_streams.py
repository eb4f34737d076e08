"""Workflow streams through the official SDK (extended spec §7.2): ordered, durable output of a run.

The workflow writes with ``ctx.append_workflow_stream`` / ``close_workflow_stream`` /
``error_workflow_stream``; clients read with ``Client.subscribe_workflow_stream`` (long polls
that park until an item arrives) and ``iter_workflow_stream``, and append and close with their
own idempotency keys. Offsets are dense and survive a SIGKILL of the server and a replacement
of the worker; duplicates are deduplicated, never a second item.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from durable_workflow import Client, Worker, workflow
from durable_workflow.client import WorkflowStreamAppendItem as Item
from durable_workflow.errors import ServerError

from .harness import unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@workflow.defn(name="ws_producer")
class Producer:
    def __init__(self):  # type: ignore[no-untyped-def]
        self.go = False

    @workflow.signal("go")
    def signal_go(self):  # type: ignore[no-untyped-def]
        self.go = True

    def run(self, ctx):  # type: ignore[no-untyped-def]
        yield ctx.append_workflow_stream("progress", [Item(payload={"step": 1}, item_type="progress"),
                                                      Item(payload={"step": 2}, item_type="progress")])
        yield ctx.wait_condition(lambda: self.go, key="go")
        yield ctx.append_workflow_stream("progress", [Item(payload={"step": 3}, item_type="progress")])
        yield ctx.close_workflow_stream("progress", retention_seconds=3600)
        return "produced"


@workflow.defn(name="ws_edges")
class Edges:
    """Workflow-side operations the stream cannot take are skipped, never a failed task."""

    def run(self, ctx):  # type: ignore[no-untyped-def]
        yield ctx.append_workflow_stream("bounded", [Item(payload=1), Item(payload=2)], max_pending_items=2)
        yield ctx.append_workflow_stream("bounded", [Item(payload=3)], max_pending_items=2)  # a third unread: skipped
        yield ctx.close_workflow_stream("done")  # closing a stream never appended to: an empty closed stream
        yield ctx.append_workflow_stream("done", [Item(payload="late")])  # closed: skipped
        yield ctx.append_workflow_stream("broken", [Item(payload="x")])
        yield ctx.error_workflow_stream("broken", "upstream failed")
        yield ctx.append_workflow_stream("left-open", [Item(payload="y")])
        return "edges"


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Producer, Edges], activities=[], poll_timeout=2)


def _items(page: Any) -> list[tuple[int, Any, str | None, str | None]]:
    return [(i.offset, i.payload, i.origin, i.item_type) for i in page.items]


@pytest.mark.parametrize("backend", BACKENDS)
def test_items_keep_their_offsets_across_a_server_sigkill_and_a_new_worker(tmp_path: Path, backend: str) -> None:
    tq, wid = unique("ws"), unique("ws")
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), database=database)
        url = server.start()

        async def scenario() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with Client(url) as client:
                worker = _worker(client, tq)
                task = asyncio.create_task(worker.run())
                handle = await client.start_workflow(workflow_type="ws_producer", workflow_id=wid, task_queue=tq)
                run_id = handle.run_id
                first = await client.subscribe_workflow_stream(wid, run_id, "progress", wait_seconds=20)
                while len(first.items) < 2:  # the two items of one command land together; a page may still be early
                    more = await client.subscribe_workflow_stream(wid, run_id, "progress", from_offset=first.next_offset,
                                                                  wait_seconds=20)
                    first.items.extend(more.items)
                    first.next_offset = more.next_offset
                out["first"] = _items(first)
                appended = await client.append_workflow_stream(wid, run_id, "progress", [Item(payload="client", idempotency_key="k1")])
                again = await client.append_workflow_stream(wid, run_id, "progress", [Item(payload="client", idempotency_key="k1")])
                out["appends"] = [(a.accepted_offsets, a.accepted_count, a.deduplicated_count) for a in (appended, again)]
                await worker.stop()
                await task
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
                out["after_kill"] = _items(await client.subscribe_workflow_stream(wid, run_id, "progress"))
                out["described"] = await client.describe_workflow_stream(wid, run_id, "progress")
                worker = _worker(client, tq)
                task = asyncio.create_task(worker.run())
                try:
                    await client.signal_workflow(wid, "go")
                    out["tail"] = [(i.offset, i.payload) async for i in client.iter_workflow_stream(
                        wid, run_id, "progress", from_offset=3, wait_seconds=20)]
                    out["result"] = await client.get_workflow_handle(wid).result(timeout=60)
                    out["final"] = await client.describe_workflow_stream(wid, run_id, "progress")
                finally:
                    await worker.stop()
                    await task
            return out

        try:
            out = asyncio.run(scenario())
        finally:
            server.stop()
        assert out["first"] == [(0, {"step": 1}, "workflow", "progress"), (1, {"step": 2}, "workflow", "progress")]
        assert out["appends"] == [([2], 1, 0), ([], 0, 1)], "the same idempotency key is the same item"
        assert out["after_kill"] == [*out["first"], (2, "client", "client", None)], "durable, same offsets"
        assert (out["described"].status, out["described"].total_items, out["described"].last_offset) == ("open", 3, 2)
        assert out["tail"] == [(3, {"step": 3})], "the iteration ends at the close, after the last item"
        assert out["result"] == "produced"
        final = out["final"]
        assert (final.status, final.total_items, final.retention_seconds) == ("closed", 4, 3600)
        assert final.closed_at and final.opened_at and final.last_appended_at
        assert "Traceback" not in server.log(), server.log()


def test_a_parked_subscriber_wakes_at_the_append_and_workflow_side_refusals_are_noted(sqlite_url: str) -> None:
    tq, wid = unique("ws-edge"), unique("ws-edge")

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with Client(sqlite_url) as client, httpx.AsyncClient(base_url=sqlite_url, headers=CP, timeout=30) as http:
            handle = await client.start_workflow(workflow_type="ws_producer", workflow_id=wid, task_queue=unique("nobody"))
            run_id = handle.run_id

            async def append_later() -> float:
                await asyncio.sleep(0.5)
                await client.append_workflow_stream(wid, run_id, "manual", [Item(payload="woke")])
                return time.monotonic()

            started = time.monotonic()
            appended_at, page = await asyncio.gather(
                append_later(), client.subscribe_workflow_stream(wid, run_id, "manual", wait_seconds=20))
            out["woke_after"] = time.monotonic() - started
            out["woke_late"] = time.monotonic() - appended_at
            out["woken"] = _items(page)
            timed = time.monotonic()
            empty = await client.subscribe_workflow_stream(wid, run_id, "manual", from_offset=1, wait_seconds=1)
            out["empty"] = (empty.items, empty.next_offset, empty.terminal, time.monotonic() - timed)
            try:
                await client.append_workflow_stream(wid, run_id, "manual", [Item(payload=1), Item(payload=2)], max_pending_items=1)
            except ServerError as exc:
                out["backpressure"] = (exc.status, exc.body.get("reason"))
            await client.close_workflow_stream(wid, run_id, "manual", error_reason="operator stopped it")
            try:
                await client.append_workflow_stream(wid, run_id, "manual", [Item(payload="after")])
            except ServerError as exc:
                out["closed"] = (exc.status, exc.body.get("reason"))
            out["errored"] = await client.describe_workflow_stream(wid, run_id, "manual")
            await http.post(f"/api/workflows/{wid}/terminate", json={})

            edge_id = unique("ws-edge")
            worker = _worker(client, tq)
            task = asyncio.create_task(worker.run())
            try:
                edge = await client.start_workflow(workflow_type="ws_edges", workflow_id=edge_id, task_queue=tq)
                out["edge_result"] = await edge.result(timeout=60)
            finally:
                await worker.stop()
                await task
            out["streams"] = {s.stream_name: (s.status, s.total_items, s.error_reason)
                              for s in await client.list_workflow_streams(edge_id, edge.run_id)}
            history = (await http.get(f"/api/workflows/{edge_id}/runs/{edge.run_id}/history")).json()["events"]
            out["outcomes"] = [(e["payload"]["workflow_stream"]["stream_name"], e["payload"].get("workflow_stream_outcome"))
                               for e in history if e["event_type"] == "SideEffectRecorded"]
            out["left_open"] = [(i.offset, i.payload) async for i in client.iter_workflow_stream(edge_id, edge.run_id, "left-open")]
        return out

    out = asyncio.run(scenario())
    assert out["woken"] == [(0, "woke", "client", None)]
    assert out["woke_late"] < 2.0 and out["woke_after"] < 5.0, "the parked read answered at the append, not at its deadline"
    items, next_offset, terminal, waited = out["empty"]
    assert (items, next_offset, terminal) == ([], 1, False) and waited >= 0.9, "an empty page after the whole wait"
    assert out["backpressure"] == (409, "stream_backpressure")
    assert out["closed"] == (409, "stream_closed")
    assert (out["errored"].status, out["errored"].error_reason, out["errored"].total_items) == ("errored", "operator stopped it", 1)
    assert out["edge_result"] == "edges"
    assert out["streams"] == {"bounded": ("closed", 2, None), "done": ("closed", 0, None), "broken": ("errored", 1, "upstream failed"),
                              "left-open": ("closed", 1, None)}, "a stream its closed run left open reads as closed"
    assert out["outcomes"] == [("bounded", None), ("bounded", "rejected_backpressure"), ("done", None), ("done", "rejected_closed"),
                               ("broken", None), ("broken", None), ("left-open", None)]
    assert out["left_open"] == [(0, "y")], "iteration of a closed run's stream ends"
