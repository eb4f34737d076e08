"""The cluster under test: its schema, its node processes from start to shutdown, nodes that
die on their own, and the ownership evidence read when a run ends or gets stuck."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

from durable_workflow import Client

from ops.nemesis.config import DEFAULT_DATABASE
from ops.nemesis.postgres import dsn_host_port, ensure_postgres_running, pg_execute, schema_of
from ops.nemesis.processes import NodeProcess, free_port
from ops.nemesis.state import RunState


async def create_schema(run: RunState) -> None:
    """A fresh schema on the configured database, unless the URL names one (then the caller
    owns it and it is neither created nor dropped)."""
    given = run.cfg.database or os.environ.get("DW_DATABASE_URL") or DEFAULT_DATABASE
    if schema_of(given):
        run.dsn = run.base_dsn = given  # the caller owns this schema
        return
    run.base_dsn = given
    run.own_schema = f"nemesis_{run.cfg.seed}_{uuid.uuid4().hex[:8]}"
    await pg_execute(given, f"CREATE SCHEMA {run.own_schema}")
    run.dsn = f"{given}{'&' if '?' in given else '?'}search_path={run.own_schema}"
    run.say(f"created schema {run.own_schema}")


def make_nodes(run: RunState) -> None:
    """One ``NodeProcess`` per node, with its own port, id and short leases; none started yet."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DW_")}
    for i in range(run.cfg.nodes):
        port = free_port()
        node_id = f"{run.tag}-n{i + 1}"
        env = {
            **base_env,
            "DW_NODE_ID": node_id,
            "DW_SHARD_COUNT": str(run.cfg.shard_count),
            "DW_ADVERTISE_URL": f"http://127.0.0.1:{port}",
            "DW_WORKFLOW_TASK_LEASE_SECONDS": str(run.cfg.workflow_task_lease_seconds),
            "DW_ACTIVITY_LEASE_SECONDS": str(run.cfg.activity_lease_seconds),
            "DW_ACTOR_IDLE_SECONDS": str(run.cfg.actor_idle_seconds),
            "PYTHONUNBUFFERED": "1",
        }
        run.nodes.append(NodeProcess(node_id, port, run.dsn, run.log_dir / f"node-{i + 1}",
                                     run.log_dir / f"node-{i + 1}.log", env))


async def start_nodes(run: RunState) -> None:
    """Create the schema and start every node; returns once all of them listen."""
    await create_schema(run)
    run.db_host, run.db_port = dsn_host_port(run.dsn)
    make_nodes(run)
    await asyncio.gather(*(asyncio.to_thread(n.start) for n in run.nodes))
    for n in run.nodes:
        run.say(f"{n.node_id} listening on {n.url} (pid {n.pid}), log {n.log_path}")


async def converge(run: RunState, client: Client) -> None:
    """Wait until every node holds a share, so the first fault hits a settled cluster."""
    owned: dict[str, int] = {}
    for _ in range(60):
        with contextlib.suppress(Exception):
            view = (await asyncio.wait_for(client.get_cluster_info(), 5))["cluster"]
            owned = {n["node_id"]: n.get("shards_owned", 0) for n in view.get("nodes", [])}
            if all(owned.get(n.node_id, 0) > 0 for n in run.nodes) and sum(owned.values()) == run.cfg.shard_count:
                run.say(f"cluster converged: {owned}")
                return
        await asyncio.sleep(0.5)
    run.say(f"warning: the cluster did not converge within 30 s: {owned}")


# --- nodes dying on their own ----------------------------------------------------------------


def notice_deaths(run: RunState) -> list[NodeProcess]:
    """Record, once each, the nodes whose process exited without the harness causing it."""
    dead = []
    for node in run.nodes:
        if node.expect_exit or node.proc is None or node.proc.poll() is None:
            continue
        tail = " | ".join(line.strip() for line in node.own_log().splitlines()[-8:])
        entry = f"t={run.now():.1f}s pid {node.proc.pid} exited with code {node.proc.returncode}: {tail}"
        node.unexpected_exits.append(entry)
        node.expect_exit = True  # recorded once
        run.say(f"NODE {node.node_id} DIED ON ITS OWN: {entry}")
        dead.append(node)
    return dead


