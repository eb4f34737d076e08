"""Response envelopes: the control_plane block, worker-plane fields and response compression."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from typing import Any

import pytest

from api.envelope import Route, _choose_encoding, control_plane_block, render
from api.manifest import (
    CONTROL_PLANE_HEADER,
    WORKER_PROTOCOL_HEADER,
    WORKER_PROTOCOL_VERSION,
)

# --- control_plane block ----------------------------------------------------------------
#
# Expected values are the protocol's (control-plane spec §1.10), written out here: compared
# with the server's own tables they would agree with any mistake made in those tables.

SPEC_CONTRACT = {
    "schema": "durable-workflow.v2.control-plane-response.contract",
    "version": 1,
    "legacy_field_policy": "reject_non_canonical",
    "legacy_fields": {"query": "query_name", "signal": "signal_name", "update": "update_name", "wait_policy": "wait_for"},
}
SPEC_PROJECTED_FIELDS = [
    "run_id", "workflow_type", "namespace", "business_key", "status", "status_bucket", "is_terminal", "task_queue",
    "run_number", "run_count", "workflow_count", "is_current_run", "compatibility", "started_at", "closed_at",
    "last_progress_at", "wait_kind", "wait_reason", "next_page_token", "command_id", "command_status",
    "command_source", "target_scope", "outcome", "reason", "rejection_reason", "validation_errors", "result",
    "result_envelope", "update_id", "update_status", "wait_for", "wait_timed_out", "wait_timeout_seconds",
    "blocked_reason", "message", "diagnostic_status",
]
NAMED = ["workflow_id", "operation_name", "operation_name_field"]
SPEC_OPERATIONS = {  # operation: (required_fields, success_fields)
    "list": ([], []),
    "start": ([], ["workflow_id", "outcome"]),
    "describe": (["workflow_id"], []),
    "list_runs": (["workflow_id"], []),
    "describe_run": (["workflow_id"], ["run_id"]),
    "debug_workflow": (["workflow_id"], ["run_id", "diagnostic_status"]),
    "history": (["workflow_id", "run_id"], ["next_page_token"]),
    "signal": (NAMED, ["outcome"]),
    "update": (NAMED, ["outcome"]),
    "query": (NAMED, ["result"]),
    "cancel": (["workflow_id"], ["outcome"]),
    "terminate": (["workflow_id"], ["outcome"]),
    "repair": (["workflow_id"], ["outcome"]),
    "archive": (["workflow_id"], ["outcome"]),
}


@pytest.mark.parametrize("op", sorted(SPEC_OPERATIONS))
def test_contract_of_every_operation(op: str) -> None:
    required, success = SPEC_OPERATIONS[op]
    block = control_plane_block(op, {}, {"workflow_id": "wf"})
    assert block["contract"] == {**SPEC_CONTRACT, "required_fields": required, "success_fields": success}


def test_block_layout_for_signal() -> None:
    body: dict[str, Any] = {"outcome": "signal_received", "command_status": "accepted", "not_projected": 1}
    block = control_plane_block("signal", body, {"workflow_id": "wf-1", "name": "approve"})
    assert block["schema"] == "durable-workflow.v2.control-plane-response"
    assert block["version"] == 1
    assert block["operation"] == "signal"
    assert block["workflow_id"] == "wf-1"
    assert block["operation_name"] == "approve"
    assert block["operation_name_field"] == "signal_name"
    assert block["contract"] == {
        "schema": "durable-workflow.v2.control-plane-response.contract",
        "version": 1,
        "legacy_field_policy": "reject_non_canonical",
        "legacy_fields": {"query": "query_name", "signal": "signal_name", "update": "update_name", "wait_policy": "wait_for"},
        "required_fields": ["workflow_id", "operation_name", "operation_name_field"],
        "success_fields": ["outcome"],
    }
    assert block["outcome"] == "signal_received"
    assert block["command_status"] == "accepted"
    assert "not_projected" not in block


def test_path_ids_are_added_to_body_when_missing() -> None:
    body: dict[str, Any] = {}
    block = control_plane_block("history", body, {"workflow_id": "wf-1", "run_id": "run-9"})
    assert body == {"workflow_id": "wf-1", "run_id": "run-9"}
    assert block["workflow_id"] == "wf-1"
    assert block["run_id"] == "run-9"  # projected from the body
    assert block["contract"]["required_fields"] == ["workflow_id", "run_id"]
    assert block["contract"]["success_fields"] == ["next_page_token"]


def test_body_ids_win_over_path_ids() -> None:
    body: dict[str, Any] = {"workflow_id": "from-body"}
    block = control_plane_block("describe", body, {"workflow_id": "from-path"})
    assert body["workflow_id"] == "from-body"
    assert block["workflow_id"] == "from-body"


def test_start_without_workflow_id_has_null_workflow_id() -> None:
    block = control_plane_block("start", {"reason": "validation_failed"}, {})
    assert block["workflow_id"] is None
    assert block["reason"] == "validation_failed"
    assert block["contract"]["success_fields"] == ["workflow_id", "outcome"]


def test_operation_name_only_for_named_operations() -> None:
    assert "operation_name" not in control_plane_block("cancel", {}, {"workflow_id": "wf", "name": "x"})
    assert "operation_name" not in control_plane_block("query", {}, {"workflow_id": "wf", "name": ""})
    block = control_plane_block("update", {}, {"workflow_id": "wf", "name": "bump"})
    assert (block["operation_name"], block["operation_name_field"]) == ("bump", "update_name")


def test_exactly_the_projected_fields_are_copied() -> None:
    assert len(SPEC_PROJECTED_FIELDS) == len(set(SPEC_PROJECTED_FIELDS)) == 37
    body: dict[str, Any] = {key: f"value-{key}" for key in SPEC_PROJECTED_FIELDS}
    body["result"] = None  # present with a null value still projects
    body.update({"workflow_id": "wf", "input": "not projected", "signal_name": "not projected", "memo": {}})
    block = control_plane_block("describe_run", body, {"workflow_id": "wf"})
    header = {"schema", "version", "operation", "workflow_id", "contract"}
    assert set(block) == header | set(SPEC_PROJECTED_FIELDS), set(block) ^ (header | set(SPEC_PROJECTED_FIELDS))
    for key in SPEC_PROJECTED_FIELDS:
        assert block[key] == body[key], key


def test_absent_projected_fields_are_not_invented() -> None:
    block = control_plane_block("list", {"workflow_count": 0}, {})
    assert block["workflow_count"] == 0
    assert "status" not in block and "run_id" not in block


# --- Accept-Encoding negotiation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("br", None),
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate", "gzip"),
        ("deflate, gzip", "gzip"),
        ("gzip;q=0.5, deflate;q=0.5", "gzip"),
        ("gzip;q=0.4, deflate;q=0.5", "deflate"),
        ("gzip;q=0, deflate", "deflate"),
        ("gzip; q=0, deflate; q=0", None),
        ("*", "gzip"),
        ("*;q=0.3, deflate;q=0.5", "deflate"),
        ("*;q=0.5, deflate;q=0.3", "gzip"),
        ("gzip;q=0, *", "deflate"),
        ("*;q=0", None),
        ("gzip;q=abc", None),
        ("gzip;q=abc, deflate;q=0.1", "deflate"),
        ("gzip;q=7", "gzip"),
        ("gzip;q=-1, deflate;q=0.2", "deflate"),
        ("gzip;Q=0, deflate", "deflate"),
    ],
)
def test_choose_encoding(accept: str | None, expected: str | None) -> None:
    assert _choose_encoding(accept) == expected


# --- render ------------------------------------------------------------------------------


@dataclass
class Rendered:
    status_code: int
    headers: dict[str, str]
    data: bytes


def rendered(route: Route, status: int, body: dict[str, Any], args: dict[str, str], **kw: Any) -> Rendered:
    data, headers = render(route, status, body, args, **kw)
    return Rendered(status, headers, data)


def body_of(response: Rendered) -> bytes:
    return response.data


def render_json(route: Route, status: int, body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Render an uncompressed response and parse its JSON body."""
    response = rendered(route, status, body, {}, capabilities={"cap": True}, accept_encoding=None, compression=True)
    return response, json.loads(body_of(response))


