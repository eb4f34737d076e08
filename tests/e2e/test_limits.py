"""Configured limits at their boundaries against a real server, and advertised in cluster/info."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .server import ServerProcess

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}
ENV = {
    "DW_MAX_PAYLOAD_BYTES": "2000", "DW_MAX_MEMO_BYTES": "40", "DW_MAX_SEARCH_ATTRIBUTES": "2",
    "DW_MAX_SEARCH_ATTRIBUTE_KEY_LENGTH": "6", "DW_MAX_SEARCH_ATTRIBUTE_VALUE_BYTES": "5", "DW_MAX_OPERATION_NAME_LENGTH": "8",
    "DW_MAX_PENDING_ACTIVITIES": "2", "DW_QUERY_TASK_MAX_PENDING_PER_QUEUE": "1", "DW_QUERY_TASK_TIMEOUT": "3",
    "DW_MAX_HISTORY_EVENTS": "6", "DW_MAX_PARKED_POLLS_PER_QUEUE": "1", "DW_MAX_PENDING_SIGNALS": "5",
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> str:
    server = ServerProcess(tmp_path_factory.mktemp("limits") / "data", env=ENV, port=ServerProcess.free_port())
    server.start()
    yield server.url
    server.stop()


def _start(http: httpx.Client, **extra: object) -> httpx.Response:
    return http.post("/api/workflows", json={"workflow_type": "t", "task_queue": "limits", **extra})


def test_limits_are_advertised(small: str) -> None:
    info = httpx.get(f"{small}/api/cluster/info").json()
    assert info["limits"]["max_payload_bytes"] == 2000 and info["limits"]["max_memo_bytes"] == 40
    assert info["limits"]["max_search_attributes"] == 2 and info["limits"]["max_operation_name_length"] == 8
    assert info["limits"]["max_pending_activities"] == 2 and info["structural_limits"]["pending_activity_count"] == 2
    assert info["limits"]["max_history_events"] == 6 and info["limits"]["max_parked_polls_per_queue"] == 1
    assert info["structural_limits"]["pending_signal_count"] == 5


def test_payload_memo_search_attributes_and_names_at_the_boundary(small: str) -> None:
    with httpx.Client(base_url=small, headers=CP, timeout=30) as http:
        head = b'{"workflow_type":"t","task_queue":"limits"'
        for size, status in ((2000, 201), (2001, 413)):  # JSON whitespace pads the body to the exact size
            body = head + b" " * (size - len(head) - 1) + b"}"
            r = http.post("/api/workflows", content=body, headers={"Content-Type": "application/json"})
            assert len(body) == size and r.status_code == status, (size, r.text)
        assert r.json()["reason"] == "payload_too_large" and r.json()["limit"] == 2000

        memo_at = {"k": "x" * 32}  # {"k":"xxx…"} is exactly 40 bytes of JSON
        assert len(b'{"k":"' + b"x" * 32 + b'"}') == 40
        assert _start(http, memo=memo_at).status_code == 201
        over = _start(http, memo={"k": "x" * 33})
        assert over.status_code == 422 and over.json()["reason"] == "memo_too_large"

        assert _start(http, search_attributes={"Aa": "12345", "Bbbbbb": 1}).status_code == 201
        for attrs, field in (({"A": 1, "B": 2, "C": 3}, "search_attributes"), ({"Abcdefg": 1}, "search_attributes.Abcdefg"),
                             ({"A": "123456"}, "search_attributes.A")):
            r = _start(http, search_attributes=attrs)
            assert r.status_code == 422 and field in r.json()["errors"], r.text

        wid = _start(http).json()["workflow_id"]
        assert http.post(f"/api/workflows/{wid}/signal/{'s' * 8}", json={}).status_code == 202
        long_name = http.post(f"/api/workflows/{wid}/signal/{'s' * 9}", json={})
        assert long_name.status_code == 422 and "signal_name" in long_name.json()["errors"]


def test_pending_activities_and_pending_queries_at_the_boundary(small: str) -> None:
    def activities(n: int) -> list[dict]:
        return [{"type": "schedule_activity", "activity_type": "a", "parallel_group_id": "g", "parallel_group_kind": "activity",
                 "parallel_group_base_sequence": 1, "parallel_group_size": n, "parallel_group_index": i} for i in range(n)]

    with httpx.Client(base_url=small, timeout=30) as http:
        assert http.post("/api/worker/register", headers=WP, json={"worker_id": "lw", "task_queue": "limits", "runtime": "python"}).status_code in (200, 201)
        outcomes = []
        for n in (2, 3):
            wid = _start(httpx.Client(base_url=small, headers=CP)).json()["workflow_id"]
            while True:
                task = http.post("/api/worker/workflow-tasks/poll", headers=WP, json={"worker_id": "lw", "task_queue": "limits", "timeout_seconds": 5}).json()["task"]
                if task["workflow_id"] == wid:
                    break
            r = http.post(f"/api/worker/workflow-tasks/{task['task_id']}/complete", headers=WP,
                          json={"lease_owner": "lw", "workflow_task_attempt": task["workflow_task_attempt"], "commands": activities(n)})
            outcomes.append((r.status_code, r.json().get("reason"), r.json().get("limit_kind")))
        assert outcomes[0][0] == 200
        assert outcomes[1] == (422, "structural_limit_exceeded", "pending_activity_count")

        async def two_queries() -> list[httpx.Response]:
            # Sent together, in no set order: the queue holds one pending query, so whichever
            # arrives first waits for a worker that never answers (504 after the 3 s query
            # timeout) and the other is refused at once (429). Both 504: the limit let two in.
            async with httpx.AsyncClient(base_url=small, headers=CP, timeout=30) as client:
                return list(await asyncio.gather(*(client.post(f"/api/workflows/{wid}/query/q", json={}) for _ in range(2))))

        answers = sorted(asyncio.run(two_queries()), key=lambda r: r.status_code)
        assert [r.status_code for r in answers] == [429, 504], [r.text for r in answers]
        assert answers[0].json()["reason"] == "query_task_queue_full", answers[0].text


def test_history_length_and_parked_polls_at_the_boundary(small: str) -> None:
    with httpx.Client(base_url=small, headers=CP, timeout=30) as http:
        wid = _start(http, task_queue="no-worker-here").json()["workflow_id"]  # StartAccepted, WorkflowStarted
        statuses = [http.post(f"/api/workflows/{wid}/signal/s", json={}).status_code for _ in range(4)]
        assert statuses == [202] * 4  # the fourth brings the history to exactly 6 events
        full = http.post(f"/api/workflows/{wid}/signal/s", json={})
        assert full.status_code == 422 and full.json()["reason"] == "history_limit_exceeded" and full.json()["limit"] == 6
        assert http.post(f"/api/workflows/{wid}/update/u", json={}).json()["reason"] == "history_limit_exceeded"
        assert http.post(f"/api/workflows/{wid}/terminate", json={}).status_code == 200  # closing is always possible

    async def two_polls() -> list[httpx.Response]:
        # Sent together, in no set order: one parks (the queue's one slot; "no task" after its
        # 5 s hold), the other is refused at once. Both 200: the limit let two park.
        async with httpx.AsyncClient(base_url=small, headers=WP, timeout=30) as client:
            await client.post("/api/worker/register", json={"worker_id": "pw", "task_queue": "parked", "runtime": "python"})
            body = {"worker_id": "pw", "task_queue": "parked", "timeout_seconds": 5}
            return list(await asyncio.gather(*(client.post("/api/worker/activity-tasks/poll", json=body) for _ in range(2))))

    parked, refused = sorted(asyncio.run(two_polls()), key=lambda r: r.status_code)
    assert (parked.status_code, parked.json()["task"]) == (200, None), parked.text
    status, body = refused.status_code, refused.json()
    assert status == 429 and body["reason"] == "long_poll_capacity_exhausted", refused.text
    assert (body["task_kind"], body["task_queue"], body["retryable"], body["task"]) == ("activity_task", "parked", True, None)
    assert 0 < body["retry_after_seconds"] <= 60
