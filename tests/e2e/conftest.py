from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import ServerProcess


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One dw-server for the feature tests; each test uses its own task queue."""
    server = ServerProcess(
        tmp_path_factory.mktemp("dw-e2e"),
        env={"DW_WORKFLOW_TASK_LEASE_SECONDS": "3", "DW_ACTOR_IDLE_SECONDS": "2"},
    )
    url = server.start()
    yield url
    code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
