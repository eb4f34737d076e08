"""The runtime payload transport (extended spec §13.4): ``POST /api/external-payloads/v1`` stores
a payload's bytes through the namespace's driver and answers its content-addressed reference;
``GET /api/external-payloads/v1/{referenceId}`` hands the exact bytes back. Neither plane's
envelope: worker, operator and admin credentials are accepted, with either plane's version
header, and the namespace is the request's."""

from __future__ import annotations

import re
from typing import Any

from runtime.errors import ProtocolError
from runtime.payload_storage import UPLOAD_PATH

from . import openapi
from .endpoints import Api, Ctx, Relayed
from .envelope import Route
from .manifest import CONTROL_PLANE_HEADER, WORKER_PROTOCOL_HEADER

ANY_ROLE = ("worker", "operator", "admin")
OPEN = Route("open")
_REFERENCE = re.compile(r"^ep_[0-9A-HJKMNP-TV-Z]{26}$")
CODEC, SIZE, SHA = "X-Durable-Workflow-Payload-Codec", "X-Durable-Workflow-Payload-Size", "X-Durable-Workflow-Payload-SHA256"


def _plane_header(ctx: Ctx) -> None:
    headers = ctx.request.headers if ctx.request is not None else {}
    if not (headers.get(WORKER_PROTOCOL_HEADER) or headers.get(CONTROL_PLANE_HEADER)):
        raise ProtocolError(400, "missing_protocol_version",
                            f"Send {WORKER_PROTOCOL_HEADER} (workers) or {CONTROL_PLANE_HEADER} (clients) with payload requests.")


def register(api: Api) -> None:
    transport = api.node.transport

    @api.endpoint(UPLOAD_PATH, "POST", OPEN, ANY_ROLE, version=False)
    async def upload_payload(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        _plane_header(ctx)
        assert ctx.request is not None
        headers = ctx.request.headers
        data = ctx.body if isinstance(ctx.body, bytes) else b""
        return 201, await transport.upload(ctx.namespace, data, headers.get(CODEC), headers.get(SIZE), headers.get(SHA))

    openapi.raw_body(upload_payload)

    @api.endpoint(UPLOAD_PATH + "/<reference_id>", "GET", OPEN, ANY_ROLE, version=False)
    async def fetch_payload(ctx: Ctx) -> tuple[int, dict[str, Any]] | Relayed:
        _plane_header(ctx)
        ref = ctx.args["reference_id"]
        if not _REFERENCE.match(ref):
            raise ProtocolError(404, "external_payload_not_found", f"[{ref}] is not a payload reference id.", reference_id=ref)
        data, digest = await transport.fetch(ctx.namespace, ref)
        return Relayed(200, {"Content-Type": "application/octet-stream", CODEC: "avro", SIZE: str(len(data)), SHA: digest}, data)
