"""OpenTelemetry traces, exported in memory: the client's span is the parent of the server's
request span (from the SDK's ``observability_context`` carrier or a ``traceparent`` header), the
journal commit is a child of the request that caused it, and the carrier rides on the run's
tasks so the worker's spans join the same trace. A malformed carrier is dropped, never refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import tracing as carriers
from runtime import tracing
from tests.unit.inprocess import CP, node_app

WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CARRIER = {"schema": "durable-workflow.trace-context", "version": 1,
           "carrier": {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}}


@pytest.fixture()
def exporter() -> Iterator[Any]:
    exported = tracing.in_memory()
    try:
        yield exported
    finally:
        tracing.stop()


def _by_name(spans: list[Any], name: str) -> list[Any]:
    return [s for s in spans if s.name == name]


async def test_the_client_span_parents_the_request_and_the_commit_and_rides_on_tasks(tmp_path: Path, exporter: Any) -> None:
    async with node_app(tmp_path) as (_node, client):
        started = await client.post("/api/workflows", headers=CP, json={
            "workflow_type": "traced", "workflow_id": "wf-traced", "task_queue": "q-traced", "observability_context": CARRIER})
        assert started.status_code == 201, await started.get_data()
        await client.post("/api/worker/register", headers=WP, json={"worker_id": "w", "task_queue": "q-traced", "runtime": "python"})
        polled = await client.post("/api/worker/workflow-tasks/poll", headers=WP,
                                   json={"worker_id": "w", "task_queue": "q-traced", "timeout_seconds": 1})
        task = (await polled.get_json())["task"]
        spans = exporter.get_finished_spans()
    assert task["observability_context"] == CARRIER, "the worker gets the carrier: its spans join the client's trace"
    [request] = _by_name(spans, "POST /api/workflows")
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert request.parent is not None and format(request.parent.span_id, "016x") == CLIENT_SPAN
    assert request.attributes["http.response.status_code"] == 201
    commits = [s for s in _by_name(spans, "journal.commit") if s.parent is not None and s.parent.span_id == request.context.span_id]
    assert commits and all(s.context.trace_id == request.context.trace_id for s in commits), "the start's commit is its child"
    [poll] = _by_name(spans, "POST /api/worker/workflow-tasks/poll")
    assert poll.context.trace_id != request.context.trace_id, "a poll without a carrier starts its own trace"


async def test_a_traceparent_header_parents_the_span_and_a_malformed_carrier_is_dropped(tmp_path: Path, exporter: Any) -> None:
    header = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    async with node_app(tmp_path) as (node, client):
        described = await client.get("/api/workflows/nope", headers={**CP, "traceparent": header})
        assert described.status_code == 404
        bad = {**CARRIER, "carrier": {"traceparent": "x" * 300}}
        started = await client.post("/api/workflows", headers=CP, json={
            "workflow_type": "t", "workflow_id": "wf-bad-carrier", "task_queue": "q", "observability_context": bad})
        assert started.status_code == 201, "telemetry never breaks the request"
        run_id = (await started.get_json())["run_id"]
        assert "trace" not in node.engine.actors[run_id].state.meta, "nothing of it is stored"
        spans = exporter.get_finished_spans()
    [describe] = _by_name(spans, "GET /api/workflows/<workflow_id>")
    assert format(describe.parent.span_id, "016x") == CLIENT_SPAN
    [start] = _by_name(spans, "POST /api/workflows")
    assert start.parent is None, "the malformed carrier was not used as a parent"


def test_carrier_shapes_the_sdk_would_refuse_are_dropped() -> None:
    assert carriers.carrier(CARRIER) == CARRIER
    for bad in (None, "x", {**CARRIER, "extra": 1}, {**CARRIER, "version": 2}, {**CARRIER, "version": True},
                {**CARRIER, "carrier": {}}, {**CARRIER, "carrier": {"traceparent": 5}},
                {**CARRIER, "carrier": {"traceparent": "00-a-b-01", "other": "x"}},
                {**CARRIER, "carrier": {"traceparent": "00-a-b-01", "baggage": "x" * 2049}}):
        assert carriers.carrier(bad) is None, bad


def test_tracing_stays_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.setup("n") is None and carriers.TRACER is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.setup("n") is None
