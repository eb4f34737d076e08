"""Who may do what: the route × credential matrix of control-plane §1.5, and signed requests."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path

import httpx
import pytest

from .server import ServerProcess

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}
TOKENS = {"worker": "tok-worker", "operator": "tok-operator", "admin": "tok-admin"}
OPS = ("operator", "admin")
RUN = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
OPEN = ("/api/health", "/api/ready", "/api/openapi.json")
ALL = ("worker", "operator", "admin")


def allowed_roles(method: str, path: str) -> tuple[str, ...] | None:
    """The roles control-plane §1.5 allows for a route (None: no authentication at all).
    Written from the spec's table, independently of how the server registers its routes."""
    if path in OPEN:
        return None
    if path == "/api/cluster/info" or path.startswith("/api/external-payloads/"):  # extended §13.4: any credential
        return ALL
    if path.startswith("/api/worker/"):
        return ("worker",)
    if path.startswith(("/api/system/", "/api/storage/")):  # extended §13.2: the storage probe is admin's
        return ("admin",)
    if path.startswith("/api/namespaces"):
        return OPS if method == "GET" else ("admin",)
    if path.startswith("/api/workers"):
        return OPS if method == "GET" else ("admin",)
    if path.startswith(("/api/workflows", "/api/schedules", "/api/search-attributes", "/api/task-queues")):
        return OPS
    if path.startswith("/api/activities"):  # extended §8.2: operator/admin
        return OPS
    raise AssertionError(f"the spec's table has no row for {method} {path}")


def _concrete(path: str) -> str:
    values = {"run_id": RUN, "task_id": f"{RUN}-wt1", "query_task_id": RUN, "name": "n", "workflow_id": "wf-x",
              "schedule_id": "s-x", "worker_id": "nobody", "activity_id": "job-x",
              "reference_id": "ep_" + "0" * 26}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    env = {"DW_AUTH_DRIVER": "token", **{f"DW_{role.upper()}_TOKEN": tok for role, tok in TOKENS.items()}}
    server = ServerProcess(tmp_path_factory.mktemp("auth") / "data", env=env, port=ServerProcess.free_port())
    server.start()
    yield server.url
    server.stop()


def test_every_route_for_every_credential(token_server: str) -> None:
    """Every route the server serves (its generated OpenAPI document lists them all) against
    no credential, a wrong one and each role: 401, 401, then 403 or admitted as the spec says."""
    routes = httpx.get(f"{token_server}/api/openapi.json").json()["paths"]
    checked = 0
    with httpx.Client(base_url=token_server, timeout=30) as http:
        for template, operations in routes.items():
            for method in operations:
                method = method.upper()
                path = _concrete(template)
                allowed = allowed_roles(method, template)
                body = {"timeout_seconds": 0} if method in ("POST", "PUT") else None

                def send(token: str | None, method: str = method, path: str = path, body: dict | None = body) -> httpx.Response:
                    headers = {**CP, **WP}
                    if token is not None:
                        headers["Authorization"] = f"Bearer {token}"
                    return http.request(method, path, headers=headers, json=body)

                if allowed is None:
                    assert send(None).status_code == 200, (method, path)
                    continue
                for credential in (None, "not-a-token"):
                    r = send(credential)
                    assert r.status_code == 401 and r.json()["reason"] == "unauthorized", (method, path, credential, r.text)
                for role, token in TOKENS.items():
                    r = send(token)
                    if role in allowed:
                        assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, role, r.status_code, r.text)
                    else:
                        assert r.status_code == 403, (method, path, role, r.status_code, r.text)
                        assert r.json()["reason"] == "forbidden" and r.json()["role"] == role
                        assert sorted(r.json()["allowed_roles"]) == sorted(allowed)
                checked += 1
    assert checked >= 60, checked


def _signed(key: str, method: str, path: str, body: bytes, *, ts: int | None = None, query: str = "") -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    text = "\n".join(["DW-HMAC-SHA256", method, path, query, "", str(ts), hashlib.sha256(body).hexdigest()])
    return {"X-DW-Timestamp": str(ts), "X-Signature": hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest(),
            "Content-Type": "application/json", **CP}


