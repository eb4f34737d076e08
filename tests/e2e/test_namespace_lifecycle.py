"""Deleting a namespace (with its rules) and the retention endpoints."""

from __future__ import annotations

import uuid

import httpx
import pytest
from durable_workflow import Client

from .harness import run

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}


def test_deleting_a_namespace_needs_it_idle_and_removes_everything_in_it(server_url: str) -> None:
    ns = f"gone-{uuid.uuid4().hex[:8]}"
    in_ns = {**CP, "X-Namespace": ns}
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        assert http.post("/api/namespaces", json={"name": ns, "description": "to delete", "retention_days": 7}).status_code == 201
        wid = http.post("/api/workflows", headers=in_ns, json={"workflow_type": "tagger", "task_queue": "q", "input": [{}]}).json()["workflow_id"]
        schedule = http.post("/api/schedules", headers=in_ns, json={"schedule_id": "s1", "spec": {"cron_expressions": ["@yearly"]}, "action": {"workflow_type": "tagger"}})
        assert schedule.status_code == 201, schedule.text
        attribute = http.post("/api/search-attributes", headers=in_ns, json={"name": "Color", "type": "keyword"})
        assert attribute.status_code == 201, attribute.text
        worker = http.post("/api/worker/register", headers={**WP, "X-Namespace": ns}, json={"worker_id": "w1", "task_queue": "q", "runtime": "python"})
        assert worker.status_code == 201, worker.text

        busy = http.delete(f"/api/namespaces/{ns}")
        assert busy.status_code == 409 and busy.json()["reason"] == "namespace_not_empty"
        assert http.post(f"/api/workflows/{wid}/terminate", headers=in_ns, json={}).status_code == 200
        protected = http.delete("/api/namespaces/default")
        assert protected.status_code == 409 and protected.json()["reason"] == "namespace_protected"

    async def delete_with_sdk() -> object:
        async with Client(server_url) as client:
            return await client.delete_namespace(ns)

    deleted = run(delete_with_sdk())
    # The body control-plane §3.6 specifies, as the SDK parses it: what was removed, by kind
    # (one of each was made above).
    assert (deleted.name, deleted.status) == (ns, "deleted"), deleted
    assert deleted.deleted == {
        "workflow_runs": 1, "workflow_schedules": 1, "search_attribute_definitions": 1, "workflow_worker_registrations": 1,
    }, deleted
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        assert http.get(f"/api/namespaces/{ns}").status_code == 404
        gone = http.get(f"/api/workflows/{wid}", headers=in_ns)
        assert gone.status_code == 404 and gone.json()["reason"] == "namespace_not_found"
        again = http.delete(f"/api/namespaces/{ns}")
        assert again.status_code == 404
        # re-created, it starts empty
        assert http.post("/api/namespaces", json={"name": ns, "description": None, "retention_days": 7}).status_code == 201
        assert http.get(f"/api/workflows/{wid}", headers=in_ns).status_code == 404
        assert http.get("/api/schedules", headers=in_ns).json()["schedules"] == []
        assert http.get("/api/search-attributes", headers=in_ns).json()["custom_attributes"] == {}
        assert http.get("/api/workers", headers=in_ns).json()["workers"] == []
        assert http.delete(f"/api/namespaces/{ns}").status_code == 200


def test_retention_status_and_pass(server_url: str) -> None:
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        wid = http.post("/api/workflows", json={"workflow_type": "tagger", "task_queue": "q", "input": [{}]}).json()["workflow_id"]
        run_id = http.post(f"/api/workflows/{wid}/terminate", json={}).json()["run_id"]
        status = http.get("/api/system/retention", params={"limit": 5}).json()
        assert status["namespace"] == "default" and status["retention_days"] == 30 and status["scan_limit"] == 5
        assert run_id not in status["expired_run_ids"]  # closed just now: kept for 30 days
        out = http.post("/api/system/retention/pass", json={"run_ids": [run_id]})
        assert out.status_code == 200 and out.json()["results"] == [{"run_id": run_id, "outcome": "skipped", "reason": "not_expired"}]
        assert http.get(f"/api/workflows/{wid}/runs/{run_id}/history").status_code == 200
        assert http.post("/api/system/retention/pass", json={"run_ids": "all"}).status_code == 422
