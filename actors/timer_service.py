"""One deadline per run, in a heap: the node's only timer loop.

Each actor publishes its next deadline (timer fire, activity timeout, lease expiry,
run timeout) after every commit. When a deadline passes the service wakes the run,
activating it from the journal if it was passivated. At start-up the runtime reloads
deadlines from the runs table, so timers survive restarts.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .clock import Clock


class TimerService:
    def __init__(self, clock: Clock, fire: Callable[[str], Awaitable[None]]) -> None:
        self.clock = clock
        self.fire = fire
        self.heap: list[tuple[float, str]] = []
        self.due: dict[str, float] = {}
        self._changed = trio.Event()

    def schedule(self, run_id: str, deadline: float | None) -> None:
        if deadline is None:
            self.due.pop(run_id, None)
            return
        if self.due.get(run_id) == deadline:
            return
        self.due[run_id] = deadline
        heapq.heappush(self.heap, (deadline, run_id))
        if self.heap[0] == (deadline, run_id):
            self._changed.set()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            now = self.clock.now()
            while self.heap and self.heap[0][0] <= now:
                deadline, run_id = heapq.heappop(self.heap)
                if self.due.get(run_id) == deadline:
                    del self.due[run_id]
                    await self.fire(run_id)
            wait = self.heap[0][0] - now if self.heap else math.inf
            with trio.move_on_after(max(wait, 0.0) + 0.001):
                await self._changed.wait()
            self._changed = trio.Event()
