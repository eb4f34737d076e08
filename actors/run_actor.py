"""The RunActor: one trio task per active run, owning its folded state.

It handles one message at a time (``messages``, matched in ``_dispatch``; the handlers
live in ``worker_handlers`` and ``control_handlers``): decide → fold → append to the journal
and await the commit → reply → hand out tasks and publish its next deadline. Nothing outside
the actor sees a transition before its commit: reads are messages too, answered between
commits with plain views. An idle actor with no leased work passivates; the next message
re-activates it from the journal.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import trio

from persistence import codec
from persistence.journal import Batch, FencedError, InstanceRow, StoreUnavailable

from . import (
    decide_cancellation,
    decide_operator,
    decide_time,
    journal_retry,
    log_context,
    standalone,
    tracing,
    views,
    workflow_streams,
)
from . import messages as m
from .cancellation_handlers import CancellationHandlers
from .control_handlers import ControlHandlers
from .emit import Emitter
from .errors import ProtocolError
from .host import Host
from .mailbox import Letter, NotOwner, NotReady, Reply, RunDamaged, RunNotFound, RunUnavailable
from .operator_handlers import OperatorHandlers
from .prepared_local_handlers import OPS as PREPARED_OPS
from .prepared_local_handlers import PreparedLocalHandlers
from .records import from_stored, to_stored
from .run_state import RunState, fold
from .task_queue import Offer
from .views import run_row
from .worker_handlers import WorkerPlaneHandlers
from .workflow_stream_handlers import WorkflowStreamHandlers

__all__ = ["Host", "Letter", "NotOwner", "Reply", "RunActor", "RunDamaged", "RunNotFound", "RunUnavailable", "run_row"]

log = logging.getLogger("dw.actor")
READS = (m.Describe, m.ReadHistory, m.ReadUpdate, m.ReadActivity, m.TerminalInfo, m.ReadHeartbeats, m.ReadStreams, m.ReadJob,
         m.ReadDebug)  # answered by read_now
STORE_RETRY_SECONDS = 0.2  # a run whose journal could not be reached (even after retrying) is not reloaded sooner


def fold_records(run_id: str, bodies: list[bytes]) -> tuple[RunState, list[str]]:
    """The run's state from its journal bodies, and what could not be read.

    A body that does not decode is skipped (its position still counts, so later appends go
    after it) and named in the damage list; once damaged, records that do not fold on the
    partial state are skipped the same way. An undamaged journal folds strictly: a fold error
    there is a bug and raises."""
    state = RunState(run_id)
    damage: list[str] = []
    for jseq, body in enumerate(bodies, 1):
        try:
            record = from_stored(codec.loads(body))
            if damage:
                trial = copy.deepcopy(state)
                fold(trial, record)
                state = trial
            else:
                fold(state, record)
        except Exception as exc:
            if not damage and not isinstance(exc, codec.DecodeError):
                raise
            damage.append(f"record {jseq}: {str(exc)[:200]}")
            state.jseq = jseq
    return state, damage


class RunActor(WorkerPlaneHandlers, ControlHandlers, CancellationHandlers, PreparedLocalHandlers, WorkflowStreamHandlers,
               OperatorHandlers):
    def __init__(self, run_id: str, host: Host, mailbox_size: int = 1024, *, fresh: bool = False) -> None:
        self.run_id = run_id
        self.host = host
        self._fresh = fresh  # a run id minted just now: there is no journal to read
        self.ready = False  # loaded and between commits: reads may be answered at once (read_now)
        self.send, self._recv = trio.open_memory_channel[Letter](mailbox_size)
        self.state = RunState(run_id)
        self.visible = 0  # history events committed and readable
        self.changed = trio.Event()
        self.committing = False
        self.damage: list[str] = []  # records that could not be read (see fold_records)
        self._scope = trio.CancelScope()
        self._stopped = False
        self._requesting: set[str] = set()  # children a cooperative request is on its way to

    # --- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """The shard moved away: stop at once; the journal keeps everything committed. Callers
        still waiting on it are told ``NotOwner`` (they forward to the new owner), never left
        waiting: a shielded wait (a poll's claim) would otherwise hold up the node's shutdown."""
        self._stopped = True
        self._scope.cancel()

    async def main(self) -> None:
        """Run until passivated or stopped. A failure here is the run's, never the node's."""
        log_context.enter(run_id=self.run_id)  # this task's own context, not the request's that woke it
        with self._scope:
            try:
                await self._main()
            except StoreUnavailable as exc:
                # Its state may be behind the journal (a commit whose outcome is unknown): the
                # next message loads it afresh, once the journal answers again.
                log.warning("run %s: the journal is unreachable (%s); the run is reloaded on its next message", self.run_id, exc)
                self.host.quarantine(self.run_id, STORE_RETRY_SECONDS)
                self._fail_pending()
            except Exception:
                log.exception("run %s: actor failed; it will be re-activated from the journal later", self.run_id)
                self.host.quarantine(self.run_id)
                self._fail_pending()

    def _fail_pending(self) -> None:
        """Callers waiting in the mailbox get an error instead of waiting forever."""
        while True:
            try:
                letter = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                return
            if letter.reply:
                letter.reply.set(error=self._gone())

    def _gone(self) -> Exception:
        return NotOwner(self.run_id) if self._stopped else RunUnavailable(self.run_id)

    async def _main(self) -> None:
        try:
            await self._load()
        except BaseException:
            self.host.forget(self)
            self._fail_pending()
            self._recv.close()
            raise
        try:
            await self._loop()
        finally:
            self.host.forget(self)
            self._fail_pending()  # stopped with letters queued: their callers are answered
            self._recv.close()
            self.changed.set()  # readers parked on this actor re-resolve the run

    async def _load(self) -> None:
        self.ready = False
        if self._fresh:
            self._fresh = False  # only the first load: a reload after a failed commit reads
            bodies: list[bytes] = []
        else:
            bodies = await journal_retry.read_records(self.host.journal, self.run_id)
        state, self.damage = fold_records(self.run_id, bodies)
        if self.damage:
            log.error(
                "run %s: %d journal record(s) cannot be read (%s); until it is terminated the run answers every "
                "request with 409 run_journal_unreadable and gets no tasks or timers",
                self.run_id, len(self.damage), "; ".join(self.damage[:3]),
            )
        workflow_streams.mark_loaded(state.wstreams)
        if state.meta:
            log_context.bind(workflow_id=state.meta.get("workflow_id"), namespace=state.meta.get("namespace"))
        self.state = state
        self.visible = len(state.events)
        self.ready = True
        now = self.host.clock.now()
        for act in state.activities.values():
            if act.status == "running" and act.heartbeat_base is not None:
                act.heartbeat_base = max(act.heartbeat_base, now)  # heartbeats are not journaled
        self._after_change()
        if not self.damage:
            for run_id in list(state.pending_starts):
                self._launch(run_id)  # created before a crash or a move: not confirmed yet

    def start_message(self, run_id: str) -> m.StartRun | None:
        """The message that creates a run this run created, while its start is unconfirmed."""
        meta = self.state.pending_starts.get(run_id)
        if meta is None:
            return None
        own = self.state.meta
        continued = bool(meta.get("continued_from"))
        created_at = own.get("instance_created_at", own["started_at"]) if continued else meta.get(
            "instance_created_at", meta["started_at"])  # a child retry keeps its instance's creation time
        instance = InstanceRow(
            meta["namespace"], meta["workflow_id"], meta["workflow_type"], run_id, meta["run_number"], created_at
        )
        return m.StartRun(meta=meta, accepted=False, instance=instance)

    def _launch(self, run_id: str) -> None:
        message = self.start_message(run_id)
        if message is not None:
            self.host.start_run(self.run_id, run_id, message)

    async def _loop(self) -> None:
        while True:
            with trio.move_on_after(self.host.idle_seconds) as idle:
                letter = await self._recv.receive()
            if idle.cancelled_caught:
                if not self._can_passivate():
                    continue
                try:
                    letter = self._recv.receive_nowait()
                except trio.WouldBlock:
                    return  # passivate: main's finally closes the mailbox
            await self._handle(letter)

    def _can_passivate(self) -> bool:
        s = self.state
        if s.status == "new":
            return True
        if s.wt is not None and s.wt.status == "leased":
            return False
        return not any(a.status == "running" for a in s.activities.values())

    # --- message dispatch ----------------------------------------------------------

    def _admit(self, message: m.Message) -> None:
        self.check_readable(message)
        if self.state.status == "new" and not isinstance(message, m.Tick | m.ChildClosed | m.StartRun):
            raise RunNotFound(self.run_id)
        if message.namespace is not None and message.namespace != self.state.namespace:
            raise RunNotFound(self.run_id)  # another namespace's task is unknown here, never leaked

    def read_now(self, message: m.Message) -> Any:
        """Answer a read at once, without queueing behind the mailbox's writes, while nothing
        uncommitted is in the state (loaded, no commit in flight). ``NotReady`` otherwise: the
        caller sends it through the mailbox. A read never changes the run, so answering it
        between two queued writes is what the mailbox would have done a little later."""
        if not self.ready or self.committing or not isinstance(message, READS):
            raise NotReady(self.run_id)
        self._admit(message)
        return self._read(message)

    def _read(self, message: m.Message) -> Any:
        match message:
            case m.Describe():
                return views.run_view(self.state, self.visible)
            case m.ReadHistory():
                return self._on_read_history(message)
            case m.ReadUpdate():
                return m.UpdateView(copy.deepcopy(self.state.updates.get(message.update_id)), self.changed)
            case m.ReadActivity():
                return views.activity_view(self.state, message.execution_id)
            case m.TerminalInfo():
                return self._on_terminal_info()
            case m.ReadHeartbeats():
                return copy.deepcopy(self.state.heartbeats)
            case m.ReadStreams():
                return self._on_read_streams(message)
            case m.ReadJob():
                return standalone.view(self.state), self.changed
            case m.ReadDebug():
                return decide_operator.debug(self.state, self.host.clock.now(), include_payload=message.include_payload)
        raise TypeError(f"not a read: {type(message).__name__}")

    async def _handle(self, letter: Letter) -> None:
        message, reply = letter.message, letter.reply
        try:
            self._admit(message)
            with tracing.within(letter.trace):
                value = await self._dispatch(message)
        except trio.Cancelled:
            if reply and not reply.event.is_set():
                reply.set(error=self._gone())  # stopped mid-message: whether it committed, the new owner knows
            raise
        except (ProtocolError, RunNotFound, NotOwner, RunDamaged) as exc:
            if reply:
                reply.set(error=exc)
            return
        except Exception as exc:
            if reply:
                reply.set(error=exc)
            if isinstance(exc, StoreUnavailable):
                raise  # the actor ends (see main)
            log.exception("run %s: %s failed; reloading from the journal", self.run_id, message.KIND)
            await self._load()
            return
        if reply:
            reply.set(value)

    async def _dispatch(self, message: m.Message) -> Any:
        match message:
            case m.Tick():
                return await self._on_tick()
            case m.CheckChildren():
                return self._on_check_children()
            case m.Ping():
                return None
            case m.Repair():
                return await self._on_repair()
            case m.RepairRun():
                return await self._on_repair_run(message)
            case m.Archive():
                return await self._on_archive(message)
            case m.Redrive():
                return await self._on_redrive(message)
            case m.TerminalInfo():
                return self._on_terminal_info()
            case m.ChildClosed():
                return await self._on_child_closed(message)
            case m.ChildRequestDone():
                return await self._on_child_request_done(message)
            case m.ParentCloseDone():
                return await self._on_parent_close_done(message)
            case m.ReleaseOwner():
                return await self._on_release_owner(message)
            case m.ClaimWorkflowTask():
                return await self._on_claim_workflow_task(message)
            case m.ReplayWorkflowTask():
                return self._on_replay_workflow_task(message)
            case m.WorkflowTaskHistory():
                return await self._on_workflow_task_history(message)
            case m.WorkflowTaskHeartbeat():
                return await self._on_workflow_task_heartbeat(message)
            case m.CompleteWorkflowTask():
                return await self._on_complete_workflow_task(message)
            case m.FailWorkflowTask():
                return await self._on_fail_workflow_task(message)
            case m.ClaimActivity():
                return await self._on_claim_activity(message)
            case m.ReplayActivity():
                return self._on_replay_activity(message)
            case m.CompleteActivity():
                return await self._on_complete_activity(message)
            case m.FailActivity():
                return await self._on_fail_activity(message)
            case m.ActivityHeartbeat():
                return await self._on_activity_heartbeat(message)
            case m.AppendMessage():
                return await self._on_append_message(message)
            case m.RequestCancellation():
                return await self._on_request_cancellation(message)
            case m.ClaimOp(op="deliver_cancellation"):
                return await self._on_deliver_cancellation(message)
            case m.ClaimOp() if message.op in PREPARED_OPS:
                return await self._on_prepared_local(message)
            case m.ActivityOp(op="renew_lease"):
                return await self._on_renew_lease(message)
            case m.ActivityOp(op="status"):
                return self._on_activity_status(message)
            case m.ActivityOp(op="acknowledge_cancellation"):
                return await self._on_acknowledge_cancellation(message)
            case m.Signal():
                return await self._on_signal(message)
            case m.Close():
                return await self._on_close(message)
            case m.Update():
                return await self._on_update(message)
            case m.StartRun():
                return await self._on_start_run(message)
            case m.RunsStarted():
                return await self._on_runs_started(message)
            case m.PendingStart():
                return self.start_message(message.run_id)
            case m.StreamAppend():
                return await self._on_stream_append(message)
            case m.StreamClose():
                return await self._on_stream_close(message)
            case m.Describe() | m.ReadHistory() | m.ReadUpdate() | m.ReadActivity() | m.ReadHeartbeats() | m.ReadStreams() | m.ReadJob() | m.ReadDebug():
                return self._read(message)
        raise TypeError(f"RunActor has no handler for {type(message).__name__}")

    def check_readable(self, message: m.Message | None = None) -> None:
        """A damaged run that is still open takes only terminate (and the no-op ticks of recovery)."""
        if not self.damage or not (self.state.is_open or self.state.status == "new"):
            return
        if isinstance(message, m.Tick | m.CheckChildren | m.Ping) or (
            isinstance(message, m.Describe) and message.allow_damaged
        ) or (isinstance(message, m.Close) and message.kind == "terminate" and self.state.is_open):
            return
        raise RunDamaged(self.run_id)

    async def commit(self, em: Emitter) -> None:
        if not em.records and not em.instances:
            return
        state = self.state
        standalone.close_with_activity(state, em)  # a host run closes with its activity's final outcome
        batch = Batch(fence=self.host.fence(self.run_id))
        base = state.jseq
        for offset, record in enumerate(em.records, 1):
            batch.records.append((self.run_id, base + offset, codec.dumps(to_stored(record))))
        for record in em.records:
            fold(state, record)
        batch.runs.append(run_row(state, em.now))
        batch.instances.extend(em.instances)
        self.committing = True
        try:
            with trio.CancelScope(shield=True), tracing.span("journal.commit", **{"dw.run_id": self.run_id, "dw.records": len(em.records)}):
                await journal_retry.append(self.host.journal, batch, self.run_id)
        except FencedError as exc:
            self.committing = False
            self.host.counters["fencing_rejections"] += 1
            log.warning("run %s: shard %s was taken over (epoch %s); stopping", self.run_id, exc.shard, exc.actual)
            self.host.drop_shards({exc.shard})
            raise NotOwner(self.run_id) from None
        except BaseException as exc:
            self.committing = False
            if not isinstance(exc, StoreUnavailable):  # reloading could not work now; the actor ends
                await self._load()
            raise
        self.committing = False
        self.visible = len(state.events)
        self.host.observe(em.records, state.meta.get("started_at"))
        for new in em.new_runs:
            self._launch(new.run_id)
        for effect in em.effects:
            if effect.kind == "notify_parent":
                self.host.post(effect.run_id, m.ChildClosed(child_run_id=self.run_id))
        if any(effect.kind == "close_child" for effect in em.effects):
            self._apply_parent_close()
        if any(r.kind == "coop_child" for r in em.records):
            self._request_children()
        self._after_change()

    def _apply_parent_close(self) -> None:
        """Ask each child still owed its parent-close policy to close, or (``request_cancellation``)
        to stop cooperatively — after the close commits, and again whenever this run is loaded
        until the outcome is recorded."""
        s = self.state
        for child_run, pending in s.parent_close.items():
            policy = pending["policy"]
            message: m.Message
            if policy == "request_cancellation":
                owed = decide_cancellation.child_request(s, child_run, pending["workflow_id"], None)
                message = m.RequestCancellation(request_id=owed["request_id"], reason="Parent workflow closed.", parent=owed["parent"])
            else:
                message = m.Close(kind="cancel" if policy == "request_cancel" else "terminate", reason="Parent workflow closed.")
            self.host.apply_parent_close(self.run_id, child_run, message)

    def _request_children(self) -> None:
        """Send the cooperative requests a delivery owes children (extended spec §5.7), once per
        actor; a reload sends again what was not confirmed (the child keeps one request)."""
        for child_run, owed in self.state.child_requests.items():
            if owed.get("done") or child_run in self._requesting:
                continue
            self._requesting.add(child_run)
            message = m.RequestCancellation(request_id=owed["request_id"], reason=owed.get("reason"), parent=owed["parent"])
            self.host.request_child_cancellation(self.run_id, child_run, message)

    def _after_change(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        if self.damage:
            return  # a partial state must not hand out work
        self.host.publish_ready(self.run_id, self.ready_tasks())
        self.host.timers.schedule(self.run_id, decide_time.next_deadline(self.state, self.host.clock.now()))

    def ready_tasks(self) -> dict[str, tuple[str, str, str, Offer]]:
        """The run's tasks a worker may take now: task id -> (kind, namespace, queue, offer)."""
        s = self.state
        now = self.host.clock.now()
        ready: dict[str, tuple[str, str, str, Offer]] = {}
        if not s.is_open:
            return ready
        wt = s.wt
        if wt is not None and wt.status == "ready" and wt.available_at <= now:
            sticky, until = s.sticky if s.sticky is not None and s.sticky[1] > now else (None, 0.0)
            needs = "cooperative_cancellation" if s.coop is not None else None  # only such workers can replay it (§5.3)
            offer = Offer(self.run_id, wt.task_id, s.meta["workflow_type"], sticky=sticky, sticky_until=until, needs=needs,
                          build=s.meta.get("compatibility"))
            ready[wt.task_id] = ("workflow", s.namespace, s.task_queue, offer)
        for act in s.activities.values():
            if act.status == "pending" and act.available_at <= now:
                offer = Offer(self.run_id, act.task_id, act.activity_type, act.seq, build=s.meta.get("compatibility"), session=act.session)
                ready[act.task_id] = ("activity", s.namespace, act.queue, offer)
        return ready

    # --- handlers ------------------------------------------------------------------

    async def _on_tick(self) -> None:
        if self.state.status == "new":
            return
        em = decide_time.tick(self.state, self.host.clock.now())
        await self.commit(em)
        self._after_change()

    def _on_read_history(self, msg: m.ReadHistory) -> m.HistoryPage:
        end = self.visible if msg.limit is None else min(self.visible, msg.after + msg.limit)
        s = self.state
        return m.HistoryPage(s.events[msg.after:end], self.visible, s.is_open, s.status, self.changed)

    def work_view(self) -> m.WorkView | None:
        """The run's outstanding work for node-wide operator scans, read without a message so a
        scan does not queue behind every run's mailbox. None while a commit is in flight (its
        state is not yet visible) or before the run exists."""
        if self.committing or self.state.status == "new" or self.damage:
            return None
        return views.work_view(self.state)

    def wake_readers(self) -> None:
        """Readers parked on this run's next change look again now (the node is draining)."""
        self.changed.set()

    @property
    def exists(self) -> bool:
        """The run has a journal (a fresh actor of an unknown id folds to nothing)."""
        return self.state.status != "new"

    @property
    def namespace(self) -> str | None:
        return self.state.namespace if self.exists else None

    async def _on_repair(self) -> bool:
        """Give an open run that has no workflow task and is not waiting on anything a task.

        True when it needed one. The wake is journaled, so the task survives a restart."""
        s = self.state
        if not s.is_open or s.wt is not None or s.status not in ("pending", "running") or standalone.is_host(s.meta):
            return False
        em = Emitter(s, self.host.clock.now())
        em.internal("repair_wake")
        await self.commit(em)
        self._after_change()
        return True


