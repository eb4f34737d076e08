"""The operator surface across a three-node cluster (extended spec §8, §10, §11): standalone
activities started, read and listed through any node, surviving a node's SIGKILL; build-id
pinning and promotion set on one node and obeyed by the queue's home; fenced deregistration,
activity lease renewal and worker sessions through nodes other than the run's owner."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from durable_workflow import Client, Worker, WorkerSessionOptions, activity, workflow

from tests.e2e.harness import unique
from tests.e2e.server import stop_all
from tests.e2e.stores import store

from .test_cluster_workflows import _converged, _node

pytestmark = pytest.mark.e2e
EXECUTED: Counter[str] = Counter()
BUILT: Counter[tuple[str, str]] = Counter()


@activity.defn(name="co_job")
async def co_job(key: str, seconds: float) -> str:
    EXECUTED[key] += 1
    await asyncio.sleep(seconds)  # longer than the 2 s activity lease: only renewals keep the claim
    return f"{key} done"


def _release(build: str) -> type:
    @workflow.defn(name="co_release")
    class Release:
        def run(self, ctx, label):  # type: ignore[no-untyped-def]
            BUILT[(build, ctx.workflow_id)] += 1
            return f"{label}@{build}"

    return Release


def _infer(where: str) -> object:
    @activity.defn(name="co_infer")
    async def co_infer(n: int) -> str:
        BUILT[(where, "infer")] += 1
        return f"{n}@{where}"

    return co_infer


@workflow.defn(name="co_model")
class Model:
    def run(self, ctx, n):  # type: ignore[no-untyped-def]
        session = WorkerSessionOptions(session_id=f"s-{ctx.workflow_id}", requirements=("gpu",))
        results = []
        for i in range(n):
            results.append((yield ctx.schedule_activity("co_infer", [i], worker_session=session)))
        return results


def test_jobs_builds_and_worker_authority_across_three_nodes_and_a_sigkill(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn, env={"DW_ACTIVITY_LEASE_SECONDS": "2"}) for i in (1, 2, 3)]
        try:
            jobs_tq, builds_tq, model_tq = unique("co-jobs"), unique("co-builds"), unique("co-model")
            job_ids = [unique("job") for _ in range(8)]

            async def scenario() -> dict:
                await _converged(nodes[0].url, ["node-1", "node-2", "node-3"])
                out: dict = {}
                async with Client(nodes[0].url) as c1, Client(nodes[2].url) as c3:
                    worker = Worker(c3, task_queue=jobs_tq, activities=[co_job], poll_timeout=2)
                    v1 = Worker(c1, task_queue=builds_tq, workflows=[_release("v1")], poll_timeout=1, build_id="v1")
                    v2 = Worker(c3, task_queue=builds_tq, workflows=[_release("v2")], poll_timeout=1, build_id="v2")
                    gpu = Worker(c1, task_queue=model_tq, workflows=[Model], activities=[_infer("gpu")], poll_timeout=1,
                                 capabilities=["gpu"])
                    cpu = Worker(c3, task_queue=model_tq, workflows=[Model], activities=[_infer("cpu")], poll_timeout=1)
                    workers = (worker, v1, v2, gpu, cpu)
                    tasks = [asyncio.create_task(w.run()) for w in workers]
                    try:
                        for i, job_id in enumerate(job_ids):
                            await c1.start_activity(activity_type="co_job", task_queue=jobs_tq, activity_id=job_id,
                                                    input=[job_id, 5 if i < 4 else 0.1],
                                                    retry_policy={"max_attempts": 3, "backoff_seconds": [0]})
                        await asyncio.sleep(1.0)
                        await asyncio.to_thread(nodes[1].kill)  # node 2 dies with some jobs, some of them mid-attempt
                        out["results"] = [await c3.get_activity_handle(j).result(timeout=90, poll_interval=0.2) for j in job_ids]
                        out["listed"] = await c1.list_activities(status="completed", page_size=200)

                        pinned = await c3.start_workflow(workflow_type="co_release", workflow_id=unique("pinned"),
                                                         task_queue=builds_tq, input=["pinned"], build_id="v2")
                        out["pinned"] = (pinned.workflow_id, await pinned.result(timeout=60))
                        await c3.promote_task_queue_build_id(builds_tq, "v1")
                        await asyncio.sleep(5.5)  # other nodes read rollout intents at most 5 s old
                        promoted = await c1.start_workflow(workflow_type="co_release", workflow_id=unique("promoted"),
                                                           task_queue=builds_tq, input=["promoted"])
                        out["promoted"] = (promoted.workflow_id, await promoted.result(timeout=60))
                        out["rollout"] = await c1.list_task_queue_build_ids(builds_tq)
                        models = [await c3.start_workflow(workflow_type="co_model", workflow_id=unique("model"), task_queue=model_tq,
                                                          input=[3]) for _ in range(3)]
                        out["models"] = [await m.result(timeout=60) for m in models]
                    finally:
                        for w in workers:
                            await w.stop()  # fenced deregistration, through the node each worker talks to
                        for t in tasks:
                            await t
                    out["workers"] = await c1.list_workers(task_queue=jobs_tq)
                return out

            out = asyncio.run(scenario())
            assert out["results"] == [f"{j} done" for j in job_ids], "every job completed, read through another node"
            assert {a.activity_id for a in out["listed"].activities} >= set(job_ids)
            assert all(EXECUTED[j] >= 1 for j in job_ids)
            assert sum(EXECUTED[j] for j in job_ids[4:]) == 4, "jobs whose attempts were not cut short ran once"
            pinned_id, pinned = out["pinned"]
            promoted_id, promoted = out["promoted"]
            assert pinned == "pinned@v2" and BUILT[("v1", pinned_id)] == 0
            assert promoted == "promoted@v1" and BUILT[("v2", promoted_id)] == 0
            cohorts = {c.build_id: c for c in out["rollout"].build_ids}
            assert cohorts["v1"].new_start_selected and not cohorts["v2"].new_start_selected
            assert not [w for w in out["workers"].workers if w.status == "active"], "the job worker deregistered"
            assert out["models"] == [[f"{i}@gpu" for i in range(3)]] * 3 and BUILT[("cpu", "infer")] == 0, \
                "in-session activities ran only on the session's capable holder, wherever their runs live"
        finally:
            stop_all([n for n in nodes if n is not nodes[1]])
            nodes[1].kill()
        for node in (nodes[0], nodes[2]):
            assert "Traceback" not in node.log(), node.log()
