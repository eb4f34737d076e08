"""The Quart-Trio application: every route module registered on one ``Api`` (api.endpoints).

The pipeline itself (body gate, authentication, versions, namespace, envelopes) is in
api.endpoints; this module only assembles the routes, in a fixed order (it is the order
of the OpenAPI document).
"""

from __future__ import annotations

from typing import Any

from quart_trio import QuartTrio

from runtime.node import Node

from . import (
    activity_routes,
    control_routes,
    internal_routes,
    metrics_route,
    openapi,
    operator_routes,
    payload_routes,
    run_operation_routes,
    schedule_routes,
    stream_routes,
    ui_routes,
    worker_routes,
)
from .endpoints import Api, Ctx
from .envelope import Route
from .fast_path import FastPath


def create_app(node: Node) -> QuartTrio:
    api = Api(node)
    control_routes.register(api)
    stream_routes.register(api)
    activity_routes.register(api)
    run_operation_routes.register(api)
    payload_routes.register(api)
    operator_routes.register_build_ids(api)
    schedule_routes.register(api)
    operator_routes.register(api)
    worker_routes.register(api)
    internal_routes.register(api)
    metrics_route.register(api)
    ui_routes.register(api)
    api.guard.app = FastPath(api, api.guard.app)  # hot routes skip Quart's per-request machinery (api.fast_path)

    @api.endpoint("/api/openapi.json", "GET", Route("open"), (), auth=False, version=False, namespace=False)
    async def openapi_document(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        """The OpenAPI 3.1 description of this server, generated from its routes and schemas."""
        return 200, openapi.build(api.registry, version=api.cfg.app_version)

    return api.app
