"""The error-envelope checks shared by the in-process and the socket tests of bad input.

They read an ``httpx.Response`` only, so the same assertions hold whether the answer came
through hypercorn (tests/e2e) or straight from the app (tests/api/harness.py).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

CP_HEADER = "X-Durable-Workflow-Control-Plane-Version"
WP_HEADER = "X-Durable-Workflow-Protocol-Version"
CP = {CP_HEADER: "2"}
WP = {WP_HEADER: "1.20"}
JSON = {"Content-Type": "application/json"}
LIMIT = 2 * 1024 * 1024  # default max_payload_bytes (control-plane 1.3)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fake_run_id() -> str:
    """A well-formed (26 Crockford characters) run id that no server has issued."""
    n = uuid.uuid4().int
    return "0" + "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in range(25))


def _body(r: httpx.Response) -> dict[str, Any]:
    assert r.headers.get("content-type", "").startswith("application/json"), (r.status_code, r.headers, r.text[:300])
    body = r.json()
    assert isinstance(body, dict), body
    return body


def _common(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert r.status_code < 500, f"{r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:500]}"
    assert r.status_code == status, f"{r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:500]}"
    body = _body(r)
    assert body.get("reason") == reason, body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    return body


def control_error(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    """Control-plane error envelope: version header, no worker fields, no ``error`` key."""
    body = _common(r, status, reason)
    assert r.headers.get(CP_HEADER) == "2", dict(r.headers)
    assert WP_HEADER not in r.headers, dict(r.headers)
    assert "error" not in body, body
    assert "protocol_version" not in body and "server_capabilities" not in body, body
    return body


def worker_error(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    """Worker-plane error envelope: protocol header, ``error`` text, protocol_version, capabilities."""
    body = _common(r, status, reason)
    assert r.headers.get(WP_HEADER) == "1.20", dict(r.headers)
    assert CP_HEADER not in r.headers, dict(r.headers)
    assert isinstance(body.get("error"), str) and body["error"].strip(), body
    assert body.get("protocol_version") == "1.20", body
    assert isinstance(body.get("server_capabilities"), dict), body
    return body


def validation_fields(body: dict[str, Any], *fields: str) -> None:
    """The 422 shape: identical ``errors``/``validation_errors`` maps keyed by field."""
    errors = body.get("errors")
    assert isinstance(errors, dict) and errors, body
    assert body.get("validation_errors") == errors, body
    for field in fields:
        assert field in errors, (field, errors)
    for field, messages in errors.items():
        assert isinstance(messages, list) and messages, (field, messages)
        assert all(isinstance(m, str) and m.strip() for m in messages), (field, messages)


def sized_start(workflow_id: str, size: int) -> bytes:
    """A start request of exactly ``size`` bytes (the memo is padded)."""
    template = json.dumps({"workflow_id": workflow_id, "workflow_type": "t", "memo": {"pad": "@"}}).encode()
    return template.replace(b"@", b"x" * (size - len(template) + 1))


def too_large(body: dict[str, Any]) -> None:
    assert body.get("limit") == LIMIT, body
    assert str(LIMIT) in body["message"], body
