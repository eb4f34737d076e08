"""Control-plane routes of workflow streams (extended spec §7.2): the output streams of a run,
listed, described, paged or tailed, appended to and closed by clients."""

from __future__ import annotations

from typing import Any

from actors import messages as m
from actors import workflow_streams as ws
from runtime.errors import validation

from . import openapi, schemas
from .endpoints import Api, Ctx
from .envelope import Route

OPERATOR = ("operator", "admin")
PREFIX = "/api/workflows/<workflow_id>/runs/<run_id>/streams"
C = Route("control")


def _stream_name(ctx: Ctx) -> str:
    name = ctx.args["stream"]
    problem = ws.name_problem(name)
    if problem:
        raise validation("stream_name", problem)
    return name


def _head(view: m.StreamsView) -> dict[str, Any]:
    return {"workflow_id": view.workflow_id, "workflow_run_id": view.run_id}


def register(api: Api) -> None:
    streams = api.node.streams

    @api.endpoint(PREFIX, "GET", C, OPERATOR)
    async def list_workflow_streams(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        view = await streams.read(ctx.namespace, ctx.args["workflow_id"], ctx.args["run_id"])
        return 200, {**_head(view), "streams": view.streams}

    @api.endpoint(f"{PREFIX}/<stream>", "GET", C, OPERATOR)
    async def describe_workflow_stream(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        view = await streams.read(ctx.namespace, ctx.args["workflow_id"], ctx.args["run_id"], _stream_name(ctx))
        return 200, {**_head(view), "stream": view.streams[0]}

    @api.endpoint(f"{PREFIX}/<stream>/items", "GET", C, OPERATOR)
    async def read_workflow_stream(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        name = _stream_name(ctx)
        errors: dict[str, list[str]] = {}
        start = schemas.int_arg(ctx.query, "from", 0, 0, 2**53, errors)
        limit = schemas.int_arg(ctx.query, "max_items", 100, 1, 500, errors)
        wait = schemas.int_arg(ctx.query, "wait_seconds", 0, 0, 60, errors)
        if errors:
            raise schemas.invalid(errors)
        view = await streams.items(ctx.namespace, ctx.args["workflow_id"], ctx.args["run_id"], name, start, limit, wait)
        return 200, {**_head(view), "stream": view.streams[0], "items": view.items, "next_offset": view.next_offset,
                     "terminal": view.terminal}

    openapi.query_params(read_workflow_stream, **{"from": (0, 2**53), "max_items": (1, 500), "wait_seconds": (0, 60)})

    @api.endpoint(f"{PREFIX}/<stream>/items", "POST", C, OPERATOR)
    async def append_workflow_stream(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        name = _stream_name(ctx)
        req = schemas.parse(schemas.AppendStreamItems, ctx.body)
        items = ws.check_items(ctx.body["items"], "items")
        answer = await streams.append(ctx.namespace, ctx.args["workflow_id"], ctx.args["run_id"], name, items,
                                      req.max_pending_items)
        return 200, {"workflow_id": ctx.args["workflow_id"], "workflow_run_id": ctx.args["run_id"], "stream": answer["stream"],
                     "accepted_offsets": answer["offsets"], "accepted": len(answer["offsets"]), "deduped": answer["deduped"]}

    @api.endpoint(f"{PREFIX}/<stream>/close", "POST", C, OPERATOR)
    async def close_workflow_stream(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        name = _stream_name(ctx)
        req = schemas.parse(schemas.CloseStream, ctx.body)
        answer = await streams.close(ctx.namespace, ctx.args["workflow_id"], ctx.args["run_id"], name, req.error_reason,
                                     req.retention_seconds)
        return 200, {"workflow_id": ctx.args["workflow_id"], "workflow_run_id": ctx.args["run_id"], "stream": answer["stream"]}
