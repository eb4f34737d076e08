"""The node's actor system: activation, delivery, passivation, recovery, draining.

The engine is the actors' ``Host``: it owns the journal, the clock, the timer
service and the task queues, and it supervises every RunActor in one nursery.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actors.clock import SystemClock, TrioClock
from actors.limits import DEFAULT as DEFAULT_LIMITS
from actors.run_actor import Msg, NotOwner, Reply, RunActor, RunNotFound, RunUnavailable
from actors.task_queue import Offer, TaskQueue
from actors.timer_service import TimerService
from persistence.ids import shard_of, shard_of_run

log = logging.getLogger("dw.engine")
QUARANTINE_SECONDS = 10.0


class Engine:
    def __init__(
        self,
        journal: Any,
        clock: SystemClock | TrioClock,
        *,
        idle_seconds: float = 30.0,
        wt_lease: float = 60.0,
        act_lease: float = 300.0,
        shard_count: int = 64,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.idle_seconds = idle_seconds
        self.wt_lease = wt_lease
        self.act_lease = act_lease
        self.shard_count = shard_count
        self.shard_hooks: list[Any] = []
        self.limits = DEFAULT_LIMITS  # the node sets the configured ones  # services with per-shard state: adopt(shards), drop(shards)
        # shard -> epoch held; None on the embedded single node, which owns everything unfenced
        self.owned: dict[int, int] | None = None
        self._quarantined: dict[str, float] = {}  # run id -> when its actor failed
        self.peers: Any = None  # runtime.peers.Peers when clustered
        self.actors: dict[str, RunActor] = {}
        self.queues: dict[tuple[str, str, str], TaskQueue] = {}
        self.timers = TimerService(clock, self._fire)
        self.draining = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.timers.run)
            if self.owned is not None:
                nursery.start_soon(self._reoffer_loop)
            recovered = await self._recover()
            if recovered:
                log.info("recovered %d open runs with outstanding tasks or timers", recovered)
            task_status.started()
            await trio.sleep_forever()

    async def _recover(self, shards: set[int] | None = None) -> int:
        """Rebuild outstanding tasks, leases and timers of open runs after a restart or a shard move."""
        if shards is None and self.owned is not None:
            return 0  # clustered: runs are recovered shard by shard as they are adopted
        rows = await self.journal.runs_to_recover()
        if shards is not None:
            rows = [r for r in rows if shard_of_run(r.run_id) in shards]
        for row in rows:
            self.post(row.run_id, Msg("tick"))
            self.post(row.run_id, Msg("check_children"))
        return len(rows)

    def fence(self, run_id: str) -> dict[int, int]:
        """The epoch a commit for this run must still hold (empty on the embedded single node)."""
        if self.owned is None:
            return {}
        shard = shard_of_run(run_id)
        epoch = self.owned.get(shard) if shard is not None else None
        if epoch is None:
            raise NotOwner(run_id)
        return {shard: epoch}  # type: ignore[dict-item]

    async def adopt_shards(self, shards: set[int]) -> None:
        for hook in self.shard_hooks:  # schedules and other per-shard services
            await hook.adopt(shards)
        recovered = await self._recover(shards)
        if recovered:
            log.info("recovered %d open runs of %d adopted shards", recovered, len(shards))

    def drop_shards(self, shards: set[int]) -> None:
        """Stop the actors of shards this node no longer owns; their state stays in the journal."""
        for hook in self.shard_hooks:
            hook.drop(shards)
        if self.owned is not None:
            for shard in shards:
                self.owned.pop(shard, None)
        for run_id, actor in list(self.actors.items()):
            if shard_of_run(run_id) in shards:
                actor.stop()
                self.forget(actor)

    def drain(self) -> None:
        """Answer parked polls now; the HTTP server is about to stop."""
        self.draining.set()
        for queue in self.queues.values():
            queue.release_all()
        for actor in self.actors.values():
            actor.changed.set()  # history long-polls answer now too

    # --- Host interface ------------------------------------------------------------

    # --- task queues across the cluster ----------------------------------------------

    def queue_home(self, kind: str, namespace: str, name: str) -> int:
        """The shard whose owner hosts this queue's backlog and parked polls."""
        return shard_of(namespace, f"{kind}-queue:{name}", self.shard_count)

    def is_local_queue(self, kind: str, namespace: str, name: str) -> bool:
        return self.owned is None or self.queue_home(kind, namespace, name) in self.owned

    def offer(self, kind: str, namespace: str, name: str, offer: Offer) -> None:
        """Make a ready task visible to pollers, on this node or on the queue's home node."""
        if self.is_local_queue(kind, namespace, name):
            self.queue(kind, namespace, name).offer(offer)
            return
        url = self.peers.url_of_shard(self.queue_home(kind, namespace, name)) if self.peers else None
        if url is not None and self._nursery is not None:
            self._nursery.start_soon(self._remote_offer, url, kind, namespace, name, offer)

    async def _remote_offer(self, url: str, kind: str, namespace: str, name: str, offer: Offer) -> None:
        try:
            await self.peers.call(
                url, "offer", kind=kind, namespace=namespace, queue=name, run_id=offer.run_id, task_id=offer.task_id,
                type_name=offer.type_name, seq=offer.seq,
            )
        except Exception as exc:  # noqa: BLE001 - offers are hints; the re-offer loop sends it again
            log.info("offer of %s to %s failed (%s); it is re-sent shortly", offer.task_id, url, exc)

    async def _reoffer_loop(self) -> None:
        """Offers can be lost when a queue's home moves or a node restarts: re-send the ready ones."""
        while True:
            await trio.sleep(2.0)
            for actor in list(self.actors.values()):
                actor.reoffer()

    def queue(self, kind: str, namespace: str, name: str) -> TaskQueue:
        key = (kind, namespace, name)
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = TaskQueue()
        return q

    def quarantine(self, run_id: str) -> None:
        """A run whose actor failed is not re-activated for a while, so a poisoned journal cannot spin."""
        self._quarantined[run_id] = self.clock.now()

    def actor(self, run_id: str) -> RunActor:
        actor = self.actors.get(run_id)
        if actor is None:
            assert self._nursery is not None, "engine not running"
            failed_at = self._quarantined.get(run_id)
            if failed_at is not None:
                if self.clock.now() - failed_at < QUARANTINE_SECONDS:
                    raise RunUnavailable(run_id)
                del self._quarantined[run_id]
            if self.owned is not None:
                shard = shard_of_run(run_id)
                if shard is None or shard >= self.shard_count:
                    raise RunNotFound(run_id)  # no run of this cluster carries that id
                if shard not in self.owned:
                    raise NotOwner(run_id)
            actor = self.actors[run_id] = RunActor(run_id, self)
            self._nursery.start_soon(actor.main, name=f"run:{run_id}")
        return actor

    def activate(self, run_id: str) -> None:
        """Bring a run to life wherever its shard lives (a child or a continued run may live elsewhere)."""
        self.post(run_id, Msg("tick"))

    def forget(self, actor: RunActor) -> None:
        if self.actors.get(actor.run_id) is actor:
            del self.actors[actor.run_id]

    def post(self, run_id: str, msg: Msg) -> None:
        """Deliver without waiting; a full mailbox gets a supervised sender task."""
        try:
            self.actor(run_id).send.send_nowait(msg)
        except NotOwner:
            self._post_remote(run_id, msg)
        except (RunNotFound, RunUnavailable):
            log.warning("not delivering %s to run %s: the run is not available here", msg.kind, run_id)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            assert self._nursery is not None
            self._nursery.start_soon(self.deliver, run_id, msg)

    def _post_remote(self, run_id: str, msg: Msg) -> None:
        """A message for a run on another node (child start, child closed, parent-close policy)."""
        shard = shard_of_run(run_id)
        url = self.peers.url_of_shard(shard) if self.peers is not None and shard is not None else None
        if url is None or self._nursery is None or msg.reply is not None:
            log.warning("cannot deliver %s to run %s: no reachable owner for its shard", msg.kind, run_id)
            return
        self._nursery.start_soon(self._send_remote, url, run_id, msg)

    async def _send_remote(self, url: str, run_id: str, msg: Msg) -> None:
        for attempt in range(5):
            try:
                await self.peers.call(url, "post", run_id=run_id, kind=msg.kind, args=msg.args)
                return
            except Exception as exc:  # noqa: BLE001 - retried; the owner may be restarting
                log.info("posting %s to run %s on %s failed (%s), attempt %d", msg.kind, run_id, url, exc, attempt + 1)
                await trio.sleep(0.5 * (attempt + 1))
        log.warning("gave up posting %s to run %s on %s", msg.kind, run_id, url)

    async def deliver(self, run_id: str, msg: Msg) -> None:
        while True:
            actor = self.actor(run_id)
            try:
                await actor.send.send(msg)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.lowlevel.checkpoint()  # it passivated meanwhile: activate afresh

    async def ask(self, run_id: str, kind: str, /, **args: Any) -> Any:
        reply = Reply()
        await self.deliver(run_id, Msg(kind, args, reply))
        return await reply.wait()

    async def loaded(self, run_id: str, *, damaged_ok: bool = False) -> RunActor:
        """The run's actor, loaded and with no commit in flight (for read-only views).

        A run with unreadable records is refused (``RunDamaged``) unless ``damaged_ok``: the
        caller then only sends it a command the actor itself checks (terminate)."""
        while True:
            actor = self.actor(run_id)
            await actor.loaded.wait()
            if actor.failed:
                raise RunUnavailable(run_id)  # logged by the actor; quarantined for a while
            await actor.stable()
            if not damaged_ok:
                actor.check_readable()
            if self.actors.get(run_id) is actor or actor.state.status != "new":
                return actor

    async def terminal_info(self, run_id: str) -> dict[str, Any] | None:
        try:
            return await self.ask(run_id, "terminal_info")
        except NotOwner:
            shard = shard_of_run(run_id)
            url = self.peers.url_of_shard(shard) if self.peers is not None and shard is not None else None
            if url is None:
                return None
            return (await self.peers.call(url, "terminal_info", run_id=run_id)).get("info")

    async def _fire(self, run_id: str) -> None:
        self.post(run_id, Msg("tick"))
