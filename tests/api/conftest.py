from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio.lowlevel
import trio.testing

from .harness import Client, serving


async def _serve(tmp_path: Path, caplog: pytest.LogCaptureFixture, **options: Any) -> AsyncIterator[Client]:
    caplog.set_level(logging.WARNING)
    async with serving(tmp_path, **options) as (_, client):
        yield client
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def http(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Client]:
    """A fresh in-process node per test; an error logged while it served (an unhandled
    exception in a handler: the 500 path) fails the test, as a traceback in a server log would."""
    async for client in _serve(tmp_path, caplog):
        yield client


JUMP_AFTER = 0.02  # real seconds every task must have been idle before the mock clock jumps


@pytest.fixture
async def mock_http(mock_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Client]:
    """``http`` on trio's MockClock: a backoff or a held long poll takes (almost) no real time.

    pytest-trio runs a test on the clock only when the test itself names ``mock_clock`` among
    its arguments; without it this fixture refuses to serve. The clock jumps to the next
    deadline once every task has been idle for ``JUMP_AFTER`` real seconds, not at once
    (``autojump_clock``): a journal read or write runs in a worker thread, and a jump during
    it would end a poll before the task it waits for is offered (a test polls a few times more
    on this clock for the rare thread that takes longer). For the same reason the leases and the
    actor idle time are an hour, which no stray jump can reach."""
    assert trio.lowlevel.current_clock() is mock_clock, "name mock_clock in the test's arguments too"
    mock_clock.autojump_threshold = JUMP_AFTER
    async for client in _serve(tmp_path, caplog, mock_time=True, workflow_task_lease=3600.0, idle_seconds=3600.0):
        yield client
