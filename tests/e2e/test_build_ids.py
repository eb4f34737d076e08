"""Build-id rollouts through the official SDK (extended spec §10): workers of two builds on one
queue, runs pinned at start, a promoted build for new starts, a drained build that finishes
what it holds and claims nothing new, and a resume; on both journals. Three nodes:
tests/cluster/test_cluster_operator.py."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from durable_workflow import Client, Worker, activity, workflow

from .harness import await_until, unique

pytestmark = pytest.mark.e2e
RAN: Counter[tuple[str, str]] = Counter()  # (build, workflow id) -> workflow tasks run on that build


def _build_workflow(build: str) -> type:
    @workflow.defn(name="bi_release")
    class Release:
        def run(self, ctx, label):  # type: ignore[no-untyped-def]
            RAN[(build, ctx.workflow_id)] += 1
            return (yield ctx.schedule_activity("bi_stamp", [label]))

    return Release


def _stamp(build: str) -> object:
    @activity.defn(name="bi_stamp")
    async def bi_stamp(label: str) -> str:
        return f"{label}@{build}"

    return bi_stamp


def _worker(client: Client, tq: str, build: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[_build_workflow(build)], activities=[_stamp(build)], poll_timeout=1,
                  build_id=build)


def test_runs_go_to_their_build_new_starts_follow_promotion_and_a_drained_build_claims_nothing(server_url: str) -> None:
    tq = unique("bi")

    async def scenario() -> dict:
        async with Client(server_url) as client:
            workers = {b: _worker(client, tq, b) for b in ("v1", "v2")}
            tasks = {b: asyncio.create_task(w.run()) for b, w in workers.items()}
            try:
                pinned = await client.start_workflow(workflow_type="bi_release", workflow_id=unique("pinned"), task_queue=tq,
                                                     input=["pinned"], build_id="v2")
                out = {"pinned": await pinned.result(timeout=30)}
                await client.promote_task_queue_build_id(tq, "v1")
                promoted = await client.start_workflow(workflow_type="bi_release", workflow_id=unique("promoted"), task_queue=tq,
                                                       input=["promoted"])
                out["promoted"] = await promoted.result(timeout=30)
                out["drain"] = await client.drain_task_queue_build_id(tq, "v1")
                held = await client.start_workflow(workflow_type="bi_release", workflow_id=unique("held"), task_queue=tq,
                                                   input=["held"], build_id="v1")
                await asyncio.sleep(1.5)  # v1's pollers are held (1 s polls, so more than one); nothing else takes a v1 run
                out["while_drained"] = (await client.describe_workflow(held.workflow_id)).status
                out["rollout"] = await client.list_task_queue_build_ids(tq)
                out["resume"] = await client.resume_task_queue_build_id(tq, "v1")
                out["held"] = await held.result(timeout=30)
                out["ids"] = (pinned.workflow_id, promoted.workflow_id, held.workflow_id)
                return out
            finally:
                for w in workers.values():
                    await w.stop()
                for t in tasks.values():
                    await t

    out = asyncio.run(scenario())
    pinned_id, promoted_id, held_id = out["ids"]
    assert out["pinned"] == "pinned@v2" and RAN[("v1", pinned_id)] == 0
    assert out["promoted"] == "promoted@v1" and RAN[("v2", promoted_id)] == 0
    assert out["drain"].drain_intent == "draining" and out["drain"].drained_at
    assert out["while_drained"] in ("pending", "running"), "a drained build's run waits for that build"
    cohorts = {c.build_id: c for c in out["rollout"].build_ids}
    assert cohorts["v1"].rollout_status == "draining" and cohorts["v2"].rollout_status == "active"
    assert out["resume"].drain_intent == "active" and out["held"] == "held@v1" and RAN[("v2", held_id)] == 0


def test_a_drained_build_finishes_the_attempt_it_holds_and_its_run_waits_for_a_resume(server_url: str) -> None:
    tq, wid = unique("bi-hold"), unique("bi-hold")
    release = asyncio.Event()

    @activity.defn(name="bi_slow")
    async def bi_slow() -> str:
        await release.wait()
        return "finished while draining"

    @workflow.defn(name="bi_slow_job")
    class SlowJob:
        def run(self, ctx):  # type: ignore[no-untyped-def]
            return (yield ctx.schedule_activity("bi_slow", []))

    async def scenario() -> tuple:
        async with Client(server_url) as client:
            worker = Worker(client, task_queue=tq, workflows=[SlowJob], activities=[bi_slow], poll_timeout=1, build_id="v1")
            task = asyncio.create_task(worker.run())
            try:
                handle = await client.start_workflow(workflow_type="bi_slow_job", workflow_id=wid, task_queue=tq, build_id="v1")

                async def kinds() -> list[str]:
                    run_id = (await client.describe_workflow(wid)).run_id
                    return [e["event_type"] for e in (await client.get_history(wid, run_id))["events"]]

                await await_until(lambda: _has(kinds, "ActivityStarted"), timeout=30, what="the attempt running")
                await client.drain_task_queue_build_id(tq, "v1")
                release.set()
                await await_until(lambda: _has(kinds, "ActivityCompleted"), timeout=30, what="the held attempt completing")
                await asyncio.sleep(1.2)
                waiting = (await client.describe_workflow(wid)).status
                await client.resume_task_queue_build_id(tq, "v1")
                return waiting, await handle.result(timeout=30)
            finally:
                await worker.stop()
                await task

    waiting, result = asyncio.run(scenario())
    assert waiting in ("pending", "running", "waiting"), "no new workflow task for a drained build"
    assert result == "finished while draining"


async def _has(kinds: object, kind: str) -> bool:
    return kind in await kinds()  # type: ignore[operator]
