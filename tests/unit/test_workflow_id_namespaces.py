"""A workflow id is reserved across namespaces (control-plane 4.1 and 4.2).

The spec: an instance is addressed within its namespace, but ids are globally unique as in
the reference: starting an id that exists in another namespace answers 409
``workflow_id_reserved_in_namespace``, and the other namespace never sees the instance
(``instance_not_found``). In-process node, both journals (PostgreSQL: clustered, one node).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.stores import postgres_url
from tests.unit.inprocess import CP, node_app, postgres_schema


@asynccontextmanager
async def client(backend: str, tmp_path: Path) -> AsyncIterator[Any]:
    if backend == "sqlite":
        async with node_app(tmp_path) as (_node, http):
            yield http
        return
    async with postgres_schema(postgres_url()) as dsn, node_app(tmp_path, database=dsn, shard_count=4) as (_node, http):
        yield http


async def _namespaces(http: Any, *names: str) -> None:
    for name in names:
        r = await http.post("/api/namespaces", json={"name": name, "retention_days": 7}, headers=CP)
        assert r.status_code == 201, await r.get_data()


async def _start(http: Any, namespace: str, workflow_id: str, wtype: str = "order") -> tuple[int, dict[str, Any]]:
    r = await http.post(
        "/api/workflows", json={"workflow_type": wtype, "workflow_id": workflow_id, "task_queue": "q"},
        headers={**CP, "X-Namespace": namespace},
    )
    return r.status_code, await r.get_json()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_an_id_started_in_one_namespace_is_reserved_in_every_other(backend: str, tmp_path: Path) -> None:
    async with client(backend, tmp_path) as http:
        await _namespaces(http, "ns-a", "ns-b")
        status, body = await _start(http, "ns-a", "shared-id")
        assert status == 201 and body["namespace"] == "ns-a", body

        status, body = await _start(http, "ns-b", "shared-id")
        assert status == 409, body
        assert body["reason"] == "workflow_id_reserved_in_namespace"
        assert body["workflow_id"] == "shared-id"
        assert "another namespace" in body["message"]
        assert "run_id" not in body  # nothing of ns-a's instance leaks

        # ns-b has no such instance, ns-a's instance is untouched
        r = await http.get("/api/workflows/shared-id", headers={**CP, "X-Namespace": "ns-b"})
        assert r.status_code == 404 and (await r.get_json())["reason"] == "instance_not_found"
        r = await http.get("/api/workflows/shared-id", headers={**CP, "X-Namespace": "ns-a"})
        assert r.status_code == 200 and (await r.get_json())["namespace"] == "ns-a"
        # a duplicate in its own namespace is the ordinary duplicate, not a reservation
        status, body = await _start(http, "ns-a", "shared-id")
        assert status == 409 and body["reason"] == "duplicate_not_allowed", body


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_concurrent_starts_of_one_id_in_two_namespaces_create_one_instance(backend: str, tmp_path: Path) -> None:
    async with client(backend, tmp_path) as http:
        await _namespaces(http, "ns-a", "ns-b")
        results: dict[tuple[str, str], int] = {}

        async def start(namespace: str, workflow_id: str) -> None:
            results[(namespace, workflow_id)], _ = await _start(http, namespace, workflow_id)

        ids = [f"race-{i}" for i in range(60)]
        async with trio.open_nursery() as nursery:
            for workflow_id in ids:
                for namespace in ("ns-a", "ns-b"):
                    nursery.start_soon(start, namespace, workflow_id)
        doubled = [w for w in ids if results[("ns-a", w)] == 201 and results[("ns-b", w)] == 201]
        assert doubled == [], f"started in both namespaces: {doubled}"
        odd = {w: (results[("ns-a", w)], results[("ns-b", w)]) for w in ids
               if sorted((results[("ns-a", w)], results[("ns-b", w)])) != [201, 409]}
        assert odd == {}, f"each id is started once and refused once: {odd}"
