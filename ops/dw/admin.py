"""``dw schedule …``, ``dw namespace …``, ``dw task-queue …``, ``dw cluster status``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import typer

from . import render
from .http import CliError
from .state import client_of, settings_of

schedules = typer.Typer(help="Create, inspect and steer schedules.", no_args_is_help=True)
namespaces = typer.Typer(help="List, inspect and create namespaces.", no_args_is_help=True)
task_queues = typer.Typer(help="Task queues: pollers, backlog and build-id rollouts.", no_args_is_help=True)
cluster = typer.Typer(help="The cluster's nodes and shards.", no_args_is_help=True)


def _show(ctx: typer.Context, data: Any, keys: list[str] | None = None, rows: str | None = None,
          columns: list[str] | None = None) -> None:
    if settings_of(ctx).output == "json":
        render.as_json(data)
    elif rows is not None:
        render.table(data.get(rows) or [], columns or [])
    else:
        render.fields(data, keys or sorted(data))


def _s(schedule_id: str) -> str:
    return f"/api/schedules/{quote(schedule_id, safe='')}"


@schedules.command("list")
def schedule_list(ctx: typer.Context) -> None:
    """Schedules of the namespace."""
    _show(ctx, client_of(ctx).call("GET", "/api/schedules"), rows="schedules",
          columns=["schedule_id", "workflow_type", "status", "next_fire_at", "last_fired_at"])


@schedules.command("describe")
def schedule_describe(ctx: typer.Context, schedule_id: str) -> None:
    """One schedule: spec, action, state."""
    _show(ctx, client_of(ctx).call("GET", _s(schedule_id)))


@schedules.command("create")
def schedule_create(ctx: typer.Context, schedule_id: str = typer.Option(..., "--id"),
                    workflow_type: str = typer.Option(..., "--type", "-t"),
                    cron: list[str] = typer.Option(None, "--cron", help="a cron expression (repeatable)"),
                    every: list[int] = typer.Option(None, "--every", help="an interval in seconds (repeatable)"),
                    task_queue: str = typer.Option(None, "--task-queue", "-q"),
                    input: str = typer.Option(None, "--input", "-i", help="JSON list of arguments"),
                    overlap: str = typer.Option(None, "--overlap-policy")) -> None:
    """Create a schedule that starts a workflow on a cron spec or an interval."""
    if not cron and not every:
        raise CliError("give --cron or --every", 2)
    action: dict[str, Any] = {"workflow_type": workflow_type}
    if task_queue:
        action["task_queue"] = task_queue
    if input is not None:
        try:
            action["input"] = json.loads(input)
        except ValueError as exc:
            raise CliError(f"--input is not JSON: {exc}", 2) from None
    body: dict[str, Any] = {"schedule_id": schedule_id, "action": action,
                            "spec": {"cron_expressions": list(cron or []), "intervals": [{"every": e} for e in every or []]}}
    if overlap:
        body["overlap_policy"] = overlap
    _show(ctx, client_of(ctx).call("POST", "/api/schedules", body))


@schedules.command("pause")
def schedule_pause(ctx: typer.Context, schedule_id: str, note: str = typer.Option(None, "--note")) -> None:
    _show(ctx, client_of(ctx).call("POST", f"{_s(schedule_id)}/pause", {"note": note} if note else {}))


@schedules.command("resume")
def schedule_resume(ctx: typer.Context, schedule_id: str, note: str = typer.Option(None, "--note")) -> None:
    _show(ctx, client_of(ctx).call("POST", f"{_s(schedule_id)}/resume", {"note": note} if note else {}))


@schedules.command("trigger")
def schedule_trigger(ctx: typer.Context, schedule_id: str) -> None:
    """Start the schedule's workflow now."""
    _show(ctx, client_of(ctx).call("POST", f"{_s(schedule_id)}/trigger", {}))


@schedules.command("backfill")
def schedule_backfill(ctx: typer.Context, schedule_id: str, start: str = typer.Option(..., "--start", help="ISO 8601"),
                      end: str = typer.Option(..., "--end", help="ISO 8601")) -> None:
    """Start the runs the schedule would have started between two times."""
    with render.err.status(f"backfilling {schedule_id} from {start} to {end}"):
        data = client_of(ctx).call("POST", f"{_s(schedule_id)}/backfill", {"start_time": start, "end_time": end}, timeout=600)
    _show(ctx, data)


@schedules.command("delete")
def schedule_delete(ctx: typer.Context, schedule_id: str) -> None:
    _show(ctx, client_of(ctx).call("DELETE", _s(schedule_id)))


@namespaces.command("list")
def namespace_list(ctx: typer.Context) -> None:
    _show(ctx, client_of(ctx).call("GET", "/api/namespaces"), rows="namespaces", columns=["name", "description", "retention_days"])


@namespaces.command("describe")
def namespace_describe(ctx: typer.Context, name: str) -> None:
    _show(ctx, client_of(ctx).call("GET", f"/api/namespaces/{quote(name, safe='')}"))


@namespaces.command("create")
def namespace_create(ctx: typer.Context, name: str, description: str = typer.Option(None, "--description"),
                     retention_days: int = typer.Option(None, "--retention-days")) -> None:
    body: dict[str, Any] = {"name": name}
    if description:
        body["description"] = description
    if retention_days:
        body["retention_days"] = retention_days
    _show(ctx, client_of(ctx).call("POST", "/api/namespaces", body))


@task_queues.command("list")
def task_queue_list(ctx: typer.Context) -> None:
    data = client_of(ctx).call("GET", "/api/task-queues")
    if settings_of(ctx).output == "json":
        render.as_json(data)
        return
    rows = [{"name": q["name"], "backlog": (q.get("stats") or {}).get("approximate_backlog_count"),
             "oldest": (q.get("stats") or {}).get("approximate_backlog_age")} for q in data.get("task_queues") or []]
    render.table(rows, ["name", "backlog", "oldest"])


@task_queues.command("describe")
def task_queue_describe(ctx: typer.Context, name: str) -> None:
    _show(ctx, client_of(ctx).call("GET", f"/api/task-queues/{quote(name, safe='')}"))


@cluster.command("status")
def cluster_status(ctx: typer.Context) -> None:
    """Nodes, their state and shard counts."""
    data = client_of(ctx).call("GET", "/api/cluster/info")
    if settings_of(ctx).output == "json":
        render.as_json(data)
        return
    nodes = (data.get("cluster") or {}).get("nodes") or []
    render.fields(data, ["server_id", "version", "default_namespace"])
    render.table(nodes, ["node_id", "status", "shards_owned", "url", "last_seen_at"])
