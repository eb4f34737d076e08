"""Schedules through the official SDK: cron, interval, pause/resume, trigger, backfill, delete."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from durable_workflow import Client
from durable_workflow.client import ScheduleAction, ScheduleSpec

from . import workflows as wf
from .harness import await_until, run, unique, wait_until, with_worker

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def test_a_cron_schedule_triggered_paused_resumed_backfilled_and_deleted(server_url: str) -> None:
    tq = unique("tq")
    sid = f"nightly-{uuid.uuid4().hex[:8]}"

    async def body(client: Client) -> tuple:
        action = ScheduleAction(workflow_type="one_activity", task_queue=tq, input=["Cron"])
        await client.create_schedule(schedule_id=sid, spec=ScheduleSpec(cron_expressions=["0 3 * * *"], timezone="Europe/Paris"), action=action, note="nightly")
        described = await client.describe_schedule(sid)
        triggered = await client.trigger_schedule(sid)
        first = await client.get_workflow_handle(triggered.workflow_id).result(timeout=30)
        await client.pause_schedule(sid, note="maintenance")
        paused = await client.describe_schedule(sid)
        while_paused = await client.trigger_schedule(sid)
        await client.resume_schedule(sid)
        # a window of three nightly occurrences in the past
        filled = await client.backfill_schedule(sid, start_time="2026-04-20T00:00:00Z", end_time="2026-04-23T00:00:00Z", overlap_policy="allow_all")
        results = [await client.get_workflow_handle(r["workflow_id"]).result(timeout=30) for r in filled.results if r.get("workflow_id")]
        listed = await client.list_schedules(status="active")
        await client.delete_schedule(sid)
        history = await client.get_schedule_history(sid)
        return described, triggered, first, paused, while_paused, filled, results, listed, history

    described, triggered, first, paused, while_paused, filled, results, listed, history = run(
        with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body)
    )
    assert described.status == "active" and described.note == "nightly"
    assert triggered.outcome == "triggered" and first == "hello, Cron"
    assert paused.status == "paused" and paused.note == "maintenance"
    assert while_paused.outcome == "skipped" and while_paused.reason == "status_not_triggerable"
    assert filled.fires_attempted == 3 and [r["fire_time"][:16] for r in filled.results] == [
        "2026-04-20T01:00", "2026-04-21T01:00", "2026-04-22T01:00"]  # 03:00 in Paris (CEST)
    assert results == ["hello, Cron"] * 3  # each run got the schedule's input
    assert sid in [s.schedule_id for s in listed.schedules]
    kinds = [e.event_type for e in history.events]
    assert kinds[0] == "ScheduleCreated" and kinds[-1] == "ScheduleDeleted"
    assert kinds.count("ScheduleTriggered") == 4 and "SchedulePaused" in kinds and "ScheduleResumed" in kinds
    with httpx.Client(base_url=server_url, headers=CP) as http:
        assert http.get(f"/api/schedules/{sid}").status_code == 404  # deleted: only its history remains
        run_id = http.get(f"/api/workflows/{triggered.workflow_id}").json()["run_id"]
        events = http.get(f"/api/workflows/{triggered.workflow_id}/runs/{run_id}/history").json()["events"]
        started = next(e for e in events if e["event_type"] == "WorkflowStarted")["payload"]
        assert started["schedule_id"] == sid and started["schedule_trigger_number"] == 1, started
        assert started["schedule_cron_expression"] == "0 3 * * *" and started["schedule_timezone"] == "Europe/Paris"
        assert started["schedule_occurrence_time"].endswith("Z"), "the run carries the occurrence that started it"
        backfilled = filled.results[0]["workflow_id"]
        run_id = http.get(f"/api/workflows/{backfilled}").json()["run_id"]
        events = http.get(f"/api/workflows/{backfilled}/runs/{run_id}/history").json()["events"]
        started = next(e for e in events if e["event_type"] == "WorkflowStarted")["payload"]
        assert started["schedule_occurrence_time"].startswith("2026-04-20T01:00") and started["schedule_backfill"] is True


def test_an_interval_schedule_fires_on_its_own(server_url: str) -> None:
    tq = unique("tq")
    sid = f"every-{uuid.uuid4().hex[:8]}"

    async def body(client: Client) -> list:
        await client.create_schedule(
            schedule_id=sid, spec=ScheduleSpec(intervals=[{"every": "PT1S"}]),
            action=ScheduleAction(workflow_type="one_activity", task_queue=tq, input=["Tick"]), overlap_policy="allow_all", max_runs=2,
        )
        seen: list[str] = []

        async def deleted_after_max_runs() -> object:
            history = await client.get_schedule_history(sid)
            seen[:] = [e.event_type for e in history.events]
            return history if "ScheduleDeleted" in seen else None

        try:
            history = await await_until(deleted_after_max_runs, timeout=20,
                                        what=f"schedule {sid} fired max_runs=2 times and deleted itself")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its history so far: {seen}") from None
        runs = [e for e in history.events if e.event_type == "ScheduleTriggered"]
        return [e.event_type for e in history.events], [await client.get_workflow_handle(e.workflow_instance_id).result(timeout=30) for e in runs]

    kinds, results = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert kinds == ["ScheduleCreated", "ScheduleTriggered", "ScheduleTriggered", "ScheduleDeleted"]  # max_runs=2 then gone
    assert results == ["hello, Tick", "hello, Tick"]


def test_schedule_bad_input(server_url: str) -> None:
    action = {"workflow_type": "one_activity", "task_queue": "nowhere"}
    with httpx.Client(base_url=server_url, headers=CP) as http:
        for spec, reason in (
            ({"cron_expressions": ["61 * * * *"]}, "invalid_cron_expression"),
            ({"cron_expressions": ["@daily"], "timezone": "Mars/Olympus"}, "invalid_timezone"),
            ({}, "invalid_schedule_spec"),
            ({"intervals": [{"every": "often"}]}, "invalid_schedule_spec"),
        ):
            r = http.post("/api/schedules", json={"spec": spec, "action": action})
            assert r.status_code == 422 and r.json()["reason"] == reason, r.text
        assert http.post("/api/schedules", json={"spec": {"cron_expressions": ["@daily"]}}).status_code == 422
        sid = f"dup-{uuid.uuid4().hex[:8]}"
        assert http.post("/api/schedules", json={"schedule_id": sid, "spec": {"cron_expressions": ["@daily"]}, "action": action}).status_code == 201
        dup = http.post("/api/schedules", json={"schedule_id": sid, "spec": {"cron_expressions": ["@daily"]}, "action": action})
        assert dup.status_code == 409 and dup.json()["reason"] == "schedule_already_exists"
        bad_range = http.post(f"/api/schedules/{sid}/backfill", json={"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"})
        assert bad_range.status_code == 422 and bad_range.json()["reason"] == "invalid_time_range"
        assert http.get("/api/schedules", params={"next_page_token": "garbage!"}).json()["reason"] == "malformed_schedule_page_token"
        assert http.get("/api/schedules", params={"query": "x"}).json()["reason"] == "unsupported_schedule_list_filter"
        assert http.get(f"/api/schedules/{sid}/history", params={"after_sequence": "-1"}).json()["reason"] == "invalid_after_sequence"
        assert http.get("/api/schedules/never-was").json()["reason"] == "schedule_not_found"
        updated = http.put(f"/api/schedules/{sid}", json={"spec": {"cron_expressions": ["bad"]}})
        assert updated.status_code == 422 and updated.json()["reason"] == "invalid_cron_expression"
        assert http.delete(f"/api/schedules/{sid}").json()["outcome"] == "deleted"


def _fired(http: httpx.Client, sid: str) -> list[dict]:
    r = http.get(f"/api/schedules/{sid}/history", params={"limit": 500})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if e["event_type"] == "ScheduleTriggered"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_schedule_keeps_firing_after_a_restart_and_catches_up_once(tmp_path, backend: str) -> None:
    """The node stops while fires are due; after the restart the schedule fires once for the
    missed occurrences (recorded in missed_occurrences) and then keeps its pace; no workflow is
    started twice."""
    from .server import ServerProcess
    from .stores import store

    sid = f"restart-{uuid.uuid4().hex[:8]}"
    with store(backend) as dsn:
        port = ServerProcess.free_port()
        server = ServerProcess(tmp_path / "data", port=port, database=dsn)
        server.start()
        try:
            with httpx.Client(base_url=server.url, headers=CP, timeout=30) as http:
                created = http.post("/api/schedules", json={
                    "schedule_id": sid, "spec": {"intervals": [{"every": "PT1S"}]}, "overlap_policy": "allow_all",
                    "action": {"workflow_type": "one_activity", "task_queue": unique("idle"), "input": ["x"]},
                })
                assert created.status_code == 201, created.text
                wait_until(lambda: _fired(http, sid), timeout=30, what="the schedule fired before the stop")
            server.stop()
            # Time is the subject here, and the node under test is another process with the
            # wall clock: the test lets three periods of the PT1S schedule pass while the node is
            # down, so at least two occurrences fall inside the downtime (checked below).
            time.sleep(3.0)  # not synchronisation: the downtime itself
            server = ServerProcess(tmp_path / "data", port=port, database=dsn)
            server.start()
            with httpx.Client(base_url=server.url, headers=CP, timeout=30) as http:

                def caught_up_and_on_pace() -> bool:
                    fired = _fired(http, sid)
                    late = [i for i, e in enumerate(fired) if e["payload"].get("missed_occurrences", 0) >= 2]
                    return bool(late) and len(fired) > late[0] + 1

                wait_until(caught_up_and_on_pace, timeout=30, what="a catch-up fire after the restart, then one on pace")
                http.post(f"/api/schedules/{sid}/pause", json={})
                events = http.get(f"/api/schedules/{sid}/history", params={"limit": 500}).json()["events"]
        finally:
            server.stop()
    fired = [e for e in events if e["event_type"] == "ScheduleTriggered"]
    ids = [e["workflow_instance_id"] for e in fired]
    assert len(ids) == len(set(ids)), ids
    catch_up = [e for e in fired if e["payload"].get("missed_occurrences", 0) >= 2]
    assert len(catch_up) == 1, [(e["payload"]["occurrence_time"], e["payload"].get("missed_occurrences")) for e in fired]
    after = fired[fired.index(catch_up[0]) + 1 :]
    assert len(after) >= 1  # and it keeps firing at its pace afterwards
