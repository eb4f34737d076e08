"""Schedule routes (control-plane §6): thin adapters over ``runtime.schedule_commands``."""

from __future__ import annotations

from typing import Any

from runtime import schedule_commands as ops

from .endpoints import Api, Ctx
from .envelope import Route

OPERATOR = ("operator", "admin")
R = Route("control")


def register(api: Api) -> None:
    svc = api.node.schedules

    @api.endpoint("/api/schedules", "GET", R, OPERATOR)
    async def list_schedules(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.list_(svc, ctx.namespace, ctx.query)

    @api.endpoint("/api/schedules", "POST", R, OPERATOR)
    async def create_schedule(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return await ops.create(svc, ctx.namespace, ctx.body)

    @api.endpoint("/api/schedules/<schedule_id>", "GET", R, OPERATOR)
    async def describe_schedule(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.describe(svc, ctx.namespace, ctx.args["schedule_id"])

    @api.endpoint("/api/schedules/<schedule_id>", "PUT", R, OPERATOR)
    async def update_schedule(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.update(svc, ctx.namespace, ctx.args["schedule_id"], ctx.body)

    @api.endpoint("/api/schedules/<schedule_id>", "DELETE", R, OPERATOR)
    async def delete_schedule(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.delete(svc, ctx.namespace, ctx.args["schedule_id"])

    @api.endpoint("/api/schedules/<schedule_id>/pause", "POST", R, OPERATOR)
    async def pause_schedule(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.pause(svc, ctx.namespace, ctx.args["schedule_id"], ctx.body, True)

    @api.endpoint("/api/schedules/<schedule_id>/resume", "POST", R, OPERATOR)
    async def resume_schedule(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.pause(svc, ctx.namespace, ctx.args["schedule_id"], ctx.body, False)

    @api.endpoint("/api/schedules/<schedule_id>/trigger", "POST", R, OPERATOR)
    async def trigger_schedule(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.trigger(svc, ctx.namespace, ctx.args["schedule_id"], ctx.body)

    @api.endpoint("/api/schedules/<schedule_id>/backfill", "POST", R, OPERATOR)
    async def backfill_schedule(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.backfill(svc, ctx.namespace, ctx.args["schedule_id"], ctx.body)

    @api.endpoint("/api/schedules/<schedule_id>/history", "GET", R, OPERATOR)
    async def schedule_history(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await ops.history(svc, ctx.namespace, ctx.args["schedule_id"], ctx.query)
