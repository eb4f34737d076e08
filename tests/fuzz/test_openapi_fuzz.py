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
