"""The operator's commands beyond start and signal: ``dw workflow request-cancellation|repair|
redrive|archive|debug``, ``dw activity start|describe|list|result`` (standalone activities) and
``dw task-queue build-ids|drain-build|resume-build|promote-build``.

Each is one public route (extended spec §5, §8–§10); the server decides and explains, so the
command only shapes the body and renders the answer.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any
from urllib.parse import quote

import typer

from . import render
from .http import EXIT_REFUSED, CliError
from .state import client_of, settings_of
from .workflows import _args, _json_arg, _run_base, _show, _wf
from .workflows import app as workflows

activities = typer.Typer(help="Standalone activities: start, inspect, wait for results.", no_args_is_help=True)
RUN_KEYS = ["workflow_id", "run_id", "outcome", "reason", "message"]
ACTIVITY_KEYS = ["activity_id", "activity_type", "task_queue", "status", "activity_status", "attempt_count",
                 "started_at", "closed_at", "result", "failure"]


@workflows.command("request-cancellation")
def request_cancellation(ctx: typer.Context, workflow_id: str, reason: str = typer.Option(None, "--reason"),
                         cleanup_timeout: int = typer.Option(None, "--cleanup-timeout", help="seconds the workflow gets to clean up"),
                         request_id: str = typer.Option(None, "--request-id", help="idempotency key: a repeat is the same request"),
                         run_id: str = typer.Option(None, "--run")) -> None:
    """Ask the workflow to stop cooperatively: its code sees the request and decides how it ends."""
    body = {k: v for k, v in (("reason", reason), ("cleanup_timeout_seconds", cleanup_timeout), ("request_id", request_id))
            if v is not None}
    data = client_of(ctx).call("POST", f"{_run_base(workflow_id, run_id)}/request-cancellation", body)
    _show(ctx, data, ["workflow_id", "run_id", "outcome", "duplicate", "cancellation_request"])


@workflows.command()
def repair(ctx: typer.Context, workflow_id: str) -> None:
    """Re-offer whatever the open run is missing (an untaken task, an expired lease)."""
    _show(ctx, client_of(ctx).call("POST", f"{_wf(workflow_id)}/repair", {}), RUN_KEYS)


@workflows.command()
def redrive(ctx: typer.Context, workflow_id: str, run_id: str = typer.Option(None, "--run", help="default: the current run"),
            request_id: str = typer.Option(None, "--request-id", help="idempotency key: a repeat gets the same receipt")) -> None:
    """Start a failed run again from its failed step; completed steps are not run again."""
    api = client_of(ctx)
    run_id = run_id or api.call("GET", _wf(workflow_id))["run_id"]
    data = api.call("POST", f"{_run_base(workflow_id, run_id)}/redrive", {"request_id": request_id} if request_id else {})
    _show(ctx, data, [*RUN_KEYS, "redriven_from_run_id", "duplicate"])


@workflows.command()
def archive(ctx: typer.Context, workflow_id: str, reason: str = typer.Option(None, "--reason")) -> None:
    """Mark a closed run archived (an open run is refused)."""
    _show(ctx, client_of(ctx).call("POST", f"{_wf(workflow_id)}/archive", {"reason": reason} if reason else {}), RUN_KEYS)


@workflows.command()
def debug(ctx: typer.Context, workflow_id: str, run_id: str = typer.Option(None, "--run"),
          last_payload: bool = typer.Option(False, "--last-event-payload", help="include the last event's payload")) -> None:
    """The run's snapshot for an operator: pending tasks, leases and findings."""
    data = client_of(ctx).call("GET", f"{_run_base(workflow_id, run_id)}/debug",
                               params={"include_last_event_payload": "1" if last_payload else None})
    if settings_of(ctx).output == "json":
        render.as_json(data)
        return
    render.fields(data, ["workflow_id", "run_id", "status", "diagnostic_status"])
    render.table(data.get("findings") or [], ["severity", "code", "message"], title="findings")


def _activity(activity_id: str) -> str:
    return f"/api/activities/{quote(activity_id, safe='')}"