async def reap_dead(run: RunState, when: str) -> None:
    """Record nodes that died since the last look and kill any helper they left behind."""
    for node in notice_deaths(run):
        await asyncio.to_thread(node.reap_orphans, list(node.tree), when)


async def death_watch(run: RunState) -> None:
    """A node process that exits without the nemesis killing it is a violation; it is
    restarted so the rest of the run still measures the cluster it was meant to."""
    while not run.stopping.is_set():
        for node in run.nodes:
            if not node.lock.locked():
                node.refresh_tree()
        for node in notice_deaths(run):
            spawn_restart(run, node)
        await asyncio.sleep(0.5)


def spawn_restart(run: RunState, node: NodeProcess) -> None:
    members, when = list(node.tree), f"after the exit at t={run.now():.1f}s"

    async def restart() -> None:
        async with node.lock:
            await asyncio.to_thread(node.reap_orphans, members, when)
            if node.alive() or run.stopping.is_set() or not run.cfg.restart_dead_nodes:
                return
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(node.start)
                run.say(f"restarted {node.node_id} after it died (pid {node.pid})")
            except RuntimeError as exc:
                run.say(f"could not restart {node.node_id}: {exc}")

    run.spawn(restart())  # awaited/cancelled with the rest at the end


# --- evidence and teardown -------------------------------------------------------------------


async def ownership_snapshot(run: RunState) -> str:
    """Evidence for a stuck cluster: what each node's /api/cluster/info says it owns, and,
    per shard, the owner the ``shards`` table names against the node whose lease session
    actually holds the shard's advisory lock (two-key form: objid = shard, objsubid = 2)."""
    parts = []
    if run.ops is not None:
        for i, client in enumerate(run.ops.clients):
            try:
                view = (await asyncio.wait_for(client.get_cluster_info(), 5))["cluster"]
                owned = {n["node_id"].removeprefix(f"{run.tag}-"): n.get("shards_owned") for n in view.get("nodes", [])}
                parts.append(f"node {i + 1} sees {owned}")
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                parts.append(f"node {i + 1}: cluster info failed ({type(exc).__name__})")
    try:
        rows = await pg_execute(
            run.dsn,
            "SELECT s.shard_id, s.owner_node, a.application_name AS holder FROM shards s"
            " LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.objid = s.shard_id"
            "  AND l.pid IN (SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1)"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid ORDER BY s.shard_id",
            f"dw-shard-leases:{run.tag}-%",
        )
        odd = []
        for r in rows:
            holder = (r["holder"] or "").removeprefix("dw-shard-leases:") or None
            if holder != r["owner_node"]:
                odd.append(f"{r['shard_id']}: table {r['owner_node'] or '-'}, lock {holder or '-'}")
        parts.append("shards whose owner mark and lock disagree: " + ("; ".join(odd) if odd else "none"))
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        parts.append(f"shard table unreadable ({type(exc).__name__}: {exc})")
    return "; ".join(parts)


async def shut_down(run: RunState) -> None:
    """Stop every node, leave PostgreSQL running and drop the run's own schema; what fails is
    a harness error, never a reason to skip the rest."""
    codes = await asyncio.gather(*(asyncio.to_thread(n.shutdown) for n in run.nodes), return_exceptions=True)
    for n, code in zip(run.nodes, codes, strict=True):
        run.say(f"{n.node_id} shut down (exit code {code})")
    problem = await asyncio.to_thread(ensure_postgres_running, run.db_host, run.db_port)
    if problem:
        run.result.harness_errors.append(problem)
    if run.own_schema:
        try:
            await pg_execute(run.base_dsn, f"DROP SCHEMA IF EXISTS {run.own_schema} CASCADE")
            run.say(f"dropped schema {run.own_schema}")
        except Exception as exc:  # noqa: BLE001 - reported, never masks the run's outcome
            run.result.harness_errors.append(f"could not drop schema {run.own_schema}: {exc}")
