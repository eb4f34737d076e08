"""Operator views: workers and task queues, read through the official SDK's Client."""

from __future__ import annotations

import httpx
import pytest
from durable_workflow import Client

from .harness import run, unique, wait_until

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}


def test_workers_and_task_queues_show_pollers_backlog_and_leases(server_url: str) -> None:
    tq, worker_id = unique("ops"), unique("w")
    with httpx.Client(base_url=server_url, timeout=30) as http:
        reg = http.post("/api/worker/register", headers=WP, json={
            "worker_id": worker_id, "task_queue": tq, "runtime": "python", "sdk_version": "test/1",
            "supported_workflow_types": ["one_activity"], "max_concurrent_workflow_tasks": 4,
        })
        assert reg.status_code in (200, 201), reg.text
        for _ in range(2):
            http.post("/api/workflows", headers=CP, json={"workflow_type": "one_activity", "task_queue": tq, "input": ["x"]})
        leased = http.post("/api/worker/workflow-tasks/poll", headers=WP, json={"worker_id": worker_id, "task_queue": tq, "timeout_seconds": 5})
        task = leased.json()["task"]
        assert task is not None

    async def body() -> tuple:
        async with Client(server_url) as client:
            workers = await client.list_workers(task_queue=tq)
            one = await client.describe_worker(worker_id)
            queue = await client.describe_task_queue(tq)
            queues = await client.list_task_queues()
            return workers, one, queue, queues

    workers, one, queue, queues = run(body())
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        raw = http.get(f"/api/task-queues/{tq}").json()
        missing = http.get(f"/api/workers/{unique('ghost')}")
        gone = http.delete(f"/api/workers/{worker_id}")
        after = http.get("/api/workers", params={"task_queue": tq}).json()
        for wid in {task["workflow_id"]}:
            http.post(f"/api/workflows/{wid}/terminate", json={})
    assert [w.worker_id for w in workers.workers] == [worker_id]
    assert one.worker_id == worker_id
    assert queue.name == tq and [p["worker_id"] for p in raw["pollers"]] == [worker_id]
    assert raw["pollers"][0]["status"] == "active" and raw["pollers"][0]["max_concurrent_workflow_tasks"] == 4
    stats = raw["stats"]
    assert stats["workflow_tasks"] == {"ready_count": 1, "leased_count": 1, "expired_lease_count": 0}
    assert stats["approximate_backlog_count"] == 1 and stats["oldest_ready_task"]["task_type"] == "workflow"
    assert [(lease["task_id"], lease["lease_owner"]) for lease in raw["current_leases"]] == [(task["task_id"], worker_id)]
    assert tq in [q.name for q in queues.task_queues]
    assert missing.status_code == 404 and missing.json()["reason"] == "worker_not_found"
    assert gone.status_code == 200 and gone.json()["outcome"] == "deregistered" and gone.json()["recovered_workflow_task_count"] == 1
    assert after["workers"] == []


def test_system_passes_through_the_sdk(server_url: str) -> None:
    async def body() -> tuple:
        async with Client(server_url) as client:
            return (await client.repair_status(), await client.repair_pass(), await client.activity_timeout_status(),
                    await client.activity_timeout_pass())

    repair, repaired, timeouts, enforced = run(body())
    as_dict = [x if isinstance(x, dict) else vars(x) for x in (repair, repaired, timeouts, enforced)]
    assert as_dict[0]["policy"]["redispatch_after_seconds"] == 3.0 or "candidates" in str(repair)
    assert "dispatched_tasks" in str(repaired) and "expired_count" in str(timeouts) and "processed" in str(enforced)
    with httpx.Client(base_url=server_url, headers=CP, timeout=30) as http:
        assert http.post("/api/system/repair/pass", json={"run_ids": "all"}).status_code == 422
        assert http.get("/api/system/activity-timeouts", params={"limit": "0"}).status_code == 422
        out = http.post("/api/system/activity-timeouts/pass", json={"execution_ids": ["not-expired"]}).json()
        assert out["results"] == [{"execution_id": "not-expired", "outcome": "skipped", "reason": "not_expired"}]


def test_cluster_info_carries_the_task_repair_block_of_the_background_pass(server_url: str) -> None:
    """control-plane §9.1: the repair policy and candidates under ``task_repair``, with the
    background pass's own figures (it runs every few seconds on every node)."""
    with httpx.Client(base_url=server_url, timeout=30) as http:
        seen: dict = {}

        def after_a_background_pass() -> dict | None:
            seen.update(http.get("/api/cluster/info", headers=CP).json()["task_repair"])
            return dict(seen) if seen.get("background_pass", {}).get("passes", 0) >= 1 else None

        try:
            repair = wait_until(after_a_background_pass, timeout=15, interval=0.5,
                                what="cluster/info's task_repair.background_pass counting a first pass")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; task_repair last read: {seen}") from None
        assert repair["policy"]["redispatch_after_seconds"] == 3.0
        assert {"existing_task_candidates", "missing_task_candidates", "total_candidates"} <= set(repair["candidates"])
        assert repair["background_pass"]["passes"] >= 1 and repair["background_pass"]["at"]
        status = http.get("/api/system/repair", headers=CP).json()
        assert status["policy"] == repair["policy"]
