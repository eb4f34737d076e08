"""Cluster: workflows started through one node complete with workers polling the other nodes."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker

from tests.e2e import workflows as wf
from tests.e2e.harness import await_until, unique, wait_until
from tests.e2e.server import ServerProcess, stop_all
from tests.e2e.stores import store

pytestmark = pytest.mark.e2e
SHARDS = 16


def _node(tmp_path: Path, name: str, dsn: str, env: dict[str, str] | None = None) -> ServerProcess:
    port = ServerProcess.free_port()
    env = {"DW_NODE_ID": name, "DW_SHARD_COUNT": str(SHARDS), "DW_ADVERTISE_URL": f"http://127.0.0.1:{port}", **(env or {})}
    node = ServerProcess(tmp_path / name, env=env, port=port, database=dsn)
    node.start()
    return node


async def _converged(url: str, node_ids: list[str], timeout: float = 60.0) -> None:
    """Until each of ``node_ids`` is active with at least its fair share and every shard is owned.

    What a scenario needs before it starts (each node serving its runs), read where an operator
    reads it; the deadline only bounds how long a cluster that never converges takes to fail.
    """
    fair = SHARDS // len(node_ids)
    owned: dict[str, int] = {}

    async def ready() -> bool:
        view = (await http.get("/api/cluster/info")).json()["cluster"]
        owned.clear()
        owned.update({n["node_id"]: n["shards_owned"] for n in view["nodes"] if n["status"] == "active"})
        return sum(owned.values()) == SHARDS and all(owned.get(n, 0) >= fair for n in node_ids)

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        try:
            await await_until(ready, timeout=timeout, what="cluster converged", interval=0.2)
        except AssertionError:
            raise AssertionError(f"{node_ids} never held their shares of {SHARDS} within {timeout:g}s: {owned}") from None


def _wait_for_log(node: ServerProcess, *needles: str, timeout: float = 30.0) -> str:
    """Until the node's log has a line with one of ``needles``; returns that line."""
    return wait_until(
        lambda: next((line for line in list(node.lines) for n in needles if n in line), None),
        timeout=timeout, what=f"{node.env.get('DW_NODE_ID')} logged one of {needles}", interval=0.1,
    )


def test_three_nodes_start_on_one_and_work_on_the_others(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2, 3)]
        try:
            tq = unique("cluster")
            ids = [unique("cw") for _ in range(12)]

            async def scenario() -> list[object]:
                await _converged(nodes[0].url, ["node-1", "node-2", "node-3"])
                async with Client(nodes[0].url) as starter, Client(nodes[1].url) as c2, Client(nodes[2].url) as c3:
                    workers = [
                        Worker(c, task_queue=tq, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES, poll_timeout=2)
                        for c in (c2, c3)
                    ]
                    tasks = [asyncio.create_task(w.run()) for w in workers]
                    try:
                        for i, wid in enumerate(ids):
                            kind = ("sequential_then_parallel", "parent", "one_activity")[i % 3]
                            args = [] if kind == "sequential_then_parallel" else [f"n{i}"]
                            await starter.start_workflow(workflow_type=kind, workflow_id=wid, task_queue=tq, input=args)
                        results = [await starter.get_workflow_handle(wid).result(timeout=60) for wid in ids]
                        # a query asked on node 1, answered by a worker polling node 2 or 3
                        asked = unique("cq")
                        handle = await starter.start_workflow(workflow_type="inspectable", workflow_id=asked, task_queue=tq, input=["cluster"])
                        await handle.signal("add", ["x"])

                        async def signal_recorded() -> bool:
                            events = (await starter.get_history(asked, handle.run_id, page_size=1000))["events"]
                            return any(e["event_type"] == "SignalReceived" for e in events)

                        await await_until(signal_recorded, timeout=30, what="the signal in the run's history")
                        answer = await starter.query_workflow(asked, "status")
                        pushed = await starter.update_workflow(asked, "push", args=["y"], wait_for="completed")
                        await starter.terminate_workflow(asked)
                        return [*results, (answer["result"], pushed["result"])]
                    finally:
                        for w in workers:
                            await w.stop()
                        for t in tasks:
                            await t

            *results, answer = asyncio.run(scenario())
            assert answer == ({"stage": "waiting (cluster)", "items": ["x"]}, 2)  # a query and an update, asked on node 1
            for i, result in enumerate(results):
                if i % 3 == 0:
                    assert result == {"sequential": 6, "parallel": [1, 4, 9, 16, 25]}
                elif i % 3 == 1:  # the child usually lives on another node's shard
                    assert result == f"child said: hello, n{i}"
                else:
                    assert result == f"hello, n{i}"
        finally:
            stop_all(nodes)
        for node in nodes:
            assert "Traceback" not in node.log(), node.log()


