"""Nothing of namespace A is visible or reachable from namespace B."""

from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}


def test_workflow_schedule_attribute_queue_and_history_stay_in_their_namespace(server_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    a, b = f"iso-a-{tag}", f"iso-b-{tag}"
    wid, sid, attr, tq = f"wf-{tag}", f"sched-{tag}", f"Secret_{tag}", f"tq-{tag}"
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        for ns in (a, b):
            assert http.post("/api/namespaces", json={"name": ns, "description": None, "retention_days": 30}).status_code == 201
        in_a = {**CP, "X-Namespace": a}
        in_b = {**CP, "X-Namespace": b}
        started = http.post("/api/workflows", headers=in_a, json={"workflow_type": "tagger", "workflow_id": wid, "task_queue": tq, "input": [{}]})
        assert started.status_code == 201
        run_id = started.json()["run_id"]
        assert http.post("/api/schedules", headers=in_a, json={
            "schedule_id": sid, "spec": {"cron_expressions": ["@yearly"]}, "action": {"workflow_type": "tagger", "task_queue": tq}}).status_code == 201
        assert http.post("/api/search-attributes", headers=in_a, json={"name": attr, "type": "keyword"}).status_code == 201
        assert http.post("/api/worker/register", headers={**WP, "X-Namespace": a},
                         json={"worker_id": f"w-{tag}", "task_queue": tq, "runtime": "python"}).status_code in (200, 201)

        # visible in A
        assert http.get(f"/api/workflows/{wid}", headers=in_a).status_code == 200
        assert http.get(f"/api/schedules/{sid}", headers=in_a).status_code == 200
        assert attr in http.get("/api/search-attributes", headers=in_a).json()["custom_attributes"]

        # invisible and untouchable from B
        assert wid not in [w["workflow_id"] for w in http.get("/api/workflows", headers=in_b).json()["workflows"]]
        for method, path, body in (
            ("GET", f"/api/workflows/{wid}", None),
            ("GET", f"/api/workflows/{wid}/runs", None),
            ("GET", f"/api/workflows/{wid}/runs/{run_id}/history", None),
            ("GET", f"/api/workflows/{wid}/runs/{run_id}/history/export", None),
            ("POST", f"/api/workflows/{wid}/signal/go", {}),
            ("POST", f"/api/workflows/{wid}/query/status", {}),
            ("POST", f"/api/workflows/{wid}/update/push", {}),
            ("POST", f"/api/workflows/{wid}/terminate", {}),
            ("GET", f"/api/schedules/{sid}", None),
            ("POST", f"/api/schedules/{sid}/trigger", {}),
            ("DELETE", f"/api/schedules/{sid}", None),
            ("GET", f"/api/schedules/{sid}/history", None),
            ("DELETE", f"/api/search-attributes/{attr}", None),
            ("GET", f"/api/workers/w-{tag}", None),
        ):
            r = http.request(method, path, headers=in_b, json=body)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert sid not in [s["schedule_id"] for s in http.get("/api/schedules", headers=in_b).json()["schedules"]]
        assert attr not in http.get("/api/search-attributes", headers=in_b).json()["custom_attributes"]
        queue_b = http.get(f"/api/task-queues/{tq}", headers=in_b).json()
        assert queue_b["pollers"] == [] and queue_b["stats"]["approximate_backlog_count"] == 0
        assert http.get("/api/workers", headers=in_b).json()["workers"] == []
        filtered = http.get("/api/workflows", headers=in_b, params={"query": f'{attr} = "x"'})
        assert filtered.status_code == 422  # the attribute does not exist in B

        # and A's things are untouched
        assert http.get(f"/api/workflows/{wid}", headers=in_a).json()["status"] in ("pending", "running", "waiting")
        assert http.get(f"/api/schedules/{sid}", headers=in_a).json()["status"] == "active"
        http.post(f"/api/workflows/{wid}/terminate", headers=in_a, json={})
        http.delete(f"/api/schedules/{sid}", headers=in_a)
