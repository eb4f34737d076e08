"""The load: workflows started at a steady rate and signalled through the SDK, one SDK worker
per node, and a monitor that observes when each workflow completes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from durable_workflow import Client, Worker

from ops.nemesis.operations import GaveUp, error_name
from ops.nemesis.state import RunState
from ops.nemesis.workload import SIGNAL_NAME, WORKFLOW_TYPE, NemesisOrder, WorkflowRecord, confirm, reserve


async def starter(run: RunState) -> None:
    """Start ``rate`` workflows a second, round-robin over the nodes, until the load phase
    (and every planned fault) is over. Each start is its own task so a slow one never
    holds back the rate; a bound on those in flight keeps a dead cluster from piling up."""
    inflight = asyncio.Semaphore(max(20, int(run.cfg.rate * 30)))
    i = 0
    began = run.now()
    while run.now() < run.load_end or not run.nemesis_done.is_set():
        due = began + i / run.cfg.rate
        if due > run.now():
            await asyncio.sleep(due - run.now())
        await inflight.acquire()
        wid = f"{run.tag}-{i:06d}"
        record = WorkflowRecord(wid, i, f"token-{wid}", f"{wid}-{SIGNAL_NAME}", i % len(run.nodes), run.now())
        run.records[wid] = record

        async def start_one(rec: WorkflowRecord = record) -> None:
            try:
                await start_and_signal(run, rec)
            finally:
                inflight.release()

        run.spawn(start_one())
        i += 1


async def start_and_signal(run: RunState, rec: WorkflowRecord) -> None:
    """Start one workflow, then (after a random pause) signal it; each acknowledgement is
    recorded, and an operation given up on is marked so the verdict counts it."""
    assert run.ops is not None

    async def start(client: Client) -> Any:
        return await client.start_workflow(
            workflow_type=WORKFLOW_TYPE, workflow_id=rec.workflow_id, task_queue=run.task_queue, input=[rec.n],
            duplicate_policy="use-existing",  # a retry after a lost answer returns the first run
        )

    try:
        handle = await run.ops.call("start", rec.workflow_id, rec.first_node, start)
    except GaveUp as exc:
        rec.start_gave_up = True
        run.say(f"gave up starting {rec.workflow_id}: {exc}")
        return
    rec.start_acked_at = run.now()
    rec.run_id = handle.run_id
    await asyncio.sleep(run.load_rng.uniform(0.5, 2.0))

    async def send(client: Client) -> dict[str, Any]:
        return await client.signal_workflow(rec.workflow_id, SIGNAL_NAME, args=[rec.token], request_id=rec.request_id)

    try:
        receipt = await run.ops.call("signal", rec.workflow_id, run.load_rng.randrange(len(run.nodes)), send)
    except GaveUp as exc:
        rec.signal_gave_up = True
        run.say(f"gave up signalling {rec.workflow_id}: {exc}")
        return
    rec.signal_acked_at = run.now()
    rec.signal_command_id = receipt.get("command_id")


async def completion_monitor(run: RunState, clients: list[Client]) -> None:
    """Observe when each signalled workflow completes (describe, one attempt per round; a
    failure is counted and the next round is the retry). Polled every 2 s under load and
    every 1 s in the quiet phase, which is the resolution of the 60 s completion check."""
    sem = asyncio.Semaphore(8)
    turn = 0
    while not run.stopping.is_set():
        every = 1.0 if run.nemesis_done.is_set() and run.now() >= run.load_end else 2.0
        due = [r for r in run.records.values() if r.signal_acked_at is not None and r.completed_seen_at is None
               and run.now() - r.last_polled >= every]
        jobs = []
        for rec in due:
            turn += 1
            jobs.append(poll_completion(run, rec, clients[turn % len(clients)], sem))
        if jobs:
            await asyncio.gather(*jobs)
        await asyncio.sleep(0.5)


async def poll_completion(run: RunState, rec: WorkflowRecord, client: Client, sem: asyncio.Semaphore) -> None:
    """One describe of one workflow: a closed status is its observed completion."""
    async with sem:
        rec.last_polled = run.now()
        try:
            described = await asyncio.wait_for(client.describe_workflow(rec.workflow_id), run.cfg.attempt_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted; the next round retries
            run.stats.errors["monitor"] += 1
            run.stats.error_types[f"monitor:{error_name(exc)}"] += 1
            return
        if described.status and described.status not in ("running", "pending", "waiting"):
            rec.completed_seen_at = run.now()
            rec.closed_status = described.status


async def supervise_worker(run: RunState, index: int) -> None:
    """One SDK worker polling node ``index``; if it exits on its own (its node was down when
    it registered, say) it is recreated, and counted."""
    node = run.nodes[index]
    generation = 0
    while not run.stopping.is_set():
        generation += 1
        async with Client(node.url, timeout=15) as client:
            worker = Worker(
                client, task_queue=run.task_queue, workflows=[NemesisOrder], activities=[reserve, confirm],
                worker_id=f"{run.tag}-w{index + 1}-{generation}", poll_timeout=5, shutdown_timeout=5,
            )
            task = asyncio.ensure_future(worker.run())
            stop = asyncio.ensure_future(run.stopping.wait())
            try:
                await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
            if task.done():
                problem = task.exception() if not task.cancelled() else "cancelled"
                run.worker_restarts += 1
                run.say(f"SDK worker on node {index + 1} exited ({problem!r}); recreating it")
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.stop(), 3)  # a parked poll may hold it; then cancel
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 10)


async def progress(run: RunState) -> None:
    """A progress line every 10 s, so a long run can be followed (and a stall seen) live."""
    while not run.stopping.is_set():
        await asyncio.sleep(10)
        recs = list(run.records.values())
        run.say(
            f"progress: submitted {len(recs)}, started {sum(r.start_acked_at is not None for r in recs)}, "
            f"signalled {sum(r.signal_acked_at is not None for r in recs)}, "
            f"completed {sum(r.completed_seen_at is not None for r in recs)}, "
            f"client errors {sum(run.stats.errors.values())}, nodes up "
            f"{sum(n.alive() for n in run.nodes)}/{len(run.nodes)}"
        )
