"""The OpenAPI 3.1 document, generated from the routes and the schemas they validate with.

Nothing here is written by hand per route: every endpoint registered with ``Api.endpoint``
is listed with its method, path parameters, required headers and roles; a request body is
the JSON Schema of the pydantic model its handler parses (found in the handler's source, so
a handler that changes model changes the document), and every error answer is the protocol's
envelope. Served at ``GET /api/openapi.json``.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from . import schemas
from .manifest import (
    CONTROL_PLANE_HEADER,
    CONTROL_PLANE_VERSION,
    WORKER_PROTOCOL_HEADER,
    WORKER_PROTOCOL_VERSION,
)

_PARSE = re.compile(r"schemas\.parse\(schemas\.(\w+)")
_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


class ErrorEnvelope(BaseModel):
    """Every error a client can cause: a message saying what to fix and a stable reason."""

    model_config = ConfigDict(extra="allow")
    message: str
    reason: str


def query_params(fn: Any, **ranges: tuple[int, int]) -> None:
    """Document a handler's integer query parameters (name -> inclusive range) for the document."""
    fn.__dict__["openapi_query"] = ranges


def raw_body(fn: Any) -> None:
    """Document a handler's request body as bytes (``application/octet-stream``), not JSON."""
    fn.__dict__["openapi_raw"] = True


def _body_model(fn: Any) -> type[BaseModel] | None:
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    m = _PARSE.search(source)
    model = getattr(schemas, m.group(1), None) if m else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _component(components: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build(registry: list[dict[str, Any]], *, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    error = _component(components, ErrorEnvelope)
    paths: dict[str, dict[str, Any]] = {}
    for entry in registry:
        path = _PARAM.sub(r"{\1}", entry["rule"])
        route = entry["route"]
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _PARAM.findall(entry["rule"])
        ]
        for name, (low, high) in entry["fn"].__dict__.get("openapi_query", {}).items():
            params.append({"name": name, "in": "query", "required": False, "schema": {"type": "integer", "minimum": low, "maximum": high}})
        if entry["namespace"]:
            params.append({"name": "X-Namespace", "in": "header", "required": False,
                           "schema": {"type": "string", "pattern": "^[a-zA-Z0-9._-]{1,128}$"}})
        if route.plane == "worker":
            params.append({"name": WORKER_PROTOCOL_HEADER, "in": "header", "required": True,
                           "schema": {"type": "string", "enum": [WORKER_PROTOCOL_VERSION]}})
        elif route.plane == "control" and entry["version"]:
            params.append({"name": CONTROL_PLANE_HEADER, "in": "header", "required": True,
                           "schema": {"type": "string", "enum": [CONTROL_PLANE_VERSION]}})
        op: dict[str, Any] = {
            "operationId": f"{entry['fn'].__name__}_{entry['method'].lower()}",
            "summary": (inspect.getdoc(entry["fn"]) or entry["fn"].__name__.replace("_", " ")).split("\n")[0],
            "tags": [route.plane],
            "parameters": params,
            "responses": {
                "2XX": {"description": "Success", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "The protocol's error envelope", "content": {"application/json": {"schema": error}}},
            },
            "x-roles": list(entry["roles"]) if entry["auth"] else [],
        }
        if entry["auth"]:
            op["security"] = [{"bearer": []}, {"signature": []}]
        if entry["method"] in ("POST", "PUT", "PATCH"):
            if entry["fn"].__dict__.get("openapi_raw"):
                op["requestBody"] = {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
            else:
                model = _body_model(entry["fn"])
                body_schema = _component(components, model) if model is not None else {"type": "object"}
                op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body_schema}}}
        paths.setdefault(path, {})[entry["method"].lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Durable Workflow Server API", "version": version,
                 "description": "Control plane and worker plane, generated from the server's routes and request schemas."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "signature": {"type": "apiKey", "in": "header", "name": "X-Signature"},
            },
        },
    }