def test_sigkill_of_a_node_under_load_loses_nothing(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2, 3)]
        try:
            tq = unique("kill")
            ids = [unique("kw") for _ in range(30)]

            async def history(client: Client, wid: str) -> list[dict]:
                run_id = (await client.describe_workflow(wid)).run_id
                return (await client.get_history(wid, run_id, page_size=1000))["events"]

            async def scenario() -> tuple[list[object], list[list[dict]]]:
                await _converged(nodes[0].url, ["node-1", "node-2", "node-3"])
                async with Client(nodes[0].url) as starter, Client(nodes[2].url) as c3:
                    worker = Worker(c3, task_queue=tq, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES, poll_timeout=2)
                    task = asyncio.create_task(worker.run())
                    try:
                        for i, wid in enumerate(ids):
                            await starter.start_workflow(
                                workflow_type="sequential_then_parallel", workflow_id=wid, task_queue=tq, input=[]
                            )
                            if i == len(ids) // 2:
                                seen = {w: await history(starter, w) for w in ids[: i + 1]}  # acknowledged reads
                                await asyncio.to_thread(nodes[1].kill)  # node 2 dies mid-stream
                        results = [await starter.get_workflow_handle(wid).result(timeout=90) for wid in ids]
                        histories = [await history(starter, wid) for wid in ids]
                        for wid, events in zip(ids, histories, strict=True):
                            before = seen.get(wid, [])
                            assert [(e["sequence"], e["event_type"], e["payload"]) for e in events[: len(before)]] == [
                                (e["sequence"], e["event_type"], e["payload"]) for e in before
                            ], f"{wid}: an event read before the kill changed or vanished"
                        return results, histories
                    finally:
                        await worker.stop()
                        await task

            results, histories = asyncio.run(scenario())
            assert results == [{"sequential": 6, "parallel": [1, 4, 9, 16, 25]}] * len(ids)
            for events in histories:
                assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
                steps = [(e["event_type"], e["payload"].get("sequence")) for e in events if e["event_type"] in (
                    "ActivityScheduled", "ActivityCompleted", "WorkflowCompleted")]
                assert len(steps) == len(set(steps)), steps
        finally:
            for node in nodes:
                node.kill()


def test_a_joining_node_gets_shards_and_a_leaving_node_hands_them_over_under_load(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2, 3)]
        try:
            tq = unique("churn")
            ids = [unique("jw") for _ in range(30)]

            async def scenario() -> list[object]:
                await _converged(nodes[0].url, ["node-1", "node-2", "node-3"])
                async with Client(nodes[0].url) as starter, Client(nodes[2].url) as c3:
                    worker = Worker(c3, task_queue=tq, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES, poll_timeout=2)
                    task = asyncio.create_task(worker.run())
                    try:
                        for i, wid in enumerate(ids):
                            # Any failure here, after the SDK's own retries, fails the test.
                            await starter.start_workflow(workflow_type="one_activity", workflow_id=wid, task_queue=tq, input=[wid])
                            if i == 10:
                                nodes.append(await asyncio.to_thread(_node, tmp_path, "node-4", dsn))
                            if i == 20:
                                nodes[1].proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                            await asyncio.sleep(0.2)  # pacing: starts keep arriving across the join and the leave
                        results = [await starter.get_workflow_handle(wid).result(timeout=90) for wid in ids]
                        return results
                    finally:
                        await worker.stop()
                        await task

            results = asyncio.run(scenario())
            assert results == [f"hello, {wid}" for wid in ids]
            assert nodes[1].proc.wait(15) == 0  # type: ignore[union-attr]
            # The newcomer gets its share and the leaver keeps nothing: wait for that state (every
            # shard owned, node-1, node-3 and node-4 each with its fair share, so node-2 with 0).
            asyncio.run(_converged(nodes[0].url, ["node-1", "node-3", "node-4"]))
        finally:
            for node in nodes:
                node.kill()


def _shards_of(dsn: str, node_id: str) -> set[int]:
    import asyncpg

    async def query() -> set[int]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r["shard_id"] for r in await conn.fetch("SELECT shard_id FROM shards WHERE owner_node = $1", node_id)}
        finally:
            await conn.close()

    return asyncio.run(query())


