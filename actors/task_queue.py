"""Matching ready tasks to parked long polls, per (namespace, kind, task queue).

A ready task finds a waiting poller at once (sync match) or waits in the backlog; a
poller takes a backlog task at once or parks until one arrives, its hold time ends,
or the node drains. Offers are only references (run id, task id): the run actor
remains the authority and confirms each claim, so a stale offer is simply skipped.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class Offer:
    run_id: str
    task_id: str
    type_name: str
    seq: int = 0


Filter = Callable[[str], bool]


class _Waiter:
    __slots__ = ("accepts", "event", "offer")

    def __init__(self, accepts: Filter) -> None:
        self.accepts = accepts
        self.event = trio.Event()
        self.offer: Offer | None = None


class TaskQueue:
    def __init__(self, max_backlog: int = 100_000) -> None:
        self.backlog: OrderedDict[str, Offer] = OrderedDict()
        self.waiters: deque[_Waiter] = deque()
        self.max_backlog = max_backlog
        self.pollers_seen: dict[str, float] = {}

    def offer(self, offer: Offer) -> None:
        if offer.task_id in self.backlog:
            return
        for waiter in self.waiters:
            if waiter.offer is None and waiter.accepts(offer.type_name):
                waiter.offer = offer
                waiter.event.set()
                self.waiters.remove(waiter)
                return
        self.backlog[offer.task_id] = offer

    def withdraw(self, task_id: str) -> None:
        self.backlog.pop(task_id, None)

    def _take_backlog(self, accepts: Filter) -> Offer | None:
        for task_id, offer in self.backlog.items():
            if accepts(offer.type_name):
                del self.backlog[task_id]
                return offer
        return None

    async def take(self, accepts: Filter, timeout: float, draining: trio.Event) -> Offer | None:
        """Wait up to ``timeout`` seconds for a matching offer; None on timeout or drain."""
        offer = self._take_backlog(accepts)
        if offer is not None or timeout <= 0 or draining.is_set():
            return offer
        waiter = _Waiter(accepts)
        self.waiters.append(waiter)
        try:
            with trio.move_on_after(timeout):
                await waiter.event.wait()
        except BaseException:
            if waiter.offer is not None:
                self.offer(waiter.offer)  # the poller is gone; the task goes to someone else
            self._forget(waiter)
            raise
        self._forget(waiter)
        return waiter.offer

    def _forget(self, waiter: _Waiter) -> None:
        if waiter.offer is None:
            try:
                self.waiters.remove(waiter)
            except ValueError:
                pass

    def release_all(self) -> None:
        """Answer every parked poll with "no task" (node draining)."""
        while self.waiters:
            self.waiters.popleft().event.set()

    def depth(self) -> int:
        return len(self.backlog)
