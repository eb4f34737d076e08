"""Bad input on the operator routes of extended spec §8–§11, §13, §15 (standalone activities,
repair / redrive / archive / debug, build ids, worker sessions, external storage, system
metrics): malformed bodies, unknown ids, the wrong run, another namespace, oversize — each
answered in the envelope with a stable reason, never a 5xx, and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from .envelopes import (
    CP,
    JSON,
    LIMIT,
    WP,
    control_error,
    fake_run_id,
    too_large,
    unique,
    validation_fields,
    worker_error,
)
from .harness import Client
from .test_bad_input import Leased, complete, lease_task, poll_task, register, start

JOB = {"activity_type": "render", "task_queue": "reports"}
ENV = {"codec": "avro", "blob": "wwHioz3/VYAiNwwA"}


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


async def _events(http: Client, wf: str, run_id: str) -> list[str]:
    r = await http.get(f"/api/workflows/{wf}/runs/{run_id}/history", headers=CP)
    return [e["event_type"] for e in r.json()["events"]]


async def _fail_on_activity(http: Client) -> tuple[Leased, str]:
    """A run that scheduled activity 1 (completed), then activity 2 (failed), then failed on it."""
    t = await lease_task(http)
    assert (await complete(http, t, [{"type": "schedule_activity", "activity_type": "a", "arguments": ENV},
                                     {"type": "schedule_activity", "activity_type": "b", "arguments": ENV}])).status_code == 200
    for outcome in ("complete", "fail"):
        poll = await http.post("/api/worker/activity-tasks/poll", json={"worker_id": t.worker_id, "task_queue": t.task_queue,
                                                                        "timeout_seconds": 1}, headers=WP)
        task = poll.json()["task"]
        body: dict[str, Any] = {"activity_attempt_id": task["activity_attempt_id"], "lease_owner": t.worker_id}
        body.update({"result": ENV} if outcome == "complete" else {"failure": {"message": "b broke", "non_retryable": True}})
        assert (await http.post(f"/api/worker/activity-tasks/{task['task_id']}/{outcome}", json=body, headers=WP)).status_code == 200
    task = await poll_task(http, t.worker_id, t.task_queue)
    failed = [{"type": "fail_workflow", "message": "b broke", "exception_class": "ActivityFailed",
               "failed_step_sequence": 2, "failed_activity_execution_id": f"{t.run_id}-a2"}]
    r = await http.post(f"/api/worker/workflow-tasks/{task['task_id']}/complete", headers=WP,
                        json={"lease_owner": t.worker_id, "workflow_task_attempt": task["workflow_task_attempt"], "commands": failed})
    assert r.status_code == 200, r.text
    return t, task["task_id"]


async def test_repair_archive_debug_redrive_refuse_bad_input_and_write_nothing(http: Client) -> None:
    wf = unique("wf-ops")
    run_id = await start(http, wf)
    before = await _events(http, wf, run_id)
    for verb in ("repair", "archive"):
        control_error(await http.post(f"/api/workflows/{wf}/{verb}", content=b"{", headers={**CP, **JSON}), 400, "malformed_json")
        control_error(await http.post(f"/api/workflows/{unique('ghost')}/{verb}", json={}, headers=CP), 404, "instance_not_found")
    validation_fields(control_error(await http.post(f"/api/workflows/{wf}/archive", json={"reason": 5}, headers=CP), 422,
                                    "validation_failed"), "reason")
    validation_fields(control_error(await http.post(f"/api/workflows/{wf}/repair", json={"request_id": "x" * 256}, headers=CP),
                                    422, "validation_failed"), "request_id")
    out = control_error(await http.post(f"/api/workflows/{wf}/archive", json={}, headers=CP), 409, "run_not_closed")
    assert out["outcome"] == "rejected_run_not_closed"
    redrive = f"/api/workflows/{wf}/runs/{run_id}/redrive"
    control_error(await http.post(redrive, json={}, headers=CP), 409, "run_not_redrivable")
    validation_fields(control_error(await http.post(redrive, json={"request_id": 7}, headers=CP), 422, "validation_failed"),
                      "request_id")
    control_error(await http.post(f"/api/workflows/{wf}/runs/{fake_run_id()}/redrive", json={}, headers=CP), 404, "run_not_found")
    control_error(await http.get(f"/api/workflows/{unique('ghost')}/debug", headers=CP), 404, "instance_not_found")
    control_error(await http.get(f"/api/workflows/{wf}/runs/{fake_run_id()}/debug", headers=CP), 404, "run_not_found")
    validation_fields(control_error(await http.get(f"/api/workflows/{wf}/debug", params={"include_last_event_payload": "x"},
                                                   headers=CP), 422, "validation_failed"), "include_last_event_payload")
    ns = unique("ns-ops")
    assert (await http.post("/api/namespaces", json={"name": ns}, headers=CP)).status_code == 201
    for verb in ("repair", "archive"):
        control_error(await http.post(f"/api/workflows/{wf}/{verb}", json={}, headers={**CP, "X-Namespace": ns}), 404,
                      "instance_not_found")
    control_error(await http.post(redrive, json={}, headers={**CP, "X-Namespace": ns}), 404, "instance_not_found")
    too_large(control_error(await http.post(f"/api/workflows/{wf}/archive", json={"reason": "x" * (LIMIT + 1)}, headers=CP),
                            413, "payload_too_large"))
    assert await _events(http, wf, run_id) == before, "nothing was recorded"


async def test_repair_is_needed_only_when_a_run_lacks_progress(http: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    t = await lease_task(http)
    r = await http.post(f"/api/workflows/{t.workflow_id}/repair", json={}, headers=CP)
    assert r.status_code == 200 and r.json()["outcome"] == "repair_not_needed", r.text
    debug = (await http.get(f"/api/workflows/{t.workflow_id}/debug", headers=CP)).json()
    assert debug["diagnostic_status"] == "healthy" and debug["pending_workflow_tasks"][0]["lease_owner"] == t.worker_id
    monkeypatch.setattr("actors.decide_operator.REDISPATCH_AFTER_SECONDS", -3600.0)  # as if the lease ran out long ago
    fail = await http.post(f"/api/worker/workflow-tasks/{t.task_id}/fail", json={**t.lease(), "failure": {"message": "x"}}, headers=WP)
    assert fail.status_code == 200
    r = await http.post(f"/api/workflows/{t.workflow_id}/repair", json={}, headers=CP)
    assert r.status_code == 200 and r.json()["outcome"] == "repair_dispatched" and r.json()["command_id"], r.text
    events = await _events(http, t.workflow_id, t.run_id)
    assert events[-1] == "RepairRequested"
    debug = (await http.get(f"/api/workflows/{t.workflow_id}/debug", params={"include_last_event_payload": "1"}, headers=CP)).json()
    assert debug["execution"]["last_event_payload"]["outcome"] == "repair_dispatched"
    assert debug["execution"]["workflow_task_failures"] == 1


async def test_archive_marks_a_closed_run_once_and_describe_and_export_show_it(http: Client) -> None:
    wf = unique("wf-arch")
    run_id = await start(http, wf)
    assert (await http.post(f"/api/workflows/{wf}/terminate", json={}, headers=CP)).status_code == 200
    described = (await http.get(f"/api/workflows/{wf}", headers=CP)).json()
    assert described["actions"]["can_archive"] is True and described["archived_at"] is None
    first = await http.post(f"/api/workflows/{wf}/archive", json={"reason": "quarterly"}, headers=CP)
    assert first.status_code == 200 and first.json()["outcome"] == "archived", first.text
    again = await http.post(f"/api/workflows/{wf}/archive", json={}, headers=CP)
    assert again.status_code == 200 and again.json()["outcome"] == "archive_not_needed"
    events = await _events(http, wf, run_id)
    assert events[-2:] == ["ArchiveRequested", "WorkflowArchived"] and events.count("WorkflowArchived") == 1
    described = (await http.get(f"/api/workflows/{wf}", headers=CP)).json()
    assert described["status"] == "terminated" and described["actions"]["can_archive"] is False
    assert described["archived_at"] == first.json()["archived_at"]
    export = (await http.get(f"/api/workflows/{wf}/runs/{run_id}/history/export", headers=CP)).json()
    assert export["workflow"]["archived_at"] == first.json()["archived_at"] and export["workflow"]["archive_reason"] == "quarterly"


async def test_redrive_copies_the_completed_steps_and_offers_only_the_failed_one_again(http: Client) -> None:
    t, _ = await _fail_on_activity(http)
    old = await _events(http, t.workflow_id, t.run_id)
    assert old[-1] == "WorkflowFailed"
    url = f"/api/workflows/{t.workflow_id}/runs/{t.run_id}/redrive"
    r = await http.post(url, json={"request_id": "rd-1"}, headers=CP)
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["outcome"] == "redriven" and receipt["redriven_from_run_id"] == t.run_id and receipt["run_id"] != t.run_id
    again = await http.post(url, json={"request_id": "rd-1"}, headers=CP)
    assert again.status_code == 200 and again.json()["run_id"] == receipt["run_id"], "the same receipt"
    control_error(await http.post(url, json={"request_id": "rd-2"}, headers=CP), 409, "selected_run_not_current")
    new = receipt["run_id"]
    events = (await http.get(f"/api/workflows/{t.workflow_id}/runs/{new}/history", headers=CP)).json()["events"]
    kinds = [e["event_type"] for e in events]
    assert kinds[0] == "WorkflowStarted" and events[0]["payload"]["redriven_from_run_id"] == t.run_id
    assert "ActivityFailed" not in kinds and "WorkflowFailed" not in kinds and kinds.count("ActivityCompleted") == 1
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1)), "dense sequences"
    assert await _events(http, t.workflow_id, t.run_id) == old, "the failed run is left as it was"
    described = (await http.get(f"/api/workflows/{t.workflow_id}", headers=CP)).json()
    assert described["run_id"] == new and described["run_number"] == 2 and described["status"] in ("pending", "running")
    poll = await http.post("/api/worker/activity-tasks/poll", json={"worker_id": t.worker_id, "task_queue": t.task_queue,
                                                                    "timeout_seconds": 1}, headers=WP)
    task = poll.json()["task"]
    assert task["run_id"] == new and task["activity_type"] == "b" and task["attempt_number"] == 1, "only the failed step again"


async def _running_activity(http: Client) -> tuple[Leased, dict[str, Any]]:
    t = await lease_task(http)
    assert (await complete(http, t, [{"type": "schedule_activity", "activity_type": "a", "arguments": ENV}])).status_code == 200
    poll = await http.post("/api/worker/activity-tasks/poll", json={"worker_id": t.worker_id, "task_queue": t.task_queue,
                                                                    "timeout_seconds": 1}, headers=WP)
    assert poll.json()["server_time"].endswith("Z"), "the instant the claim's lease is measured from"
    return t, poll.json()["task"]


async def test_deregistration_releases_activity_leases_and_refuses_stale_tokens(http: Client) -> None:
    t, task = await _running_activity(http)
    url = f"/api/worker/registrations/{t.worker_id}/deregister"
    for body, field in (({}, "registration_token"), ({"registration_token": "ABC"}, "registration_token"),
                        ({"registration_token": "g" * 32}, "registration_token")):
        validation_fields(worker_error(await http.post(url, json=body, headers=WP), 422, "validation_failed"), field)
    worker_error(await http.post(url, json={"registration_token": "0" * 32}, headers=WP), 409, "registration_token_mismatch")
    worker_error(await http.post(f"/api/worker/registrations/{unique('ghost')}/deregister", json={"registration_token": "0" * 32},
                                 headers=WP), 404, "worker_not_found")
    again = await http.post("/api/worker/register", json={"worker_id": t.worker_id, "task_queue": t.task_queue, "runtime": "python"},
                            headers=WP)
    token = again.json()["registration_token"]
    done = await http.post(url, json={"registration_token": token}, headers=WP)
    assert done.status_code == 200 and done.json()["recovered_activity_task_count"] == 1, done.text
    assert (await http.post(url, json={"registration_token": token}, headers=WP)).json() == done.json(), "the same receipt"
    late = await http.post(f"/api/worker/activity-tasks/{task['task_id']}/complete", headers=WP,
                           json={"activity_attempt_id": task["activity_attempt_id"], "lease_owner": t.worker_id, "result": ENV})
    worker_error(late, 409, "stale_attempt")
    await register(http, "w2", t.task_queue)
    retry = await http.post("/api/worker/activity-tasks/poll", json={"worker_id": "w2", "task_queue": t.task_queue, "timeout_seconds": 1},
                            headers=WP)
    assert retry.json()["task"]["attempt_number"] == 2, "another worker takes it at once, not after the lease"


async def test_renew_lease_and_query_status_refuse_what_they_must(http: Client) -> None:
    t, task = await _running_activity(http)
    url = f"/api/worker/activity-tasks/{task['task_id']}/renew-lease"
    body = {"activity_attempt_id": task["activity_attempt_id"], "lease_owner": t.worker_id}
    ok = await http.post(url, json=body, headers=WP)
    assert ok.status_code == 200 and ok.json()["lease_renewed"] is True and ok.json()["heartbeat_recorded"] is False, ok.text
    assert ok.json()["lease_expires_at"] >= task["lease_expires_at"] and ok.json()["workflow_task_id"] == task["task_id"]
    worker_error(await http.post(url, content=b"{", headers={**WP, **JSON}), 400, "malformed_json")
    validation_fields(worker_error(await http.post(url, json={"lease_owner": "w"}, headers=WP), 422, "validation_failed"),
                      "activity_attempt_id")
    worker_error(await http.post(url, json={**body, "lease_owner": "intruder"}, headers=WP), 409, "lease_owner_mismatch")
    worker_error(await http.post(url, json={**body, "activity_attempt_id": f"{task['task_id']}.9"}, headers=WP), 404,
                 "attempt_not_found")
    worker_error(await http.post(f"/api/worker/activity-tasks/{fake_run_id()}-a1/renew-lease", json=body, headers=WP), 404,
                 "task_not_found")
    assert (await http.post(f"/api/workflows/{t.workflow_id}/terminate", json={}, headers=CP)).status_code == 200
    closed = worker_error(await http.post(url, json=body, headers=WP), 409, "run_terminated")
    assert closed["lease_renewed"] is False and closed["can_continue"] is False and closed["cancel_requested"] is True
    status = f"/api/worker/query-tasks/{fake_run_id()}/status"
    worker_error(await http.get(status, params={"lease_owner": "w", "query_task_attempt": "1"}, headers=WP), 404, "query_task_not_found")
    for params, field in (({"query_task_attempt": "1"}, "lease_owner"), ({"lease_owner": "w"}, "query_task_attempt"),
                          ({"lease_owner": "w", "query_task_attempt": "0"}, "query_task_attempt")):
        validation_fields(worker_error(await http.get(status, params=params, headers=WP), 422, "validation_failed"), field)


async def test_system_metric_views_count_what_the_node_holds(http: Client) -> None:
    t = await lease_task(http)
    fail = await http.post(f"/api/worker/workflow-tasks/{t.task_id}/fail", json={**t.lease(), "failure": {"message": "boom"}}, headers=WP)
    assert fail.status_code == 200
    await start(http, unique("wf-idle"), "nobody-polls")
    job = await http.post("/api/activities", json={**JOB, "activity_id": unique("job")}, headers=CP)
    assert job.status_code == 201
    metrics = (await http.get("/api/system/metrics", headers=CP)).json()
    failing = metrics["metrics"]["dw_workflow_task_consecutive_failures"]
    assert failing["failed_task_count"] == 1 and failing["by_workflow_type"] == [
        {"workflow_type": "bad_input.t", "max_consecutive_failures": 1, "failed_task_count": 1}]
    assert metrics["metrics"]["dw_projection_drift_total"]["total"] == 0 and metrics["namespace"] == "default"
    ops = (await http.get("/api/system/operator-metrics", headers=CP)).json()["operator_metrics"]
    assert ops["runs"]["open"] == 3 and ops["runs"]["workflow_task_failing"] == 1
    assert ops["tasks"]["ready"] == 3, "two workflow tasks (one backing off) and the job's activity"
    assert ops["activities"]["open"] == 1 and ops["activities"]["pending"] == 1
    assert ops["workers"]["active_workers"] == 1 and ops["worker_sessions"]["total"] == 0
    assert set(ops) >= {"runs", "tasks", "backlog", "repair", "workers", "backend", "schedules", "activities", "repair_policy",
                        "sticky_execution", "worker_sessions"}
    ns = unique("ns-m")
    assert (await http.post("/api/namespaces", json={"name": ns}, headers=CP)).status_code == 201
    other = (await http.get("/api/system/operator-metrics", headers={**CP, "X-Namespace": ns})).json()["operator_metrics"]
    assert other["runs"]["open"] == 0 and other["tasks"]["ready"] == 0, "another namespace sees none of it"


async def _register_build(http: Client, worker_id: str, queue: str, build: str | None) -> None:
    body = {"worker_id": worker_id, "task_queue": queue, "runtime": "python", **({"build_id": build} if build else {})}
    assert (await http.post("/api/worker/register", json=body, headers=WP)).status_code == 201


async def _poll(http: Client, worker_id: str, queue: str, timeout: float = 0.3, **extra: Any) -> dict[str, Any]:
    r = await http.post("/api/worker/workflow-tasks/poll", json={"worker_id": worker_id, "task_queue": queue, "timeout_seconds": timeout,
                                                                 **extra}, headers=WP)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_build_ids_pin_runs_drain_cohorts_and_promote_new_starts(http: Client) -> None:
    q = unique("tq-build")
    await _register_build(http, "old", q, "v1")
    await _register_build(http, "new", q, "v2")
    await _register_build(http, "plain", q, None)
    wf = unique("wf-v2")
    r = await http.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t", "task_queue": q, "build_id": "v2"}, headers=CP)
    assert r.status_code == 201
    assert (await http.get(f"/api/workflows/{wf}", headers=CP)).json()["compatibility"] == "v2"
    assert (await _poll(http, "old", q))["task"] is None and (await _poll(http, "plain", q))["task"] is None, "pinned to v2"
    assert (await _poll(http, "new", q))["task"]["workflow_id"] == wf
    promoted = await http.post(f"/api/task-queues/{q}/build-ids/promote", json={"build_id": "v1"}, headers=CP)
    assert promoted.status_code == 200 and promoted.json()["new_start_selected"] is True, promoted.text
    wf1 = unique("wf-promoted")
    await http.post("/api/workflows", json={"workflow_id": wf1, "workflow_type": "t", "task_queue": q}, headers=CP)
    assert (await http.get(f"/api/workflows/{wf1}", headers=CP)).json()["compatibility"] == "v1", "new starts follow the promotion"
    drained = await http.post(f"/api/task-queues/{q}/build-ids/drain", json={"build_id": "v1"}, headers=CP)
    assert drained.json()["drain_intent"] == "draining" and drained.json()["drained_at"] and not drained.json()["new_start_selected"]
    held = await _poll(http, "old", q)
    assert held == {**held, "task": None, "poll_status": "draining"}
    again = await http.post(f"/api/task-queues/{q}/build-ids/drain", json={"build_id": "v1"}, headers=CP)
    assert again.json()["drained_at"] == drained.json()["drained_at"], "a repeated drain keeps the first drained_at"
    rollout = (await http.get(f"/api/task-queues/{q}/build-ids", headers=CP)).json()
    by_build = {c["build_id"]: c for c in rollout["build_ids"]}
    assert set(by_build) == {"v1", "v2", None} and by_build["v1"]["rollout_status"] == "draining"
    assert by_build["v2"]["active_worker_count"] == 1 and by_build[None]["total_worker_count"] == 1
    assert [c["rollout_status"] for c in rollout["build_ids"]][-1] == "draining", "active cohorts first"
    resumed = await http.post(f"/api/task-queues/{q}/build-ids/resume", json={"build_id": "v1"}, headers=CP)
    assert resumed.json()["drain_intent"] == "active" and resumed.json()["drained_at"] is None and resumed.json()["rolled_back_at"]
    assert (await _poll(http, "old", q))["task"]["workflow_id"] == wf1, "resumed: the v1 run goes to the v1 worker"


async def test_build_id_routes_and_polls_refuse_bad_input(http: Client) -> None:
    q = unique("tq-build")
    await _register_build(http, "w1", q, "v1")
    worker_error(await http.post("/api/worker/workflow-tasks/poll", json={"worker_id": "w1", "task_queue": q, "timeout_seconds": 0,
                                                                          "build_id": "v9"}, headers=WP), 409, "build_id_mismatch")
    url = f"/api/task-queues/{q}/build-ids/drain"
    for body, field in (({}, "build_id"), ({"build_id": "x" * 256}, "build_id"), ({"build_id": 7}, "build_id")):
        validation_fields(control_error(await http.post(url, json=body, headers=CP), 422, "validation_failed"), field)
    control_error(await http.post(url, content=b"{", headers={**CP, **JSON}), 400, "malformed_json")
    assert (await http.post(f"/api/task-queues/{q}/build-ids/explode", json={"build_id": None}, headers=CP)).status_code == 404
    validation_fields(control_error(await http.post("/api/workflows", json={"workflow_type": "t", "build_id": 5}, headers=CP), 422,
                                    "validation_failed"), "build_id")
    rollout = (await http.get(f"/api/task-queues/{q}/build-ids", headers=CP)).json()
    assert [c["build_id"] for c in rollout["build_ids"]] == ["v1"] and rollout["build_ids"][0]["drain_intent"] == "active"


REF = {"schema": "durable-workflow.v2.external-payload-reference.v1", "uri": "file:///tmp/x", "sha256": "a" * 64, "size_bytes": 10,
       "codec": "avro"}


async def test_external_storage_policy_and_probe_refuse_bad_input(http: Client, tmp_path: Any) -> None:
    url = "/api/namespaces/default/external-storage"
    for body, field in (({}, "driver"), ({"driver": "ftp"}, "driver"), ({"driver": "local", "threshold_bytes": 0}, "threshold_bytes"),
                        ({"driver": "local", "enabled": "yes"}, "enabled"), ({"driver": "s3", "config": {"region": "r" * 129}},
                                                                               "config.region")):
        validation_fields(control_error(await http.put(url, json=body, headers=CP), 422, "validation_failed"), field)
    control_error(await http.put("/api/namespaces/nowhere/external-storage", json={"driver": "local"}, headers=CP), 404,
                  "namespace_not_found")
    assert (await http.get("/api/namespaces/default", headers=CP)).json()["external_payload_storage"] is None, "nothing was written"
    out = control_error(await http.post("/api/storage/test", json={}, headers=CP), 422, "external_storage_not_configured")
    assert out["status"] == "failed"
    validation_fields(control_error(await http.post("/api/storage/test", json={"small_payload_bytes": 0}, headers=CP), 422,
                                    "validation_failed"), "small_payload_bytes")
    root = tmp_path / "payloads"
    policy = {"driver": "local", "threshold_bytes": 2048, "config": {"uri": root.as_uri(), "bucket": ""}}
    ns = await http.put(url, json=policy, headers=CP)
    assert ns.status_code == 200 and ns.json()["external_payload_storage"] == {
        "driver": "local", "enabled": True, "threshold_bytes": 2048, "config": {"uri": root.as_uri()}}, ns.text
    info = (await http.get("/api/cluster/info", headers=CP)).json()
    assert info["namespace"]["external_payload_storage"]["driver"] == "local"
    manifest = info["namespace"]["external_payload_storage"]
    assert manifest["status"] == "available" and manifest["transport"]["upload"]["path"] == "/api/external-payloads/v1"
    probe = await http.post("/api/storage/test", json={"small_payload_bytes": 10, "large_payload_bytes": 70000}, headers=CP)
    assert probe.status_code == 200 and probe.json()["large_payload"]["bytes"] == 70000, probe.text
    assert probe.json()["small_payload"]["reference_uri"].startswith(root.as_uri())
    assert not any(p.is_file() for p in root.rglob("*")), "the probe deletes what it wrote"
    validation_fields(control_error(await http.post("/api/storage/test", json={"driver": "s3"}, headers=CP), 422,
                                    "validation_failed"), "driver")
    await http.put(url, json={"driver": "gcs", "config": {"bucket": "b"}}, headers=CP)
    gcs = control_error(await http.post("/api/storage/test", json={}, headers=CP), 422, "storage_driver_unavailable")
    assert gcs["supported_diagnostic_drivers"] == ["local", "s3"]
    await http.put(url, json={"driver": "local", "enabled": False, "config": {"uri": str(root)}}, headers=CP)
    control_error(await http.post("/api/storage/test", json={}, headers=CP), 422, "external_storage_disabled")


@pytest.mark.parametrize(("ref", "why"), [
    ({**REF, "schema": "v0"}, "schema"), ({**REF, "sha256": "xyz"}, "sha256"), ({**REF, "size_bytes": -1}, "size_bytes"),
    ({**REF, "uri": ""}, "uri"), ({**REF, "codec": "json"}, "codec"),
])
async def test_malformed_payload_references_are_refused_where_envelopes_are_accepted(http: Client, ref: dict, why: str) -> None:
    wf = unique("wf-ref")
    bad = {"codec": "avro", "external_storage": ref}
    out = control_error(await http.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t", "input": bad}, headers=CP),
                        422, "validation_failed")
    assert why in str(out["errors"]), out
    good = await http.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t", "input": {"codec": "avro", "external_storage": REF}},
                           headers=CP)
    assert good.status_code == 201 and (await http.get(f"/api/workflows/{wf}", headers=CP)).json()["input_envelope"]["external_storage"] == REF
    runtime = {"codec": "avro", "external_payload": {"schema": "x", "reference_id": "ep_1"}}
    control_error(await http.post(f"/api/workflows/{wf}/signal/go", json={"input": runtime}, headers=CP), 422, "validation_failed")
    t = await lease_task(http)
    r = await complete(http, t, [{"type": "schedule_activity", "activity_type": "a", "arguments": bad}])
    assert r.status_code == 422 and why in r.text


async def _register_caps(http: Client, worker_id: str, queue: str, caps: list[str]) -> None:
    body = {"worker_id": worker_id, "task_queue": queue, "runtime": "python", "capabilities": caps}
    assert (await http.post("/api/worker/register", json=body, headers=WP)).status_code == 201


async def _act_poll(http: Client, worker_id: str, queue: str, timeout: float = 0.3) -> dict[str, Any] | None:
    r = await http.post("/api/worker/activity-tasks/poll", json={"worker_id": worker_id, "task_queue": queue, "timeout_seconds": timeout},
                        headers=WP)
    assert r.status_code == 200, r.text
    return r.json()["task"]


async def test_in_session_activities_go_to_the_sessions_holder_one_at_a_time(http: Client) -> None:
    t = await lease_task(http)
    q = t.task_queue
    await _register_caps(http, "gpu-1", q, ["gpu:l4"])
    await _register_caps(http, "cpu-1", q, [])
    session = {"session_id": "model-a", "requirements": ["gpu:l4"], "max_concurrent_activities": 1}
    cmd = {"type": "schedule_activity", "activity_type": "infer", "arguments": ENV, "worker_session": session}
    assert (await complete(http, t, [cmd, {**cmd}])).status_code == 200
    assert await _act_poll(http, "cpu-1", q) is None, "a worker without the requirement never gets it"
    first = await _act_poll(http, "gpu-1", q)
    assert first is not None and first["worker_session"]["session_id"] == "model-a"
    assert first["worker_session"]["lease_owner"] == "gpu-1" and first["worker_session"]["status"] == "active"
    assert await _act_poll(http, "gpu-1", q) is None, "one in-session attempt at a time"
    done = await http.post(f"/api/worker/activity-tasks/{first['task_id']}/complete", headers=WP,
                           json={"activity_attempt_id": first["activity_attempt_id"], "lease_owner": "gpu-1", "result": ENV})
    assert done.status_code == 200
    second = await _act_poll(http, "gpu-1", q)
    assert second is not None and second["task_id"] != first["task_id"], "room again once the first attempt closed"
    beat = await http.post("/api/worker/sessions/model-a/heartbeat", json={"worker_id": "gpu-1", "lease_seconds": 60}, headers=WP)
    assert beat.status_code == 200 and beat.json()["outcome"] == "heartbeat_recorded", beat.text
    assert beat.json()["session"]["active_activity_count"] == 1 and beat.json()["session"]["holder"]["worker_id"] == "gpu-1"
    other = worker_error(await http.post("/api/worker/sessions", json={"worker_id": "cpu-1", **session}, headers=WP), 409,
                         "session_requirements_not_met")
    assert other["admitted"] is False and other["missing_requirements"] == ["gpu:l4"]
    await _register_caps(http, "gpu-2", q, ["gpu:l4"])
    worker_error(await http.post("/api/worker/sessions", json={"worker_id": "gpu-2", **session}, headers=WP), 409,
                 "session_owned_by_another_worker")
    worker_error(await http.post("/api/worker/sessions/model-a/heartbeat", json={"worker_id": "gpu-2"}, headers=WP), 409,
                 "session_owner_mismatch")
    closed = await http.request("DELETE", "/api/worker/sessions/model-a", json={"worker_id": "gpu-1", "reason": "worker_shutdown"},
                                headers=WP)
    assert closed.status_code == 200 and closed.json()["outcome"] == "closed" and closed.json()["session"]["status"] == "closed"
    again = await http.request("DELETE", "/api/worker/sessions/model-a", json={"worker_id": "gpu-1"}, headers=WP)
    assert again.json()["outcome"] == "already_closed"
    worker_error(await http.post("/api/worker/sessions", json={"worker_id": "gpu-1", **session}, headers=WP), 409, "session_closed")
    metrics = (await http.get("/api/system/operator-metrics", headers=CP)).json()["operator_metrics"]["worker_sessions"]
    assert metrics["total"] == 1 and metrics["closed"] == 1


async def test_session_routes_refuse_bad_input(http: Client) -> None:
    q = unique("tq-s")
    await _register_caps(http, "w1", q, [])
    for body, field in (({"session_id": "s"}, "worker_id"), ({"worker_id": "w1"}, "session_id"),
                        ({"worker_id": "w1", "session_id": "s", "lease_seconds": 0}, "lease_seconds"),
                        ({"worker_id": "w1", "session_id": "s", "requirements": ["a", "a"]}, "requirements")):
        validation_fields(worker_error(await http.post("/api/worker/sessions", json=body, headers=WP), 422, "validation_failed"), field)
    worker_error(await http.post("/api/worker/sessions", json={"worker_id": "ghost", "session_id": "s"}, headers=WP), 412,
                 "worker_not_registered")
    worker_error(await http.post("/api/worker/sessions", json={"worker_id": "w1", "session_id": "s", "queue": "elsewhere"}, headers=WP),
                 409, "session_queue_mismatch")
    worker_error(await http.post("/api/worker/sessions/none/heartbeat", json={"worker_id": "w1"}, headers=WP), 404, "session_not_found")
    created = await http.post("/api/worker/sessions", json={"worker_id": "w1", "session_id": "s"}, headers=WP)
    assert created.status_code == 201 and created.json()["outcome"] == "created", created.text
    reused = await http.post("/api/worker/sessions", json={"worker_id": "w1", "session_id": "s"}, headers=WP)
    assert reused.status_code == 200 and reused.json()["outcome"] == "reused"
    t = await lease_task(http)
    bad = {"type": "schedule_activity", "activity_type": "a", "arguments": ENV, "worker_session": {"session_id": ""}}
    r = await complete(http, t, [bad])
    assert r.status_code == 422 and "worker_session.session_id" in r.text


async def test_the_runtime_transport_stores_fetches_and_refuses(http: Client, tmp_path: Any) -> None:
    import base64
    import hashlib

    data = base64.b64encode(b"\x00" * 3000)
    digest = hashlib.sha256(data).hexdigest()
    head = {**WP, "Content-Type": "application/octet-stream", "X-Durable-Workflow-Payload-Codec": "avro",
            "X-Durable-Workflow-Payload-Size": str(len(data)), "X-Durable-Workflow-Payload-SHA256": digest}
    url = "/api/external-payloads/v1"
    unavailable = await http.post(url, content=data, headers=head)
    assert unavailable.status_code == 422 and unavailable.json()["reason"] == "external_payload_unsupported", unavailable.text
    manifest = (await http.get("/api/cluster/info", headers=CP)).json()["namespace"]["external_payload_storage"]
    assert manifest["status"] == "unavailable" and manifest["threshold_bytes"] == LIMIT, "no policy: inline as always"
    assert manifest["direct_provider_adapters"]["enabled"] is True
    await http.put("/api/namespaces/default/external-storage", json={"driver": "local", "config": {"uri": str(tmp_path / "p")}},
                   headers=CP)
    bad = await http.post(url, content=data, headers={**head, "X-Durable-Workflow-Payload-SHA256": "0" * 64})
    assert bad.status_code == 422 and bad.json()["reason"] == "external_payload_integrity_mismatch"
    wrong_codec = await http.post(url, content=data, headers={**head, "X-Durable-Workflow-Payload-Codec": "json"})
    assert wrong_codec.status_code == 422 and wrong_codec.json()["reason"] == "external_payload_unsupported"
    no_plane = {k: v for k, v in head.items() if k != "X-Durable-Workflow-Protocol-Version"}
    assert (await http.post(url, content=data, headers=no_plane)).status_code == 400
    stored = await http.post(url, content=data, headers=head)
    assert stored.status_code == 201, stored.text
    ref = stored.json()["reference"]
    assert ref["sha256"] == digest and ref["size_bytes"] == len(data) and ref["reference_id"].startswith("ep_")
    again = await http.post(url, content=data, headers={**CP, **{k: v for k, v in head.items() if k.startswith("X-Durable-Workflow-Payload")},
                                                      "Content-Type": "application/octet-stream"})
    assert again.json()["reference"] == ref, "content-addressed: the same bytes, the same reference"
    fetched = await http.get(f"{url}/{ref['reference_id']}", headers=WP)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["X-Durable-Workflow-Payload-SHA256"] == digest and fetched.headers["X-Durable-Workflow-Payload-Size"] == str(len(data))
    missing = await http.get(f"{url}/ep_{'0' * 26}", headers=WP)
    assert missing.status_code == 404 and missing.json()["reason"] == "external_payload_not_found"
    assert (await http.get(f"{url}/not-a-reference", headers=WP)).status_code == 404
    ns = unique("ns-ep")
    assert (await http.post("/api/namespaces", json={"name": ns}, headers=CP)).status_code == 201
    other = await http.get(f"{url}/{ref['reference_id']}", headers={**WP, "X-Namespace": ns})
    assert other.status_code == 404, "another namespace reads through its own storage, which it does not have"


async def test_a_session_whose_lease_ran_out_stays_with_a_live_holder_still_running_its_activity(
        http: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    t = await lease_task(http)
    q = t.task_queue
    await _register_caps(http, "holder", q, [])
    await _register_caps(http, "other", q, [])
    session = {"session_id": "warm", "lease_seconds": 1}
    cmd = {"type": "schedule_activity", "activity_type": "a", "arguments": ENV, "worker_session": session}
    assert (await complete(http, t, [cmd, {**cmd}])).status_code == 200
    first = await _act_poll(http, "holder", q)
    assert first is not None
    import runtime.worker_sessions as ws

    real = ws.status
    monkeypatch.setattr(ws, "status", lambda s, now, live: real(s, now + 5, live))  # as if its 1 s lease had run out
    assert await _act_poll(http, "other", q) is None, "the holder still runs one of the session's attempts"
    taken = worker_error(await http.post("/api/worker/sessions", json={"worker_id": "other", **session}, headers=WP), 409,
                         "session_owned_by_another_worker")
    assert taken["session"]["status"] == "expired"
    done = await http.post(f"/api/worker/activity-tasks/{first['task_id']}/complete", headers=WP,
                           json={"activity_attempt_id": first["activity_attempt_id"], "lease_owner": "holder", "result": ENV})
    assert done.status_code == 200
    second = await _act_poll(http, "other", q)
    assert second is not None and second["worker_session"]["lease_owner"] == "other", "reacquired once nothing of it runs"