def test_signature_driver_default_scheme(tmp_path: Path) -> None:
    env = {"DW_AUTH_DRIVER": "signature", "DW_OPERATOR_SIGNATURE_KEY": "op-key", "DW_WORKER_SIGNATURE_KEY": "wk-key"}
    key_file = tmp_path / "admin.key"
    key_file.write_text("admin-key\n")
    env["DW_ADMIN_SIGNATURE_KEY_FILE"] = str(key_file)  # keys can come from files
    server = ServerProcess(tmp_path / "data", env=env, port=ServerProcess.free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            body = b'{"workflow_type":"signed","task_queue":"nowhere"}'
            ok = http.post("/api/workflows", content=body, headers=_signed("op-key", "POST", "/api/workflows", body))
            assert ok.status_code == 201, ok.text
            replay = http.post("/api/workflows", content=body, headers=ok.request.headers)
            assert replay.status_code == 401 and "already used" in replay.json()["message"]
            old = http.post("/api/workflows", content=body, headers=_signed("op-key", "POST", "/api/workflows", body, ts=int(time.time()) - 600))
            assert old.status_code == 401 and "expired" in old.json()["message"]
            headers = _signed("op-key", "POST", "/api/workflows", body)
            tampered = http.post("/api/workflows", content=body.replace(b"nowhere", b"elsewhere"), headers=headers)
            assert tampered.status_code == 401 and tampered.json()["message"] == "Invalid request signature."
            headers = _signed("op-key", "GET", "/api/workflows", b"")
            moved = http.get("/api/namespaces", headers=headers)
            assert moved.status_code == 401
            listed = http.get("/api/workflows", params={"page_size": "5"}, headers=_signed("op-key", "GET", "/api/workflows", b"", query="page_size=5"))
            assert listed.status_code == 200, listed.text
            wrong_role = http.get("/api/workflows", headers=_signed("wk-key", "GET", "/api/workflows", b""))
            assert wrong_role.status_code == 403
            admin = http.get("/api/namespaces", headers=_signed("admin-key", "GET", "/api/namespaces", b""))
            assert admin.status_code == 200, admin.text
            unsigned = http.get("/api/workflows", headers=CP)
            assert unsigned.status_code == 401 and unsigned.json()["message"] == "Missing request signature."
    finally:
        server.stop()


def test_signature_compat_mode_accepts_body_only_signatures(tmp_path: Path) -> None:
    env = {"DW_AUTH_DRIVER": "signature", "DW_SIGNATURE_KEY": "legacy-key", "DW_SIGNATURE_COMPAT": "body-only"}
    server = ServerProcess(tmp_path / "data", env=env, port=ServerProcess.free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            sig = hmac.new(b"legacy-key", b"", hashlib.sha256).hexdigest()
            for _ in range(2):  # the reference's scheme: the same signed GET is accepted again
                assert http.get("/api/namespaces", headers={**CP, "X-Signature": sig}).status_code == 200
            assert http.get("/api/namespaces", headers={**CP, "X-Signature": "00" * 32}).status_code == 401
    finally:
        server.stop()


def test_refusals_of_workflow_operations_carry_the_control_plane_block(token_server: str) -> None:
    with httpx.Client(base_url=token_server, headers=CP, timeout=30) as http:
        r = http.post("/api/workflows/wf-x/signal/approve", json={})
        assert r.status_code == 401
        block = r.json()["control_plane"]
        assert (block["operation"], block["workflow_id"], block["operation_name"], block["operation_name_field"]) == (
            "signal", "wf-x", "approve", "signal_name")
        assert block["contract"]["required_fields"] == ["workflow_id", "operation_name", "operation_name_field"]
        assert block["reason"] == "unauthorized" and r.json()["workflow_id"] == "wf-x"
        forbidden = http.get("/api/workflows/wf-x/runs", headers={"Authorization": "Bearer tok-worker"})
        assert forbidden.status_code == 403 and forbidden.json()["control_plane"]["operation"] == "list_runs"
        for path in ("/api/namespaces", "/api/schedules", f"/api/workflows/wf-x/runs/{RUN}/history/export"):
            assert "control_plane" not in http.get(path).json(), path
