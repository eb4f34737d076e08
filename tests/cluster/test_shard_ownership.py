"""Cluster: several node processes on loopback share one PostgreSQL; shards follow membership."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.stores import store

pytestmark = pytest.mark.e2e
SHARDS = 16
# Seconds for a dead or leaving node's shards to move. The product moves them as soon as the
# node's lease session ends, in the survivor's next convergence round (every 1 s); what a
# regression falls back on is the 10 s liveness TTL of a node's heartbeat (node_ttl). 8 s stays
# under it, the rest is the margin for a loaded two-core machine running several nodes.
MOVE_WITHIN = 8.0


def _owners(dsn: str) -> collections.Counter[str | None]:
    async def read() -> collections.Counter[str | None]:
        base, _, query = dsn.partition("?")
        schema = query.removeprefix("search_path=")
        conn = await asyncpg.connect(base, server_settings={"search_path": schema})
        try:
            rows = await conn.fetch("SELECT owner_node FROM shards")
        finally:
            await conn.close()
        return collections.Counter(r[0] for r in rows)

    return asyncio.run(read())


def _wait_for(dsn: str, expected: dict[str, int], timeout: float) -> float:
    started = time.monotonic()
    while True:
        owners = _owners(dsn)
        if {k: v for k, v in owners.items() if k is not None} == expected:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"shard owners {dict(owners)} never became {expected} within {timeout}s")
        time.sleep(0.2)


def _node(tmp_path: Path, name: str, dsn: str) -> ServerProcess:
    node = ServerProcess(tmp_path / name, env={"DW_NODE_ID": name, "DW_SHARD_COUNT": str(SHARDS)}, database=dsn)
    node.start()
    return node


def test_nodes_share_shards_take_over_a_dead_node_and_hand_over_on_sigterm(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        a = _node(tmp_path, "node-a", dsn)
        nodes = [a]
        try:
            _wait_for(dsn, {"node-a": SHARDS}, timeout=30)
            b = _node(tmp_path, "node-b", dsn)
            nodes.append(b)
            _wait_for(dsn, {"node-a": SHARDS // 2, "node-b": SHARDS // 2}, timeout=30)
            view = httpx.get(f"{b.url}/api/cluster/info").json()["cluster"]
            assert view["mode"] == "cluster" and view["shard_count"] == SHARDS and view["unowned_shards"] == 0
            assert {n["node_id"]: n["shards_owned"] for n in view["nodes"]} == {"node-a": SHARDS // 2, "node-b": SHARDS // 2}
            status = subprocess.run(
                [sys.executable, "-m", "ops.cli", "cluster", "status", "--database", dsn],
                capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parents[2],
            )
            assert status.returncode == 0, status.stderr
            rows = {line.split()[0]: line.split()[2] for line in status.stdout.splitlines() if line.startswith("node-")}
            assert rows == {"node-a": str(SHARDS // 2), "node-b": str(SHARDS // 2)}, status.stdout

            b.kill()  # SIGKILL: its lease session ends, its locks free at once
            took = _wait_for(dsn, {"node-a": SHARDS}, timeout=30)
            assert took <= MOVE_WITHIN, f"a dead node's shards took {took:.1f}s to move"

            c = _node(tmp_path, "node-c", dsn)
            nodes.append(c)
            _wait_for(dsn, {"node-a": SHARDS // 2, "node-c": SHARDS // 2}, timeout=30)
            c.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            assert c.proc.wait(15) == 0  # type: ignore[union-attr]
            took = _wait_for(dsn, {"node-a": SHARDS}, timeout=30)
            assert took <= MOVE_WITHIN, f"a leaving node's shards took {took:.1f}s to move"
        finally:
            for node in nodes:
                node.kill()
        for node in nodes:
            assert "Traceback" not in node.log(), node.log()


def test_a_node_with_another_shard_count_is_refused(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        a = _node(tmp_path, "node-a", dsn)
        try:
            other = ServerProcess(tmp_path / "odd", env={"DW_NODE_ID": "odd", "DW_SHARD_COUNT": str(SHARDS * 2)}, database=dsn)
            with pytest.raises(RuntimeError):
                other.start(timeout=15)
            assert other.proc is not None and other.proc.wait(10) == 2
            assert "refusing to join the cluster" in other.log() and str(SHARDS) in other.log()
            assert "Traceback" not in other.log()
        finally:
            a.kill()