@activities.command("start")
def activity_start(ctx: typer.Context, activity_type: str = typer.Option(..., "--type", "-t"),
                   task_queue: str = typer.Option(..., "--task-queue", "-q"),
                   activity_id: str = typer.Option(None, "--id", help="default: the server picks one; a running id is refused"),
                   input: str = typer.Option(None, "--input", "-i", help="JSON: a list of arguments, or one argument"),
                   retry_policy: str = typer.Option(None, "--retry-policy", help="JSON object, e.g. {\"max_attempts\": 3}"),
                   start_to_close: int = typer.Option(None, "--start-to-close-timeout", help="seconds"),
                   schedule_to_close: int = typer.Option(None, "--schedule-to-close-timeout", help="seconds"),
                   heartbeat: int = typer.Option(None, "--heartbeat-timeout", help="seconds")) -> None:
    """Start an activity that belongs to no workflow."""
    body: dict[str, Any] = {"activity_type": activity_type, "task_queue": task_queue, "input": _args(input)}
    for key, value in (("activity_id", activity_id), ("retry_policy", _json_arg(retry_policy, "--retry-policy")),
                       ("start_to_close_timeout_seconds", start_to_close),
                       ("schedule_to_close_timeout_seconds", schedule_to_close), ("heartbeat_timeout_seconds", heartbeat)):
        if value is not None:
            body[key] = value
    _show(ctx, client_of(ctx).call("POST", "/api/activities", body), ACTIVITY_KEYS)


@activities.command("describe")
def activity_describe(ctx: typer.Context, activity_id: str) -> None:
    _show(ctx, client_of(ctx).call("GET", _activity(activity_id)), ACTIVITY_KEYS)


@activities.command("list")
def activity_list(ctx: typer.Context, status: str = typer.Option(None, "--status", help="running, completed or failed"),
                  page_size: int = typer.Option(50, "--page-size"), all_pages: bool = typer.Option(False, "--all")) -> None:
    items, token = client_of(ctx).pages("/api/activities", {"status": status, "page_size": page_size}, "activities",
                                        all_pages=all_pages)
    if settings_of(ctx).output == "json":
        render.as_json({"activities": items, "next_page_token": token})
    else:
        render.table(items, ["activity_id", "activity_type", "task_queue", "status", "attempt_count", "started_at"])


@activities.command("result")
def activity_result(ctx: typer.Context, activity_id: str, timeout: float = typer.Option(60.0, "--timeout", help="seconds")) -> None:
    """Wait for the activity's outcome (the server holds each request up to 30 s) and print it;
    exit 1 if it failed or is still running at the timeout."""
    api = client_of(ctx)
    deadline = time.monotonic() + timeout
    with render.err.status(f"waiting for {activity_id}"):
        while True:
            wait = max(1, min(30, math.ceil(deadline - time.monotonic())))
            data = api.call("GET", _activity(activity_id), params={"wait_seconds": wait}, timeout=wait + 35)
            if data.get("status") != "running" or time.monotonic() >= deadline:
                break
    if settings_of(ctx).output == "json":
        render.as_json(data)
    elif data.get("status") == "completed":
        render.out.print_json(json.dumps(render.payload(data.get("result")), default=str))
    if data.get("status") == "running":
        raise CliError(f"{activity_id} is still running after {timeout:g}s", EXIT_REFUSED, data)
    if data.get("status") != "completed":
        raise CliError(f"{activity_id} ended {data.get('status')}: {render.cell(data.get('failure'))}", EXIT_REFUSED, data)


def register_build_ids(task_queues: typer.Typer) -> None:
    """Build-id rollouts on ``dw task-queue``: list the cohorts, drain, resume, promote."""

    @task_queues.command("build-ids")
    def build_ids(ctx: typer.Context, name: str) -> None:
        """The queue's build-id cohorts with their workers and state."""
        data = client_of(ctx).call("GET", f"/api/task-queues/{quote(name, safe='')}/build-ids")
        if settings_of(ctx).output == "json":
            render.as_json(data)
        else:
            render.table(data.get("build_ids") or [], ["build_id", "rollout_status", "drain_intent", "new_start_selected", "active_worker_count", "draining_worker_count"])

    for action, help_text in (("drain", "Stop new work going to a build's workers."), ("resume", "Undo a drain."),
                              ("promote", "Make a build the default for new runs.")):
        task_queues.command(f"{action}-build", help=help_text)(_build_action(action))


def _build_action(action: str) -> Any:
    def mutate(ctx: typer.Context, name: str,
               build_id: str = typer.Argument(None, help="omit for the unversioned cohort")) -> None:
        data = client_of(ctx).call("POST", f"/api/task-queues/{quote(name, safe='')}/build-ids/{action}", {"build_id": build_id})
        _show(ctx, data, sorted(data))

    return mutate
