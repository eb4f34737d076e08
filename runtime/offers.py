"""Every ready task of the runs this node owns, and getting each one to its queue's home.

A task queue's backlog lives in the memory of the node owning the queue's home shard, so it
is lost when that shard moves or that node restarts, and an offer sent while the home was in
transit goes nowhere. The book therefore remembers every ready (unclaimed) task of every run
this node owns — also after the run's actor has passivated — and sends it again whenever the
directory changes (a shard moved, a member restarted or stopped answering) and, as a safety
net, every ``RESEND_SECONDS``. Offers to another node travel in batches, one call per member.
Queues drop duplicates, and a stale offer costs one refused claim, so sending again is cheap.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actors.task_queue import Offer
from persistence.ids import shard_of_run

from .router import PEER_TIMEOUT, Router

log = logging.getLogger("dw.offers")

ReadyTask = tuple[str, str, str, Offer]  # kind, namespace, queue, offer
RESEND_SECONDS = 10.0
BATCH = 1000


class OfferBook:
    def __init__(self, engine: Any, router: Router) -> None:
        self.engine = engine
        self.router = router
        self.ready: dict[str, dict[str, ReadyTask]] = {}  # run id -> task id -> task
        self._outbox: dict[str, dict[str, ReadyTask]] = {}  # member url -> task id -> task
        self._wake = trio.Event()
        self._seen_version = -1
        self.counters = {"resends": 0, "remote_batches": 0, "remote_failures": 0, "refused": 0}

    # --- what is ready -----------------------------------------------------------------

    def publish(self, run_id: str, tasks: dict[str, ReadyTask]) -> None:
        """The run's ready tasks now: new ones are offered at once, gone ones withdrawn."""
        before = self.ready.get(run_id, {})
        if tasks:
            self.ready[run_id] = tasks
        else:
            self.ready.pop(run_id, None)
        for task_id, task in tasks.items():
            if task_id not in before:
                self._send(task)
        for task_id, task in before.items():
            if task_id not in tasks:
                self._withdraw(task)

    def forget_shards(self, shards: set[int]) -> None:
        for run_id in [r for r in self.ready if shard_of_run(r) in shards]:
            del self.ready[run_id]

    def resend(self, run_id: str | None = None) -> int:
        """Offer again every ready task (of one run, or of all); how many were sent."""
        runs = [self.ready.get(run_id, {})] if run_id is not None else list(self.ready.values())
        count = 0
        for tasks in runs:
            for task in list(tasks.values()):
                self._send(task)
                count += 1
        return count

    def _send(self, task: ReadyTask) -> None:
        kind, namespace, queue, offer = task
        if self.router.is_local_queue(kind, namespace, queue):
            self.engine.queue(kind, namespace, queue).offer(offer)
            return
        url = self.router.owner_url(self.router.queue_shard(kind, namespace, queue))
        if url is None:
            return  # no reachable home right now: sent again when the directory changes
        self._outbox.setdefault(url, {})[offer.task_id] = task
        self._wake.set()

    def _withdraw(self, task: ReadyTask) -> None:
        kind, namespace, queue, offer = task
        if self.router.is_local_queue(kind, namespace, queue):
            self.engine.queue(kind, namespace, queue).withdraw(offer.task_id)
        # at a remote home a withdrawn offer stays until a poller's claim finds it gone

    # --- delivery ----------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender)
            nursery.start_soon(self._resender)

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            outbox, self._outbox = self._outbox, {}
            async with trio.open_nursery() as nursery:
                for url, tasks in outbox.items():
                    nursery.start_soon(self._deliver, url, list(tasks.values()))

    async def _deliver(self, url: str, tasks: list[ReadyTask]) -> None:
        peers = self.engine.peers
        for start in range(0, len(tasks), BATCH):
            batch = [
                {"kind": k, "namespace": ns, "queue": q, "run_id": o.run_id, "task_id": o.task_id, "type_name": o.type_name, "seq": o.seq,
                 **({"sticky": o.sticky, "sticky_until": o.sticky_until} if o.sticky is not None else {}),
                 **({"needs": o.needs} if o.needs is not None else {}),
                 **({"build": o.build} if o.build is not None else {}),
                 **({"session": o.session} if o.session is not None else {})}
                for k, ns, q, o in tasks[start:start + BATCH]
            ]
            try:
                with trio.fail_after(PEER_TIMEOUT):
                    reply = await peers.call(url, "offers", offers=batch)
                self.counters["remote_batches"] += 1
                self.counters["refused"] += int(reply.get("refused", 0))
            except Exception as exc:  # noqa: BLE001 - offers are hints: the resender sends them again
                self.counters["remote_failures"] += 1
                if isinstance(exc, trio.TooSlowError):
                    peers.suspect(url)
                log.info("%d offers to %s not delivered (%s); they are sent again shortly", len(batch), url, exc)

    async def _resender(self) -> None:
        """Send everything again when the directory changes, and every RESEND_SECONDS."""
        last = trio.current_time()
        while True:
            await trio.sleep(0.5)
            peers = self.engine.peers
            version = peers.version if peers is not None else 0
            if version != self._seen_version or trio.current_time() - last >= RESEND_SECONDS:
                self._seen_version = version
                last = trio.current_time()
                if self.resend():
                    self.counters["resends"] += 1
