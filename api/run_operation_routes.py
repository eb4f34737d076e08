"""Control-plane routes of the operator commands on runs (extended spec §9): repair, redrive,
archive and the debug snapshot."""

from __future__ import annotations

from typing import Any

from . import schemas, views
from .endpoints import Api, Ctx
from .envelope import Route

OPERATOR = ("operator", "admin")


def register(api: Api) -> None:
    ops = api.node.operations

    @api.endpoint("/api/workflows/<workflow_id>/repair", "POST", Route("control", "repair"), OPERATOR)
    async def repair(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        schemas.parse(schemas.Repair, ctx.body)
        return views.repaired(await ops.repair(ctx.namespace, ctx.args["workflow_id"]))

    @api.endpoint("/api/workflows/<workflow_id>/runs/<run_id>/redrive", "POST", Route("control", "redrive"), OPERATOR)
    async def redrive(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.Redrive, ctx.body)
        return views.redriven(await ops.redrive(ctx.namespace, ctx.args["workflow_id"], ctx.args["run_id"], req.request_id))

    @api.endpoint("/api/workflows/<workflow_id>/archive", "POST", Route("control", "archive"), OPERATOR)
    async def archive(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.Archive, ctx.body)
        return views.archived(await ops.archive(ctx.namespace, ctx.args["workflow_id"], req.reason))

    for suffix, prefix in (("", "/api/workflows/<workflow_id>"), ("_run", "/api/workflows/<workflow_id>/runs/<run_id>")):

        async def debug(ctx: Ctx) -> tuple[int, dict[str, Any]]:
            flag = ctx.query.get("include_last_event_payload", "0")
            if flag not in ("0", "1", "true", "false"):
                raise schemas.invalid({"include_last_event_payload": ["The include_last_event_payload field is 0 or 1."]})
            snapshot = await ops.debug(ctx.namespace, ctx.args["workflow_id"], ctx.args.get("run_id"), flag in ("1", "true"))
            return 200, snapshot

        debug.__name__ = f"debug_workflow{suffix}"
        api.endpoint(f"{prefix}/debug", "GET", Route("control", "debug_workflow"), OPERATOR)(debug)
