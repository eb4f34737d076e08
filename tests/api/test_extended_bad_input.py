"""Bad input on the extended routes (cooperative cancellation, activity status and stop,
prepared local activities): malformed bodies, unknown ids, the wrong run or owner, another
namespace, oversize — each answered in the plane's envelope with a stable reason, never a
5xx, and nothing written (the run's history unchanged, the task still leased)."""

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
from .test_bad_input import TIMER_60, complete, history, lease_task, start

ENV = {"codec": "avro", "blob": "wwHioz3/VYAiNwwA"}
DESCRIPTOR = {"type": "record_local_activity", "activity_type": "quote", "execution_mode": "local", "arguments": ENV}


async def test_request_cancellation_bad_bodies_ids_runs_namespaces_and_size(http: Client) -> None:
    wf = unique("wf-rc")
    run_id = await start(http, wf)
    before = await history(http, wf, run_id)
    url = f"/api/workflows/{wf}/request-cancellation"
    control_error(await http.post(url, content=b"{nope", headers={**CP, **JSON}), 400, "malformed_json")
    for body, field in (({"cleanup_timeout_seconds": 0}, "cleanup_timeout_seconds"), ({"cleanup_timeout_seconds": 3601},
                        "cleanup_timeout_seconds"), ({"cleanup_timeout_seconds": 1.5}, "cleanup_timeout_seconds"),
                        ({"reason": 7}, "reason"), ({"request_id": "x" * 256}, "request_id")):
        validation_fields(control_error(await http.post(url, json=body, headers=CP), 422, "validation_failed"), field)
    control_error(await http.post(f"/api/workflows/{unique('ghost')}/request-cancellation", json={}, headers=CP), 404,
                  "instance_not_found")
    control_error(await http.post(f"/api/workflows/{wf}/runs/{fake_run_id()}/request-cancellation", json={}, headers=CP), 409,
                  "historical_run_command_rejected")
    ns = unique("ns-rc")
    assert (await http.post("/api/namespaces", json={"name": ns}, headers=CP)).status_code == 201
    control_error(await http.post(url, json={}, headers={**CP, "X-Namespace": ns}), 404, "instance_not_found")
    too_large(control_error(await http.post(url, json={"reason": "x" * (LIMIT + 1)}, headers=CP), 413, "payload_too_large"))
    assert await history(http, wf, run_id) == before, "nothing was recorded"


