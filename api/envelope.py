"""Rendering responses in the protocol's two envelopes (control plane, worker plane)."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from typing import Any

from .manifest import (
    CONTROL_PLANE_HEADER,
    CONTROL_PLANE_VERSION,
    OPERATIONS,
    PROJECTED_FIELDS,
    RESPONSE_CONTRACT,
    WORKER_PROTOCOL_HEADER,
    WORKER_PROTOCOL_VERSION,
)


@dataclass(frozen=True)
class Route:
    """What the envelope needs to know about the matched route."""

    plane: str  # control | worker | open (health, ready)
    operation: str | None = None  # control-plane workflow operation for the control_plane block
    name_field: str | None = None
    bare_success: bool = False  # cluster/info success carries no version header


def control_plane_block(op: str, body: dict[str, Any], path_args: dict[str, str]) -> dict[str, Any]:
    for key in ("workflow_id", "run_id"):
        if key in path_args and key not in body:
            body[key] = path_args[key]
    spec = OPERATIONS[op]
    block: dict[str, Any] = {
        "schema": "durable-workflow.v2.control-plane-response",
        "version": 1,
        "operation": op,
        "workflow_id": body.get("workflow_id"),
        "contract": {**RESPONSE_CONTRACT, "required_fields": spec["required_fields"], "success_fields": spec["success_fields"]},
    }
    name_field = spec["operation_name_field"]
    name = path_args.get("name")
    if name_field and name:
        block["operation_name"] = name
        block["operation_name_field"] = name_field
    for key in PROJECTED_FIELDS:
        if key in body:
            block[key] = body[key]
    return block


_ENCODED: dict[int, tuple[dict[str, Any], str]] = {}


def _capabilities_json(capabilities: dict[str, Any]) -> str:
    """The capability block is the same for every answer of a server: encoded once."""
    cached = _ENCODED.get(id(capabilities))
    if cached is None or cached[0] is not capabilities:
        cached = (capabilities, json.dumps(capabilities, separators=(",", ":"), ensure_ascii=False))
        _ENCODED[id(capabilities)] = cached
    return cached[1]


def _choose_encoding(accept: str | None) -> str | None:
    if not accept:
        return None
    q: dict[str, float] = {}
    for part in accept.split(","):
        bits = [b.strip() for b in part.split(";")]
        name = bits[0].lower()
        weight = 1.0
        for b in bits[1:]:
            if b.lower().startswith("q="):
                try:
                    weight = min(max(float(b[2:]), 0.0), 1.0)
                except ValueError:
                    weight = 0.0
        q[name] = weight
    star = q.get("*", 0.0)
    g, d = q.get("gzip", star), q.get("deflate", star)
    if g > 0 and g >= d:
        return "gzip"
    if d > 0:
        return "deflate"
    return None


def render(
    route: Route,
    status: int,
    body: dict[str, Any],
    path_args: dict[str, str],
    *,
    capabilities: dict[str, Any],
    accept_encoding: str | None,
    compression: bool,
) -> tuple[bytes, dict[str, str]]:
    """The body's bytes and the headers of the answer (Content-Type among them)."""
    headers: dict[str, str] = {"Content-Type": "application/json"}
    splice = False
    if route.plane == "worker":
        headers[WORKER_PROTOCOL_HEADER] = WORKER_PROTOCOL_VERSION
        body.setdefault("protocol_version", WORKER_PROTOCOL_VERSION)
        splice = "server_capabilities" not in body  # every worker-plane body carries them (worker-plane §1)
        if status >= 400 and "message" in body:
            body.setdefault("error", body["message"])
    elif route.plane == "control":
        if not (route.bare_success and status < 400):
            headers[CONTROL_PLANE_HEADER] = CONTROL_PLANE_VERSION
        if route.operation:
            body["control_plane"] = control_plane_block(route.operation, body, path_args)
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    size = len(text)  # the answer's own size decides compression, not the constant block spliced in
    if splice:
        text = f'{text[:-1]},"server_capabilities":{_capabilities_json(capabilities)}}}'
    data = text.encode()
    if compression and size >= 1024:
        encoding = _choose_encoding(accept_encoding)
        if encoding == "gzip":
            data = gzip.compress(data, 1)
        elif encoding == "deflate":
            data = zlib.compress(data, 1)
        if encoding:
            headers["Content-Encoding"] = encoding
            headers["Vary"] = "Accept-Encoding"
    return data, headers
