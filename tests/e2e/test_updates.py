"""Updates: accepted by the control plane, applied by an update task, answered to the caller."""

from __future__ import annotations

import httpx
import pytest
from durable_workflow import Client
from durable_workflow.errors import UpdateFailed

from . import workflows as wf
from .harness import run, unique, with_worker

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def test_two_updates_return_values_and_are_replayed_in_the_result(server_url: str) -> None:
    tq = unique("tq")

    async def body(client: Client) -> tuple:
        wid = unique("upd")
        handle = await client.start_workflow(workflow_type="inspectable", workflow_id=wid, task_queue=tq, input=["u"])
        first = await client.update_workflow(wid, "push", args=["apple"], wait_for="completed")
        second = await client.update_workflow(wid, "push", args=["pear"], wait_for="completed")
        with pytest.raises(UpdateFailed) as refused:
            await client.update_workflow(wid, "push", args=["bad"], wait_for="completed")
        status = await client.query_workflow(wid, "status")
        accepted = await client.update_workflow(wid, "push", args=["fig"])  # default: wait for acceptance only
        result = await handle.result(timeout=30)
        history = (await client.get_history(wid, handle.run_id, page_size=1000))["events"]
        return first, second, refused.value, accepted, status, result, history

    first, second, refused, accepted, status, result, history = run(
        with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body)
    )
    assert first["outcome"] == "update_completed" and first["result"] == 1 and first["update_status"] == "completed"
    assert second["result"] == 2 and second["update_id"] != first["update_id"]
    assert first["control_plane"]["operation"] == "update"
    assert "bad items are refused" in str(refused)
    assert accepted["update_status"] == "accepted" and accepted["outcome"] is None
    assert status["result"]["items"] == ["apple", "pear"]  # the refused update changed nothing
    assert result == ["apple", "pear", "fig"]  # the workflow finished on the third applied update
    kinds = [e["event_type"] for e in history]
    assert kinds.count("UpdateAccepted") == 4 and kinds.count("UpdateApplied") == 3 and kinds.count("UpdateCompleted") == 4
    failed = [e for e in history if e["event_type"] == "UpdateCompleted" and e["payload"].get("failure_id")]
    assert len(failed) == 1 and "bad items are refused" in failed[0]["payload"]["message"]


def test_update_errors_are_in_the_envelope(server_url: str) -> None:
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        wid = unique("upd-closed")
        http.post("/api/workflows", json={"workflow_type": "inspectable", "workflow_id": wid, "task_queue": unique("none"), "input": ["x"]})
        policy = http.post(f"/api/workflows/{wid}/update/push", json={"wait_policy": "completed"})
        assert policy.status_code == 422 and "Use wait_for" in policy.json()["message"]
        bad_wait = http.post(f"/api/workflows/{wid}/update/push", json={"wait_for": "forever"})
        assert bad_wait.status_code == 422
        # accepted with no worker: the wait times out and says so
        waited = http.post(f"/api/workflows/{wid}/update/push", json={"input": ["a"], "wait_for": "completed", "wait_timeout_seconds": 1})
        assert waited.status_code == 202 and waited.json()["wait_timed_out"] is True and waited.json()["update_status"] == "accepted"
        retried = http.post(f"/api/workflows/{wid}/update/push", json={"input": ["a"], "request_id": "same"})
        again = http.post(f"/api/workflows/{wid}/update/push", json={"input": ["a"], "request_id": "same"})
        assert retried.json()["update_id"] == again.json()["update_id"]
        http.post(f"/api/workflows/{wid}/terminate", json={})
        closed = http.post(f"/api/workflows/{wid}/update/push", json={"input": ["a"]})
        assert closed.status_code == 409 and closed.json()["reason"] == "run_not_active"
        historical = http.post(f"/api/workflows/{wid}/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/update/push", json={})
        assert historical.status_code == 409 and historical.json()["reason"] == "historical_run_command_rejected"
        events = http.get(f"/api/workflows/{wid}/runs/{waited.json()['run_id']}/history", params={"page_size": 1000}).json()["events"]
        assert [e["event_type"] for e in events].count("UpdateAccepted") == 2  # the retry added nothing
