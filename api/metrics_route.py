"""``GET /metrics``: the node's Prometheus metrics in the text exposition format.

Role-protected like the control plane (operator or admin) unless ``DW_METRICS_PUBLIC=true``,
for a scraper on a trusted network; answered 404 when ``DW_METRICS_ENABLED=false``. It is not
in the OpenAPI document (its body is not JSON); a refusal is the usual error envelope.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .endpoints import Api, Ctx, Relayed
from .envelope import Route

OPERATOR = ("operator", "admin")


def register(api: Api) -> None:
    registry = api.node.metrics_registry
    if registry is None:
        return
    public = api.cfg.metrics_public

    @api.endpoint("/metrics", "GET", Route("open"), () if public else OPERATOR, version=False, namespace=False, auth=not public,
                  documented=False)
    async def metrics(ctx: Ctx) -> Any:
        return Relayed(200, {"Content-Type": CONTENT_TYPE_LATEST}, generate_latest(registry))
