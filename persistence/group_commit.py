"""Group commit, shared by every journal backend.

Appenders queue their batches and wait; one writer task drains everything pending and
hands the group to the backend's commit function (one transaction, one round trip or
thread hop), then wakes every appender with its own outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

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


class GroupCommit:
    def __init__(self, max_batch: int, capacity: int = 10_000) -> None:
        self.max_batch = max_batch
        self._send, self._recv = trio.open_memory_channel[Pending](capacity)

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
            try:
                # Shielded: a commit under way finishes and its appenders learn the outcome.
                with trio.CancelScope(shield=True):
                    await commit(group)
            except Exception as exc:  # noqa: BLE001 - commit reports per batch; this is a bug net
                for pending in group:
                    pending.error = exc
            finally:
                for pending in group:
                    pending.done.set()
