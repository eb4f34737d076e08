"""``dw workflow …``: start, list, describe, history (--follow), signal, query, update, cancel,
terminate, result, export (the operator's commands on runs are in ``operator``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from persistence.vocabulary import encode_offset

from . import render
from .http import EXIT_REFUSED, ApiClient, CliError
from .state import client_of, settings_of

app = typer.Typer(help="Start, inspect and steer workflows.", no_args_is_help=True)
TERMINAL = {"completed", "failed", "cancelled", "terminated", "timed_out", "continued"}


def _json_arg(raw: str | None, what: str) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise CliError(f"{what} is not JSON: {exc}", 2) from None


def _args(raw: str | None) -> list[Any]:
    value = _json_arg(raw, "--input")
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _wf(workflow_id: str) -> str:
    return f"/api/workflows/{quote(workflow_id, safe='')}"


def _run_base(workflow_id: str, run_id: str | None) -> str:
    """The instance's path, or one run's when ``run_id`` is given."""
    return f"{_wf(workflow_id)}/runs/{quote(run_id, safe='')}" if run_id else _wf(workflow_id)


def _run_path(api: ApiClient, workflow_id: str, run_id: str | None) -> tuple[str, str]:
    if run_id is None:
        run_id = api.call("GET", _wf(workflow_id))["run_id"]
    return f"{_wf(workflow_id)}/runs/{quote(run_id, safe='')}", run_id


@app.command()
def start(ctx: typer.Context, workflow_type: str = typer.Option(..., "--type", "-t", help="the workflow type"),
          workflow_id: str = typer.Option(None, "--id", help="the workflow id (default: the server picks one)"),
          task_queue: str = typer.Option(None, "--task-queue", "-q"),
          input: str = typer.Option(None, "--input", "-i", help="JSON: a list of arguments, or one argument"),
          memo: str = typer.Option(None, "--memo", help="JSON object"),
          execution_timeout: int = typer.Option(None, "--execution-timeout", help="seconds"),
          run_timeout: int = typer.Option(None, "--run-timeout", help="seconds")) -> None:
    """Start a workflow run."""
    body: dict[str, Any] = {"workflow_type": workflow_type, "input": _args(input)}
    for key, value in (("workflow_id", workflow_id), ("task_queue", task_queue), ("memo", _json_arg(memo, "--memo")),
                       ("execution_timeout_seconds", execution_timeout), ("run_timeout_seconds", run_timeout)):
        if value is not None:
            body[key] = value
    data = client_of(ctx).call("POST", "/api/workflows", body)
    if settings_of(ctx).output == "json":
        render.as_json(data)
    else:
        render.fields(data, ["workflow_id", "run_id", "workflow_type", "outcome", "status"], title="started")


@app.command("list")
def list_(ctx: typer.Context, query: str = typer.Option(None, "--query", help="the filter language, e.g. status=running"),
          status: str = typer.Option(None, "--status"), workflow_type: str = typer.Option(None, "--type"),
          page_size: int = typer.Option(50, "--page-size"), all_pages: bool = typer.Option(False, "--all", help="every page")) -> None:
    """List workflow runs, newest first."""
    runs, token = client_of(ctx).pages("/api/workflows", {"query": query, "status": status, "workflow_type": workflow_type,
                                                          "page_size": page_size}, "workflows", "runs", all_pages=all_pages)
    if settings_of(ctx).output == "json":
        render.as_json({"workflows": runs, "next_page_token": token})
    else:
        render.table(runs, ["workflow_id", "run_id", "workflow_type", "status", "task_queue", "started_at", "closed_at"])
        if token:
            render.err.print(f"[dim]more: --all, or next_page_token {token}[/dim]")


@app.command()
def describe(ctx: typer.Context, workflow_id: str, run_id: str = typer.Option(None, "--run")) -> None:
    """Status, input and output of a workflow's current (or given) run."""
    api = client_of(ctx)
    data = api.call("GET", _run_base(workflow_id, run_id))
    if settings_of(ctx).output == "json":
        render.as_json(data)
    else:
        render.fields(data, ["workflow_id", "run_id", "workflow_type", "status", "closed_reason", "task_queue", "run_number",
                             "started_at", "closed_at", "wait_kind", "input", "output", "memo", "search_attributes"])


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    payload = event.get("payload") or {}
    detail = {k: render.payload(v) for k, v in payload.items()
              if k in ("activity_type", "signal_name", "update_name", "timer_id", "delay_seconds", "child_workflow_type",
                       "result", "output", "message", "reason", "stream_name")}
    return {"seq": event.get("sequence"), "time": event.get("timestamp") or event.get("recorded_at"),
            "event": event.get("event_type"), "detail": detail or None}


