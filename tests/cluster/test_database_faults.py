"""Cluster: nodes outlive their database (issue 10, point 1; ARCHITECTURE.md invariant 10).

Two nodes, workflows in flight through the official SDK; then PostgreSQL itself is restarted,
or one node's sessions are terminated under it. Every workflow completes, and every node
process is still the one that started: none exited because the database went away.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
from durable_workflow import Client, Worker

from tests.e2e import workflows as wf
from tests.e2e.harness import unique
from tests.e2e.server import ServerProcess, stop_all
from tests.e2e.stores import store
from tests.postgres_required import postgres_url

from .test_cluster_workflows import _wait_for_log

pytestmark = pytest.mark.e2e
SHARDS = 8


def _node(tmp_path: Path, name: str, dsn: str) -> ServerProcess:
    port = ServerProcess.free_port()
    env = {"DW_NODE_ID": name, "DW_SHARD_COUNT": str(SHARDS), "DW_ADVERTISE_URL": f"http://127.0.0.1:{port}",
           "DW_WORKFLOW_TASK_LEASE_SECONDS": "5", "DW_ACTOR_IDLE_SECONDS": "5"}
    node = ServerProcess(tmp_path / name, env=env, port=port, database=dsn)
    node.start()
    return node


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0


def restart_postgres() -> float:
    """``pg_ctlcluster … restart`` of the machine's cluster; seconds until it accepts again."""
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".") if p.isdigit()])
    started = time.monotonic()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"], check=True, timeout=120)
    while not _pg_ready():
        assert time.monotonic() - started < 120, "PostgreSQL did not come back"
        time.sleep(0.2)
    return time.monotonic() - started


def _terminate_sessions_of(node_id: str, dsn: str) -> int:
    """End every PostgreSQL session of one node: its lease session and its journal pool."""
    async def run() -> int:
        conn = await asyncpg.connect(postgres_url())
        try:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 OR"
                " (application_name = $2 AND pid <> pg_backend_pid())",
                f"dw-shard-leases:{node_id}", f"dw-journal:{node_id}",
            )
            for (pid,) in pids:
                await conn.execute("SELECT pg_terminate_backend($1)", pid)
            return len(pids)
        finally:
            await conn.close()

    return asyncio.run(run())


async def _run_load(nodes: list[ServerProcess], fault: object, count: int = 30) -> list[object]:
    tq = unique("dbfault")
    ids = [unique("dbf") for _ in range(count)]
    await asyncio.sleep(2)  # both hold their share
    async with Client(nodes[0].url) as starter, Client(nodes[1].url) as c2:
        workers = [Worker(c, task_queue=tq, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES, poll_timeout=2)
                   for c in (starter, c2)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            for i, wid in enumerate(ids):
                await starter.start_workflow(workflow_type="sequential_then_parallel", workflow_id=wid, task_queue=tq, input=[])
                if i == count // 2:
                    await asyncio.to_thread(fault)  # the fault strikes with half of them in flight

            async def result(wid: str) -> object:
                deadline = time.monotonic() + 120
                while True:  # the client sees 503s while the database is away: it retries, as users do
                    try:
                        return await starter.get_workflow_handle(wid).result(timeout=60)
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(1)

            return [await result(wid) for wid in ids]
        finally:
            for w in workers:
                await w.stop()
            for t in tasks:
                await t


def _check(nodes: list[ServerProcess], results: list[object]) -> None:
    assert all(r == {"sequential": 6, "parallel": [1, 4, 9, 16, 25]} for r in results), results
    for node in nodes:
        assert node.proc is not None and node.proc.poll() is None, f"a node exited:\n{node.log()[-3000:]}"


def test_a_postgresql_restart_ends_no_node_and_every_workflow_completes(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2)]
        try:
            took: list[float] = []
            results = asyncio.run(_run_load(nodes, lambda: took.append(restart_postgres())))
            _check(nodes, results)
            for node in nodes:
                log = node.log()
                assert "lost its shard lease session" in log, log[-3000:]
                assert "lease session open again; rejoining" in log, log[-3000:]
            print(f"PostgreSQL restarted in {took[0]:.1f}s; both nodes rejoined and {len(results)} workflows completed")
        finally:
            if not _pg_ready():
                restart_postgres()
            stop_all(nodes)


def test_a_node_whose_sessions_are_terminated_rejoins(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2)]
        try:
            ended: list[int] = []
            results = asyncio.run(_run_load(nodes, lambda: ended.append(_terminate_sessions_of("node-2", dsn))))
            assert ended[0] >= 2, "the lease session and at least one pool connection were ended"
            _check(nodes, results)
            # the node notices the ended session at its next lease round, not when the load is done
            _wait_for_log(nodes[1], "lease session open again; rejoining", timeout=30)
        finally:
            stop_all(nodes)