def test_worker_success_carries_protocol_version_and_capabilities() -> None:
    response, body = render_json(Route("worker"), 200, {"task": None})
    assert response.status_code == 200
    assert response.headers[WORKER_PROTOCOL_HEADER] == WORKER_PROTOCOL_VERSION
    assert CONTROL_PLANE_HEADER not in response.headers
    assert body == {"task": None, "protocol_version": "1.20", "server_capabilities": {"cap": True}}
    _, own = render_json(Route("worker"), 200, {"task": None, "server_capabilities": {"mine": 1}})
    assert own["server_capabilities"] == {"mine": 1}, "a handler's own block is kept"


def test_the_capability_block_does_not_make_a_small_worker_answer_compressed() -> None:
    big_caps = {"k": "x" * 4000}
    small = rendered(Route("worker"), 200, {"task": None}, {}, capabilities=big_caps, accept_encoding="gzip", compression=True)
    assert "Content-Encoding" not in small.headers and json.loads(small.data)["server_capabilities"] == big_caps
    large = rendered(Route("worker"), 200, {"task": {"h": "y" * 2000}}, {}, capabilities=big_caps, accept_encoding="gzip",
                     compression=True)
    assert large.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(large.data))["server_capabilities"] == big_caps


def test_worker_error_adds_capabilities_and_error_text() -> None:
    _, body = render_json(Route("worker"), 409, {"reason": "task_not_leased", "message": "Workflow task is not leased."})
    assert body["error"] == body["message"] == "Workflow task is not leased."
    assert body["server_capabilities"] == {"cap": True}
    assert body["protocol_version"] == "1.20"


