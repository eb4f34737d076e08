"""``--log-format json`` / ``DW_LOG_FORMAT=json``: every line a JSON object with the node, and
the request id and namespace of the request it was logged in; the request id is the client's
``X-Request-Id`` when it sent a sane one, echoed in the answer, else one the server made."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from .server import ServerProcess

pytestmark = pytest.mark.e2e
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}


def test_json_log_lines_carry_node_request_and_namespace(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"DW_LOG_FORMAT": "json", "DW_NODE_ID": "node-json"},
                           port=ServerProcess.free_port())
    url = server.start()
    try:
        r = httpx.post(f"{url}/api/worker/register", headers={**WP, "X-Request-Id": "req-abc.123"},
                       json={"worker_id": "w-json", "task_queue": "q-json", "runtime": "python"})
        assert r.status_code in (200, 201), r.text
        assert r.headers["x-request-id"] == "req-abc.123"
        generated = httpx.get(f"{url}/api/health", headers={"X-Request-Id": "bad id with spaces"}).headers["x-request-id"]
        assert generated != "bad id with spaces" and len(generated) == 32
        deadline = time.monotonic() + 10
        while not any("w-json" in line for line in server.log().splitlines()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]  # every line parses
    assert all({"ts", "level", "logger", "message", "node"} <= set(line) for line in lines)
    assert all(line["node"] == "node-json" for line in lines)
    registered = next(line for line in lines if "w-json" in line["message"])
    assert registered["request_id"] == "req-abc.123" and registered["namespace"] == "default", registered
    assert any("listening on" in line["message"] for line in lines)
