"""End-to-end: control-plane lifecycle operations through the official SDK's Client."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from durable_workflow import Client
from durable_workflow.errors import NamespaceNotFound, WorkflowTimedOut

from . import workflows as wf
from .harness import await_until, live_actors, run, unique, wait_all_passivated, with_worker

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def test_namespaces_create_describe_update_list_and_isolate(server_url: str) -> None:
    name = unique("ns")

    async def body() -> None:
        async with Client(server_url) as client:
            created = await client.create_namespace(name, description="billing", retention_days=7)
            assert (created.name, created.description, created.retention_days) == (name, "billing", 7)
            updated = await client.update_namespace(name, retention_days=14)
            assert (updated.description, updated.retention_days) == ("billing", 14)
            assert (await client.describe_namespace(name)).retention_days == 14
            assert name in [n.name for n in (await client.list_namespaces()).namespaces]
            with pytest.raises(NamespaceNotFound):
                await client.describe_namespace(unique("ghost"))
        tq = unique("tq")
        wid = unique("iso")
        async with Client(server_url, namespace=name) as scoped:
            from durable_workflow import Worker

            worker = Worker(scoped, task_queue=tq, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES, poll_timeout=2)
            task = asyncio.create_task(worker.run())
            try:
                await scoped.start_workflow(workflow_type="one_activity", workflow_id=wid, task_queue=tq, input=["ns"])
                assert await scoped.get_workflow_handle(wid).result(timeout=30) == "hello, ns"
            finally:
                await worker.stop()
                await task
        async with httpx.AsyncClient(base_url=server_url, headers=CP) as http:
            other = await http.get(f"/api/workflows/{wid}")  # default namespace must not see it
            assert other.status_code == 404 and other.json()["reason"] == "instance_not_found"

    run(body())


def test_list_workflows_filters_and_pages(server_url: str) -> None:
    tq = unique("tq")
    marker = unique("listing")

    async def body(client: Client) -> object:
        ids = [f"{marker}-{i}" for i in range(5)]
        for wid in ids[:3]:
            await client.start_workflow(workflow_type="one_activity", workflow_id=wid, task_queue=tq, input=["x"])
            await client.get_workflow_handle(wid).result(timeout=30)
        for wid in ids[3:]:
            await client.start_workflow(workflow_type="waiter", workflow_id=wid, task_queue=tq, input=[])
        completed = await client.list_workflows(query=marker, status="completed")
        running = await client.list_workflows(query=marker, status="running")
        typed = await client.list_workflows(query=marker, workflow_type="waiter")
        pages, token = [], None
        while True:
            page = await client.list_workflows(query=marker, page_size=2, next_page_token=token)
            pages.append([e.workflow_id for e in page.executions])
            token = page.next_page_token
            if token is None:
                break
        for wid in ids[3:]:
            await client.terminate_workflow(wid)
        return ids, completed, running, typed, pages

    ids, completed, running, typed, pages = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert sorted(e.workflow_id for e in completed.executions) == sorted(ids[:3])
    assert sorted(e.workflow_id for e in running.executions) == sorted(ids[3:])
    assert sorted(e.workflow_id for e in typed.executions) == sorted(ids[3:])
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [wid for page in pages for wid in page]
    assert sorted(flat) == sorted(ids) and flat == list(reversed(ids))  # newest first, no repeats


def test_history_is_paged_with_tokens(server_url: str) -> None:
    tq = unique("tq")
    wid = unique("paged")

    async def body(client: Client) -> str:
        handle = await client.start_workflow(workflow_type="sequential_then_parallel", workflow_id=wid, task_queue=tq, input=[])
        await client.get_workflow_handle(wid).result(timeout=30)
        return handle.run_id

    run_id = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    with httpx.Client(base_url=server_url, headers=CP) as http:
        everything = http.get(f"/api/workflows/{wid}/runs/{run_id}/history", params={"page_size": 1000}).json()["events"]
        paged, token = [], None
        while True:
            params = {"page_size": 3, **({"next_page_token": token} if token else {})}
            page = http.get(f"/api/workflows/{wid}/runs/{run_id}/history", params=params).json()
            assert len(page["events"]) <= 3
            paged += page["events"]
            token = page["next_page_token"]
            if token is None:
                break
    assert [e["sequence"] for e in paged] == list(range(1, len(everything) + 1))
    assert paged == everything
    assert everything[-1]["event_type"] == "WorkflowCompleted"


def test_run_timeout_closes_a_waiting_workflow(server_url: str) -> None:
    tq = unique("tq")
    wid = unique("timeout")

    async def body(client: Client) -> object:
        await client.start_workflow(
            workflow_type="waiter", workflow_id=wid, task_queue=tq, input=[], run_timeout_seconds=1, execution_timeout_seconds=60
        )
        with pytest.raises(WorkflowTimedOut):
            await client.get_workflow_handle(wid).result(timeout=20, poll_interval=0.2)
        return await client.describe_workflow(wid)

    desc = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert desc.status == "failed"
    with httpx.Client(base_url=server_url, headers=CP) as http:
        body = http.get(f"/api/workflows/{wid}").json()
        assert body["closed_reason"] == "timed_out"
        events = http.get(f"/api/workflows/{wid}/runs/{body['run_id']}/history").json()["events"]
    assert events[-1]["event_type"] == "WorkflowTimedOut"
    assert events[-1]["payload"]["timeout_kind"] == "run_timeout"


def test_describe_run_and_envelopes_round_trip(server_url: str) -> None:
    tq = unique("tq")
    wid = unique("describe")

    async def body(client: Client) -> object:
        handle = await client.start_workflow(workflow_type="one_activity", workflow_id=wid, task_queue=tq, input=["Ada"])
        await client.get_workflow_handle(wid).result(timeout=30)
        return handle.run_id, await client.describe_workflow(wid)

    run_id, desc = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert desc.status == "completed" and desc.input == ["Ada"] and desc.output == "hello, Ada"
    with httpx.Client(base_url=server_url, headers=CP) as http:
        run_body = http.get(f"/api/workflows/{wid}/runs/{run_id}").json()
    assert run_body["control_plane"]["operation"] == "describe_run"
    assert run_body["is_current_run"] is True and run_body["run_count"] == 1
    assert run_body["input_envelope"]["codec"] == "avro"


def test_signal_and_cancel_with_a_request_id_apply_once(server_url: str) -> None:
    wid = unique("idem")

    async def start() -> str:
        async with Client(server_url) as client:
            handle = await client.start_workflow(workflow_type="waiter", workflow_id=wid, task_queue=unique("tq"), input=[])
            return handle.run_id

    run_id = run(start())
    with httpx.Client(base_url=server_url, headers=CP) as http:
        first = http.post(f"/api/workflows/{wid}/signal/never", json={"request_id": "retry-1"})
        again = http.post(f"/api/workflows/{wid}/signal/never", json={"request_id": "retry-1"})
        other = http.post(f"/api/workflows/{wid}/signal/never", json={"request_id": "retry-2"})
        assert first.status_code == again.status_code == other.status_code == 202
        assert first.json()["command_id"] == again.json()["command_id"] != other.json()["command_id"]
        cancel = http.post(f"/api/workflows/{wid}/cancel", json={"request_id": "stop-1"})
        cancel_again = http.post(f"/api/workflows/{wid}/cancel", json={"request_id": "stop-1"})
        assert cancel.status_code == cancel_again.status_code == 200
        assert cancel.json()["command_id"] == cancel_again.json()["command_id"]
        late = http.post(f"/api/workflows/{wid}/cancel", json={"request_id": "stop-2"})
        assert late.status_code == 409 and late.json()["reason"] == "run_not_active"
        events = http.get(f"/api/workflows/{wid}/runs/{run_id}/history").json()["events"]
    kinds = [e["event_type"] for e in events]
    assert kinds.count("SignalReceived") == 2
    assert kinds.count("WorkflowCancelled") == 1


def test_history_long_poll_wakes_on_a_new_event(server_url: str) -> None:
    wid = unique("longpoll")

    async def start() -> str:
        async with Client(server_url) as client:
            handle = await client.start_workflow(workflow_type="waiter", workflow_id=wid, task_queue=unique("tq"), input=[])
            return handle.run_id

    run_id = run(start())

    async def watch_and_signal() -> tuple[list[dict], float]:
        async with httpx.AsyncClient(base_url=server_url, headers=CP, timeout=60) as http:
            first = (await http.get(f"/api/workflows/{wid}/runs/{run_id}/history")).json()
            token = base64.b64encode(str(len(first["events"])).encode()).decode()
            await wait_all_passivated(http)  # the long poll has to load the run back before it parks on it
            waiter = asyncio.create_task(
                http.get(f"/api/workflows/{wid}/runs/{run_id}/history", params={"wait_new_event": "true", "next_page_token": token})
            )
            # The long poll loads the run: once the node holds a live actor again, the poll is in.
            await await_until(lambda: live_actors(http), timeout=30, what="the history long poll reached the server")
            assert not waiter.done(), (await waiter).text  # parked: there was no new event to answer with
            loop = asyncio.get_running_loop()
            started = loop.time()
            await http.post(f"/api/workflows/{wid}/signal/never", json={})
            page = (await waiter).json()
            elapsed = loop.time() - started
            await http.post(f"/api/workflows/{wid}/terminate", json={})
            return page["events"], elapsed

    events, elapsed = run(watch_and_signal())
    assert [e["event_type"] for e in events] == ["SignalReceived"]
    # The poll holds for DW_WORKER_POLL_TIMEOUT (30 s) and then answers with whatever is there,
    # the signal included: a lost wake-up shows only as the time taken. Woken by the signal it
    # answers at once; 15 s is half the hold, the margin for a loaded two-core machine.
    assert elapsed < 15, f"the long poll answered {elapsed:.1f}s after the signal: it was not woken by it"


def test_cluster_info_names_this_node_and_its_shards(server_url: str) -> None:
    view = httpx.get(f"{server_url}/api/cluster/info").json()["cluster"]
    assert view["shard_count"] == 64
    owned = sum(n["shards_owned"] for n in view["nodes"])
    assert owned == 64 and len(view["nodes"]) == 1 and view["nodes"][0]["status"] == "active"