def test_control_route_gets_header_and_block() -> None:
    response = rendered(
        Route("control", operation="cancel"),
        404,
        {"reason": "instance_not_found", "message": "Workflow not found."},
        {"workflow_id": "wf-1"},
        capabilities={},
        accept_encoding=None,
        compression=True,
    )
    body = json.loads(body_of(response))
    assert response.headers[CONTROL_PLANE_HEADER] == "2"
    assert WORKER_PROTOCOL_HEADER not in response.headers
    assert body["workflow_id"] == "wf-1"
    assert body["control_plane"]["operation"] == "cancel"
    assert body["control_plane"]["reason"] == "instance_not_found"
    assert body["control_plane"]["message"] == "Workflow not found."


def test_bare_success_omits_version_header_only_on_success() -> None:
    ok, _ = render_json(Route("control", bare_success=True), 200, {"x": 1})
    assert CONTROL_PLANE_HEADER not in ok.headers
    err, body = render_json(Route("control", bare_success=True), 401, {"reason": "unauthorized"})
    assert err.headers[CONTROL_PLANE_HEADER] == "2"
    assert "control_plane" not in body


def big_body() -> dict[str, Any]:
    return {"task": None, "padding": "x" * 2000}


@pytest.mark.parametrize(
    ("accept", "encoding", "decompress"),
    [("gzip", "gzip", gzip.decompress), ("deflate", "deflate", zlib.decompress)],
)
def test_large_bodies_are_compressed(accept: str, encoding: str, decompress: Any) -> None:
    response = rendered(Route("worker"), 200, big_body(), {}, capabilities={}, accept_encoding=accept, compression=True)
    assert response.headers["Content-Encoding"] == encoding
    assert "Accept-Encoding" in response.headers["Vary"]
    data = body_of(response)
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(decompress(data))["padding"] == "x" * 2000


@pytest.mark.parametrize(
    ("body", "accept", "compression"),
    [({"small": True}, "gzip", True), (big_body(), "gzip", False), (big_body(), "identity", True), (big_body(), None, True)],
    ids=["below-threshold", "disabled", "identity", "no-header"],
)
def test_no_compression(body: dict[str, Any], accept: str | None, compression: bool) -> None:
    response = rendered(Route("worker"), 200, body, {}, capabilities={}, accept_encoding=accept, compression=compression)
    assert "Content-Encoding" not in response.headers
    assert json.loads(body_of(response))["protocol_version"] == "1.20"
