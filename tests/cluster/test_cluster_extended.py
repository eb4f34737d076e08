"""The SDK's extended features across a three-node cluster: prepared local activities and
cooperative cancellation, with a node SIGKILLed between a run's local step and its end.

Requests go to any node (forwarded to the run's owner); a run whose owner dies is taken over
by another node from the journal. What must hold there as on one node: a recorded local step
is never run again, and a cancellation request is delivered to the workflow code once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from durable_workflow import Client, Worker

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
