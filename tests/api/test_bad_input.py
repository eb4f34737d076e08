"""Every class of bad input gets the protocol's error envelope — checked in process.

Each test runs a fresh node on its own SQLite journal and sends its requests straight to the
app's ASGI callable (tests/api/harness.py), through the same pipeline hypercorn feeds: the
body-limit guard, the body gate, authentication, version headers, namespace, handler. It checks
that the answer is the plane's error envelope (control-plane spec 1.6-1.9, worker-plane spec
1.2-1.3) with a stable ``reason`` and a non-empty ``message``, that it is never a 5xx, and that
a rejected request wrote nothing (no workflow, no registration, no history event, the task
still leased).

What only a real socket shows (chunked framing, the body limit on the wire, keep-alive after
an early answer) is in tests/e2e/test_bad_input.py.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from .envelopes import (
    CP,
    CP_HEADER,
    JSON,
    LIMIT,
    WP,
    WP_HEADER,
    control_error,
    fake_run_id,
    sized_start,
    too_large,
    unique,
    validation_fields,
    worker_error,
)
from .harness import Client

# --- helpers ---------------------------------------------------------------------------


async def register(c: Client, worker_id: str, task_queue: str) -> None:
    r = await c.post("/api/worker/register", json={"worker_id": worker_id, "task_queue": task_queue, "runtime": "python"}, headers=WP)
    assert r.status_code == 201, r.text


async def start(c: Client, workflow_id: str, task_queue: str | None = None) -> str:
    body: dict[str, Any] = {"workflow_id": workflow_id, "workflow_type": "bad_input.t"}
    if task_queue is not None:
        body["task_queue"] = task_queue
    r = await c.post("/api/workflows", json=body, headers=CP)
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


async def poll_task(c: Client, worker_id: str, task_queue: str, tries: int = 5) -> dict[str, Any]:
    for _ in range(tries):
        r = await c.post(
            "/api/worker/workflow-tasks/poll",
            json={"worker_id": worker_id, "task_queue": task_queue, "timeout_seconds": 1},
            headers=WP,
        )
        assert r.status_code == 200, r.text
        task = r.json()["task"]
        if task is not None:
            return task
    raise AssertionError(f"no workflow task on {task_queue}")


async def history(c: Client, workflow_id: str, run_id: str) -> list[tuple[int, str]]:
    r = await c.get(f"/api/workflows/{workflow_id}/runs/{run_id}/history", params={"page_size": 1000}, headers=CP)
    assert r.status_code == 200, r.text
    return [(e["sequence"], e["event_type"]) for e in r.json()["events"]]


async def assert_no_instance(c: Client, workflow_id: str) -> None:
    control_error(await c.get(f"/api/workflows/{workflow_id}", headers=CP), 404, "instance_not_found")


async def assert_not_registered(c: Client, worker_id: str) -> None:
    r = await c.post("/api/worker/workflow-tasks/poll", json={"worker_id": worker_id, "task_queue": "q", "timeout_seconds": 0},
                     headers=WP)
    worker_error(r, 412, "worker_not_registered")


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


async def lease_task(c: Client, tries: int = 5) -> Leased:
    """Register a worker, start a workflow on its queue and lease the first workflow task."""
    tq, wid, wf = unique("tq-bad"), unique("w-bad"), unique("wf-bad")
    await register(c, wid, tq)
    run_id = await start(c, wf, tq)
    task = await poll_task(c, wid, tq, tries)
    assert task["run_id"] == run_id
    return Leased(wid, tq, wf, run_id, task["task_id"], task["workflow_task_attempt"])


TIMER_60 = [{"type": "start_timer", "delay_seconds": 60}]  # keeps the run open after completion


async def complete(c: Client, t: Leased, commands: Any, **over: Any) -> httpx.Response:
    return await c.post(f"/api/worker/workflow-tasks/{t.task_id}/complete", json=t.lease(commands=commands, **over), headers=WP)


async def wt_call(c: Client, t: Leased, verb: str, **over: Any) -> httpx.Response:
    extra: dict[str, Any] = {
        "complete": {"commands": TIMER_60},
        "fail": {"failure": {"message": "bad input test"}},
        "heartbeat": {},
        "history": {"next_history_page_token": base64.b64encode(b"0").decode()},
    }[verb]
    return await c.post(f"/api/worker/workflow-tasks/{t.task_id}/{verb}", json={**t.lease(), **extra, **over}, headers=WP)


# --- 1. malformed JSON, wrong media type -------------------------------------------------


@pytest.mark.parametrize("raw", [b"{not json", b'{"workflow_type": "t"', b'{"workflow_type": "t"} trailing', b"\xff\xfe"])
async def test_malformed_json_on_control_plane(http: Client, raw: bytes) -> None:
    body = control_error(await http.post("/api/workflows", content=raw, headers={**CP, **JSON}), 400, "malformed_json")
    assert isinstance(body.get("json_error"), str) and body["json_error"]


async def test_malformed_json_on_worker_plane_writes_no_registration(http: Client) -> None:
    wid = unique("w-malformed")
    raw = json.dumps({"worker_id": wid, "task_queue": "q", "runtime": "python"})[:-1].encode()  # missing }
    body = worker_error(await http.post("/api/worker/register", content=raw, headers={**WP, **JSON}), 400, "malformed_json")
    assert body.get("json_error")
    await assert_not_registered(http, wid)


async def test_truncated_start_writes_no_workflow(http: Client) -> None:
    wf = unique("wf-malformed")
    raw = json.dumps({"workflow_id": wf, "workflow_type": "t"})[:-1].encode()  # missing }
    control_error(await http.post("/api/workflows", content=raw, headers={**CP, **JSON}), 400, "malformed_json")
    await assert_no_instance(http, wf)


async def test_malformed_json_on_leased_task_completion(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    raw = b'{"lease_owner": "x", "commands": [{"type": "start_timer",]}'
    r = await http.post(f"/api/worker/workflow-tasks/{t.task_id}/complete", content=raw, headers={**WP, **JSON})
    worker_error(r, 400, "malformed_json")
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
async def test_wrong_content_type_on_control_plane(http: Client, ctype: str | None) -> None:
    wf = unique("wf-415")
    headers = dict(CP)
    if ctype is not None:
        headers["Content-Type"] = ctype
    raw = json.dumps({"workflow_id": wf, "workflow_type": "t"}).encode()
    body = control_error(await http.post("/api/workflows", content=raw, headers=headers), 415, "unsupported_media_type")
    assert body.get("accepted_content_types") == ["application/json", "application/*+json"]
    await assert_no_instance(http, wf)


async def test_wrong_content_type_on_worker_plane(http: Client) -> None:
    wid = unique("w-415")
    raw = json.dumps({"worker_id": wid, "task_queue": "q", "runtime": "python"}).encode()
    r = await http.post("/api/worker/register", content=raw, headers={**WP, "Content-Type": "text/plain"})
    body = worker_error(r, 415, "unsupported_media_type")
    assert body.get("accepted_content_types") == ["application/json", "application/*+json"]
    await assert_not_registered(http, wid)


async def test_json_suffix_media_type_is_accepted(http: Client) -> None:
    wf = unique("wf-plusjson")
    raw = json.dumps({"workflow_id": wf, "workflow_type": "t"}).encode()
    r = await http.post("/api/workflows", content=raw, headers={**CP, "Content-Type": "application/vnd.example+json; charset=utf-8"})
    assert r.status_code == 201, r.text


async def test_body_gate_runs_before_version_check(http: Client) -> None:
    control_error(await http.post("/api/workflows", content=b"{nope", headers=JSON), 400, "malformed_json")
    worker_error(await http.post("/api/worker/register", content=b"{nope", headers=JSON), 400, "malformed_json")


# --- 2. missing or mistyped fields ---------------------------------------------------------


START_CASES = [
    pytest.param({}, "workflow_type", id="missing-workflow_type"),
    pytest.param({"workflow_type": None}, "workflow_type", id="null-workflow_type"),
    pytest.param({"workflow_type": 42}, "workflow_type", id="numeric-workflow_type"),
    pytest.param({"workflow_type": ""}, "workflow_type", id="empty-workflow_type"),
    pytest.param({"workflow_type": "t", "workflow_id": "has space/and?slash"}, "workflow_id", id="bad-workflow_id-chars"),
    pytest.param({"workflow_type": "t", "workflow_id": "a" * 129}, "workflow_id", id="long-workflow_id"),
    pytest.param({"workflow_type": "t", "execution_timeout_seconds": 0}, "execution_timeout_seconds", id="timeout-0"),
    pytest.param({"workflow_type": "t", "execution_timeout_seconds": "5"}, "execution_timeout_seconds", id="timeout-string"),
    pytest.param({"workflow_type": "t", "execution_timeout_seconds": True}, "execution_timeout_seconds", id="timeout-bool"),
    pytest.param({"workflow_type": "t", "run_timeout_seconds": -1}, "run_timeout_seconds", id="run-timeout-negative"),
    pytest.param({"workflow_type": "t", "retry_policy": {"max_attempts": 3}}, "retry_policy", id="forbidden-retry_policy"),
    pytest.param({"workflow_type": "t", "request_id": "r-1"}, "request_id", id="forbidden-request_id"),
    pytest.param({"workflow_type": "t", "idempotency_key": "k"}, "idempotency_key", id="forbidden-idempotency_key"),
    pytest.param({"workflow_type": "t", "workflow_execution_timeout": 5}, "workflow_execution_timeout", id="forbidden-wf-exec-timeout"),
    pytest.param({"workflow_type": "t", "workflow_run_timeout": 5}, "workflow_run_timeout", id="forbidden-wf-run-timeout"),
    pytest.param({"workflow_type": "t", "workflow_task_timeout": 5}, "workflow_task_timeout", id="forbidden-wf-task-timeout"),
    pytest.param({"workflow_type": "t", "duplicate_policy": "reject"}, "duplicate_policy", id="duplicate_policy-reject"),
    pytest.param({"workflow_type": "t", "duplicate_policy": "terminate_existing"}, "duplicate_policy", id="duplicate_policy-terminate"),
    pytest.param({"workflow_type": "t", "memo": "not an object"}, "memo", id="memo-string"),
    pytest.param({"workflow_type": "t", "search_attributes": {"1bad": "x"}}, "search_attributes", id="bad-search-attribute-key"),
    pytest.param({"workflow_type": "t", "input": "not a list"}, "input", id="input-string"),
    pytest.param({"workflow_type": "t", "input": {"codec": "json", "blob": "e30="}}, "input", id="input-unknown-codec"),
]


@pytest.mark.parametrize(("body", "field"), START_CASES)
async def test_start_validation(http: Client, body: dict[str, Any], field: str) -> None:
    # A valid id is added unless the case is about the id, so "no partial write" is checkable.
    wf = unique("wf-422")
    sent = {"workflow_id": wf, **body}
    r = await http.post("/api/workflows", json=sent, headers=CP)
    out = control_error(r, 422, "validation_failed")
    validation_fields(out, field)
    assert any(out["message"].startswith(m) for ms in out["errors"].values() for m in ms), out
    await assert_no_instance(http, wf)


async def test_start_reports_every_forbidden_key(http: Client) -> None:
    r = await http.post("/api/workflows", json={"workflow_type": "t", "retry_policy": {}, "request_id": "x"}, headers=CP)
    out = control_error(r, 422, "validation_failed")
    validation_fields(out, "retry_policy", "request_id")


async def test_start_reports_several_errors(http: Client) -> None:
    r = await http.post("/api/workflows", json={"workflow_type": "", "execution_timeout_seconds": "5", "duplicate_policy": "x"}, headers=CP)
    out = control_error(r, 422, "validation_failed")
    validation_fields(out, "workflow_type", "execution_timeout_seconds", "duplicate_policy")


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"a string"', b"42", b"null"])
async def test_start_body_not_an_object(http: Client, raw: bytes) -> None:
    out = control_error(await http.post("/api/workflows", content=raw, headers={**CP, **JSON}), 422, "validation_failed")
    validation_fields(out)


async def test_list_workflows_bad_query(http: Client) -> None:
    r = await http.get("/api/workflows", params={"page_size": "abc", "status": "zzz"}, headers=CP)
    validation_fields(control_error(r, 422, "validation_failed"), "page_size", "status")


async def test_signal_and_cancel_body_validation(http: Client) -> None:
    wf = unique("wf-cmd")
    await start(http, wf)
    r = await http.post(f"/api/workflows/{wf}/signal/go", json={"input": "not a list"}, headers=CP)
    validation_fields(control_error(r, 422, "validation_failed"), "input")
    r = await http.post(f"/api/workflows/{wf}/cancel", json={"reason": 5}, headers=CP)
    validation_fields(control_error(r, 422, "validation_failed"), "reason")
    r = await http.post(f"/api/workflows/{wf}/signal/%01bad", json={}, headers=CP)
    validation_fields(control_error(r, 422, "validation_failed"), "signal_name")
    r = await http.post(f"/api/workflows/{wf}/signal/{'s' * 300}", json={}, headers=CP)
    validation_fields(control_error(r, 422, "validation_failed"), "signal_name")
    # nothing above was applied: the run is still open and its history only has the start
    describe = (await http.get(f"/api/workflows/{wf}", headers=CP)).json()
    assert describe["status"] in ("pending", "running", "waiting"), describe
    assert [t for _, t in await history(http, wf, describe["run_id"])] == ["StartAccepted", "WorkflowStarted"]


async def test_namespace_create_validation(http: Client) -> None:
    r = await http.post("/api/namespaces", json={"name": "bad name!"}, headers=CP)
    validation_fields(control_error(r, 422, "validation_failed"), "name")
    r = await http.post("/api/namespaces", json={"name": unique("ns"), "retention_days": 0}, headers=CP)
    validation_fields(control_error(r, 422, "validation_failed"), "retention_days")


REGISTER_CASES = [
    pytest.param({"runtime": "python"}, "task_queue", id="missing-task_queue"),
    pytest.param({"task_queue": "q"}, "runtime", id="missing-runtime"),
    pytest.param({"task_queue": 5, "runtime": "python"}, "task_queue", id="numeric-task_queue"),
    pytest.param({"task_queue": "", "runtime": "python"}, "task_queue", id="empty-task_queue"),
    pytest.param({"task_queue": "q", "runtime": "python", "max_concurrent_workflow_tasks": "10"}, "max_concurrent_workflow_tasks",
                 id="string-max-concurrency"),
]


@pytest.mark.parametrize(("body", "field"), REGISTER_CASES)
async def test_register_validation(http: Client, body: dict[str, Any], field: str) -> None:
    wid = unique("w-422")
    out = worker_error(await http.post("/api/worker/register", json={"worker_id": wid, **body}, headers=WP), 422, "validation_failed")
    validation_fields(out, field)
    await assert_not_registered(http, wid)


POLL_CASES = [
    pytest.param({"task_queue": "q"}, "worker_id", id="missing-worker_id"),
    pytest.param({"worker_id": "w"}, "task_queue", id="missing-task_queue"),
    pytest.param({"worker_id": 7, "task_queue": "q"}, "worker_id", id="numeric-worker_id"),
    pytest.param({"worker_id": "w", "task_queue": "q", "history_page_size": 0}, "history_page_size", id="page-size-0"),
]


@pytest.mark.parametrize("kind", ["workflow", "activity"])
@pytest.mark.parametrize(("body", "field"), POLL_CASES)
async def test_poll_validation(http: Client, kind: str, body: dict[str, Any], field: str) -> None:
    out = worker_error(await http.post(f"/api/worker/{kind}-tasks/poll", json={"timeout_seconds": 0, **body}, headers=WP), 422, "validation_failed")
    validation_fields(out, field)


async def test_poll_validation_keys_union_field_by_its_name(http: Client) -> None:
    r = await http.post("/api/worker/workflow-tasks/poll", json={"worker_id": "w", "task_queue": "q", "timeout_seconds": "1"}, headers=WP)
    out = worker_error(r, 422, "validation_failed")
    validation_fields(out, "timeout_seconds")
    assert set(out["errors"]) == {"timeout_seconds"}, out["errors"]


async def test_task_outcome_body_validation(http: Client) -> None:
    t = await lease_task(http)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("complete", {"lease_owner": t.worker_id, "workflow_task_attempt": t.attempt}, "commands"),
        ("complete", {"lease_owner": t.worker_id, "workflow_task_attempt": "1", "commands": TIMER_60}, "workflow_task_attempt"),
        ("complete", {"workflow_task_attempt": t.attempt, "commands": TIMER_60}, "lease_owner"),
        ("complete", {"lease_owner": t.worker_id, "workflow_task_attempt": t.attempt, "commands": []}, "commands"),
        ("complete", {"lease_owner": t.worker_id, "workflow_task_attempt": t.attempt, "commands": {"type": "x"}}, "commands"),
        ("fail", {"lease_owner": t.worker_id, "workflow_task_attempt": t.attempt}, "failure"),
        ("fail", {"lease_owner": t.worker_id, "workflow_task_attempt": t.attempt, "failure": {"message": ""}}, "failure.message"),
        ("heartbeat", {"lease_owner": t.worker_id}, "workflow_task_attempt"),
        ("history", {"lease_owner": t.worker_id, "workflow_task_attempt": t.attempt}, "next_history_page_token"),
    ]
    before = await history(http, t.workflow_id, t.run_id)
    for verb, body, field in cases:
        r = await http.post(f"/api/worker/workflow-tasks/{t.task_id}/{verb}", json=body, headers=WP)
        validation_fields(worker_error(r, 422, "validation_failed"), field)
    r = await wt_call(http, t, "history", next_history_page_token="!!not-base64")
    worker_error(r, 400, "invalid_page_token")
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200


# --- 3. unknown command types in a completion -------------------------------------------------


@pytest.mark.parametrize(
    ("commands", "field"),
    [
        pytest.param([{"type": "no_such_command"}], "commands.0.type", id="unknown-type"),
        pytest.param([{"type": "upsert_memo", "entries": {}}], "commands.0.entries", id="malformed-upsert_memo"),
        pytest.param([{"type": "start_service_operation"}], "commands.0.type", id="ext-start_service_operation"),
        pytest.param([{"delay_seconds": 1}], "commands.0.type", id="missing-type"),
        pytest.param([{"type": 7}], "commands.0.type", id="numeric-type"),
        pytest.param([{"type": "start_timer", "delay_seconds": 1}, {"type": "no_such_command"}], "commands.1.type",
                     id="valid-then-unknown"),
    ],
)
async def test_unknown_command_type_rejects_whole_completion(http: Client, commands: list[Any], field: str) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    out = worker_error(await complete(http, t, commands), 422, "validation_failed")
    validation_fields(out, field)
    # nothing of the rejected completion reached history (not even the valid first command)
    assert await history(http, t.workflow_id, t.run_id) == before
    # the task is still leased to us: heartbeat, then a correct completion succeed
    hb = await wt_call(http, t, "heartbeat")
    assert hb.status_code == 200 and hb.json()["task_status"] == "leased", hb.text
    ok = await complete(http, t, TIMER_60)
    assert ok.status_code == 200, ok.text
    assert ok.json()["outcome"] == "completed"
    after = await history(http, t.workflow_id, t.run_id)
    assert after[: len(before)] == before
    assert [e for _, e in after[len(before) :]] == ["TimerScheduled"]


async def test_command_not_an_object(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    out = worker_error(await complete(http, t, [5]), 422, "validation_failed")
    validation_fields(out)
    assert any(k.startswith("commands.0") for k in out["errors"]), out["errors"]
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200


async def test_terminal_command_not_last_is_invalid_commands(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    r = await complete(http, t, [{"type": "complete_workflow"}, {"type": "start_timer", "delay_seconds": 1}])
    worker_error(r, 409, "invalid_commands")
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200


# --- 4. unknown task ids ---------------------------------------------------------------------

GARBAGE_TASK_IDS = ["garbage", "12345", "-wt1", "ZZZZ-wt1", "01HXA6T0B1C2D3E4F5G6H7J8K9"]
WT_VERBS = ["complete", "fail", "heartbeat", "history"]
ACT_VERBS = ["complete", "fail", "heartbeat"]


def _wt_body(verb: str) -> dict[str, Any]:
    body: dict[str, Any] = {"lease_owner": "w-ghost", "workflow_task_attempt": 1}
    body.update({
        "complete": {"commands": TIMER_60},
        "fail": {"failure": {"message": "ghost"}},
        "heartbeat": {},
        "history": {"next_history_page_token": base64.b64encode(b"0").decode()},
    }[verb])
    return body


def _act_body(verb: str, attempt_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"activity_attempt_id": attempt_id, "lease_owner": "w-ghost"}
    body.update({"complete": {"result": None}, "fail": {"failure": {"message": "ghost"}}, "heartbeat": {}}[verb])
    return body


@pytest.mark.parametrize("verb", WT_VERBS)
@pytest.mark.parametrize("task_id", GARBAGE_TASK_IDS)
async def test_garbage_workflow_task_id(http: Client, verb: str, task_id: str) -> None:
    r = await http.post(f"/api/worker/workflow-tasks/{task_id}/{verb}", json=_wt_body(verb), headers=WP)
    worker_error(r, 404, "task_not_found")


@pytest.mark.parametrize("verb", ACT_VERBS)
@pytest.mark.parametrize("task_id", GARBAGE_TASK_IDS)
async def test_garbage_activity_task_id(http: Client, verb: str, task_id: str) -> None:
    r = await http.post(f"/api/worker/activity-tasks/{task_id}/{verb}", json=_act_body(verb, f"{task_id}.1"), headers=WP)
    worker_error(r, 404, "task_not_found")


async def test_nonexistent_task_ids_on_an_existing_run(http: Client) -> None:
    wf = unique("wf-ghost-task")
    run_id = await start(http, wf)
    before = await history(http, wf, run_id)
    for task_id in (f"{run_id}-wt999", f"{run_id}-wtx", f"{run_id}-a1"):
        for verb in WT_VERBS:
            r = await http.post(f"/api/worker/workflow-tasks/{task_id}/{verb}", json=_wt_body(verb), headers=WP)
            worker_error(r, 404, "task_not_found")
    for task_id in (f"{run_id}-a999", f"{run_id}-wt1"):
        for verb in ACT_VERBS:
            r = await http.post(f"/api/worker/activity-tasks/{task_id}/{verb}", json=_act_body(verb, f"{task_id}.1"), headers=WP)
            worker_error(r, 404, "task_not_found")
    assert await history(http, wf, run_id) == before


@pytest.mark.parametrize("verb", WT_VERBS)
async def test_wellformed_workflow_task_id_of_unknown_run(http: Client, verb: str) -> None:
    r = await http.post(f"/api/worker/workflow-tasks/{fake_run_id()}-wt1/{verb}", json=_wt_body(verb), headers=WP)
    worker_error(r, 404, "task_not_found")


@pytest.mark.parametrize("verb", ACT_VERBS)
async def test_wellformed_activity_task_id_of_unknown_run(http: Client, verb: str) -> None:
    task_id = f"{fake_run_id()}-a1"
    r = await http.post(f"/api/worker/activity-tasks/{task_id}/{verb}", json=_act_body(verb, f"{task_id}.1"), headers=WP)
    worker_error(r, 404, "task_not_found")


@pytest.mark.parametrize("verb", ACT_VERBS)
async def test_unknown_activity_task_wins_over_bad_attempt_id(http: Client, verb: str) -> None:
    wf = unique("wf-ghost-act")
    run_id = await start(http, wf)
    r = await http.post(f"/api/worker/activity-tasks/{run_id}-a999/{verb}", json=_act_body(verb, "not-an-attempt"), headers=WP)
    worker_error(r, 404, "task_not_found")


async def test_task_id_from_another_namespace_is_unknown(http: Client) -> None:
    ns = unique("ns-other")
    r = await http.post("/api/namespaces", json={"name": ns}, headers=CP)
    assert r.status_code == 201, r.text
    t = await lease_task(http)
    r = await http.post(f"/api/worker/workflow-tasks/{t.task_id}/heartbeat", json=t.lease(), headers={**WP, "X-Namespace": ns})
    worker_error(r, 404, "task_not_found")


# --- 5. lease ownership and fencing -----------------------------------------------------------


async def test_wrong_lease_owner_on_every_task_route(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    for verb in WT_VERBS:
        out = worker_error(await wt_call(http, t, verb, lease_owner="w-intruder"), 409, "lease_owner_mismatch")
        assert out.get("lease_owner") == t.worker_id, out
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200


async def test_wrong_attempt_on_every_task_route(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    for verb in WT_VERBS:
        out = worker_error(await wt_call(http, t, verb, workflow_task_attempt=t.attempt + 1), 409, "workflow_task_attempt_mismatch")
        assert out.get("current_attempt") == t.attempt, out
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200


async def test_stale_attempt_after_redelivery(mock_http: Client, mock_clock: trio.testing.MockClock) -> None:
    """Fail attempt 1, get the task again as attempt 2 (after the failure backoff, which the
    mock clock jumps over), then report with the old attempt."""
    http = mock_http
    t = await lease_task(http, tries=30)
    r = await wt_call(http, t, "fail")
    assert r.status_code == 200 and r.json()["outcome"] == "failed", r.text
    task = await poll_task(http, t.worker_id, t.task_queue, tries=30)
    assert task["task_id"] == t.task_id and task["workflow_task_attempt"] == t.attempt + 1, task
    before = await history(http, t.workflow_id, t.run_id)
    out = worker_error(await complete(http, t, TIMER_60), 409, "workflow_task_attempt_mismatch")
    assert out.get("current_attempt") == t.attempt + 1, out
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60, workflow_task_attempt=t.attempt + 1)).status_code == 200


async def test_complete_twice_is_task_not_leased(http: Client) -> None:
    t = await lease_task(http)
    first = await complete(http, t, TIMER_60)
    assert first.status_code == 200, first.text
    after_first = await history(http, t.workflow_id, t.run_id)
    for verb in WT_VERBS:
        worker_error(await wt_call(http, t, verb), 409, "task_not_leased")
    assert await history(http, t.workflow_id, t.run_id) == after_first  # the duplicate scheduled no second timer


async def test_complete_after_run_closed_is_run_closed(http: Client) -> None:
    t = await lease_task(http)
    assert (await complete(http, t, [{"type": "complete_workflow"}])).status_code == 200
    closed = await history(http, t.workflow_id, t.run_id)
    out = worker_error(await complete(http, t, [{"type": "complete_workflow"}]), 409, "run_closed")
    assert out.get("can_continue") is False and out.get("run_status") == "completed", out
    assert await history(http, t.workflow_id, t.run_id) == closed


# --- 6. oversize bodies -----------------------------------------------------------------------


async def test_oversize_start_is_413_and_writes_nothing(http: Client) -> None:
    wf = unique("wf-413")
    raw = sized_start(wf, LIMIT + 1)
    assert len(raw) == LIMIT + 1
    too_large(control_error(await http.request("POST", "/api/workflows", content=raw, headers={**CP, **JSON}), 413, "payload_too_large"))
    await assert_no_instance(http, wf)


async def test_body_at_the_limit_is_not_413(http: Client) -> None:
    wf = unique("wf-at-limit")
    raw = sized_start(wf, LIMIT)
    assert len(raw) == LIMIT
    # exactly the limit passes the body gate; the 2 MiB memo then fails the 256 KiB memo rule
    out = control_error(await http.post("/api/workflows", content=raw, headers={**CP, **JSON}), 422, "memo_too_large")
    validation_fields(out, "memo")
    await assert_no_instance(http, wf)


async def test_oversize_body_streamed_without_length(http: Client) -> None:
    """A body that arrives in pieces with no Content-Length is counted as it comes (the
    RequestGuard in front of the app) and refused past the limit; nothing is written."""
    wf = unique("wf-413-stream")
    raw = sized_start(wf, LIMIT + 4096)
    chunks = [raw[i : i + 65536] for i in range(0, len(raw), 65536)]
    r = await http.stream("POST", "/api/workflows", chunks, headers={**CP, **JSON})
    too_large(control_error(r, 413, "payload_too_large"))
    assert r.headers.get("connection") == "close", dict(r.headers)
    await assert_no_instance(http, wf)


async def test_body_streamed_under_the_limit_is_read(http: Client) -> None:
    wf = unique("wf-stream")
    raw = json.dumps({"workflow_id": wf, "workflow_type": "t"}).encode()
    r = await http.stream("POST", "/api/workflows", [raw[:10], raw[10:]], headers={**CP, **JSON})
    assert r.status_code == 201, r.text


async def test_conflicting_framing_is_refused_unread(http: Client) -> None:
    wf = unique("wf-smuggle")
    raw = json.dumps({"workflow_id": wf, "workflow_type": "t"}).encode()
    headers = {**CP, **JSON, "Content-Length": str(len(raw)), "Transfer-Encoding": "chunked"}
    r = await http.stream("POST", "/api/workflows", [raw], headers=headers)
    control_error(r, 400, "conflicting_framing")
    assert r.headers.get("connection") == "close", dict(r.headers)
    await assert_no_instance(http, wf)


async def test_oversize_worker_plane_body(http: Client) -> None:
    wid = unique("w-413")
    raw = json.dumps({"worker_id": wid, "task_queue": "q", "runtime": "python", "process_metrics": {"pad": "x" * LIMIT}}).encode()
    too_large(worker_error(await http.request("POST", "/api/worker/register", content=raw, headers={**WP, **JSON}), 413, "payload_too_large"))
    await assert_not_registered(http, wid)


async def test_oversize_completion_keeps_task_leased(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    big = [{"type": "record_side_effect", "result": "A" * LIMIT}]
    r = await http.request("POST", f"/api/worker/workflow-tasks/{t.task_id}/complete", json=t.lease(commands=big), headers=WP)
    worker_error(r, 413, "payload_too_large")
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200


async def test_size_gate_runs_first(http: Client) -> None:
    raw = b"x" * (LIMIT + 1)  # not JSON, wrong media type, no version header: 413 still wins
    too_large(control_error(await http.request("POST", "/api/workflows", content=raw, headers={"Content-Type": "text/plain"}), 413,
                             "payload_too_large"))
    too_large(worker_error(await http.request("POST", "/api/worker/register", content=raw, headers={"Content-Type": "text/plain"}), 413,
                            "payload_too_large"))


# --- 7. unknown namespace ---------------------------------------------------------------------


async def test_unknown_namespace_on_control_plane(http: Client) -> None:
    ns = unique("ghost-ns")
    h = {**CP, "X-Namespace": ns}
    wf = unique("wf-ghost-ns")
    for r in (
        await http.get("/api/workflows", headers=h),
        await http.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t"}, headers=h),
        await http.get(f"/api/workflows/{wf}", headers=h),
        await http.post(f"/api/workflows/{wf}/signal/go", json={}, headers=h),
        await http.get("/api/workflows", params={"namespace": ns}, headers=CP),
    ):
        out = control_error(r, 404, "namespace_not_found")
        assert out.get("namespace") == ns, out
    await assert_no_instance(http, wf)  # nothing leaked into the default namespace either


async def test_unknown_namespace_is_lowercased(http: Client) -> None:
    ns = unique("Ghost-NS")
    out = control_error(await http.get("/api/workflows", headers={**CP, "X-Namespace": ns}), 404, "namespace_not_found")
    assert out["namespace"] == ns.lower()


async def test_unknown_namespace_on_worker_plane(http: Client) -> None:
    ns = unique("ghost-ns")
    wid = unique("w-ghost-ns")
    h = {**WP, "X-Namespace": ns}
    for r in (
        await http.post("/api/worker/register", json={"worker_id": wid, "task_queue": "q", "runtime": "python"}, headers=h),
        await http.post("/api/worker/workflow-tasks/poll", json={"worker_id": wid, "task_queue": "q", "timeout_seconds": 0}, headers=h),
        await http.post("/api/worker/activity-tasks/poll", json={"worker_id": wid, "task_queue": "q", "timeout_seconds": 0}, headers=h),
        await http.post("/api/worker/workflow-tasks/garbage/heartbeat", json=_wt_body("heartbeat"), headers=h),
    ):
        out = worker_error(r, 404, "namespace_not_found")
        assert out.get("namespace") == ns, out
    await assert_not_registered(http, wid)


async def test_unknown_namespace_route_for_namespaces(http: Client) -> None:
    ns = unique("ghost-ns")
    assert control_error(await http.get(f"/api/namespaces/{ns}", headers=CP), 404, "namespace_not_found")["namespace"] == ns
    assert control_error(await http.put(f"/api/namespaces/{ns}", json={"retention_days": 5}, headers=CP), 404, "namespace_not_found")


async def test_version_errors_win_over_unknown_namespace(http: Client) -> None:
    ns = unique("ghost-ns")
    control_error(await http.get("/api/workflows", headers={"X-Namespace": ns}), 400, "missing_control_plane_version")
    control_error(await http.get("/api/workflows", headers={CP_HEADER: "2.0", "X-Namespace": ns}), 400, "unsupported_control_plane_version")
    body = {"task_queue": "q", "runtime": "python"}
    worker_error(await http.post("/api/worker/register", json=body, headers={"X-Namespace": ns}), 400, "missing_protocol_version")
    worker_error(await http.post("/api/worker/register", json=body, headers={WP_HEADER: "2.0", "X-Namespace": ns}), 400,
                 "unsupported_protocol_version")


# --- 8. version headers -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
async def test_missing_control_plane_version(http: Client, value: str | None) -> None:
    headers = {} if value is None else {CP_HEADER: value}
    wf = unique("wf-nover")
    for r in (
        await http.get("/api/workflows", headers=headers),
        await http.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t"}, headers=headers),
        await http.get("/api/namespaces", headers=headers),
    ):
        out = control_error(r, 400, "missing_control_plane_version")
        assert out.get("supported_version") == "2" and out.get("requested_version") is None, out
        assert out.get("remediation")
    await assert_no_instance(http, wf)


@pytest.mark.parametrize("value", ["2.0", "1", "3", "v2"])
async def test_unsupported_control_plane_version(http: Client, value: str) -> None:
    wf = unique("wf-badver")
    for r in (
        await http.get("/api/workflows", headers={CP_HEADER: value}),
        await http.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t"}, headers={CP_HEADER: value}),
    ):
        out = control_error(r, 400, "unsupported_control_plane_version")
        assert out.get("supported_version") == "2" and out.get("requested_version") == value, out
    await assert_no_instance(http, wf)


async def test_missing_worker_protocol_version(http: Client) -> None:
    wid = unique("w-nover")
    r = await http.post("/api/worker/register", json={"worker_id": wid, "task_queue": "q", "runtime": "python"})
    out = worker_error(r, 400, "missing_protocol_version")
    assert out.get("supported_version") == "1.20" and out.get("requested_version") is None, out
    r = await http.post("/api/worker/register", json={"worker_id": wid, "task_queue": "q", "runtime": "python"}, headers={WP_HEADER: ""})
    worker_error(r, 400, "missing_protocol_version")
    await assert_not_registered(http, wid)


@pytest.mark.parametrize("value", ["2.0", "2", "0.9", "abc", "1.x"])
async def test_unsupported_worker_protocol_version(http: Client, value: str) -> None:
    wid = unique("w-badver")
    r = await http.post("/api/worker/register", json={"worker_id": wid, "task_queue": "q", "runtime": "python"}, headers={WP_HEADER: value})
    out = worker_error(r, 400, "unsupported_protocol_version")
    assert out.get("supported_version") == "1.20" and out.get("requested_version") == value, out
    await assert_not_registered(http, wid)


@pytest.mark.parametrize("value", ["1", "1.1", "1.19", "1.20"])
async def test_any_worker_protocol_1x_is_accepted(http: Client, value: str) -> None:
    r = await http.post("/api/worker/register", json={"worker_id": unique("w-1x"), "task_queue": "q", "runtime": "python"},
                  headers={WP_HEADER: value})
    assert r.status_code == 201, r.text
    assert r.headers.get(WP_HEADER) == "1.20"


async def test_response_version_headers_on_both_planes(http: Client) -> None:
    both = {**CP, **WP}
    # control plane, success and errors, even when the client also sends the worker header
    for r in (
        await http.get("/api/workflows", headers=both),
        await http.get(f"/api/workflows/{unique('missing')}", headers=both),
        await http.get("/api/no-such-route", headers=both),
        await http.delete("/api/workflows", headers=both),
    ):
        assert r.status_code < 500, r.text
        assert r.headers.get(CP_HEADER) == "2", (r.request.url.path, dict(r.headers))
        assert WP_HEADER not in r.headers, (r.request.url.path, dict(r.headers))
        assert "protocol_version" not in r.json() and "server_capabilities" not in r.json()
    # worker plane, success and errors
    for r in (
        await http.post("/api/worker/register", json={"worker_id": unique("w-hdr"), "task_queue": "q", "runtime": "python"}, headers=both),
        await http.post("/api/worker/workflow-tasks/garbage/heartbeat", json=_wt_body("heartbeat"), headers=WP),
        await http.post("/api/worker/no-such-route", json={}, headers=WP),
        await http.get("/api/worker/register", headers=WP),
        await http.post("/api/worker/register", json={}),
    ):
        assert r.status_code < 500, r.text
        assert r.headers.get(WP_HEADER) == "1.20", (r.request.url.path, dict(r.headers))
        assert CP_HEADER not in r.headers, (r.request.url.path, dict(r.headers))
        assert r.json().get("protocol_version") == "1.20"


# --- 9. unknown routes, wrong methods, unknown workflows and runs ----------------------------------


@pytest.mark.parametrize("path", ["/api/nope", "/api/workflows/a/b/c/d/e", "/api/namespaces/x/y/z"])
async def test_unknown_control_route(http: Client, path: str) -> None:
    control_error(await http.get(path, headers=CP), 404, "not_found")
    control_error(await http.post(path, json={}, headers=CP), 404, "not_found")


@pytest.mark.parametrize("path", ["/api/worker/nope", "/api/worker/workflow-tasks/x/y/complete", "/api/worker"])
async def test_unknown_worker_route(http: Client, path: str) -> None:
    worker_error(await http.post(path, json={}, headers=WP), 404, "not_found")


async def test_unknown_route_needs_no_headers(http: Client) -> None:
    control_error(await http.get("/api/nope"), 404, "not_found")
    worker_error(await http.post("/api/worker/nope", content=b"{bad"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/api/workflows"), ("PUT", "/api/workflows"), ("PATCH", "/api/namespaces"), ("GET", "/api/workflows/x/cancel"),
     ("DELETE", "/api/cluster/info")],
)
async def test_wrong_method_on_control_route(http: Client, method: str, path: str) -> None:
    control_error(await http.request(method, path, headers=CP), 405, "method_not_allowed")


@pytest.mark.parametrize("path", ["/api/health", "/api/ready"])
async def test_wrong_method_on_health_routes_has_version_header(http: Client, path: str) -> None:
    control_error(await http.post(path, json={}, headers=CP), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/worker/register"), ("GET", "/api/worker/workflow-tasks/poll"), ("PUT", "/api/worker/heartbeat"),
     ("GET", "/api/worker/activity-tasks/x/complete")],
)
async def test_wrong_method_on_worker_route(http: Client, method: str, path: str) -> None:
    worker_error(await http.request(method, path, headers=WP), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "suffix", "operation"),
    [("GET", "", "describe"), ("GET", "/runs", "list_runs"), ("POST", "/signal/go", "signal"), ("POST", "/cancel", "cancel"),
     ("POST", "/terminate", "terminate")],
)
async def test_unknown_workflow(http: Client, method: str, suffix: str, operation: str) -> None:
    wf = unique("wf-missing")
    kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
    out = control_error(await http.request(method, f"/api/workflows/{wf}{suffix}", headers=CP, **kwargs), 404, "instance_not_found")
    assert out.get("workflow_id") == wf, out
    assert out.get("control_plane", {}).get("operation") == operation, out
    await assert_no_instance(http, wf)  # a signal/cancel to nothing creates nothing


@pytest.mark.parametrize("run_id", ["garbage", "01HXA6T0B1C2D3E4F5G6H7J8K9"])
async def test_unknown_run(http: Client, run_id: str) -> None:
    wf = unique("wf-runs")
    await start(http, wf)
    for path, op in ((f"/api/workflows/{wf}/runs/{run_id}", "describe_run"), (f"/api/workflows/{wf}/runs/{run_id}/history", "history")):
        out = control_error(await http.get(path, headers=CP), 404, "run_not_found")
        assert out.get("control_plane", {}).get("operation") == op, out


async def test_run_of_another_workflow_is_unknown(http: Client) -> None:
    wf_a, wf_b = unique("wf-a"), unique("wf-b")
    await start(http, wf_a)
    run_b = await start(http, wf_b)
    control_error(await http.get(f"/api/workflows/{wf_a}/runs/{run_b}", headers=CP), 404, "run_not_found")
    control_error(await http.get(f"/api/workflows/{wf_a}/runs/{run_b}/history", headers=CP), 404, "run_not_found")


async def test_command_on_made_up_run_is_historical(http: Client) -> None:
    wf = unique("wf-hist")
    run_id = await start(http, wf)
    out = control_error(await http.post(f"/api/workflows/{wf}/runs/{fake_run_id()}/cancel", json={}, headers=CP), 409,
                        "historical_run_command_rejected")
    assert out.get("target_scope") == "run", out
    assert (await http.get(f"/api/workflows/{wf}", headers=CP)).json()["status"] != "cancelled"
    assert [e for _, e in await history(http, wf, run_id)] == ["StartAccepted", "WorkflowStarted"]


async def test_unknown_worker_heartbeat_and_deregistration(http: Client) -> None:
    wid = unique("w-ghost")
    worker_error(await http.post("/api/worker/heartbeat", json={"worker_id": wid}, headers=WP), 404, "worker_not_registered")
    worker_error(await http.delete(f"/api/worker/registrations/{wid}", headers=WP), 404, "worker_not_found")
    await assert_not_registered(http, wid)


# --- 10. poll preconditions -------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "held"), [(None, 30.0), (600, 60.0), (0, 0.0)])
async def test_empty_poll_is_held_within_bounds(
    mock_http: Client, mock_clock: trio.testing.MockClock, requested: int | None, held: float
) -> None:
    """An empty long poll answers "empty" after the default hold (30 s), at most the maximum
    (60 s), and at once for a zero timeout; measured on the mock clock, which jumps."""
    tq, wid = unique("tq-hold"), unique("w-hold")
    await register(mock_http, wid, tq)
    body: dict[str, Any] = {"worker_id": wid, "task_queue": tq}
    if requested is not None:
        body["timeout_seconds"] = requested
    began = trio.current_time()
    r = await mock_http.post("/api/worker/workflow-tasks/poll", json=body, headers=WP)
    waited = trio.current_time() - began
    assert r.status_code == 200, r.text
    assert r.json()["task"] is None and r.json()["poll_status"] == "empty", r.json()
    assert held <= waited < held + 1.0, waited


@pytest.mark.parametrize("kind", ["workflow", "activity"])
async def test_poll_by_unregistered_worker(http: Client, kind: str) -> None:
    wid = unique("w-unreg")
    r = await http.post(f"/api/worker/{kind}-tasks/poll", json={"worker_id": wid, "task_queue": "q", "timeout_seconds": 0}, headers=WP)
    worker_error(r, 412, "worker_not_registered")


@pytest.mark.parametrize("kind", ["workflow", "activity"])
async def test_poll_on_another_queue(http: Client, kind: str) -> None:
    tq, other, wid = unique("tq-reg"), unique("tq-other"), unique("w-mismatch")
    await register(http, wid, tq)
    wf = unique("wf-mismatch")
    await start(http, wf, other)  # a task is waiting on the other queue; the mismatch must not lease it
    r = await http.post(f"/api/worker/{kind}-tasks/poll", json={"worker_id": wid, "task_queue": other, "timeout_seconds": 1}, headers=WP)
    out = worker_error(r, 409, "task_queue_mismatch")
    assert out.get("registered_task_queue") == tq and out.get("requested_task_queue") == other, out
    # the workflow task on the other queue is still there for its rightful worker
    owner = unique("w-owner")
    await register(http, owner, other)
    assert (await poll_task(http, owner, other))["workflow_id"] == wf


async def test_deregistered_worker_cannot_poll(http: Client) -> None:
    tq, wid = unique("tq-dereg"), unique("w-dereg")
    await register(http, wid, tq)
    r = await http.delete(f"/api/worker/registrations/{wid}", headers=WP)
    assert r.status_code == 200, r.text
    await assert_not_registered(http, wid)


# --- findings that once crashed a handler (the fixture fails a test that logs an error) ----------


async def test_deeply_nested_json_is_not_a_5xx(http: Client) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    control_error(await http.post("/api/workflows", content=raw, headers={**CP, **JSON}), 400, "malformed_json")


async def test_nan_literal_is_malformed_json(http: Client) -> None:
    wf = unique("wf-nan")
    raw = json.dumps({"workflow_id": wf, "workflow_type": "t", "memo": {"x": math.nan}}).encode()
    assert b"NaN" in raw
    r = await http.post("/api/workflows", content=raw, headers={**CP, **JSON})
    control_error(r, 400, "malformed_json")
    await assert_no_instance(http, wf)


@pytest.mark.parametrize("field", ["execution_timeout_seconds", "run_timeout_seconds"])
@pytest.mark.parametrize("value", [10**12, 2**63, 10**30])
async def test_huge_start_timeout_is_not_a_5xx(http: Client, field: str, value: int) -> None:
    wf = unique("wf-huge")
    r = await http.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t", field: value}, headers=CP)
    status = r.status_code
    if status >= 500:
        await assert_no_instance(http, wf)  # at least nothing was committed before the 500
    assert status < 500, r.text
    if status == 422:
        validation_fields(control_error(r, 422, "validation_failed"), field)


async def test_nan_poll_timeout_is_not_a_5xx(http: Client) -> None:
    tq, wid = unique("tq-nan"), unique("w-nan")
    await register(http, wid, tq)
    raw = json.dumps({"worker_id": wid, "task_queue": tq, "timeout_seconds": math.nan}).encode()
    r = await http.post("/api/worker/workflow-tasks/poll", content=raw, headers={**WP, **JSON})
    assert r.status_code < 500, r.text
    assert r.status_code in (400, 422), r.text


@pytest.mark.parametrize(
    "command",
    [
        {"type": "start_timer", "delay_seconds": 10**12},
        {"type": "open_condition_wait", "timeout_seconds": 10**12},
        {"type": "start_child_workflow", "workflow_type": "c", "execution_timeout_seconds": 10**12},
    ],
    ids=["timer", "condition", "child"],
)
async def test_huge_command_delay_is_not_a_5xx(http: Client, command: dict[str, Any]) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    r = await complete(http, t, [{"type": "start_timer", "delay_seconds": 1}, command])
    status, text = r.status_code, r.text
    # whatever the status, the completion was all-or-nothing and the task is still ours
    assert await history(http, t.workflow_id, t.run_id) == before
    ok = await complete(http, t, TIMER_60)
    assert ok.status_code == 200, ok.text
    assert status < 500, text
    assert status == 422, text


async def test_node_serves_after_the_crash_findings(http: Client) -> None:
    """The requests that once crashed a handler, sent to one node in a row: it still answers normally."""
    raw = b"[" * 100_000 + b"]" * 100_000
    control_error(await http.post("/api/workflows", content=raw, headers={**CP, **JSON}), 400, "malformed_json")
    nan = json.dumps({"workflow_id": unique("wf-nan"), "workflow_type": "t", "memo": {"x": math.nan}}).encode()
    control_error(await http.post("/api/workflows", content=nan, headers={**CP, **JSON}), 400, "malformed_json")
    huge = {"workflow_id": unique("wf-huge"), "workflow_type": "t", "execution_timeout_seconds": 10**30}
    assert (await http.post("/api/workflows", json=huge, headers=CP)).status_code < 500
    r = await http.get("/api/health")
    assert r.status_code == 200, r.text
    wf = unique("wf-after")
    await start(http, wf)
    assert (await http.get(f"/api/workflows/{wf}", headers=CP)).status_code == 200
