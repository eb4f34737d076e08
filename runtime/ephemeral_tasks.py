"""Holding an ephemeral task (a query, an update validation) until a worker answers it.

Neither is journaled: the caller holds its HTTP request open and gives up at the task's
deadline. Meanwhile the task is offered on its queue, and offered again whenever the worker
holding it lets its lease lapse, so another worker may answer while the caller still waits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import trio

from actors.task_queue import Offer, TaskQueue

from .errors import ProtocolError


class Ephemeral(Protocol):
    deadline: float
    lease_expires: float | None
    outcome: dict[str, Any] | None


async def hold_until_answered(
    clock: Any, q: TaskQueue, offer: Offer, task: Ephemeral, answered: trio.Event,
    expire_lease: Callable[[Any, float], bool], timed_out: Callable[[], ProtocolError], *, front: bool = False,
) -> dict[str, Any]:
    """The worker's answer; ``timed_out()`` is raised when the caller's deadline passes first."""
    q.offer(offer, front=front)
    while not answered.is_set():
        now = clock.now()
        if now >= task.deadline:
            raise timed_out()
        if expire_lease(task, now):
            q.offer(offer, front=front)  # the worker holding it went quiet; another may answer
        wake = task.deadline if task.lease_expires is None else min(task.deadline, task.lease_expires)
        with trio.move_on_after(max(wake - now, 0.01)):
            await answered.wait()
    assert task.outcome is not None
    return task.outcome
