"""Matching ready tasks to parked long polls, per (namespace, kind, task queue).

A ready task finds a waiting poller at once (sync match) or waits in the backlog; a
poller takes a backlog task at once or parks until one arrives, its hold time ends,
or the node drains. Offers are only references (run id, task id): the run actor
remains the authority and confirms each claim, so a stale offer is simply skipped.

Sticky workflow tasks (extended spec §12.2) go first to the worker that cached the run's
history: at once if one of its polls is parked, else it is held in the backlog for that worker
for at most ``STICKY_WINDOW`` (never past the affinity's end) — then any worker may take it,
so a busy or dead sticky worker delays a run by a bounded few seconds, never stalls it.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from persistence.buckets import LATENCY_SECONDS, Buckets


@dataclass(frozen=True)
class Offer:
    run_id: str
    task_id: str
    type_name: str
    seq: int = 0
    sticky: str | None = None  # the worker this workflow task should go to first (extended spec §12.2)
    sticky_until: float = 0.0  # wall-clock end of that affinity
    needs: str | None = None  # a worker capability the task requires (a run with a cooperative request)
    build: str | None = None  # the run's compatibility marker: only workers of this build take it (extended §10.1)
    session: dict[str, Any] | None = field(default=None, compare=False)  # its worker session's options (extended §11.1)


Filter = Callable[[str], bool]
STICKY_WINDOW = 5.0  # seconds a sticky task waits for its own worker before anyone may take it


class _Waiter:
    __slots__ = ("accepts", "build", "caps", "event", "offer", "skip", "worker")
    event: trio.Event  # set when it parks: a poll that finds a task in the backlog needs none

    def __init__(self, accepts: Filter, worker: str | None, caps: frozenset[str], build: str | None = None,
                 skip: frozenset[str] | set[str] = frozenset()) -> None:
        self.accepts = accepts
        self.worker = worker
        self.caps = caps
        self.build = build
        self.skip = skip
        self.offer: Offer | None = None

    def takes(self, offer: Offer) -> bool:
        return ((offer.needs is None or offer.needs in self.caps) and (offer.build is None or offer.build == self.build)
                and offer.task_id not in self.skip and self.accepts(offer.type_name))


class TaskQueue:
    def __init__(self, max_backlog: int = 100_000, wall: Callable[[], float] = time.time) -> None:
        self.backlog: OrderedDict[str, Offer] = OrderedDict()
        self.waiters: deque[_Waiter] = deque()
        self.max_backlog = max_backlog
        self.pollers_seen: dict[str, float] = {}
        self.held: dict[str, float] = {}  # task id -> trio time until which only its sticky worker may take it
        self.sticky_backlog: Counter[str] = Counter()  # worker -> backlog offers sticky to it
        self.wall = wall  # the clock the offers' sticky_until is read on
        self.enqueued: dict[str, float] = {}  # task id -> trio time it entered the backlog (oldest-task age)
        self.waits = Buckets(LATENCY_SECONDS)  # how long polls that got a task waited for it

    def offer(self, offer: Offer, front: bool = False) -> None:
        """``front``: ahead of the backlog (a task someone is waiting for synchronously)."""
        if offer.task_id in self.backlog:
            return
        hold = min(STICKY_WINDOW, offer.sticky_until - self.wall()) if offer.sticky is not None else 0.0
        if hold > 0:
            if self._give(offer, lambda w: w.worker == offer.sticky):
                return
            self.held[offer.task_id] = trio.current_time() + hold
        elif self._give(offer, lambda w: True):
            return
        self.backlog[offer.task_id] = offer
        self.enqueued[offer.task_id] = trio.current_time()
        if front:
            self.backlog.move_to_end(offer.task_id, last=False)
        if offer.sticky is not None:
            self.sticky_backlog[offer.sticky] += 1

    def _give(self, offer: Offer, eligible: Callable[[_Waiter], bool]) -> bool:
        for waiter in self.waiters:
            if waiter.offer is None and eligible(waiter) and waiter.takes(offer):
                waiter.offer = offer
                waiter.event.set()
                self.waiters.remove(waiter)
                return True
        return False

    def withdraw(self, task_id: str) -> None:
        self._remove(task_id)

    def _remove(self, task_id: str) -> Offer | None:
        offer = self.backlog.pop(task_id, None)
        self.held.pop(task_id, None)
        self.enqueued.pop(task_id, None)
        if offer is not None and offer.sticky is not None:
            self.sticky_backlog[offer.sticky] -= 1
            if self.sticky_backlog[offer.sticky] <= 0:
                del self.sticky_backlog[offer.sticky]
        return offer

    def release_worker(self, worker: str) -> None:
        """``worker`` is gone (deregistered): tasks held for it are anyone's now."""
        for task_id in [t for t, o in self.backlog.items() if o.sticky == worker and t in self.held]:
            del self.held[task_id]
            offer = self.backlog[task_id]
            if self._give(offer, lambda w: True):
                self._remove(task_id)

    def _take_backlog(self, waiter: _Waiter) -> Offer | None:
        worker = waiter.worker
        if worker is not None and self.sticky_backlog.get(worker):
            for task_id, offer in self.backlog.items():  # its own sticky tasks first
                if offer.sticky == worker and waiter.takes(offer):
                    return self._remove(task_id)
        now = trio.current_time() if self.held else 0.0
        for task_id, offer in self.backlog.items():
            if waiter.takes(offer) and (not self.held or self.held.get(task_id, 0.0) <= now):
                return self._remove(task_id)
        return None

    def _next_release(self) -> float:
        return min(self.held.values()) if self.held else float("inf")

    async def take(
        self, accepts: Filter, timeout: float, draining: trio.Event, worker: str | None = None,
        caps: frozenset[str] = frozenset(), build: str | None = None, skip: frozenset[str] | set[str] = frozenset(),
    ) -> Offer | None:
        """Wait up to ``timeout`` seconds for a matching offer; None on timeout or drain.
        ``caps``: the poller's capabilities (an offer that ``needs`` one it lacks is not for it);
        ``build``: the poller's build id (an offer pinned to another build is not for it)."""
        start = trio.current_time()
        end = start + timeout
        while True:
            waiter = _Waiter(accepts, worker, caps, build, skip)
            offer = self._take_backlog(waiter)
            if offer is not None:
                self.waits.observe(trio.current_time() - start)
                return offer
            if trio.current_time() >= end or draining.is_set():
                return None
            waiter.event = trio.Event()
            self.waiters.append(waiter)
            try:
                with trio.move_on_at(min(end, self._next_release())):  # a held task may become anyone's
                    await waiter.event.wait()
            except BaseException:
                if waiter.offer is not None:
                    self.offer(waiter.offer)  # the poller is gone; the task goes to someone else
                self._forget(waiter)
                raise
            self._forget(waiter)
            if waiter.event.is_set():
                if waiter.offer is not None:
                    self.waits.observe(trio.current_time() - start)
                return waiter.offer  # an offer, or None when the node drains

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

    def oldest_age(self) -> float:
        """Seconds the oldest task of the backlog has waited (0 when empty)."""
        return trio.current_time() - min(self.enqueued.values()) if self.enqueued else 0.0
