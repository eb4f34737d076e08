"""End-to-end: the bad input only a real socket shows, against a real dw-server process.

The request pipeline's answers to bad input (envelopes, validation, versions, namespaces,
task ids, leases, body limits as the app sees them) are checked in process, without a
socket, in tests/api/test_bad_input.py. What stays here needs hypercorn on a socket:

- a body larger than the limit, declared or sent chunked without a length, is refused at
  the wire (api.http_guard in front of the app) and nothing is written;
- after an answer given before the body was read (413, 404, 405), the keep-alive connection
  still serves the next request (ops/hypercorn_patches.py).

The session's server fixture (conftest.py) fails the run if its log holds a traceback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.envelopes import (
    CP,
    JSON,
    LIMIT,
    WP,
    control_error,
    sized_start,
    too_large,
    unique,
    worker_error,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=30) as client:
        yield client


def oneshot(c: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Send on a fresh connection: after a 413 the server closes the connection, so such a
    request must not share the pool with the checks that follow it."""
    with httpx.Client(base_url=c.base_url, timeout=30) as one:
        return one.request(method, path, **kwargs)


def assert_no_instance(c: httpx.Client, workflow_id: str) -> None:
    control_error(c.get(f"/api/workflows/{workflow_id}", headers=CP), 404, "instance_not_found")


def test_oversize_start_is_413_and_writes_nothing(http: httpx.Client) -> None:
    wf = unique("wf-413")
    raw = sized_start(wf, LIMIT + 1)
    assert len(raw) == LIMIT + 1
    r = oneshot(http, "POST", "/api/workflows", content=raw, headers={**CP, **JSON})
    too_large(control_error(r, 413, "payload_too_large"))
    assert r.headers.get("connection") == "close", dict(r.headers)
    assert_no_instance(http, wf)


def test_oversize_chunked_body_without_content_length(http: httpx.Client) -> None:
    wf = unique("wf-413-chunked")
    raw = sized_start(wf, LIMIT + 4096)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 65536):
            yield raw[i : i + 65536]

    r = http.post("/api/workflows", content=chunks(), headers={**CP, **JSON})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    too_large(control_error(r, 413, "payload_too_large"))
    assert_no_instance(http, wf)


def test_oversize_worker_plane_body(http: httpx.Client) -> None:
    wid = unique("w-413")
    raw = json.dumps({"worker_id": wid, "task_queue": "q", "runtime": "python", "process_metrics": {"pad": "x" * LIMIT}}).encode()
    too_large(worker_error(oneshot(http, "POST", "/api/worker/register", content=raw, headers={**WP, **JSON}), 413, "payload_too_large"))
    r = http.post("/api/worker/workflow-tasks/poll", json={"worker_id": wid, "task_queue": "q", "timeout_seconds": 0}, headers=WP)
    worker_error(r, 412, "worker_not_registered")


def _late(raw: bytes, delay: float = 0.2) -> Iterator[bytes]:
    """A request body that arrives after the headers, as from a slow client or a big upload.

    Sent with an explicit Content-Length, so the server can answer (404/405/413) before the
    body is there; that turns the keep-alive race below into a deterministic reproduction.
    """
    time.sleep(delay)
    yield raw


def _next_request_on_same_connection_is_answered(server_url: str, method: str, path: str, raw: bytes,
                                                 status: int, reason: str) -> None:
    for _ in range(3):
        with httpx.Client(base_url=server_url, timeout=3) as c:
            headers = {**CP, **JSON, "Content-Length": str(len(raw))}
            control_error(c.request(method, path, content=_late(raw), headers=headers), status, reason)
            nxt = c.get("/api/health")  # raises httpx.ReadTimeout while the bug is present
            assert nxt.status_code == 200, nxt.text


def test_connection_is_usable_after_413(server_url: str) -> None:
    raw = sized_start(unique("wf-413-keepalive"), LIMIT + 1)
    _next_request_on_same_connection_is_answered(server_url, "POST", "/api/workflows", raw, 413, "payload_too_large")


@pytest.mark.parametrize(("method", "path", "status", "reason"),
                         [("POST", "/api/no-such-route", 404, "not_found"), ("PUT", "/api/workflows", 405, "method_not_allowed")])
def test_connection_is_usable_after_route_error_with_body(server_url: str, method: str, path: str, status: int,
                                                          reason: str) -> None:
    raw = json.dumps({"pad": "x" * 1000}).encode()
    _next_request_on_same_connection_is_answered(server_url, method, path, raw, status, reason)
