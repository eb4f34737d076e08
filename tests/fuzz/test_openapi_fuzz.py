"""Property-based fuzzing of every operation in /api/openapi.json with schemathesis.

Bounded: a few examples per operation, against a server of its own on 127.0.0.1 with short
long-poll and query timeouts, so the run stops by itself in well under a minute. Two checks
on every response: never a 5xx, and the body matches the documented schema (the error
envelope for every non-success answer).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"DW_WORKER_POLL_TIMEOUT": "1", "DW_QUERY_TASK_TIMEOUT": "1"}
    server = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", env=env, port=ServerProcess.free_port())
    server.start()
    yield server.url
    log = server.log()
    server.stop()
    assert "Traceback" not in log, log[-3000:]


def test_no_server_errors_and_every_response_matches_the_schema(fuzz_server: str) -> None:
    """Each operation gets its own bounded hypothesis run; failures are collected, not stopped at."""
    from hypothesis import given

    api_schema = schemathesis.openapi.from_url(f"{fuzz_server}/api/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=6, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance], timeout=15)

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - reported together below
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:800]}")
    assert operations > 50  # the whole API was fuzzed, not an empty document
    assert not failures, "\n\n".join(failures)


def _hostile_cases(document: dict) -> Iterator[tuple[str, str, dict[str, str], list[str], bool]]:
    """(method, path, headers, query names, has a body) for every documented operation."""
    for template, item in document["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            path = template
            for part in [p for p in template.split("/") if p.startswith("{")]:
                path = path.replace(part, "01M0000000000000000000000X" if "run" in part or "task" in part else "hostile-x")
            # every parameter of this API is single-valued, declared or not (the list routes read
            # page_size, status, query, …): any name given twice is refused
            queries = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"] or ["page_size"]
            plane = "worker" if path.startswith("/api/worker") else "control"
            headers = {"X-Durable-Workflow-Protocol-Version": "1.20"} if plane == "worker" else {
                "X-Durable-Workflow-Control-Plane-Version": "2"}
            yield method.upper(), path, headers, queries, "application/json" in op.get("requestBody", {}).get("content", {})


def test_every_operation_refuses_deep_non_finite_and_repeated_input(fuzz_server: str) -> None:
    """Issue 9's edge cases over the whole document: nesting past the limit, numbers JSON cannot
    carry back, duplicated single-valued parameters. Each is a 4xx in the envelope, never a 5xx."""
    import json

    import httpx

    deep: object = "leaf"
    for _ in range(100):
        deep = {"d": deep}
    checked: dict[str, int] = {"deep": 0, "non_finite": 0, "duplicate": 0}
    problems: list[str] = []
    with httpx.Client(base_url=fuzz_server, timeout=15) as http:
        document = http.get("/api/openapi.json").json()
        for method, path, headers, queries, has_body in _hostile_cases(document):
            attempts: list[tuple[str, dict, bytes | None, set[str]]] = []
            if has_body:
                body = {"workflow_type": "t", "task_queue": "q", "worker_id": "w", "name": "n", "deep": deep}
                attempts.append(("deep", {}, json.dumps(body).encode(), {"payload_too_deep"}))
                attempts.append(("non_finite", {}, b'{"workflow_type": "t", "memo": {"x": 1e400}, "n": -1e999}',
                                 {"non_finite_number"}))
            for name in queries:
                attempts.append(("duplicate", {"params": [(name, "1"), (name, "2")]}, b"{}" if has_body else None,
                                 {"duplicate_query_parameter"}))
            for kind, extra, content, reasons in attempts:
                r = http.request(method, path, headers={**headers, "Content-Type": "application/json"}, content=content, **extra)
                checked[kind] += 1
                reason = r.json().get("reason") if r.headers.get("content-type", "").startswith("application/json") else None
                if r.status_code >= 500 or reason not in reasons:
                    problems.append(f"{kind}: {method} {path} -> {r.status_code} {r.text[:200]}")
    assert checked["deep"] > 20 and checked["non_finite"] > 20 and checked["duplicate"] > 50, checked
    assert not problems, "\n".join(problems)
