"""The fast path (api/fast_path.py) answers hot routes exactly as Quart would, only cheaper.

Each case is sent twice to the same in-process node: through the fast path, then with it
taken out of the ASGI chain (Quart serving the route as before). Status, headers and body
must match byte for byte — refusals of every pipeline stage included. Cases are refusals or
reads so that sending one twice changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.endpoints import Api
from api.fast_path import FastPath

from .harness import Client, serving

CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def node_client(tmp_path: Path) -> AsyncIterator[Client]:
    async with serving(tmp_path) as (_, client):
        yield client


def _fast(client: Client) -> FastPath:
    fast = client.app.asgi_app.app  # type: ignore[attr-defined]
    assert isinstance(fast, FastPath)
    return fast


def _seen(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body; the request id is each request's own (both ways must send one)."""
    assert len(r.headers.get("x-request-id", "")) == 32, r.headers
    return r.status_code, sorted((k.lower(), v) for k, v in r.headers.items() if k.lower() != "x-request-id"), r.content


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("describe of an unknown workflow", "GET /api/workflows/nope", {"headers": CP}),
    ("describe without the version header", "GET /api/workflows/nope", {}),
    ("describe of an unknown run", "GET /api/workflows/nope/runs/01J0000000000000000000000", {"headers": CP}),
    ("history of an unknown run", "GET /api/workflows/nope/runs/nope/history", {"headers": CP}),
    ("start with broken JSON", "POST /api/workflows", {"content": b"{nope", "headers": {**CP, **JSON}}),
    ("start as text", "POST /api/workflows", {"content": b"{}", "headers": {**CP, "Content-Type": "text/plain"}}),
    ("start with a repeated query parameter", "POST /api/workflows?a=1&a=2", {"json": {}, "headers": CP}),
    ("start in an unknown namespace", "POST /api/workflows", {"json": {"workflow_type": "t"}, "headers": {**CP, "X-Namespace": "nope"}}),
    ("start without a type", "POST /api/workflows", {"json": {"workflow_id": "x"}, "headers": CP}),
    ("start too deep", "POST /api/workflows", {"content": b"[" * 200 + b"]" * 200, "headers": {**CP, **JSON}}),
    ("start too large", "POST /api/workflows", {"content": b"x" * (3 * 1024 * 1024), "headers": {**CP, **JSON}}),
    ("signal to an unknown workflow", "POST /api/workflows/nope/signal/go", {"json": {"input": []}, "headers": CP}),
    ("poll without the protocol header", "POST /api/worker/workflow-tasks/poll", {"json": {"worker_id": "w", "task_queue": "q"}}),
    ("poll by an unregistered worker", "POST /api/worker/workflow-tasks/poll",
     {"json": {"worker_id": "w", "task_queue": "q", "timeout_seconds": 0}, "headers": WP}),
    ("activity poll, malformed", "POST /api/worker/activity-tasks/poll", {"json": {"worker_id": ""}, "headers": WP}),
    ("completion of an unknown task", "POST /api/worker/workflow-tasks/nope/complete",
     {"json": {"lease_owner": "w", "workflow_task_attempt": 1, "commands": []}, "headers": WP}),
    ("activity completion of an unknown task", "POST /api/worker/activity-tasks/nope/complete",
     {"json": {"activity_attempt_id": "a.1", "lease_owner": "w"}, "headers": WP}),
    ("worker heartbeat of an unknown worker", "POST /api/worker/heartbeat", {"json": {"worker_id": "w"}, "headers": WP}),
    ("deep query string and unicode path", "GET /api/workflows/%C3%A9t%C3%A9?x=%ZZ", {"headers": CP}),
]


@pytest.mark.parametrize(("what", "target", "kw"), CASES, ids=[c[0] for c in CASES])
async def test_a_hot_route_answers_as_quart_does(node_client: Client, what: str, target: str, kw: dict[str, Any]) -> None:
    method, path = target.split(" ", 1)
    fast = _fast(node_client)
    guard = node_client.app.asgi_app  # type: ignore[attr-defined]
    through_fast = await node_client.request(method, path, **kw)
    guard.app = fast.inner
    try:
        through_quart = await node_client.request(method, path, **kw)
    finally:
        guard.app = fast
    assert _seen(through_fast) == _seen(through_quart), what
    assert through_fast.status_code >= 400 or what.startswith("deep"), "the cases are refusals: sending one twice changes nothing"


async def test_hot_routes_skip_quarts_request_and_the_rest_keep_it(node_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    original = Api.quart_request

    def counting() -> Any:
        view = original()
        built.append(view.path)
        return view

    monkeypatch.setattr(Api, "quart_request", staticmethod(counting))
    started = await node_client.post("/api/workflows", json={"workflow_type": "t", "workflow_id": "fast-1", "task_queue": "q"}, headers=CP)
    assert started.status_code == 201, started.text
    assert (await node_client.get("/api/workflows/fast-1", headers=CP)).status_code == 200
    assert built == [], "start and describe went around Quart's request"
    listed = await node_client.get("/api/workflows", headers=CP)
    assert listed.status_code == 200 and json.loads(listed.content)["workflows"]
    assert built == ["/api/workflows"], "a route outside the hot set is Quart's"
