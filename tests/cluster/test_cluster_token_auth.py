"""Cluster: with token authentication on, clients need their tokens and the nodes still work together.

Two node processes on one PostgreSQL, ``DW_AUTH_DRIVER=token``. Clients without a token (or
with a wrong one) are refused by either node, also for runs the other node owns (the node a
client reaches authenticates before forwarding). With tokens, workflows started through node 1
on *both* nodes' shards complete with a worker polling node 2 only: that takes forwarded
requests (the client's token travels with them) and signed node calls (offers, claims), which
carry the cluster secret, not a client token. Bounded: about 20 s, 60 s at most.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from durable_workflow import Client, Worker

from persistence.ids import shard_of
from tests.e2e import workflows as wf
from tests.e2e.harness import unique
from tests.e2e.server import ServerProcess, stop_all
from tests.e2e.stores import store

pytestmark = pytest.mark.e2e
SHARDS = 8
TOKENS = {"worker": "tok-worker", "operator": "tok-operator", "admin": "tok-admin"}
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def _node(tmp_path: Path, name: str, dsn: str) -> ServerProcess:
    port = ServerProcess.free_port()
    env = {
        "DW_NODE_ID": name, "DW_SHARD_COUNT": str(SHARDS), "DW_ADVERTISE_URL": f"http://127.0.0.1:{port}",
        "DW_AUTH_DRIVER": "token", **{f"DW_{role.upper()}_TOKEN": token for role, token in TOKENS.items()},
    }
    node = ServerProcess(tmp_path / name, env=env, port=port, database=dsn)
    node.start()
    return node


def _owners(dsn: str) -> dict[int, str | None]:
    async def read() -> dict[int, str | None]:
        base, _, query = dsn.partition("?")
        conn = await asyncpg.connect(base, server_settings={"search_path": query.removeprefix("search_path=")})
        try:
            return {r[0]: r[1] for r in await conn.fetch("SELECT shard_id, owner_node FROM shards")}
        finally:
            await conn.close()

    return asyncio.run(read())


def _wait_for_split(dsn: str, deadline: float) -> dict[int, str | None]:
    while True:
        owners = _owners(dsn)
        counts = {n: list(owners.values()).count(n) for n in ("node-1", "node-2")}
        if counts == {"node-1": SHARDS // 2, "node-2": SHARDS // 2}:
            return owners
        if time.monotonic() > deadline:
            raise AssertionError(f"shards never split between the two nodes: {owners}")
        time.sleep(0.2)


def test_token_auth_in_a_cluster_refuses_strangers_and_the_nodes_still_cooperate(tmp_path: Path) -> None:
    began = time.monotonic()
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = [_node(tmp_path, f"node-{i}", dsn) for i in (1, 2)]
        try:
            owners = _wait_for_split(dsn, began + 30)
            one, two = nodes[0].url, nodes[1].url
            assert one is not None and two is not None

            # two workflow ids on each node's shards
            ids: dict[str, list[str]] = {"node-1": [], "node-2": []}
            while min(len(v) for v in ids.values()) < 2:
                wid = unique("auth")
                home = owners[shard_of("default", wid, SHARDS)]
                if home is not None and len(ids[home]) < 2:
                    ids[home].append(wid)
            tq = unique("auth-q")

            # strangers are refused by both nodes, whoever owns the run
            body = {"workflow_type": "one_activity", "workflow_id": ids["node-2"][0], "task_queue": tq, "input": ["x"]}
            with httpx.Client(timeout=15) as http:
                for url in (one, two):
                    for auth in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Bearer {TOKENS['worker']}"}):
                        r = http.post(f"{url}/api/workflows", json=body, headers={**CP, **auth})
                        assert r.status_code in (401, 403), (url, auth, r.status_code, r.text)
                    assert http.get(f"{url}/api/cluster/info").status_code == 401
            assert _owners(dsn) == owners  # (nothing moved meanwhile: the refusals were not 503s)

            async def scenario() -> list[object]:
                async with Client(one, token=TOKENS["operator"]) as starter, Client(two, token=TOKENS["worker"]) as polling:
                    worker = Worker(polling, task_queue=tq, workflows=wf.ALL_WORKFLOWS, activities=wf.ALL_ACTIVITIES, poll_timeout=2)
                    task = asyncio.create_task(worker.run())
                    try:
                        everything = ids["node-1"] + ids["node-2"]
                        for wid in everything:
                            await starter.start_workflow(workflow_type="one_activity", workflow_id=wid, task_queue=tq, input=[wid])
                        return [await starter.get_workflow_handle(wid).result(timeout=30) for wid in everything]
                    finally:
                        await worker.stop()
                        await task

            results = asyncio.run(scenario())
            assert results == [f"hello, {wid}" for wid in ids["node-1"] + ids["node-2"]]
            # the runs did live on both nodes' shards (no rebalance moved them all to one)
            assert {owners[shard_of("default", w, SHARDS)] for w in ids["node-1"] + ids["node-2"]} == {"node-1", "node-2"}
        finally:
            stop_all(nodes)
        for node in nodes:
            assert "Traceback" not in node.log(), node.log()
    assert time.monotonic() - began < 60
