"""Bad input on the operator routes of extended spec §8–§11, §13, §15 (standalone activities,
repair / redrive / archive / debug, build ids, worker sessions, external storage, system
metrics): malformed bodies, unknown ids, the wrong run, another namespace, oversize — each
answered in the envelope with a stable reason, never a 5xx, and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from .envelopes import CP, JSON, LIMIT, WP, control_error, too_large, unique, validation_fields
from .harness import Client
from .test_bad_input import register, start

JOB = {"activity_type": "render", "task_queue": "reports"}


async def _jobs(http: Client) -> list[dict[str, Any]]:
    r = await http.get("/api/activities", headers=CP, params={"page_size": 200})
    assert r.status_code == 200, r.text
    return list(r.json()["activities"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_queue": "q"}, "activity_type"),
        ({"activity_type": "a"}, "task_queue"),
        ({**JOB, "activity_type": ""}, "activity_type"),
        ({**JOB, "activity_type": "x" * 256}, "activity_type"),
        ({**JOB, "activity_id": "has space"}, "activity_id"),
        ({**JOB, "activity_id": "x" * 129}, "activity_id"),
        ({**JOB, "business_key": "k" * 256}, "business_key"),
        ({**JOB, "input": "not a list"}, "input"),
        ({**JOB, "input": {"codec": "json", "blob": "e30="}}, "input"),
        ({**JOB, "retry_policy": []}, "retry_policy"),
        ({**JOB, "retry_policy": {"max_attempts": 0}}, "retry_policy.max_attempts"),
        ({**JOB, "retry_policy": {"backoff_seconds": [-1]}}, "retry_policy.backoff_seconds"),
        ({**JOB, "start_to_close_timeout_seconds": 0}, "start_to_close_timeout_seconds"),
        ({**JOB, "heartbeat_timeout_seconds": "5"}, "heartbeat_timeout_seconds"),
        ({**JOB, "heartbeat_timeout_seconds": 10, "start_to_close_timeout_seconds": 5}, "heartbeat_timeout_seconds"),
        ({**JOB, "start_to_close_timeout_seconds": 10, "schedule_to_close_timeout_seconds": 5}, "start_to_close_timeout_seconds"),
        ({**JOB, "schedule_to_start_timeout_seconds": 10, "schedule_to_close_timeout_seconds": 5}, "schedule_to_start_timeout_seconds"),
    ],
)
async def test_a_bad_start_names_its_field_and_starts_nothing(http: Client, body: dict[str, Any], field: str) -> None:
    out = control_error(await http.post("/api/activities", json=body, headers=CP), 422, "validation_failed")
    validation_fields(out, field)
    assert await _jobs(http) == []


async def test_activity_routes_refuse_malformed_unknown_foreign_and_oversize(http: Client) -> None:
    control_error(await http.post("/api/activities", content=b"{nope", headers={**CP, **JSON}), 400, "malformed_json")
    control_error(await http.post("/api/activities", json=[JOB], headers=CP), 422, "validation_failed")
    too_large(control_error(await http.post("/api/activities", json={**JOB, "business_key": "x" * (LIMIT + 1)}, headers=CP),
                            413, "payload_too_large"))
    control_error(await http.get(f"/api/activities/{unique('ghost')}", headers=CP), 404, "activity_not_found")
    for query, field in (({"wait_seconds": "31"}, "wait_seconds"), ({"wait_seconds": "-1"}, "wait_seconds"),
                         ({"activity_status": "done"}, "activity_status")):
        out = control_error(await http.get(f"/api/activities/{unique('ghost')}", params=query, headers=CP), 422, "validation_failed")
        validation_fields(out, field)
    for query, field in (({"status": "cancelled"}, "status"), ({"page_size": "0"}, "page_size"), ({"page_size": "201"}, "page_size")):
        validation_fields(control_error(await http.get("/api/activities", params=query, headers=CP), 422, "validation_failed"), field)
    control_error(await http.get("/api/activities", params={"next_page_token": "garbage!"}, headers=CP), 400, "invalid_page_token")

    job_id = unique("job")
    started = await http.post("/api/activities", json={**JOB, "activity_id": job_id, "input": ["q3"]}, headers=CP)
    assert started.status_code == 201, started.text
    ns = unique("ns-sa")
    assert (await http.post("/api/namespaces", json={"name": ns}, headers=CP)).status_code == 201
    foreign = {**CP, "X-Namespace": ns}
    control_error(await http.get(f"/api/activities/{job_id}", headers=foreign), 404, "activity_not_found")
    assert (await http.get("/api/activities", headers=foreign)).json()["activities"] == []
    control_error(await http.post("/api/activities", json={**JOB, "activity_id": job_id}, headers=foreign), 409, "activity_id_reserved")
    again = control_error(await http.post("/api/activities", json={**JOB, "activity_id": job_id}, headers=CP), 409,
                          "activity_already_running")
    assert again["workflow_run_id"] == started.json()["workflow_run_id"]
    wf = unique("wf")
    await start(http, wf)
    control_error(await http.post("/api/activities", json={**JOB, "activity_id": wf}, headers=CP), 409, "activity_id_reserved")
    control_error(await http.get(f"/api/activities/{wf}", headers=CP), 404, "activity_not_found")
    assert [j["activity_id"] for j in await _jobs(http)] == [job_id], "one job, nothing else written"


async def test_a_job_is_offered_to_activity_workers_only_and_reads_as_the_spec_shows(http: Client) -> None:
    job_id = unique("job")
    r = await http.post("/api/activities", json={**JOB, "activity_id": job_id, "activity_class": "Reports.Render",
                                                  "schedule_to_close_timeout_seconds": 600}, headers=CP)
    assert r.status_code == 201, r.text
    started = r.json()
    assert started["started"] is True and started["status"] == "running" and started["workflow_type"] == "dw.standalone_activity"
    assert started["activity_class"] == "Reports.Render" and started["schedule_to_close_deadline_at"].endswith("Z")
    await register(http, "w1", "reports")
    wt = await http.post("/api/worker/workflow-tasks/poll", json={"worker_id": "w1", "task_queue": "reports", "timeout_seconds": 0},
                         headers=WP)
    assert wt.status_code in (200, 204) and (wt.status_code == 204 or wt.json().get("task") is None), "no workflow task, ever"
    act = await http.post("/api/worker/activity-tasks/poll", json={"worker_id": "w1", "task_queue": "reports", "timeout_seconds": 1},
                          headers=WP)
    task = act.json()["task"]
    assert task["workflow_id"] == job_id and task["run_id"] == started["workflow_run_id"]
    assert task["activity_execution_id"] == started["activity_execution_id"] and task["activity_type"] == "render"
    blob = {"codec": "avro", "blob": "AgZvaw=="}
    done = await http.post(f"/api/worker/activity-tasks/{task['task_id']}/complete", headers=WP,
                           json={"activity_attempt_id": task["activity_attempt_id"], "lease_owner": "w1", "result": blob})
    assert done.status_code == 200, done.text
    job = (await http.get(f"/api/activities/{job_id}", headers=CP)).json()
    assert job["status"] == "completed" and job["activity_status"] == "completed" and job["attempt_count"] == 1
    assert job["result"] == blob and job["closed_reason"] == "completed"
    described = (await http.get(f"/api/workflows/{job_id}", headers=CP)).json()
    assert described["status"] == "completed", "the host run closed with its activity"
