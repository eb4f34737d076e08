"""Synchronous worker-plane steps against a real server (httpx): register, start, lease a
workflow task, complete it, read the history. Shared by the e2e tests that need a socket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.api.envelopes import CP, WP, control_error, unique

TIMER_60 = [{"type": "start_timer", "delay_seconds": 60}]  # keeps the run open after completion


def register(c: httpx.Client, worker_id: str, task_queue: str) -> None:
    r = c.post("/api/worker/register", json={"worker_id": worker_id, "task_queue": task_queue, "runtime": "python"}, headers=WP)
    assert r.status_code == 201, r.text


def start(c: httpx.Client, workflow_id: str, task_queue: str | None = None) -> str:
    body: dict[str, Any] = {"workflow_id": workflow_id, "workflow_type": "bad_input.t"}
    if task_queue is not None:
        body["task_queue"] = task_queue
    r = c.post("/api/workflows", json=body, headers=CP)
    assert r.status_code == 201, r.text
    return str(r.json()["run_id"])


def poll_task(c: httpx.Client, worker_id: str, task_queue: str, tries: int = 5) -> dict[str, Any]:
    for _ in range(tries):
        r = c.post(
            "/api/worker/workflow-tasks/poll",
            json={"worker_id": worker_id, "task_queue": task_queue, "timeout_seconds": 1},
            headers=WP,
        )
        assert r.status_code == 200, r.text
        task = r.json()["task"]
        if task is not None:
            return dict(task)
    raise AssertionError(f"no workflow task on {task_queue} after {tries} polls")


def history(c: httpx.Client, workflow_id: str, run_id: str) -> list[tuple[int, str]]:
    r = c.get(f"/api/workflows/{workflow_id}/runs/{run_id}/history", params={"page_size": 1000}, headers=CP)
    assert r.status_code == 200, r.text
    return [(e["sequence"], e["event_type"]) for e in r.json()["events"]]


def assert_no_instance(c: httpx.Client, workflow_id: str) -> None:
    control_error(c.get(f"/api/workflows/{workflow_id}", headers=CP), 404, "instance_not_found")


@dataclass
class Leased:
    worker_id: str
    task_queue: str
    workflow_id: str
    run_id: str
    task_id: str
    attempt: int

    def lease(self, **over: Any) -> dict[str, Any]:
        return {"lease_owner": self.worker_id, "workflow_task_attempt": self.attempt, **over}


def lease_task(c: httpx.Client) -> Leased:
    """Register a worker, start a workflow on its queue and lease the first workflow task."""
    tq, wid, wf = unique("tq-bad"), unique("w-bad"), unique("wf-bad")
    register(c, wid, tq)
    run_id = start(c, wf, tq)
    task = poll_task(c, wid, tq)
    assert task["run_id"] == run_id
    return Leased(wid, tq, wf, run_id, task["task_id"], task["workflow_task_attempt"])


def complete(c: httpx.Client, t: Leased, commands: Any, **over: Any) -> httpx.Response:
    return c.post(f"/api/worker/workflow-tasks/{t.task_id}/complete", json=t.lease(commands=commands, **over), headers=WP)
