"""Operator routes: workers (control-plane §10) and task queues (§8)."""

from __future__ import annotations

from typing import Any

from .app import Api, Ctx
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
