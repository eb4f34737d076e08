from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import ServerProcess
from .stores import BACKENDS, store


@pytest.fixture(scope="session", params=BACKENDS)
def server_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One dw-server per journal backend for the feature tests; each test uses its own task queue."""
    with store(request.param) as database:
        server = ServerProcess(
            tmp_path_factory.mktemp(f"dw-e2e-{request.param}"),
            env={"DW_WORKFLOW_TASK_LEASE_SECONDS": "3", "DW_ACTOR_IDLE_SECONDS": "2"},
            database=database,
        )
        url = server.start()
        yield url
        code = server.stop()
        assert code == 0, server.log()
        assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SQLite dw-server for the tests that are about the surface, not the journal (the
    command line, metrics): run once instead of once per backend."""
    server = ServerProcess(tmp_path_factory.mktemp("dw-e2e-surface"), env={"DW_WORKFLOW_TASK_LEASE_SECONDS": "3"})
    url = server.start()
    yield url
    code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
