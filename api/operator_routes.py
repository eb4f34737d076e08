"""Operator routes: workers (control-plane §10) and task queues (§8)."""

from __future__ import annotations

from typing import Any

from runtime.build_ids import build_of

from . import schemas
from .endpoints import Api, Ctx
from .envelope import Route

OPERATOR = ("operator", "admin")
ADMIN = ("admin",)
R = Route("control")


def register(api: Api) -> None:
    node = api.node
    views = node.operator

    @api.endpoint("/api/workers", "GET", R, OPERATOR)
    async def list_workers(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await views.list_workers(ctx.namespace, ctx.query.get("task_queue") or None, ctx.query.get("status") or None)

    @api.endpoint("/api/workers/<worker_id>", "GET", R, OPERATOR)
    async def describe_worker(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await views.describe_worker(ctx.namespace, ctx.args["worker_id"])

    @api.endpoint("/api/workers/<worker_id>", "DELETE", R, ADMIN)
    async def delete_worker(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        await views.describe_worker(ctx.namespace, ctx.args["worker_id"])  # 404 in the spec's words
        return 200, await node.workers.deregister(ctx.namespace, ctx.args["worker_id"])

    @api.endpoint("/api/task-queues", "GET", R, OPERATOR)
    async def list_task_queues(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await views.list_task_queues(ctx.namespace)

    @api.endpoint("/api/task-queues/<name>", "GET", R, OPERATOR)
    async def describe_task_queue(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await views.describe_task_queue(ctx.namespace, ctx.args["name"])

    # --- system passes (§9.1-9.2): admin only ---------------------------------------

    @api.endpoint("/api/system/metrics", "GET", R, ADMIN)
    async def system_metrics(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, node.system_metrics.metrics(ctx.namespace)

    @api.endpoint("/api/system/operator-metrics", "GET", R, ADMIN)
    async def operator_metrics(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        schedules = await node.schedules.states(ctx.namespace)
        return 200, node.system_metrics.operator_metrics(ctx.namespace, schedules, await node.sessions.counts(ctx.namespace))

    @api.endpoint("/api/system/repair", "GET", R, ADMIN)
    async def repair_status(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, node.system.repair_status()

    @api.endpoint("/api/system/repair/pass", "POST", R, ADMIN)
    async def repair_pass(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.RepairPass, ctx.body)
        out = await node.system.repair_pass(req.run_ids, req.instance_id)
        return (207 if out["existing_task_failures"] or out["missing_run_failures"] else 200), out

    @api.endpoint("/api/system/activity-timeouts", "GET", R, ADMIN)
    async def activity_timeouts(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        try:
            limit = int(ctx.query.get("limit") or 100)
            if limit < 1:
                raise ValueError
        except ValueError:
            raise schemas.invalid({"limit": ["The limit must be an integer of at least 1."]}) from None
        return 200, node.system.activity_timeout_status(min(limit, 100))

    @api.endpoint("/api/system/activity-timeouts/pass", "POST", R, ADMIN)
    async def activity_timeout_pass(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.ActivityTimeoutPass, ctx.body)
        out = await node.system.activity_timeout_pass(req.execution_ids, min(req.limit or 100, 100))
        return (207 if out["failed"] else 200), out


def register_build_ids(api: Api) -> None:
    """Build-id rollouts of a task queue (extended spec §10.2–§10.3): operator and admin."""
    builds = api.node.builds

    @api.endpoint("/api/task-queues/<name>/build-ids", "GET", R, OPERATOR)
    async def list_build_ids(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await builds.rollout(ctx.namespace, ctx.args["name"])

    for action in ("drain", "resume", "promote"):

        async def mutate(ctx: Ctx, action: str = action) -> tuple[int, dict[str, Any]]:
            req = schemas.parse(schemas.BuildIdAction, ctx.body)
            return 200, await builds.mutate(ctx.namespace, ctx.args["name"], build_of(req.build_id), action)

        mutate.__name__ = f"{action}_build_id"
        api.endpoint(f"/api/task-queues/<name>/build-ids/{action}", "POST", R, OPERATOR)(mutate)
