"""The RunActor: one trio task per active run, owning its folded state.

It handles one message at a time: decide → fold → append to the journal and await
the commit → reply → hand out tasks and publish its next deadline. Nothing outside
the actor sees a transition before its commit: readers wait while a commit is in
flight. An idle actor with no leased work passivates; the next message re-activates
it from the journal.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from persistence import codec
from persistence.journal import Batch, ConflictError, FencedError, InstanceRow, Journal, StoreUnavailable
from persistence.vocabulary import activity_execution_id, encode_offset

from . import decide_activity, decide_control, decide_time, decide_workflow_task, journal_retry, views
from . import messages as m
from .clock import Clock
from .emit import Emitter, started_records
from .errors import GuardError, ProtocolError
from .id_source import IdSource
from .limits import Limits, history_full, signals_full
from .records import from_stored, to_stored
from .run_state import TERMINAL, RunState, fold
from .task_queue import Offer, TaskQueue
from .timer_service import TimerService
from .views import run_row

__all__ = ["Host", "Letter", "NotOwner", "Reply", "RunActor", "RunDamaged", "RunNotFound", "RunUnavailable", "run_row"]

log = logging.getLogger("dw.actor")
STORE_RETRY_SECONDS = 0.2  # a run whose journal could not be reached (even after retrying) is not reloaded sooner


class Host(Protocol):
    journal: Journal
    clock: Clock
    timers: TimerService
    idle_seconds: float
    wt_lease: float
    act_lease: float
    limits: Limits
    ids: IdSource

    def queue(self, kind: str, namespace: str, name: str) -> TaskQueue: ...

    def publish_ready(self, run_id: str, tasks: dict[str, tuple[str, str, str, Offer]]) -> None: ...

    def post(self, run_id: str, message: m.Message) -> None: ...

    def activate(self, run_id: str) -> None: ...

    def forget(self, actor: RunActor) -> None: ...

    def fence(self, run_id: str) -> dict[int, int]: ...

    def drop_shards(self, shards: set[int]) -> None: ...

    def quarantine(self, run_id: str, seconds: float | None = None) -> None: ...

    def start_run(self, creator: str, run_id: str, message: m.StartRun) -> None: ...

    async def terminal_info(self, run_id: str) -> dict[str, Any] | None: ...


class Reply:
    __slots__ = ("event", "value", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(slots=True)
class Letter:
    """A message in the mailbox, with where its answer goes (None: nobody waits)."""

    message: m.Message
    reply: Reply | None = None


class RunNotFound(Exception):
    pass


class NotOwner(Exception):
    """This node does not own the run's shard (any more)."""


class RunUnavailable(Exception):
    """The run's journal could not be folded; the failure is logged and retried later."""


class RunDamaged(RunUnavailable):
    """Records of the run cannot be decoded: it serves nothing but terminate until it is closed."""


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