@app.command()
def history(ctx: typer.Context, workflow_id: str, run_id: str = typer.Option(None, "--run"),
            follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new events until the run closes")) -> None:
    """The run's history events; --follow waits for new ones (long polls, no busy loop)."""
    api = client_of(ctx)
    path, run_id = _run_path(api, workflow_id, run_id)
    as_json = settings_of(ctx).output == "json"
    events: list[dict[str, Any]] = []
    caught_up = False
    while True:
        data = api.call("GET", f"{path}/history", params={
            "page_size": 1000, "next_page_token": encode_offset(len(events)) if events else None,
            "wait_new_event": "1" if caught_up else None})
        page = data.get("events") or []
        events.extend(page)
        if follow and not as_json:
            for event in page:
                row = _event_row(event)
                render.out.print(f"{row['seq']:>5}  {row['time'] or '':<27}  {row['event']:<34} {render.cell(row['detail'])}")
        if data.get("next_page_token"):
            continue  # more pages are there already
        if not follow or (events and events[-1].get("event_type") in CLOSING):
            break
        if not page and caught_up and api.call("GET", path).get("status") in TERMINAL:
            break
        caught_up = True
    if as_json:
        render.as_json({"workflow_id": workflow_id, "run_id": run_id, "events": events})
    elif not follow:
        render.table([_event_row(e) for e in events], ["seq", "time", "event", "detail"])


CLOSING = {"WorkflowCompleted", "WorkflowFailed", "WorkflowTimedOut", "WorkflowCancelled", "WorkflowTerminated",
           "WorkflowContinuedAsNew"}


def _command(ctx: typer.Context, workflow_id: str, verb: str, body: dict[str, Any], run_id: str | None = None) -> Any:
    return client_of(ctx).call("POST", f"{_run_base(workflow_id, run_id)}/{verb}", body)


def _show(ctx: typer.Context, data: Any, keys: list[str]) -> None:
    if settings_of(ctx).output == "json":
        render.as_json(data)
    else:
        render.fields(data, keys)


@app.command()
def signal(ctx: typer.Context, workflow_id: str, name: str, input: str = typer.Option(None, "--input", "-i"),
           run_id: str = typer.Option(None, "--run")) -> None:
    """Send a signal."""
    data = _command(ctx, workflow_id, f"signal/{quote(name, safe='')}", {"input": _args(input)}, run_id)
    _show(ctx, data, ["workflow_id", "run_id", "signal_name", "outcome", "command_status"])


@app.command()
def query(ctx: typer.Context, workflow_id: str, name: str, input: str = typer.Option(None, "--input", "-i"),
          run_id: str = typer.Option(None, "--run")) -> None:
    """Ask a query and print its result."""
    data = _command(ctx, workflow_id, f"query/{quote(name, safe='')}", {"input": _args(input)}, run_id)
    if settings_of(ctx).output == "json":
        render.as_json(data)
    else:
        render.out.print_json(json.dumps(render.payload(data.get("result")), default=str))


@app.command()
def update(ctx: typer.Context, workflow_id: str, name: str, input: str = typer.Option(None, "--input", "-i"),
           wait: str = typer.Option("completed", "--wait", help="accepted or completed"),
           run_id: str = typer.Option(None, "--run")) -> None:
    """Send an update and, by default, wait for its result."""
    data = _command(ctx, workflow_id, f"update/{quote(name, safe='')}", {"input": _args(input), "wait_for": wait}, run_id)
    _show(ctx, {**data, "result": render.payload(data.get("result"))} if settings_of(ctx).output != "json" else data,
          ["workflow_id", "update_id", "update_status", "outcome", "result", "message"])


@app.command()
def cancel(ctx: typer.Context, workflow_id: str, reason: str = typer.Option(None, "--reason"),
           run_id: str = typer.Option(None, "--run")) -> None:
    """Cancel the run (at once; see request-cancellation for the cooperative kind)."""
    _show(ctx, _command(ctx, workflow_id, "cancel", {"reason": reason} if reason else {}, run_id),
          ["workflow_id", "run_id", "outcome", "command_status"])


@app.command()
def terminate(ctx: typer.Context, workflow_id: str, reason: str = typer.Option(None, "--reason"),
              run_id: str = typer.Option(None, "--run")) -> None:
    """Terminate the run."""
    _show(ctx, _command(ctx, workflow_id, "terminate", {"reason": reason} if reason else {}, run_id),
          ["workflow_id", "run_id", "outcome", "command_status"])


@app.command()
def result(ctx: typer.Context, workflow_id: str, timeout: float = typer.Option(60.0, "--timeout", help="seconds")) -> None:
    """Wait for the run to close and print its output; exit 1 if it did not complete."""
    api = client_of(ctx)
    path, _ = _run_path(api, workflow_id, None)
    deadline = time.monotonic() + timeout
    seen = 0
    with render.err.status(f"waiting for {workflow_id}"):
        while True:
            data = api.call("GET", _wf(workflow_id))
            if data.get("status") in TERMINAL or time.monotonic() >= deadline:
                break
            page = api.call("GET", f"{path}/history", params={  # parks until the run's next event (no busy loop)
                "page_size": 1000, "next_page_token": encode_offset(seen) if seen else None, "wait_new_event": "1" if seen else None,
            }, timeout=max(deadline - time.monotonic(), 1.0) + 35)
            seen += len(page.get("events") or [])
    if data.get("status") not in TERMINAL:
        raise CliError(f"{workflow_id} is still {data.get('status')} after {timeout:g}s", EXIT_REFUSED, data)
    if settings_of(ctx).output == "json":
        render.as_json(data)
    else:
        render.out.print_json(json.dumps(data.get("output"), default=str))
    if data.get("status") != "completed":
        raise CliError(f"{workflow_id} ended {data.get('status')}", EXIT_REFUSED, data)


@app.command()
def export(ctx: typer.Context, workflow_id: str, out: Path = typer.Option(..., "--out", "-o"),
           run_id: str = typer.Option(None, "--run")) -> None:
    """Write the run's history export bundle to a file."""
    api = client_of(ctx)
    path, _ = _run_path(api, workflow_id, run_id)
    with render.err.status(f"exporting {workflow_id}"):
        data = api.call("GET", f"{path}/history/export", timeout=300)
    out.write_text(json.dumps(data, indent=2))
    render.err.print(f"wrote {len(data.get('events') or data.get('history', {}).get('events') or [])} events to {out}")