def _queue_homed_on(shards: set[int], kind: str = "workflow") -> str:
    """A task-queue name whose home shard (where its polls park) is one of ``shards``."""
    from persistence.ids import shard_of

    while True:
        name = unique("freeze")
        if shard_of("default", f"{kind}-queue:{name}", SHARDS) in shards:
            return name


def test_a_frozen_node_loses_its_shards_and_cannot_write_after_resuming(tmp_path: Path) -> None:
    """Node 2 is frozen with SIGSTOP while it hosts the task queue's parked polls and half the
    runs. While it is still frozen, node 1 takes its shards over, the worker's long poll that
    node 1 had forwarded to node 2 is re-routed (not left hanging for the SDK's 35 s poll), and
    every workflow completes. After SIGCONT node 2 finds it lost everything and writes nothing."""
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2)]
        try:
            ids = [unique("fz") for _ in range(12)]

            asyncio.run(_converged(nodes[0].url, ["node-1", "node-2"]))
            tq = _queue_homed_on(_shards_of(dsn, "node-2"))

            async def scenario() -> tuple[list[object], list[list[dict]]]:
                async with Client(nodes[0].url) as client:
                    worker = Worker(client, task_queue=tq, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES)
                    task = asyncio.create_task(worker.run())
                    try:
                        for wid in ids:
                            await client.start_workflow(workflow_type="sleeper", workflow_id=wid, task_queue=tq, input=[3])

                        async def all_sleeping() -> bool:
                            # every run is in its timer: the worker has nothing to do but poll,
                            # and its poll parks on node 2, the queue's home
                            for wid in ids:
                                run_id = (await client.describe_workflow(wid)).run_id
                                events = (await client.get_history(wid, run_id, page_size=1000))["events"]
                                if not any(e["event_type"] == "TimerScheduled" for e in events):
                                    return False
                            return True

                        await await_until(all_sleeping, timeout=30, what="every run waiting on its timer", interval=0.2)
                        nodes[1].proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
                        try:  # node 2 stays frozen until every workflow has finished without it
                            results = [await client.get_workflow_handle(wid).result(timeout=30) for wid in ids]
                        finally:
                            nodes[1].proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                        # node 2 wakes up and finds itself without shards (a lost session or a refused write)
                        await asyncio.to_thread(_wait_for_log, nodes[1], "lost the shard lease session", "was taken over")
                        histories = []
                        for wid in ids:
                            run_id = (await client.describe_workflow(wid)).run_id
                            histories.append((await client.get_history(wid, run_id, page_size=1000))["events"])
                        return results, histories
                    finally:
                        await worker.stop()
                        await task

            results, histories = asyncio.run(scenario())
            assert all(str(r).startswith("woke") for r in results), results
            for events in histories:
                assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
                fired = [e["payload"]["sequence"] for e in events if e["event_type"] == "TimerFired"]
                assert len(fired) == len(set(fired)) == 1
            assert "re-routing" in nodes[0].log(), nodes[0].log()  # the forwarded poll did not wait for node 2
            woke = nodes[1].log()
            assert "Traceback" not in woke, woke
        finally:
            for node in nodes:
                node.kill()


