"""The node's actor system: activation, delivery, passivation, recovery, draining.

The engine is the actors' ``Host``: it owns the journal, the clock, the timer
service and the task queues, and it supervises every RunActor in one nursery.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from typing import Any

import trio

from actors import messages as m
from actors import tracing
from actors.clock import Clock
from actors.id_source import RANDOM_IDS, IdSource
from actors.limits import DEFAULT as DEFAULT_LIMITS
from actors.mailbox import NotReady
from actors.run_actor import READS, Letter, NotOwner, Reply, RunActor, RunDamaged, RunNotFound, RunUnavailable
from actors.task_queue import TaskQueue
from actors.timer_service import TimerService
from persistence.buckets import Buckets
from persistence.ids import shard_of, shard_of_run
from persistence.journal import Journal, StoreUnavailable

from .offers import OfferBook, ReadyTask
from .router import Router, Unreachable

log = logging.getLogger("dw.engine")
QUARANTINE_SECONDS = 10.0
CLOSE_OUTCOMES = {"WorkflowCompleted": "completed", "WorkflowFailed": "failed", "WorkflowTimedOut": "timed_out",
                  "WorkflowCancelled": "cancelled", "WorkflowTerminated": "terminated", "WorkflowContinuedAsNew": "continued"}
RUN_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0, 86400.0)
REMOTE_POST_ATTEMPTS = 12  # about two minutes of rebalancing


class Engine:
    def __init__(
        self,
        journal: Journal,
        clock: Clock,
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
        self.ids: IdSource = RANDOM_IDS  # ids minted by decisions (tests may seed them)
        self.limits = DEFAULT_LIMITS  # the node sets the configured ones  # services with per-shard state: adopt(shards), drop(shards)
        # shard -> epoch held; None on the embedded single node, which owns everything unfenced
        self.owned: dict[int, int] | None = None
        self._quarantined: dict[str, float] = {}  # run id -> until when it is not re-activated
        self.peers: Any = None  # runtime.peers.Peers when clustered
        self.actors: dict[str, RunActor] = {}
        self.queues: dict[tuple[str, str, str], TaskQueue] = {}
        self.timers = TimerService(clock, self._fire)
        self.router = Router(self)
        self.offers = OfferBook(self, self.router)
        self.draining = trio.Event()
        self._nursery: trio.Nursery | None = None
        # What the node did, as plain counters its metrics read at scrape time (runtime.metrics).
        self.counters: Counter[str] = Counter()  # activations, reloads, passivations, fencing_rejections
        self.events: Counter[str] = Counter()  # history events committed here, by type
        self.run_seconds: dict[str, Buckets] = {}  # closed runs' start-to-close time, by outcome

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.timers.run)
            await nursery.start(self.offers.run)
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
            self.post(row.run_id, m.Tick())
            self.post(row.run_id, m.CheckChildren())
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
        self.offers.forget_shards(shards)
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
            actor.wake_readers()  # history long-polls answer now too

    # --- Host interface ------------------------------------------------------------

    # --- task queues across the cluster ----------------------------------------------

    def queue_home(self, kind: str, namespace: str, name: str) -> int:
        """The shard whose owner hosts this queue's backlog and parked polls."""
        return shard_of(namespace, f"{kind}-queue:{name}", self.shard_count)

    def publish_ready(self, run_id: str, tasks: dict[str, ReadyTask]) -> None:
        """The run's ready tasks, offered to their queues' homes (runtime.offers)."""
        self.offers.publish(run_id, tasks)

    def queue(self, kind: str, namespace: str, name: str) -> TaskQueue:
        key = (kind, namespace, name)
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = TaskQueue(wall=self.clock.now)
        return q

    def quarantine(self, run_id: str, seconds: float | None = None) -> None:
        """A run whose actor failed is not re-activated for a while, so a poisoned journal cannot spin."""
        self._quarantined[run_id] = self.clock.now() + (QUARANTINE_SECONDS if seconds is None else seconds)

    def actor(self, run_id: str, *, fresh: bool = False) -> RunActor:
        """The run's actor here, activated if need be (``fresh``: the id was minted just now, so
        the new actor need not read a journal that cannot exist)."""
        actor = self.actors.get(run_id)
        if actor is None:
            assert self._nursery is not None, "engine not running"
            until = self._quarantined.get(run_id)
            if until is not None:
                if self.clock.now() < until:
                    raise RunUnavailable(run_id)
                del self._quarantined[run_id]
            if self.owned is not None:
                shard = shard_of_run(run_id)
                if shard is None or shard >= self.shard_count:
                    raise RunNotFound(run_id)  # no run of this cluster carries that id
                if shard not in self.owned:
                    raise NotOwner(run_id)
            actor = self.actors[run_id] = RunActor(run_id, self, fresh=fresh)
            self.counters["activations" if fresh else "reloads"] += 1
            self._nursery.start_soon(actor.main, name=f"run:{run_id}")
        return actor

    def forget(self, actor: RunActor) -> None:
        if self.actors.get(actor.run_id) is actor:
            del self.actors[actor.run_id]
            self.counters["passivations"] += 1

    def observe(self, records: list[Any], started_at: float | None) -> None:
        """Count a commit's history events; a run's close also its start-to-close time."""
        for record in records:
            if record.sequence is None:
                continue
            kind = record.kind
            self.events[kind] += 1
            outcome = CLOSE_OUTCOMES.get(kind)
            if outcome is not None and started_at is not None:
                buckets = self.run_seconds.get(outcome)
                if buckets is None:
                    buckets = self.run_seconds[outcome] = Buckets(RUN_SECONDS)
                buckets.observe(max(record.at - started_at, 0.0))

    def post(self, run_id: str, message: m.Message) -> None:
        """Deliver without waiting; a full mailbox gets a supervised sender task."""
        letter = Letter(message)
        try:
            self.actor(run_id).send.send_nowait(letter)
        except NotOwner:
            self._post_remote(run_id, message)
        except (RunNotFound, RunUnavailable):
            log.warning("not delivering %s to run %s: the run is not available here", message.KIND, run_id)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            assert self._nursery is not None
            self._nursery.start_soon(self.deliver, run_id, letter)

    def _post_remote(self, run_id: str, message: m.Message) -> None:
        """A message for a run on another node (child start, child closed, parent-close policy)."""
        if self.peers is None or self._nursery is None or message.KIND not in m.POSTABLE:
            log.warning("cannot deliver %s to run %s: its shard is not this node's", message.KIND, run_id)
            return
        self._nursery.start_soon(self._send_remote, run_id, message)

    async def _send_remote(self, run_id: str, message: m.Message) -> None:
        """Deliver across nodes, riding out a rebalance; the repair pass is the net behind it."""
        kind, args = m.to_wire(message)
        for attempt in range(REMOTE_POST_ATTEMPTS):
            try:
                reply = await self.router.call_run(run_id, "post", kind=kind, args=args)
                if isinstance(reply, dict) and "error" in reply:
                    log.warning("posting %s to run %s: its owner refused it (%s)", kind, run_id, reply["error"])
                return
            except Unreachable:
                if self.owned is None or shard_of_run(run_id) in self.owned:
                    self.post(run_id, message)  # it became ours meanwhile
                    return
                log.info("posting %s to run %s: no reachable owner yet (attempt %d)", kind, run_id, attempt + 1)
                await trio.sleep(min(2.0 * (attempt + 1), 10.0))
        log.warning("gave up posting %s to run %s; the repair pass will find the run", kind, run_id)

    def start_run(self, creator: str, run_id: str, message: m.StartRun) -> None:
        """Have a created run's own actor (on whichever node owns its shard) commit its start,
        then tell its creator, which stops re-sending it. Supervised; the creator sends it
        again whenever it is loaded until it hears back."""
        if self._nursery is None:
            return
        self._nursery.start_soon(self._start_run, creator, run_id, message, name=f"start:{run_id}")

    async def ensure_started(self, creator: str, run_id: str) -> bool:
        """Commit a created run's start now if its creator still holds it unconfirmed (a reader
        found a continuation link to a run that does not exist yet). True when it was started."""
        message = await self.ask(creator, m.PendingStart(run_id=run_id))
        if message is None:
            return False
        await self._start_once(run_id, message)
        self.post(creator, m.RunsStarted(run_ids=(run_id,)))
        return True

    async def _start_run(self, creator: str, run_id: str, message: m.StartRun) -> None:
        for attempt in range(REMOTE_POST_ATTEMPTS):
            try:
                await self._start_once(run_id, message)
            except (Unreachable, RunUnavailable, StoreUnavailable, NotOwner) as exc:
                log.info("starting run %s for %s: %s (attempt %d)", run_id, creator, type(exc).__name__, attempt + 1)
                await trio.sleep(min(2.0 * (attempt + 1), 10.0))
                continue
            self.post(creator, m.RunsStarted(run_ids=(run_id,)))
            return
        log.warning("gave up starting run %s for %s for now; %s sends it again when next loaded", run_id, creator, creator)

    def apply_parent_close(self, parent: str, child: str, message: m.Message) -> None:
        """Apply a closed ``parent``'s policy to ``child`` (``message``: a Close, or a cooperative
        RequestCancellation) and tell the parent how it went, so it records
        ParentClosePolicyApplied or ParentClosePolicyFailed. Supervised; the parent asks again
        whenever it is loaded until that is recorded."""
        if self._nursery is not None:
            self._nursery.start_soon(self._tell_child, parent, child, message, m.ParentCloseDone, name=f"parent-close:{child}")

    def request_child_cancellation(self, parent: str, child: str, message: m.RequestCancellation) -> None:
        """A cooperative request a delivery at a child's boundary owes the child (extended spec
        §5.7); the parent records when the child has it, and asks again after a reload until then."""
        if self._nursery is not None:
            self._nursery.start_soon(self._tell_child, parent, child, message, m.ChildRequestDone, name=f"child-request:{child}")

    async def _tell_child(self, parent: str, child: str, message: m.Message, done: type[m.ParentCloseDone] | type[m.ChildRequestDone]) -> None:
        outcome, error = "failed", "the child's owner could not be reached"
        for attempt in range(REMOTE_POST_ATTEMPTS):
            try:
                answer = await self.ask(child, message)
                outcome, error = ("already_closed" if "rejected" in answer else "applied"), None
                break
            except RunNotFound:
                error = "the child run does not exist"
                break
            except NotOwner:
                if self.peers is None:
                    break
                try:
                    kind_, args = m.to_wire(message)
                    reply = await self.router.call_run(child, "ask", kind=kind_, args=args)
                except Unreachable:
                    await trio.sleep(min(2.0 * (attempt + 1), 10.0))
                    continue
                if isinstance(reply, dict) and reply.get("retry"):
                    await trio.sleep(min(2.0 * (attempt + 1), 10.0))  # it moved on the way: ask its new owner
                    continue
                if isinstance(reply, dict) and "error" in reply:
                    error = f"the child's owner refused it ({reply['error']})"
                    break
                answer = reply.get("answer") if isinstance(reply, dict) else None
                outcome, error = ("already_closed" if isinstance(answer, dict) and "rejected" in answer else "applied"), None
                break
            except (RunUnavailable, StoreUnavailable, RunDamaged) as exc:
                error = f"the child run is unavailable ({type(exc).__name__})"
                await trio.sleep(min(2.0 * (attempt + 1), 10.0))
        if outcome == "failed":
            log.warning("%s of %s for child %s failed: %s", message.KIND, parent, child, error)
        self.post(parent, done(child_run_id=child, outcome=outcome, error=error))

    async def _start_once(self, run_id: str, message: m.StartRun) -> None:
        try:
            await self.ask(run_id, message)
        except NotOwner:
            if self.peers is None:
                raise
            reply = await self.router.call_run(
                run_id, "start_run", meta=message.meta, accepted=message.accepted, instance=asdict(message.instance)
            )
            if not reply.get("started"):
                raise NotOwner(run_id) from None

    async def deliver(self, run_id: str, letter: Letter) -> None:
        while True:
            actor = self.actor(run_id)
            try:
                await actor.send.send(letter)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.lowlevel.checkpoint()  # it passivated meanwhile: activate afresh

    async def ask(self, run_id: str, message: m.Message) -> Any:
        """Deliver a message to the run's actor on this node and wait for its answer. A read of
        a loaded run with no commit in flight is answered at once (``RunActor.read_now``)."""
        live = self.actors.get(run_id)
        if live is not None and isinstance(message, READS):
            try:
                answer = live.read_now(message)
            except NotReady:
                pass
            else:
                await trio.lowlevel.checkpoint()
                return answer
        reply = Reply()
        await self.deliver(run_id, Letter(message, reply, tracing.current()))
        return await reply.wait()

    def is_live(self, run_id: str) -> bool:
        """The run has an actor in memory on this node (it may still be loading)."""
        return run_id in self.actors

    async def start_new(self, run_id: str, message: m.StartRun) -> m.RunView:
        """Start a run whose id was minted for this start (a client's start): its actor begins
        empty instead of reading a journal first, which keeps a read off the start's path."""
        reply = Reply()
        letter = Letter(message, reply)
        try:
            self.actor(run_id, fresh=True).send.send_nowait(letter)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            await self.deliver(run_id, letter)
        view: m.RunView = await reply.wait()
        return view

    def work_views(self) -> list[m.WorkView]:
        """The outstanding work of every live run on this node, as of each one's last commit."""
        return [view for actor in list(self.actors.values()) if (view := actor.work_view()) is not None]

    def live_run_ids(self, namespace: str) -> list[str]:
        return [run_id for run_id, actor in list(self.actors.items()) if actor.namespace == namespace]

    def stop_namespace(self, namespace: str) -> None:
        """A deleted namespace's live runs stop at once; their journals are gone."""
        for actor in list(self.actors.values()):
            if actor.namespace == namespace:
                actor.stop()
                self.forget(actor)

    async def terminal_info(self, run_id: str) -> dict[str, Any] | None:
        try:
            return await self.ask(run_id, m.TerminalInfo())
        except NotOwner:
            try:
                return (await self.router.call_run(run_id, "terminal_info")).get("info")
            except Unreachable:
                return None

    async def _fire(self, run_id: str) -> None:
        self.post(run_id, m.Tick())