class RunActor:
    def __init__(self, run_id: str, host: Host, mailbox_size: int = 1024) -> None:
        self.run_id = run_id
        self.host = host
        self.send, self._recv = trio.open_memory_channel[Letter](mailbox_size)
        self.state = RunState(run_id)
        self.visible = 0  # history events committed and readable
        self.changed = trio.Event()
        self.committing = False
        self._stable = trio.Event()
        self._stable.set()
        self.loaded = trio.Event()
        self.failed = False  # the load failed: readers waiting on ``loaded`` must not wait on
        self.damage: list[str] = []  # records that could not be read (see fold_records)
        self._scope = trio.CancelScope()

    # --- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """The shard moved away: stop at once; the journal keeps everything committed."""
        self._scope.cancel()

    async def main(self) -> None:
        """Run until passivated or stopped. A failure here is the run's, never the node's."""
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
                letter.reply.set(error=RunUnavailable(self.run_id))

    async def _main(self) -> None:
        try:
            await self._load()
        except BaseException:
            self.failed = True
            self.loaded.set()
            self.host.forget(self)
            self._fail_pending()
            self._recv.close()
            raise
        try:
            await self._loop()
        finally:
            self.host.forget(self)
            self._recv.close()
            self.changed.set()  # readers parked on this actor re-resolve the run

    async def _load(self) -> None:
        bodies = await journal_retry.read_records(self.host.journal, self.run_id)
        state, self.damage = fold_records(self.run_id, bodies)
        if self.damage:
            log.error(
                "run %s: %d journal record(s) cannot be read (%s); until it is terminated the run answers every "
                "request with 409 run_journal_unreadable and gets no tasks or timers",
                self.run_id, len(self.damage), "; ".join(self.damage[:3]),
            )
        self.state = state
        self.visible = len(state.events)
        now = self.host.clock.now()
        for act in state.activities.values():
            if act.status == "running" and act.heartbeat_base is not None:
                act.heartbeat_base = max(act.heartbeat_base, now)  # heartbeats are not journaled
        self.loaded.set()
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
        created_at = own.get("instance_created_at", own["started_at"]) if continued else meta["started_at"]
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

    async def stable(self) -> None:
        while self.committing:
            await self._stable.wait()

    # --- message dispatch ----------------------------------------------------------

    async def _handle(self, letter: Letter) -> None:
        message, reply = letter.message, letter.reply
        try:
            self.check_readable(message)
            if self.state.status == "new" and not isinstance(message, m.Tick | m.ChildClosed | m.StartRun):
                raise RunNotFound(self.run_id)
            if message.namespace is not None and message.namespace != self.state.namespace:
                raise RunNotFound(self.run_id)  # another namespace's task is unknown here, never leaked
            value = await self._dispatch(message)
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
            case m.TerminalInfo():
                return self._on_terminal_info()
            case m.ChildClosed():
                return await self._on_child_closed(message)
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
                return self._on_activity_heartbeat(message)
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
            case m.Describe():
                return views.run_view(self.state, self.visible)
            case m.ReadHistory():
                return self._on_read_history(message)
            case m.ReadUpdate():
                return m.UpdateView(copy.deepcopy(self.state.updates.get(message.update_id)), self.changed)
            case m.ReadActivity():
                return views.activity_view(self.state, message.execution_id)
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
        batch = Batch(fence=self.host.fence(self.run_id))
        base = state.jseq
        for offset, record in enumerate(em.records, 1):
            batch.records.append((self.run_id, base + offset, codec.dumps(to_stored(record))))
        for record in em.records:
            fold(state, record)
        batch.runs.append(run_row(state, em.now))
        batch.instances.extend(em.instances)
        self.committing = True
        self._stable = trio.Event()
        try:
            with trio.CancelScope(shield=True):
                await journal_retry.append(self.host.journal, batch, self.run_id)
        except FencedError as exc:
            self.committing = False
            self._stable.set()
            log.warning("run %s: shard %s was taken over (epoch %s); stopping", self.run_id, exc.shard, exc.actual)
            self.host.drop_shards({exc.shard})
            raise NotOwner(self.run_id) from None
        except BaseException as exc:
            self.committing = False
            self._stable.set()
            if not isinstance(exc, StoreUnavailable):  # reloading could not work now; the actor ends
                await self._load()
            raise
        self.committing = False
        self._stable.set()
        self.visible = len(state.events)
        for new in em.new_runs:
            self._launch(new.run_id)
        for effect in em.effects:
            if effect.kind == "notify_parent":
                self.host.post(effect.run_id, m.ChildClosed(child_run_id=self.run_id))
            elif effect.kind == "close_child":
                kind = "cancel" if effect.data["policy"] == "request_cancel" else "terminate"
                self.host.post(effect.run_id, m.Close(kind=kind, reason="Parent workflow closed."))
        self._after_change()

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
            ready[wt.task_id] = ("workflow", s.namespace, s.task_queue, Offer(self.run_id, wt.task_id, s.meta["workflow_type"]))
        for act in s.activities.values():
            if act.status == "pending" and act.available_at <= now:
                ready[act.task_id] = ("activity", s.namespace, act.queue, Offer(self.run_id, act.task_id, act.activity_type, act.seq))
        return ready

    # --- handlers ------------------------------------------------------------------

    async def _on_tick(self) -> None:
        if self.state.status == "new":
            return
        em = decide_time.tick(self.state, self.host.clock.now())
        await self.commit(em)
        self._after_change()

    async def _on_claim_workflow_task(self, msg: m.ClaimWorkflowTask) -> dict[str, Any] | None:
        s = self.state
        if s.wt is None or s.wt.task_id != msg.task_id:
            return None
        em = decide_workflow_task.claim(s, msg.owner, self.host.clock.now(), self.host.wt_lease)
        if em is None:
            return None
        await self.commit(em)
        return self.workflow_task_payload(msg.page_size)

    def _on_replay_workflow_task(self, msg: m.ReplayWorkflowTask) -> dict[str, Any] | None:
        wt = self.state.wt
        now = self.host.clock.now()
        if wt is None or wt.task_id != msg.task_id or wt.status != "leased" or wt.owner != msg.owner or wt.attempt != msg.attempt:
            return None
        if (wt.lease_expires_at or 0) <= now:
            return None
        return self.workflow_task_payload(msg.page_size)

    def workflow_task_payload(self, page_size: int) -> dict[str, Any]:
        s = self.state
        wt = s.wt
        assert wt is not None
        from persistence.ids import iso

        events = s.events[: min(wt.snapshot, page_size)]
        more = wt.snapshot > page_size
        return {
            "task_id": wt.task_id,
            "task_kind": "workflow",
            "workflow_id": s.meta["workflow_id"],
            "run_id": s.run_id,
            "namespace": s.namespace,
            "workflow_type": s.meta["workflow_type"],
            "workflow_task_attempt": wt.attempt,
            "payload_codec": "avro",
            "arguments": s.meta.get("arguments"),
            "run_status": s.status,
            "task_queue": s.task_queue,
            "lease_owner": wt.owner,
            "lease_expires_at": iso(wt.lease_expires_at),
            "history_events": events,
            "last_history_sequence": wt.snapshot,
            "total_history_events": wt.snapshot,
            "next_history_page_token": encode_offset(len(events)) if more else None,
            "workflow_update_id": wt.update_id,
            "workflow_command_id": None,
        }

    async def _on_workflow_task_history(self, msg: m.WorkflowTaskHistory) -> dict[str, Any]:
        s = self.state
        now = self.host.clock.now()
        await self._guard_wt(msg.task_id, msg.owner, msg.attempt, now)
        wt = s.wt
        assert wt is not None
        end = min(wt.snapshot, msg.after + msg.page_size)
        events = s.events[msg.after:end]
        return {
            "task_id": msg.task_id,
            "workflow_task_attempt": wt.attempt,
            "history_events": events,
            "total_history_events": wt.snapshot,
            "next_history_page_token": encode_offset(end) if end < wt.snapshot else None,
        }

    async def _guard_wt(self, task_id: str, owner: Any, attempt: Any, now: float) -> None:
        try:
            decide_workflow_task.guard(self.state, task_id, owner, attempt, now)
        except GuardError as exc:
            if exc.release and self.state.wt is not None:
                em = Emitter(self.state, now)
                em.internal("wt_release", task=task_id, reason="lease_expired")
                await self.commit(em)
            raise

    async def _on_workflow_task_heartbeat(self, msg: m.WorkflowTaskHeartbeat) -> dict[str, Any]:
        s = self.state
        now = self.host.clock.now()
        task_id = msg.task_id
        await self._guard_wt(task_id, msg.owner, msg.attempt, now)
        em = Emitter(s, now)
        wt = s.wt
        assert wt is not None
        em.internal("wt_claim", task=task_id, attempt=wt.attempt, owner=wt.owner, lease=now + self.host.wt_lease, snap=wt.snapshot)
        await self.commit(em)
        from persistence.ids import iso

        return {
            "task_id": task_id,
            "workflow_task_attempt": wt.attempt,
            "lease_owner": wt.owner,
            "renewed": True,
            "lease_expires_at": iso(wt.lease_expires_at),
            "run_status": s.status,
            "task_status": "leased",
            "reason": None,
        }

    async def _on_complete_workflow_task(self, msg: m.CompleteWorkflowTask) -> dict[str, Any]:
        s = self.state
        now = self.host.clock.now()
        task_id, attempt = msg.task_id, msg.attempt
        await self._guard_wt(task_id, msg.owner, attempt, now)
        em = decide_workflow_task.complete(s, task_id, msg.commands, now, self.host.limits, self.host.ids)
        await self.commit(em)
        created = [r.run_id for r in em.new_runs]
        if s.wt is not None:
            created.append(s.wt.task_id)
        created += [
            activity_execution_id(self.run_id, record.payload["sequence"])
            for record in em.records
            if record.kind == "ActivityScheduled"
        ]
        return {
            "task_id": task_id,
            "workflow_task_attempt": attempt,
            "outcome": "completed",
            "recorded": True,
            "run_id": self.run_id,
            "run_status": s.status,
            "created_task_ids": created,
            "reason": None,
        }

    async def _on_fail_workflow_task(self, msg: m.FailWorkflowTask) -> dict[str, Any]:
        s = self.state
        now = self.host.clock.now()
        task_id, attempt, failure = msg.task_id, msg.attempt, msg.failure
        await self._guard_wt(task_id, msg.owner, attempt, now)
        em, outcome = decide_workflow_task.fail(s, task_id, failure, now)
        await self.commit(em)
        if outcome == "failed":
            log.warning("run %s: workflow task %s failed (%s): %s", self.run_id, task_id, failure.get("type"), failure.get("message"))
        return {
            "task_id": task_id,
            "workflow_task_attempt": attempt,
            "outcome": outcome,
            "recorded": True,
            "reason": None,
            "next_task_id": s.wt.task_id if s.wt is not None else None,
        }

    async def _on_release_owner(self, msg: m.ReleaseOwner) -> int:
        """A deregistering worker hands back its workflow task at once."""
        wt = self.state.wt
        if wt is None or wt.status != "leased" or wt.owner != msg.owner:
            return 0
        em = Emitter(self.state, self.host.clock.now())
        em.internal("wt_release", task=wt.task_id, reason="worker_deregistered")
        await self.commit(em)
        return 1

    async def _on_claim_activity(self, msg: m.ClaimActivity) -> dict[str, Any] | None:
        em = decide_activity.claim(self.state, msg.seq, msg.owner, self.host.clock.now(), self.host.act_lease)
        if em is None:
            return None
        await self.commit(em)
        return decide_activity.task_payload(self.state, self.state.activities[msg.seq])

    def _on_replay_activity(self, msg: m.ReplayActivity) -> dict[str, Any] | None:
        seq = decide_activity._seq_of(self.state, msg.task_id)
        act = self.state.activities.get(seq) if seq is not None else None
        if act is None or act.status != "running" or act.owner != msg.owner or act.attempt_number != msg.attempt:
            return None
        if (act.lease_expires_at or 0) <= self.host.clock.now():
            return None
        return decide_activity.task_payload(self.state, act)

    async def _on_complete_activity(self, msg: m.CompleteActivity) -> dict[str, Any]:
        s = self.state
        task_id, attempt_id, result = msg.task_id, msg.attempt_id, msg.result
        act = decide_activity.guard(s, task_id, attempt_id, msg.owner, "completed")
        body = {"task_id": task_id, "activity_attempt_id": attempt_id, "outcome": "completed", "recorded": True, "reason": None}
        if act is None:
            await self._record_late(task_id, "completed", result)
            return {**body, "next_task_id": None}
        await self.commit(decide_activity.complete(s, act, result, self.host.clock.now()))
        return {**body, "next_task_id": s.wt.task_id if s.wt is not None else None}

    async def _on_fail_activity(self, msg: m.FailActivity) -> dict[str, Any]:
        s = self.state
        task_id, attempt_id, failure = msg.task_id, msg.attempt_id, msg.failure
        act = decide_activity.guard(s, task_id, attempt_id, msg.owner, "failed")
        body = {"task_id": task_id, "activity_attempt_id": attempt_id, "outcome": "failed", "recorded": True, "reason": None}
        if act is None:
            await self._record_late(task_id, "failed", failure)
            return {**body, "next_task_id": None}
        await self.commit(decide_activity.fail(s, act, failure, self.host.clock.now()))
        retry = s.activities.get(act.seq)
        next_task = retry.task_id if retry is not None else (s.wt.task_id if s.wt is not None else None)
        return {**body, "next_task_id": next_task}

    async def _record_late(self, task_id: str, outcome: str, value: Any) -> None:
        em = Emitter(self.state, self.host.clock.now())
        em.internal("act_late", seq=decide_activity._seq_of(self.state, task_id), outcome=outcome, value=value)
        await self.commit(em)

    def _on_activity_heartbeat(self, msg: m.ActivityHeartbeat) -> dict[str, Any]:
        from persistence.ids import iso

        s = self.state
        task_id, attempt_id, owner, progress = msg.task_id, msg.attempt_id, msg.owner, msg.progress
        body: dict[str, Any] = {
            "task_id": task_id,
            "activity_attempt_id": attempt_id,
            "lease_owner": owner,
            "run_closed_reason": None,
            "run_closed_at": None,
        }
        try:
            act = decide_activity.guard(s, task_id, attempt_id, owner, "heartbeat")
        except GuardError as exc:
            if exc.reason in ("task_not_found", "attempt_not_found", "task_mismatch", "lease_owner_mismatch"):
                raise
            cancelled = exc.reason in ("run_cancelled", "run_terminated")
            return {
                **body,
                "cancel_requested": cancelled,
                "can_continue": False,
                "reason": exc.reason,
                "heartbeat_recorded": False,
                "run_closed_reason": s.closed_reason,
                "run_closed_at": iso(s.closed_at),
            }
        if act is None:
            return {**body, "cancel_requested": False, "can_continue": False, "reason": "run_closed", "heartbeat_recorded": False,
                    "run_closed_reason": s.closed_reason, "run_closed_at": iso(s.closed_at)}
        now = self.host.clock.now()
        act.heartbeat_base = now
        act.lease_expires_at = now + max(self.host.act_lease, float(act.policy.get("start_to_close_timeout") or 0))
        act.progress = progress
        self.host.timers.schedule(self.run_id, decide_time.next_deadline(s, now))
        return {
            **body,
            "cancel_requested": False,
            "can_continue": True,
            "reason": None,
            "heartbeat_recorded": True,
            "lease_expires_at": iso(act.lease_expires_at),
            "last_heartbeat_at": iso(now),
        }

    async def _on_signal(self, msg: m.Signal) -> dict[str, Any]:
        s = self.state
        request_id = msg.request_id
        if request_id and request_id in s.commands:
            return s.commands[request_id]  # a client retry: the first answer, not a second event
        if not s.is_open:
            return {"rejected": "run_not_active"}
        if history_full(s, self.host.limits):
            return {"rejected": "history_limit_exceeded"}
        if signals_full(s, self.host.limits):
            return {"rejected": "pending_signal_limit_exceeded"}
        em = decide_control.signal(s, msg.name, msg.arguments, msg.command_id, self.host.clock.now())
        return await self._commit_command(em, request_id, msg.command_id)

    async def _on_close(self, msg: m.Close) -> dict[str, Any]:
        s = self.state
        request_id = msg.request_id
        if request_id and request_id in s.commands:
            return s.commands[request_id]
        if not s.is_open:
            return {"rejected": "run_not_active"}
        now = self.host.clock.now()
        command_id = msg.command_id or self.host.ids.ulid(now)
        em = decide_control.cancel_or_terminate(s, msg.kind, msg.reason, command_id, now)
        return await self._commit_command(em, request_id, command_id)

    async def _on_update(self, msg: m.Update) -> dict[str, Any]:
        s = self.state
        request_id = msg.request_id
        if request_id and request_id in s.commands:
            return s.commands[request_id]  # a client retry: the receipt of the first, not a second update
        if not s.is_open:
            return {"rejected": "run_not_active"}
        if history_full(s, self.host.limits):
            return {"rejected": "history_limit_exceeded"}
        em = decide_control.update(s, msg.name, msg.arguments, msg.command_id, msg.update_id, self.host.clock.now())
        return await self._commit_command(em, request_id, msg.command_id, update_id=msg.update_id)

    async def _commit_command(self, em: Emitter, request_id: str | None, command_id: str, **extra: Any) -> dict[str, Any]:
        answer = {"sequence": em.records[0].sequence, "command_id": command_id, **extra}
        if request_id:
            em.internal("command", request_id=request_id, answer=answer)
        await self.commit(em)
        return answer

    async def _on_child_closed(self, msg: m.ChildClosed) -> None:
        """A child's run closed (or continued): resolve or re-link the step that started it."""
        s = self.state
        seq = next((c.seq for c in s.children.values() if c.run_id == msg.child_run_id), None)
        if seq is None or not s.is_open:
            return
        info = await self.host.terminal_info(msg.child_run_id)
        if info is None:
            return
        now = self.host.clock.now()
        if info["event"] == "WorkflowContinuedAsNew":
            em = decide_control.child_continued(s, seq, info["continued_to"], info["run_number"] + 1, now)
        else:
            em = decide_control.child_closed(s, seq, info, now)
        await self.commit(em)

    def _on_terminal_info(self) -> dict[str, Any] | None:
        s = self.state
        if s.status not in TERMINAL:
            return None
        last = s.events[-1]
        info = {"event": last["event_type"], "payload": last["payload"], "run_id": self.run_id,
                "run_number": s.meta.get("run_number", 1), "closed_at": s.closed_at}
        if last["event_type"] == "WorkflowContinuedAsNew":
            info["continued_to"] = last["payload"]["continued_to_run_id"]
        return info

    def _on_check_children(self) -> None:
        """After activation, ask children that may have closed while we were away."""
        for child in list(self.state.children.values()):
            self.host.post(self.run_id, m.ChildClosed(child_run_id=child.run_id))

    async def _on_start_run(self, msg: m.StartRun) -> m.RunView:
        if self.state.status == "new":
            now = self.host.clock.now()
            em = Emitter(self.state, now)
            em.records.extend(started_records(msg.meta, msg.meta["started_at"], accepted=msg.accepted))
            em.instances.append(msg.instance)
            try:
                await self.commit(em)
            except ConflictError:
                # The store holds this workflow id in another namespace: a start there won a race
                # the runtime's check could not see (it may run on another node).
                workflow_id = msg.instance.workflow_id
                raise ProtocolError(
                    409, "workflow_id_reserved_in_namespace",
                    f"Workflow [{workflow_id}] is already reserved in another namespace.", workflow_id=workflow_id,
                ) from None
            self._after_change()
        return views.run_view(self.state, self.visible)

    async def _on_runs_started(self, msg: m.RunsStarted) -> None:
        confirmed = [run_id for run_id in msg.run_ids if run_id in self.state.pending_starts]
        if confirmed:
            em = Emitter(self.state, self.host.clock.now())
            for run_id in confirmed:
                em.internal("run_started", run=run_id)
            await self.commit(em)

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
        if not s.is_open or s.wt is not None or s.status not in ("pending", "running"):
            return False
        em = Emitter(s, self.host.clock.now())
        em.internal("repair_wake")
        await self.commit(em)
        self._after_change()
        return True


