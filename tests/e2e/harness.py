"""Run official-SDK scenarios (asyncio) from synchronous pytest tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from durable_workflow import Client, Worker

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def with_worker(
    url: str,
    task_queue: str,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]],
    body: Callable[[Client], Awaitable[T]],
) -> T:
    async with Client(url) as client:
        worker = Worker(client, task_queue=task_queue, workflows=list(workflows), activities=list(activities), poll_timeout=2)
        task = asyncio.create_task(worker.run())
        try:
            return await body(client)
        finally:
            await worker.stop()
            await task


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]
