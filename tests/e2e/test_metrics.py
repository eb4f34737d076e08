"""Prometheus ``/metrics`` of a real server, parsed with ``prometheus_client``'s own parser.

After workflows ran through the official SDK the counters moved as they should (starts,
completions, activity attempts, requests per route, commits, poll waits), the labels stay
bounded (no workflow or run id anywhere), and the endpoint is protected like the control plane:
operator and admin only, unless ``DW_METRICS_PUBLIC=true``; ``DW_METRICS_ENABLED=false`` turns it off.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import unique, with_worker
from .server import ServerProcess
from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS

pytestmark = pytest.mark.e2e
TOKENS = {"worker": "tok-worker", "operator": "tok-operator", "admin": "tok-admin"}


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{url}/metrics", headers=headers or {}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """Summed over every series of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_counters_move_as_workflows_run_and_no_label_names_a_workflow(sqlite_url: str) -> None:
    tq = unique("metrics")
    before = scrape(sqlite_url)
    ids = [unique("metrics-wf") for _ in range(3)]

    async def body(client) -> list[object]:  # type: ignore[no-untyped-def]
        handles = [await client.start_workflow(workflow_type="one_activity", workflow_id=w, task_queue=tq, input=["m"])
                   for w in ids]
        return [await h.result(timeout=60) for h in handles]

    results = asyncio.run(with_worker(sqlite_url, tq, ALL_WORKFLOWS, ALL_ACTIVITIES, body))
    assert results == ["hello, m"] * 3
    after = scrape(sqlite_url)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("dw_workflow_starts_total") >= 3
    assert moved("dw_workflow_closed_total", outcome="completed") >= 3
    assert moved("dw_workflow_run_seconds_count", outcome="completed") >= 3
    assert moved("dw_activity_attempts_total") >= 3
    assert moved("dw_http_requests_total", route="/api/workflows", method="POST", status="201") >= 3
    assert moved("dw_http_request_seconds_count", route="/api/worker/activity-tasks/<task_id>/complete", method="POST") >= 3
    assert moved("dw_journal_commit_seconds_count") > 0 and moved("dw_journal_commit_batches_sum") > 0
    assert moved("dw_task_queue_poll_wait_seconds_count", kind="activity", task_queue=tq) == 3
    assert value(after, "dw_task_queue_backlog", kind="workflow", namespace="default", task_queue=tq) == 0
    assert value(after, "process_resident_memory_bytes") > 10 * 2**20
    assert value(after, "dw_shards_owned") >= 1
    labels = " ".join(f"{k}={v}" for (_, ls) in after for k, v in ls)
    for wid in ids:
        assert wid not in labels, "a workflow id in a label makes the series unbounded"


def _server(tmp_path: Path, env: dict[str, str]) -> ServerProcess:
    server = ServerProcess(tmp_path / "data", env=env, port=ServerProcess.free_port())
    server.start()
    return server


def test_metrics_are_for_operators_unless_public_and_off_when_disabled(tmp_path: Path) -> None:
    auth = {"DW_AUTH_DRIVER": "token", **{f"DW_{role.upper()}_TOKEN": tok for role, tok in TOKENS.items()}}
    server = _server(tmp_path / "protected", auth)
    try:
        r = httpx.get(f"{server.url}/metrics")
        assert r.status_code == 401 and r.json()["reason"] == "unauthorized", r.text
        r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKENS['worker']}"})
        assert r.status_code == 403, r.text
        for role in ("operator", "admin"):
            assert "dw_actors_live" in {n for n, _ in scrape(server.url, {"Authorization": f"Bearer {TOKENS[role]}"})}
        paths = httpx.get(f"{server.url}/api/openapi.json").json()["paths"]
        assert "/metrics" not in paths, "not a JSON route"
    finally:
        server.stop()
    server = _server(tmp_path / "public", {**auth, "DW_METRICS_PUBLIC": "true"})
    try:
        assert "dw_actors_live" in {n for n, _ in scrape(server.url)}
    finally:
        server.stop()
    server = _server(tmp_path / "off", {"DW_METRICS_ENABLED": "false"})
    try:
        r = httpx.get(f"{server.url}/metrics")
        assert r.status_code == 404 and r.json()["reason"] == "not_found", r.text
    finally:
        server.stop()
