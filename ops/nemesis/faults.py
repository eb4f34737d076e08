"""Fault execution: the planned faults, one after another, each injected and recorded with
what it did (or why it could not be injected)."""

from __future__ import annotations

import asyncio
import time

from ops.nemesis.operations import NodeDown
from ops.nemesis.plan import PlannedFault
from ops.nemesis.postgres import dsn_host_port, pg_ctl, pg_execute, wait_pg_ready
from ops.nemesis.processes import NodeProcess, database_client_ports
from ops.nemesis.report import FaultRecord
from ops.nemesis.state import RunState


async def nemesis(run: RunState, plan: list[PlannedFault]) -> None:
    """Inject the plan's faults in order, each ``gap`` seconds after the previous one ended;
    ``nemesis_done`` is set when they are over (or the run stops), which ends the load."""
    try:
        for planned in plan:
            await asyncio.sleep(planned.gap)
            if run.stopping.is_set():
                return
            record = await inject(run, planned)
            run.result.faults.append(record)
            run.last_fault_end = record.ended
    finally:
        run.nemesis_done.set()


async def inject(run: RunState, planned: PlannedFault) -> FaultRecord:
    node = run.nodes[planned.node]
    started = run.now()
    kind = planned.kind
    target = None if kind == "pg_restart" else node.node_id
    run.say(f"FAULT {kind} -> {target or 'PostgreSQL'} begins")
    injected = True
    try:
        if kind == "kill":
            detail = await fault_kill(node, planned.downtime)
        elif kind == "stop":
            detail = await fault_stop(node, planned.scope, run.cfg.stop_seconds)
        elif kind == "pg_terminate":
            detail = await fault_pg_terminate(run, node)
        else:
            detail = await fault_pg_restart(run.dsn)
    except NodeDown as exc:
        injected = False
        detail = f"skipped: {exc}"
    except Exception as exc:  # noqa: BLE001 - recorded as a fault the harness failed to inject
        injected = False
        detail = f"could not inject: {type(exc).__name__}: {exc}"
        run.result.harness_errors.append(f"fault {kind} on {target or 'PostgreSQL'} at t={started:.1f}s: {detail}")
    ended = run.now()
    run.say(f"FAULT {kind} -> {target or 'PostgreSQL'} ends after {ended - started:.1f} s: {detail}")
    return FaultRecord(kind, target, started, ended, detail, injected)


def _not_running(node: NodeProcess) -> NodeDown:
    return NodeDown(f"{node.node_id} is not running (it died and was not restarted yet)")


async def fault_kill(node: NodeProcess, downtime: float) -> str:
    async with node.lock:
        was = node.pid
        if was is None:
            raise _not_running(node)
        await asyncio.to_thread(node.kill)
        node.nemesis_kills += 1
        await asyncio.sleep(downtime)
        await asyncio.to_thread(node.start)
        return f"SIGKILLed pid {was}, down {downtime:.1f} s, restarted as pid {node.pid}"


async def fault_stop(node: NodeProcess, scope: str, stop_seconds: float) -> str:
    async with node.lock:
        if node.pid is None:
            raise _not_running(node)
        pids = node.freeze(whole_tree=scope == "tree")
        try:
            await asyncio.sleep(stop_seconds)
        finally:
            node.thaw(pids)
        what = "main process" if scope == "process" else "whole process tree"
        return f"SIGSTOP {what} {pids} for {stop_seconds:.0f} s, then SIGCONT"


async def fault_pg_terminate(run: RunState, node: NodeProcess) -> str:
    """Terminate the node's PostgreSQL backends: its journal pool's, found by the client ports
    of its processes' sockets, and its lease session's, found by application name."""
    async with node.lock:
        pid = node.pid
        if pid is None:
            raise _not_running(node)
        _, db_port = dsn_host_port(run.dsn)
        node.refresh_tree()
        pids = [p for p, _ in node.tree]
        ports = await asyncio.to_thread(database_client_ports, pids, db_port)
        app = f"dw-shard-leases:{node.node_id}"[:63]
        rows = await pg_execute(
            run.base_dsn,
            "SELECT pid, application_name, client_port, pg_terminate_backend(pid) AS done FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database() AND ("
            "  (host(client_addr) IN ('127.0.0.1', '::1') AND client_port = ANY($1::int4[]))"
            "  OR application_name = $2)",
            sorted(ports), app,
        )
        if not rows:
            raise RuntimeError(f"no backend of {node.node_id} found (pids {pids}, client ports {sorted(ports)})")
        leases = sum(r["application_name"] == app for r in rows)
        return (f"terminated {sum(bool(r['done']) for r in rows)}/{len(rows)} backends of pids {pids} "
                f"({leases} lease session, {len(rows) - leases} other; sockets seen {len(ports)})")


async def fault_pg_restart(dsn: str) -> str:
    host, port = dsn_host_port(dsn)
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeError(f"PostgreSQL at {host} is not local; it cannot be restarted")
    began = time.monotonic()
    await asyncio.to_thread(pg_ctl, "restart")
    if not await asyncio.to_thread(wait_pg_ready, host, port, 60):
        raise RuntimeError("PostgreSQL did not accept connections within 60 s of the restart")
    return f"pg_ctlcluster restart, accepting connections again after {time.monotonic() - began:.1f} s"
