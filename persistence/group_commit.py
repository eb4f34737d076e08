"""Group commit, shared by every journal backend.

Appenders queue their batches and wait; one writer task drains everything pending and
hands the group to the backend's commit function (one transaction, one round trip or
thread hop), then wakes every appender with its own outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from .buckets import LATENCY_SECONDS, Buckets
from .journal import Batch

T = TypeVar("T")


class Pending:
    __slots__ = ("batch", "done", "error")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.done = trio.Event()
        self.error: BaseException | None = None


async def next_group(recv: trio.MemoryReceiveChannel[T], max_batch: int) -> list[T]:
    """Wait for one item, then take whatever else is already waiting (up to ``max_batch``)."""
    group = [await recv.receive()]
    while len(group) < max_batch:
        try:
            group.append(recv.receive_nowait())
        except trio.WouldBlock:
            break
    return group


GROUP_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class CommitStats:
    """What the group-commit writer did (plain counters; see ``buckets``)."""

    def __init__(self) -> None:
        self.failed = 0
        self.seconds = Buckets(LATENCY_SECONDS)
        self.sizes = Buckets(GROUP_SIZE_BUCKETS)

    def observe(self, size: int, seconds: float, failed: bool) -> None:
        self.failed += failed
        self.seconds.observe(seconds)
        self.sizes.observe(size)


class GroupCommit:
    def __init__(self, max_batch: int, capacity: int = 10_000) -> None:
        self.max_batch = max_batch
        self._send, self._recv = trio.open_memory_channel[Pending](capacity)
        self.stats = CommitStats()

    async def append(self, batch: Batch) -> None:
        pending = Pending(batch)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error

    async def run(
        self, commit: Callable[[list[Pending]], Awaitable[None]], task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer loop; ``commit`` sets ``error`` on the batches that failed."""
        task_status.started()
        while True:
            group = await next_group(self._recv, self.max_batch)
            started = trio.current_time()
            try:
                # Shielded: a commit under way finishes and its appenders learn the outcome.
                with trio.CancelScope(shield=True):
                    await commit(group)
            except Exception as exc:  # noqa: BLE001 - commit reports per batch; this is a bug net
                for pending in group:
                    pending.error = exc
            finally:
                self.stats.observe(len(group), trio.current_time() - started, any(p.error is not None for p in group))
                for pending in group:
                    pending.done.set()