async def test_deliver_cancellation_refusals_leave_the_task_leased_and_history_unchanged(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    url = f"/api/worker/workflow-tasks/{t.task_id}/deliver-cancellation"
    good = t.lease(request_id="r", sequence=1, call_kind="timer")
    worker_error(await http.post(url, content=b"[", headers={**WP, **JSON}), 400, "malformed_json")
    for over, field in (({"sequence": 0}, "sequence"), ({"sequence": "1"}, "sequence"), ({"request_id": ""}, "request_id"),
                        ({"call_kind": "nap"}, "call_kind"), ({"sequence_span": None}, "sequence_span")):
        out = worker_error(await http.post(url, json={**good, **over}, headers=WP), 422, "validation_failed")
        validation_fields(out, field)
    worker_error(await http.post(url, json=good, headers=WP), 409, "cancellation_request_mismatch")  # no request yet
    worker_error(await http.post(url, json={**good, "lease_owner": "intruder"}, headers=WP), 409, "lease_owner_mismatch")
    worker_error(await http.post(f"/api/worker/workflow-tasks/{t.run_id}-wt99/deliver-cancellation", json=good, headers=WP), 404,
                 "task_not_found")
    worker_error(await http.post(f"/api/worker/workflow-tasks/{fake_run_id()}-wt1/deliver-cancellation", json=good, headers=WP),
                 404, "task_not_found")
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200, "the task is still leased to its worker"


@pytest.mark.parametrize("verb", ["status", "acknowledge-cancellation"])
async def test_activity_status_and_stop_refuse_unknown_and_malformed(http: Client, verb: str) -> None:
    wf = unique("wf-as")
    run_id = await start(http, wf)
    body: dict[str, Any] = {"activity_attempt_id": f"{run_id}-a1.1", "lease_owner": "w"}
    if verb != "status":
        body["request_id"] = "r"
    worker_error(await http.post(f"/api/worker/activity-tasks/{run_id}-a1/{verb}", json=body, headers=WP), 404, "task_not_found")
    worker_error(await http.post(f"/api/worker/activity-tasks/{fake_run_id()}-a1/{verb}", json=body, headers=WP), 404,
                 "task_not_found")
    out = worker_error(await http.post(f"/api/worker/activity-tasks/{run_id}-a1/{verb}", json={"lease_owner": "w"}, headers=WP),
                       422, "validation_failed")
    validation_fields(out, "activity_attempt_id", *(["request_id"] if verb != "status" else []))


async def test_prepared_local_routes_refuse_bad_input_and_write_nothing(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    base = f"/api/worker/workflow-tasks/{t.task_id}/local-activities"
    prepare = t.lease(sequence=1, worker_attempt_id="n" * 64, descriptor=DESCRIPTOR)
    for over, field in (({"descriptor": {**DESCRIPTOR, "execution_mode": "remote"}}, "descriptor.execution_mode"),
                        ({"descriptor": {**DESCRIPTOR, "arguments": "x"}}, "descriptor.arguments"),
                        ({"descriptor": {**DESCRIPTOR, "cancellation_policy": "abandon"}}, "descriptor.cancellation_policy"),
                        ({"descriptor": "x"}, "descriptor"), ({"sequence": 0}, "sequence"), ({"worker_attempt_id": ""}, "worker_attempt_id")):
        out = worker_error(await http.post(f"{base}/prepare", json={**prepare, **over}, headers=WP), 422, "validation_failed")
        validation_fields(out, field)
    worker_error(await http.post(f"{base}/prepare", json={**prepare, "sequence": 5}, headers=WP), 409,
                 "local_activity_sequence_mismatch")
    worker_error(await http.post(f"{base}/recover", json=t.lease(sequence=1, descriptor=DESCRIPTOR), headers=WP), 409,
                 "local_activity_sequence_mismatch")
    checkpoint = t.lease(checkpoint_id="c" * 64, start_sequence=2, commands=[{"type": "record_side_effect", "result": "AAAA"}])
    worker_error(await http.post(f"{base}/checkpoint", json=checkpoint, headers=WP), 409, "checkpoint_sequence_mismatch")
    out = worker_error(await http.post(f"{base}/checkpoint", json={**checkpoint, "start_sequence": 1,
                                                                   "commands": [{"type": "start_timer", "delay_seconds": 5}]},
                                       headers=WP), 422, "validation_failed")
    validation_fields(out, "commands.0.type")
    for op, extra in (("control", {"renew_lease": True}), ("heartbeat", {"progress": {}}),
                      ("outcome", {"report": {"outcome": "completed", "result": ENV}}), ("acknowledge-cancellation", {"request_id": "r"})):
        r = await http.post(f"{base}/{t.run_id}-a1.1/{op}", json=t.lease(**extra), headers=WP)
        worker_error(r, 404, "attempt_not_found")
    worker_error(await http.post(f"{base}/prepare", json={**prepare, "lease_owner": "intruder"}, headers=WP), 409,
                 "lease_owner_mismatch")
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200, "the task is still leased to its worker"


async def test_workflow_stream_routes_refuse_bad_input_and_write_nothing(http: Client) -> None:
    wf = unique("wf-ws")
    run_id = await start(http, wf)
    base = f"/api/workflows/{wf}/runs/{run_id}/streams"
    item = {"payload": ENV, "idempotency_key": "k"}
    assert (await http.post(f"{base}/out/items", json={"items": [item]}, headers=CP)).status_code == 200
    before = await history(http, wf, run_id)
    state = (await http.get(f"{base}/out", headers=CP)).json()["stream"]
    control_error(await http.post(f"{base}/out/items", content=b"{nope", headers={**CP, **JSON}), 400, "malformed_json")
    for body, field in (({}, "items"), ({"items": []}, "items"), ({"items": "x"}, "items"), ({"items": [{}]}, "items.0"),
                        ({"items": [{"payload": {"blob": "x"}}]}, "items.0"), ({"items": [{"payload": ENV, "item_type": 7}]}, "items.0"),
                        ({"items": [{"payload": ENV, "idempotency_key": "k" * 256}]}, "items.0"),
                        ({"items": [item] * 501}, "items"), ({"items": [item], "max_pending_items": 0}, "max_pending_items")):
        r = await http.post(f"{base}/out/items", json=body, headers=CP)
        errors = control_error(r, 422, "validation_failed")
        validation_fields(errors)
        assert any(k.startswith(field) for k in errors["errors"]), (body, r.text)
    for query, field in (({"from": "-1"}, "from"), ({"max_items": "0"}, "max_items"), ({"max_items": "501"}, "max_items"),
                         ({"wait_seconds": "61"}, "wait_seconds"), ({"from": "x"}, "from")):
        validation_fields(control_error(await http.get(f"{base}/out/items", params=query, headers=CP), 422, "validation_failed"), field)
    for body, field in (({"error_reason": ""}, "error_reason"), ({"retention_seconds": 0}, "retention_seconds"),
                        ({"error_reason": 5}, "error_reason")):
        validation_fields(control_error(await http.post(f"{base}/out/close", json=body, headers=CP), 422, "validation_failed"), field)
    validation_fields(control_error(await http.get(f"{base}/bad%01name", headers=CP), 422, "validation_failed"), "stream_name")
    control_error(await http.get(f"{base}/ghost", headers=CP), 404, "stream_not_found")
    control_error(await http.post(f"{base}/ghost/close", json={}, headers=CP), 404, "stream_not_found")
    control_error(await http.get(f"/api/workflows/{wf}/runs/{fake_run_id()}/streams", headers=CP), 404, "run_not_found")
    other = unique("wf-ws")
    other_run = await start(http, other)
    control_error(await http.get(f"/api/workflows/{wf}/runs/{other_run}/streams/out", headers=CP), 404, "run_not_found")
    control_error(await http.get(f"/api/workflows/{unique('ghost')}/runs/{run_id}/streams", headers=CP), 404, "instance_not_found")
    ns = unique("ns-ws")
    assert (await http.post("/api/namespaces", json={"name": ns}, headers=CP)).status_code == 201
    control_error(await http.get(f"{base}/out", headers={**CP, "X-Namespace": ns}), 404, "instance_not_found")
    control_error(await http.post(f"{base}/out/items", json={"items": [item]}, headers={**CP, "X-Namespace": ns}), 404,
                  "instance_not_found")
    big = {"items": [{"payload": {"codec": "avro", "blob": "x" * (LIMIT + 1)}}]}
    too_large(control_error(await http.post(f"{base}/out/items", json=big, headers=CP), 413, "payload_too_large"))
    assert await history(http, wf, run_id) == before, "nothing was recorded"
    assert (await http.get(f"{base}/out", headers=CP)).json()["stream"] == state, "the stream is unchanged"


async def test_a_malformed_workflow_stream_directive_fails_the_completion_and_records_nothing(http: Client) -> None:
    t = await lease_task(http)
    before = await history(http, t.workflow_id, t.run_id)
    side = {"type": "record_side_effect", "result": "wwHioz3/VYAiNwA="}
    for directive, field in (("x", "commands.0.workflow_stream"), ({"operation": "drop", "stream_name": "s"}, "operation"),
                             ({"operation": "append", "stream_name": ""}, "stream_name"),
                             ({"operation": "append", "stream_name": "s", "items": []}, "items"),
                             ({"operation": "append", "stream_name": "s", "items": [{"payload": 3}]}, "items.0"),
                             ({"operation": "error", "stream_name": "s"}, "error_reason"),
                             ({"operation": "close", "stream_name": "s", "retention_seconds": 0}, "retention_seconds")):
        r = await complete(http, t, [{**side, "workflow_stream": directive}, *TIMER_60])
        errors = worker_error(r, 422, "validation_failed")
        validation_fields(errors)
        assert any(field in key for key in errors["errors"]), (directive, r.text)
    assert await history(http, t.workflow_id, t.run_id) == before
    assert (await complete(http, t, TIMER_60)).status_code == 200, "the task is still leased to its worker"


async def test_the_openapi_document_covers_the_workflow_stream_routes_with_their_query(http: Client) -> None:
    paths = (await http.get("/api/openapi.json")).json()["paths"]
    base = "/api/workflows/{workflow_id}/runs/{run_id}/streams"
    assert set(paths[base]) == {"get"} and set(paths[f"{base}/{{stream}}"]) == {"get"}
    assert set(paths[f"{base}/{{stream}}/items"]) == {"get", "post"} and set(paths[f"{base}/{{stream}}/close"]) == {"post"}
    query = {p["name"]: p["schema"] for p in paths[f"{base}/{{stream}}/items"]["get"]["parameters"] if p["in"] == "query"}
    assert query == {"from": {"type": "integer", "minimum": 0, "maximum": 2**53},
                     "max_items": {"type": "integer", "minimum": 1, "maximum": 500},
                     "wait_seconds": {"type": "integer", "minimum": 0, "maximum": 60}}
    body = paths[f"{base}/{{stream}}/items"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AppendStreamItems"}
