"""The SDK's extended features across a three-node cluster: prepared local activities,
cooperative cancellation, message and workflow streams, with a node SIGKILLed mid-run.

Requests go to any node (forwarded to the run's owner); a run whose owner dies is taken over
by another node from the journal. What must hold there as on one node: a recorded local step
is never run again, and a cancellation request is delivered to the workflow code once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from durable_workflow import Client, Worker, workflow
from durable_workflow.client import WorkflowStreamAppendItem as StreamItem
from durable_workflow.errors import WorkflowNotFound

from tests.e2e import coop_workflows, prepared_workflows
from tests.e2e.harness import await_until, unique
from tests.e2e.server import stop_all
from tests.e2e.stores import store

from .test_cluster_workflows import _converged, _node

pytestmark = pytest.mark.e2e
CAPABILITIES = ["cooperative_cancellation", "prepared_local_activities", "prepared_local_activity_groups"]


def test_prepared_local_steps_and_cancellation_requests_survive_a_node_sigkill(tmp_path: Path) -> None:
    ledger = tmp_path / "runs"
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2, 3)]
        try:
            tq = unique("ext")
            locals_ = [unique("xl") for _ in range(6)]
            cancels = [unique("xc") for _ in range(4)]

            async def history(client: Client, wid: str) -> list[dict]:
                run_id = (await client.describe_workflow(wid)).run_id
                return list((await client.get_history(wid, run_id, page_size=1000))["events"])

            async def scenario() -> tuple[list[object], list[object], list[list[dict]]]:
                await _converged(nodes[0].url, ["node-1", "node-2", "node-3"])
                async with Client(nodes[0].url) as starter, Client(nodes[2].url) as c3:
                    worker = Worker(c3, task_queue=tq, workflows=[*prepared_workflows.WORKFLOWS, *coop_workflows.WORKFLOWS],
                                    activities=[*prepared_workflows.ACTIVITIES, *coop_workflows.ACTIVITIES], poll_timeout=2,
                                    capabilities=CAPABILITIES)
                    task = asyncio.create_task(worker.run())
                    try:
                        for wid in locals_:
                            await starter.start_workflow(workflow_type="pla_then_wait", workflow_id=wid, task_queue=tq,
                                                         input=[str(ledger), wid])
                        for wid in cancels:
                            await starter.start_workflow(workflow_type="coop_timer", workflow_id=wid, task_queue=tq)

                        async def all_waiting() -> bool:
                            kinds = [{e["event_type"] for e in await history(starter, w)} for w in locals_ + cancels]
                            return all("ConditionWaitOpened" in k or "TimerScheduled" in k for k in kinds)

                        await await_until(all_waiting, timeout=60, what="every run blocked after its first step")
                        await asyncio.to_thread(nodes[1].kill)  # node 2 dies: its runs move to the survivors
                        for wid in locals_:
                            await starter.signal_workflow(wid, "go", args=[])
                        for wid in cancels:
                            await starter.request_workflow_cancellation(wid, reason="cluster")
                        local_results = [await starter.get_workflow_handle(w).result(timeout=120) for w in locals_]
                        cancel_results = [await starter.get_workflow_handle(w).result(timeout=120) for w in cancels]
                        return local_results, cancel_results, [await history(starter, w) for w in cancels]
                    finally:
                        await worker.stop()
                        await task

            local_results, cancel_results, histories = asyncio.run(scenario())
            assert local_results == [1] * len(locals_)
            assert all(prepared_workflows.runs(str(ledger), wid) == 1 for wid in locals_), "a local step ran twice"
            assert cancel_results == ["cleanup cluster"] * len(cancels)
            for events in histories:
                kinds = [e["event_type"] for e in events]
                assert kinds.count("CooperativeCancellationRequested") == kinds.count("CooperativeCancellationDelivered") == 1
        finally:
            stop_all([n for n in nodes if n is not nodes[1]])
            nodes[1].kill()
        for node in (nodes[0], nodes[2]):
            assert "Traceback" not in node.log(), node.log()


@workflow.defn(name="stream_relay")
class StreamRelay:
    """Relays each message of its message stream to its workflow stream, in order, once each."""

    def run(self, ctx, want):  # type: ignore[no-untyped-def]
        relayed = 0
        while relayed < want:
            message = yield from ctx.message_stream("inbox").receive_one()
            relayed += 1
            yield ctx.append_workflow_stream("out", [StreamItem(payload=[message.position, *message.arguments])])
        yield ctx.close_workflow_stream("out")
        return relayed


def test_message_and_workflow_streams_stay_ordered_and_once_across_a_node_sigkill(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2, 3)]
        try:
            tq = unique("streams")
            wids = [unique("relay") for _ in range(6)]

            async def scenario() -> tuple[list[object], list[list[object]]]:
                await _converged(nodes[0].url, ["node-1", "node-2", "node-3"])
                async with Client(nodes[0].url) as c1, Client(nodes[2].url) as c3:
                    worker = Worker(c3, task_queue=tq, workflows=[StreamRelay], activities=[], poll_timeout=2)
                    task = asyncio.create_task(worker.run())
                    try:
                        runs = {}
                        for wid in wids:
                            runs[wid] = (await c1.start_workflow(workflow_type="stream_relay", workflow_id=wid, task_queue=tq,
                                                                 input=[4])).run_id
                            await c1.append_message_stream(wid, "inbox", "m-1", args=["a"])
                            await c3.append_message_stream(wid, "inbox", "m-1", args=["duplicate"])
                            await c3.append_message_stream(wid, "inbox", "m-2", args=["b"])

                        async def relayed_two() -> bool:
                            for wid in wids:
                                page = await c3.subscribe_workflow_stream(wid, runs[wid], "out", from_offset=1, wait_seconds=1)
                                if not page.items:
                                    return False
                            return True

                        await await_until(relayed_two, timeout=60, what="every run relayed its first two messages")
                        await asyncio.to_thread(nodes[1].kill)  # node 2 dies: its runs move to the survivors
                        for wid in wids:
                            await c3.append_message_stream(wid, "inbox", "m-3", args=["c"])
                            await c1.append_message_stream(wid, "inbox", "m-4", args=["d"])
                            await c1.append_message_stream(wid, "inbox", "m-3", args=["duplicate"])
                        outputs = []
                        for wid in wids:
                            outputs.append([i.payload async for i in c3.iter_workflow_stream(wid, runs[wid], "out", wait_seconds=10)])
                        return [await c1.get_workflow_handle(w).result(timeout=120) for w in wids], outputs
                    finally:
                        await worker.stop()
                        await task

            results, outputs = asyncio.run(scenario())
            assert results == [4] * len(wids)
            assert outputs == [[[1, "a"], [2, "b"], [3, "c"], [4, "d"]]] * len(wids), "each message relayed once, in order"
        finally:
            stop_all([n for n in nodes if n is not nodes[1]])
            nodes[1].kill()
        for node in (nodes[0], nodes[2]):
            assert "Traceback" not in node.log(), node.log()


def test_child_cancellation_policies_reach_children_on_other_nodes_across_a_node_sigkill(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2, 3)]
        try:
            tq = unique("family")
            parents = {unique("parent"): policy for policy in ("try_cancel", "wait_cancellation_completed") * 3}

            async def history(client: Client, wid: str) -> list[dict]:
                run_id = (await client.describe_workflow(wid)).run_id
                return list((await client.get_history(wid, run_id, page_size=1000))["events"])

            async def scenario() -> tuple[list[object], list[object], list[str]]:
                await _converged(nodes[0].url, ["node-1", "node-2", "node-3"])
                async with Client(nodes[0].url) as c1, Client(nodes[2].url) as c3:
                    worker = Worker(c3, task_queue=tq, workflows=coop_workflows.WORKFLOWS, activities=coop_workflows.ACTIVITIES,
                                    poll_timeout=2, capabilities=["cooperative_cancellation"])
                    task = asyncio.create_task(worker.run())
                    try:
                        for wid, policy in parents.items():
                            await c1.start_workflow(workflow_type="coop_parent", workflow_id=wid, task_queue=tq, input=[policy])
                        children: dict[str, str] = {}

                        async def children_waiting() -> bool:
                            for wid in parents:
                                started = [e for e in await history(c1, wid) if e["event_type"] == "ChildRunStarted"]
                                if not started:
                                    return False
                                children[wid] = started[0]["payload"]["child_workflow_instance_id"]
                                try:
                                    child_events = await history(c1, children[wid])
                                except WorkflowNotFound:
                                    # ChildRunStarted is the parent's commit; the child's own start is
                                    # committed right after it by the child shard's owner (owed until then)
                                    return False
                                if "TimerScheduled" not in {e["event_type"] for e in child_events}:
                                    return False
                            return True

                        await await_until(children_waiting, timeout=60, what="every child blocked on its timer")
                        await asyncio.to_thread(nodes[1].kill)  # node 2 dies with some parents and children
                        requests = [(await c1.request_workflow_cancellation(wid, reason="family"))["cancellation_request"]["request_id"]
                                    for wid in parents]
                        results = [await c1.get_workflow_handle(w).result(timeout=120) for w in parents]
                        kids = [await c3.get_workflow_handle(children[w]).result(timeout=120) for w in parents]
                        return results, kids, requests
                    finally:
                        await worker.stop()
                        await task

            results, kids, requests = asyncio.run(scenario())
            assert results == ["parent stopped"] * len(parents)
            assert kids == [{"parent_request_id": r, "lineage": 2} for r in requests], "each child got its parent's request once"
        finally:
            stop_all([n for n in nodes if n is not nodes[1]])
            nodes[1].kill()
        for node in (nodes[0], nodes[2]):
            assert "Traceback" not in node.log(), node.log()
