"""A whole node (SQLite journal, engine, services) run in-process inside a trio test.

In-process tests reach the services directly, so they can inject a clock that jumps, a
failing commit or a short interval without a server process; the HTTP pipeline is not
involved (the e2e tests cover it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from runtime.config import Config
from runtime.node import Node


class ShiftedClock:
    """Wall time plus an offset the test moves forward (a fire time, a retention cutoff)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


@asynccontextmanager
async def running_node(data_dir: Path, clock: ShiftedClock | None = None, **settings: Any) -> AsyncIterator[Node]:
    """Run a node on ``data_dir`` until the block ends; the cancel at the end is a crash, not a drain."""
    cfg = Config(data_dir=str(data_dir), node_id="in-process", **settings)
    node = Node(cfg, clock or ShiftedClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()


async def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll an (async or plain) check until it returns something truthy, failing after ``timeout``."""
    deadline = trio.current_time() + timeout
    while True:
        value = check()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await trio.sleep(0.05)