def test_a_partitioned_node_has_its_stale_writes_rejected_and_the_signals_land_once(tmp_path: Path) -> None:
    """Node 2 is cut from PostgreSQL (its sessions stall, nothing closes) while signals for its
    runs are in flight through it; node 1 takes the shards once the server ends node 2's idle
    lease session. At the heal, node 2's held commits reach the server and are refused by the
    fence (its log names the shard taken over), the requests are forwarded to the new owner,
    and each signal is in its run's history exactly once."""
    from tests.cluster.partition import Partition

    with store("postgresql") as dsn:
        assert dsn is not None
        relay, relayed = Partition.for_dsn(dsn)
        nodes = [_node(tmp_path, "node-1", dsn), _node(tmp_path, "node-2", relayed)]
        try:
            tq = unique("partition")
            ids = [unique("pt") for _ in range(16)]

            async def owned_by(client: Client, node_id: str) -> int:
                view = (await client.get_cluster_info())["cluster"]
                return {n["node_id"]: n["shards_owned"] for n in view["nodes"]}.get(node_id, 0)

            async def scenario() -> list[list[dict]]:
                async with Client(nodes[0].url) as client, httpx.AsyncClient(
                    base_url=nodes[1].url, timeout=60, headers={"X-Durable-Workflow-Control-Plane-Version": "2"}
                ) as via2:
                    await _converged(nodes[0].url, ["node-1", "node-2"])
                    worker = Worker(client, task_queue=tq, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES, poll_timeout=2)
                    task = asyncio.create_task(worker.run())
                    try:
                        for wid in ids:
                            await client.start_workflow(workflow_type="sleeper", workflow_id=wid, task_queue=tq, input=[60])
                        for wid in ids:  # node 2 now knows the instances and holds its runs' actors
                            warm = await via2.post(f"/api/workflows/{wid}/signal/warm", json={})
                            assert warm.status_code == 202, warm.text
                        relay.cut()
                        signals = [
                            asyncio.create_task(via2.post(f"/api/workflows/{wid}/signal/poke", json={"input": [wid]}))
                            for wid in ids
                        ]

                        async def node_1_owns_all() -> bool:
                            return await owned_by(client, "node-1") == SHARDS

                        # the server ends the silent lease session after its 10 s idle timeout
                        await await_until(node_1_owns_all, timeout=60, what="node 1 took the partitioned node's shards", interval=0.2)
                        relay.heal()
                        answers = [await s for s in signals]
                        assert [a.status_code for a in answers] == [202] * len(ids), [a.text for a in answers]
                        histories = []
                        for wid in ids:
                            await client.terminate_workflow(wid, reason="test over")
                            run_id = (await client.describe_workflow(wid)).run_id
                            histories.append((await client.get_history(wid, run_id, page_size=1000))["events"])
                        return histories
                    finally:
                        await worker.stop()
                        await task

            histories = asyncio.run(scenario())
            for events in histories:
                assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
                pokes = [e for e in events if e["event_type"] == "SignalReceived" and e["payload"]["signal_name"] == "poke"]
                assert len(pokes) == 1, events
                assert events[-1]["event_type"] == "WorkflowTerminated", events
            log = nodes[1].log()
            assert "was taken over" in log, log  # the held commit, refused by the fence
            assert "Traceback" not in log, log
        finally:
            for node in nodes:
                node.kill()
            relay.close()


def test_a_schedule_keeps_firing_after_its_shard_moves(tmp_path: Path) -> None:
    """A schedule on node 2's shard is created through node 1; node 2 leaves (SIGTERM) and
    node 1 takes the shard over: the schedule goes on firing there, no run started twice."""
    import time

    from persistence.ids import shard_of

    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2)]
        try:
            cp = {"X-Durable-Workflow-Control-Plane-Version": "2"}
            asyncio.run(_converged(nodes[0].url, ["node-1", "node-2"]))
            with httpx.Client(base_url=nodes[0].url, headers=cp, timeout=30) as http:

                def fired() -> list[dict]:
                    r = http.get(f"/api/schedules/{sid}/history", params={"limit": 500})
                    assert r.status_code == 200, r.text
                    return [e for e in r.json()["events"] if e["event_type"] == "ScheduleTriggered"]

                def recorded(e: dict) -> float:
                    return datetime.fromisoformat(e["recorded_at"].replace("Z", "+00:00")).timestamp()

                theirs = _shards_of(dsn, "node-2")
                sid = next(s for s in (unique("moving") for _ in range(1000)) if shard_of("default", f"schedule:{s}", SHARDS) in theirs)
                created = http.post("/api/schedules", json={
                    "schedule_id": sid, "spec": {"intervals": [{"every": "PT1S"}]}, "overlap_policy": "allow_all",
                    "action": {"workflow_type": "one_activity", "task_queue": unique("idle"), "input": ["x"]},
                })
                assert created.status_code == 201, created.text
                wait_until(lambda: len(fired()) >= 2, timeout=30, what="the schedule firing on node 2")
                nodes[1].proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                assert nodes[1].proc.wait(15) == 0  # type: ignore[union-attr]
                moved_at = time.time()  # node 2 is gone: every fire recorded from now on is node 1's
                # Node 1 takes the shard over and goes on firing: two fires after the move. The
                # deadline bounds how long a schedule that stopped with its shard takes to fail.
                wait_until(
                    lambda: len([e for e in fired() if recorded(e) >= moved_at]) >= 2, timeout=60,
                    what="two fires on node 1 after node 2 left", interval=0.2,
                )
                http.post(f"/api/schedules/{sid}/pause", json={})
                events = fired()
                http.delete(f"/api/schedules/{sid}")
            ids = [e["workflow_instance_id"] for e in events]
            assert len(ids) == len(set(ids)), ids  # no occurrence started twice across the move
            assert "Traceback" not in nodes[0].log()
        finally:
            for node in nodes:
                node.kill()
