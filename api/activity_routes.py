"""Control-plane routes of standalone activities (extended spec §8): start, describe (with an
optional result long-poll) and list."""

from __future__ import annotations

from typing import Any

from actors.commands import check_schedule_activity
from actors.errors import CommandError
from runtime import page_tokens
from runtime.errors import ProtocolError

from . import openapi, schemas
from .endpoints import Api, Ctx
from .envelope import Route

OPERATOR = ("operator", "admin")
C = Route("control")
TIMEOUTS = ("start_to_close_timeout", "schedule_to_start_timeout", "schedule_to_close_timeout", "heartbeat_timeout")
PATH = "activity"  # the prefix a command check names its fields with; mapped back to the body's names


def _body_field(field: str) -> str:
    name = field.removeprefix(f"{PATH}.")
    return f"{name}_seconds" if name in TIMEOUTS else {"queue": "task_queue", "arguments": "input"}.get(name, name)


def activity_spec(body: Any) -> dict[str, Any]:
    """The start body checked and normalized: the activity's type, class, queue, arguments and
    policy, exactly as a ``schedule_activity`` command of a workflow would carry them."""
    req = schemas.parse(schemas.StartActivity, body)
    arguments = schemas.encode_input(req.input) if req.input is not None else None
    cmd = {"activity_type": req.activity_type, "queue": req.task_queue, "arguments": arguments,
           "retry_policy": req.retry_policy, **{k: getattr(req, f"{k}_seconds") for k in TIMEOUTS}}
    try:
        checked = check_schedule_activity(cmd, PATH)
    except CommandError as exc:
        errors = {_body_field(k): v for k, v in exc.errors.items()}
        raise ProtocolError(exc.status, exc.reason, exc.message, errors=errors, validation_errors=errors) from None
    return {
        "activity_id": req.activity_id, "activity_type": req.activity_type, "activity_class": req.activity_class or req.activity_type,
        "queue": req.task_queue, "arguments": arguments, "policy": checked["policy"], "business_key": req.business_key,
    }


def register(api: Api) -> None:
    jobs = api.node.activities

    @api.endpoint("/api/activities", "POST", C, OPERATOR)
    async def start_activity(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 201, await jobs.start(ctx.namespace, activity_spec(ctx.body))

    @api.endpoint("/api/activities/<activity_id>", "GET", C, OPERATOR)
    async def describe_activity(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        errors: dict[str, list[str]] = {}
        wait = schemas.int_arg(ctx.query, "wait_seconds", 0, 0, 30, errors)
        after = ctx.query.get("activity_status")
        if after is not None and after not in ("pending", "running"):
            errors["activity_status"] = ["The activity_status field names the status to wait past: pending or running."]
        if errors:
            raise schemas.invalid(errors)
        return 200, await jobs.describe(ctx.namespace, ctx.args["activity_id"], float(wait), after)

    openapi.query_params(describe_activity, wait_seconds=(0, 30))

    @api.endpoint("/api/activities", "GET", C, OPERATOR)
    async def list_activities(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        errors: dict[str, list[str]] = {}
        size = page_tokens.page_size(ctx.query, errors)
        status = ctx.query.get("status") or None
        if status is not None and status not in ("running", "completed", "failed"):
            errors["status"] = ["The status field must be one of running, completed, failed."]
        if errors:
            raise schemas.invalid(errors)
        return 200, await jobs.list(ctx.namespace, status, size, ctx.query.get("next_page_token"))

    openapi.query_params(list_activities, page_size=(1, 200))

