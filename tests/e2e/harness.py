"""Run official-SDK scenarios (asyncio) from synchronous pytest tests."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
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


@contextmanager
def worker_thread(url: str, task_queue: str, workflows: Sequence[type], activities: Sequence[Callable[..., Any]]) -> Iterator[None]:
    """An SDK worker in a thread of its own while the block runs (for tests that drive the
    server from synchronous code: a subprocess, a browser)."""
    stop = threading.Event()

    def run() -> None:
        async def main() -> None:
            async with Client(url) as client:
                worker = Worker(client, task_queue=task_queue, workflows=list(workflows), activities=list(activities),
                                poll_timeout=2)
                task = asyncio.create_task(worker.run())
                while not stop.is_set():
                    await asyncio.sleep(0.1)
                await worker.stop()
                await task

        asyncio.run(main())

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


async def current_history(http: httpx.AsyncClient, workflow_id: str) -> list[dict[str, Any]]:
    """Every event of the workflow's current run (``http`` carries the control-plane header)."""
    run_id = (await http.get(f"/api/workflows/{workflow_id}")).json()["run_id"]
    r = await http.get(f"/api/workflows/{workflow_id}/runs/{run_id}/history", params={"page_size": 1000})
    r.raise_for_status()
    return list(r.json()["events"])


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --- waiting for a condition -----------------------------------------------------------
#
# Tests wait for the state they need, never for a fixed time: a sleep is either too short on
# a loaded machine (a flaky failure) or longer than needed (a slow suite), and it says nothing
# when the state never comes. These poll an observable check until it holds and fail with
# ``what`` and the last value seen once the deadline passes. Deadlines are generous: they
# bound how long a broken build takes to fail, they are not a promise of the product.


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``check`` until it returns something truthy and return that; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last seen: {last!r})")
        time.sleep(interval)


async def await_until(check: Callable[[], Awaitable[T]], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """``wait_until`` for an async check, without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last seen: {last!r})")
        await asyncio.sleep(interval)


async def live_actors(client: httpx.AsyncClient) -> int:
    """The node's count of live run actors (``GET /api/cluster/info``): 0 once every run there passivated."""
    r = await client.get("/api/cluster/info")
    r.raise_for_status()
    return int(r.json()["actors"]["live"])


async def wait_all_passivated(client: httpx.AsyncClient, timeout: float = 30.0) -> None:
    """Until the node holds no live run actor (it passivates runs idle for DW_ACTOR_IDLE_SECONDS)."""
    deadline = time.monotonic() + timeout
    while (live := await live_actors(client)) != 0:
        if time.monotonic() >= deadline:
            raise AssertionError(f"runs not passivated within {timeout:g}s: the node still holds {live} live actor(s)")
        await asyncio.sleep(0.2)
