"""A run's folded state and the fold that builds it from journal records.

The journal holds two kinds of records for a run (``records.Record``): *history events*
(with a sequence: the PascalCase events the SDK replays) and *internal transitions* (a
lower-case kind and no sequence: task claims, releases, failures). Folding both, in journal
order, yields everything the actor needs: status, the one workflow-task slot, open
activities, timers, children, the open condition wait. ``fold`` is deterministic and does no I/O: every id and
instant it uses is carried by the record, so recovery is replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from persistence.ids import iso
from persistence.vocabulary import TERMINAL_STATUSES, workflow_task_id

from . import workflow_streams
from .records import Record

TERMINAL = TERMINAL_STATUSES
TERMINAL_EVENTS = {
    "WorkflowCompleted": ("completed", "completed"),
    "WorkflowFailed": ("failed", "failed"),
    "WorkflowTimedOut": ("failed", "timed_out"),
    "WorkflowCancelled": ("cancelled", "cancelled"),
    "WorkflowTerminated": ("terminated", "terminated"),
    "WorkflowContinuedAsNew": ("completed", "continued"),
}
ACTIVITY_RESOLUTIONS = ("ActivityCompleted", "ActivityFailed", "ActivityTimedOut")
PARENT_CLOSE_ACTIONS = ("request_cancel", "request_cancellation", "terminate")  # a closing parent acts on such children
HOST_TYPE = "dw.standalone_activity"  # a standalone activity's host run (actors.standalone)
CHILD_RESOLUTIONS = ("ChildRunCompleted", "ChildRunFailed", "ChildRunCancelled", "ChildRunTerminated")


@dataclass
class WorkflowTask:
    task_id: str
    status: str  # ready | leased
    available_at: float
    attempt: int = 0
    owner: str | None = None
    lease_expires_at: float | None = None
    snapshot: int = 0
    update_id: str | None = None  # an update task applies only this update (worker-plane §8.2)
    poll_id: str | None = None  # the poll it was leased to: a re-sent poll finds it again (runtime.workers)
    sticky_mode: str | None = None  # sticky_replay_mode stamped by the claim (extended spec §12.2)


@dataclass
class Activity:
    seq: int
    exec_id: str
    activity_type: str
    queue: str
    arguments: Any
    policy: dict[str, Any]
    scheduled_at: float
    parallel: dict[str, Any] | None
    status: str = "pending"  # pending | running | closed
    attempt_number: int = 0
    attempt_closed: bool = True
    owner: str | None = None
    lease_expires_at: float | None = None
    available_at: float = 0.0
    ready_since: float = 0.0
    claimed_at: float | None = None
    heartbeat_base: float | None = None
    progress: dict[str, Any] | None = None
    late_result: Any = None
    poll_id: str | None = None  # the poll this attempt was leased to (see WorkflowTask.poll_id)
    cancel_request: str | None = None  # a cooperative request its worker is asked to stop for (extended §5.6)
    heartbeat_journaled: float | None = None  # when this attempt's progress was last written (actors.heartbeats)
    lease_journaled: float | None = None  # the attempt's lease as the journal holds it (a renewal may be in memory only)
    session: dict[str, Any] | None = None  # the worker session its attempts must run in (extended §11.1)

    @property
    def task_id(self) -> str:
        return self.exec_id

    def attempt_id(self, n: int | None = None) -> str:
        return f"{self.exec_id}.{self.attempt_number if n is None else n}"


@dataclass
class LocalStep:
    """A prepared local activity (extended spec §2.2–2.3): the server admits each attempt the
    workflow worker runs, owns its deadlines and retries, and records its outcome."""

    seq: int
    exec_id: str
    activity_type: str
    descriptor: dict[str, Any]  # retry_policy, timeouts, cancellation_policy, cleanup (validated)
    scheduled_at: float
    parallel: dict[str, Any] | None = None
    status: str = "scheduled"  # scheduled | running | retry | closed
    attempt_number: int = 0
    admitted_at: float = 0.0
    claim: tuple[str, int, str] | None = None  # (task id, task attempt, owner) that admitted the attempt
    nonce: str | None = None  # the worker's worker_attempt_id for it
    deadlines: dict[str, float] = field(default_factory=dict)  # start_to_close / schedule_to_close / heartbeat
    receipt: dict[str, Any] | None = None  # the last resolution's receipt fields (a repeated report gets it again)
    acked: bool = False  # its worker confirmed the callback stopped for the cooperative request

    def attempt_id(self, n: int | None = None) -> str:
        return f"{self.exec_id}.{self.attempt_number if n is None else n}"


@dataclass
class Timer:
    seq: int
    timer_id: str
    fire_at: float
    delay: int
    kind: str  # user | condition
    parallel: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Child:
    seq: int
    workflow_id: str
    run_id: str
    workflow_type: str
    policy: str
    parallel: dict[str, Any] | None
    run_number: int = 1
    retry: dict[str, Any] | None = None  # the child retry policy snapshot (extended spec §6)
    attempt: int = 1  # child runs linked to this step so far
    start: dict[str, Any] | None = None  # the current attempt's start metadata, the model of a retry
    cancel: str | None = None  # cancellation_policy when not the default abandon (extended spec §5.7)

    def policy_fields(self) -> dict[str, Any]:
        """The policies every event of the step carries (the SDK's replay compares them)."""
        return {"parent_close_policy": self.policy, **({"cancellation_policy": self.cancel} if self.cancel else {})}


@dataclass
class RunState:
    run_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    status: str = "new"
    closed_reason: str | None = None
    closed_at: float | None = None
    output: Any = None
    last_progress_at: float | None = None
    next_h: int = 1
    jseq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    step_seq: int = 0
    steps: dict[int, dict[str, Any]] = field(default_factory=dict)
    wake: bool = False
    wt: WorkflowTask | None = None
    wt_counter: int = 0
    wt_failures: int = 0
    activities: dict[int, Activity] = field(default_factory=dict)
    timers: dict[int, Timer] = field(default_factory=dict)
    children: dict[int, Child] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    cond: dict[str, Any] | None = None
    last_signal: dict[str, Any] | None = None
    last_signal_h: int = 0
    search_attributes: dict[str, Any] = field(default_factory=dict)
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)
    late_outcomes: dict[int, int] = field(default_factory=dict)  # seq -> attempt still running at close
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)  # update id -> its record
    pending_updates: list[str] = field(default_factory=list)  # accepted, not yet applied (FIFO)
    unseen_signals: list[int] = field(default_factory=list)  # h of signals no completed task has seen yet
    # Runs this run created (children, its continuation) whose own first commit it has not
    # seen confirmed yet: run id -> their start metadata. Their actors write those records.
    pending_starts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Sticky affinity (extended spec §12.2): (worker id, until) of the worker that cached this
    # run's history at its last completion; its next workflow task goes to that worker first.
    sticky: tuple[str, float] | None = None
    # Cooperative cancellation (extended spec §5): the run's one request, its delivery, and the
    # activity attempts stopped for it whose workers still report back (attempt id -> info).
    coop: dict[str, Any] | None = None
    stopped_attempts: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[int, LocalStep] = field(default_factory=dict)  # prepared local activity steps
    # Parent-close policies still to apply to children once this run closed: child run id ->
    # {workflow_id, policy}; each ends with ParentClosePolicyApplied or ParentClosePolicyFailed.
    parent_close: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Latest heartbeat of each activity execution (extended spec §14): execution id ->
    # {last_heartbeat_at, last_heartbeat_progress, attempts: {n: {last_heartbeat_at, last_heartbeat_progress}}}.
    heartbeats: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Message streams (extended spec §7.1): stream -> {next, ids: {message id: position}, cursor,
    # pending: {position: message}} — pending are the messages above the consumed cursor.
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # prepared-prefix checkpoint id -> receipt
    # Workflow streams (extended spec §7.2): the run's output streams, stream name -> its items
    # and lifecycle (actors.workflow_streams).
    wstreams: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Cooperative requests this run owes its children (a delivery at a child's boundary under
    # try_cancel / wait_cancellation_completed): child run id -> the request, ``done`` once the
    # child recorded it (or could not).
    child_requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    redrives: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> receipt of a redrive of this run (§9.2)
    archived: dict[str, Any] | None = None  # {at, command_id, reason} once an operator archived the closed run (§9.3)

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL and self.status != "new"

    @property
    def namespace(self) -> str:
        return str(self.meta.get("namespace", "default"))

    @property
    def task_queue(self) -> str:
        return self.meta.get("task_queue") or "default"

    def wait_kind(self) -> str | None:
        if not self.is_open or self.status == "pending":
            return None
        if self.cond is not None:
            return "condition"
        if any(a.status != "closed" for a in self.activities.values()):
            return "activity"
        if self.children:
            return "child"
        if any(t.kind == "user" for t in self.timers.values()):
            return "timer"
        return "signal"


def fold(state: RunState, record: Record) -> RunState:
    """Apply one journal record to the run state (in place) and return it."""
    state.jseq += 1
    if record.is_history:
        _history(state, record)
        state.last_progress_at = record.at
        handler = _EVENT_FOLDS.get(record.kind)
    else:
        handler = _INTERNAL_FOLDS[record.kind]
    if handler is not None:
        handler(state, record)
    if "start" in record.extra:  # this record created a run: it stays pending until confirmed
        start = record.extra["start"]
        state.pending_starts[start["run_id"]] = start
    _schedule(state, record.at)
    return state


def _history(state: RunState, record: Record) -> None:
    sequence = _sequence(record)
    assert sequence == state.next_h, f"history gap in {state.run_id}: expected {state.next_h}, got {sequence}"
    state.next_h = sequence + 1
    timestamp = iso(record.at)
    state.events.append(
        {
            "id": f"{state.run_id}-{sequence}",
            "sequence": sequence,
            "event_type": record.kind,
            "namespace": state.meta.get("namespace"),
            "workflow_task_id": record.workflow_task_id,
            "workflow_command_id": record.command_id,
            "recorded_at": timestamp,
            "timestamp": timestamp,
            "payload": record.payload,
        }
    )


def _schedule(state: RunState, at: float) -> None:
    """The scheduler: at most one workflow task per run, created only when woken; the oldest
    accepted update gets a task of its own first (never merged with an ordinary wake-up)."""
    if state.is_open and state.wt is None and (state.pending_updates or state.wake) and state.meta.get("workflow_type") != HOST_TYPE:
        state.wt_counter += 1
        update_id = state.pending_updates[0] if state.pending_updates else None
        if state.wt_counter == 1 and state.meta.get("first_task_at"):
            at = max(at, state.meta["first_task_at"])  # a child retry starts after its backoff (extended spec §6)
        state.wt = WorkflowTask(workflow_task_id(state.run_id, state.wt_counter), "ready", at, update_id=update_id)


def _set_wake(state: RunState, at: float) -> None:
    state.wake = True
    task = state.wt
    if task is not None and task.status == "ready" and task.available_at > at:
        task.available_at = at  # a new wake event cuts a failure backoff short


def _member_resolved(state: RunState, parallel: dict[str, Any] | None, sequence: int, at: float) -> None:
    """Wake the workflow for a resolved step; for a parallel member only when its whole group resolved."""
    if not parallel:
        _set_wake(state, at)
        return
    group = state.groups.get(parallel["parallel_group_path"][0]["parallel_group_id"])
    if group is None:
        _set_wake(state, at)
        return
    group["open"].discard(sequence)
    if not group["open"]:
        _set_wake(state, at)


def _register_step(state: RunState, sequence: int, info: dict[str, Any], parallel: dict[str, Any] | None) -> None:
    state.step_seq = max(state.step_seq, sequence)
    state.steps[sequence] = info
    if parallel:
        outer = parallel["parallel_group_path"][0]
        group = state.groups.setdefault(outer["parallel_group_id"], {"open": set()})
        group["open"].add(sequence)


# --- history event folds -------------------------------------------------------------


def _started(state: RunState, record: Record) -> None:
    meta = record.extra.get("meta")
    if meta is not None:
        state.meta = dict(meta)
        state.search_attributes = dict(meta.get("search_attributes") or {})
    if record.kind == "WorkflowStarted":
        if state.meta.get("workflow_type") == HOST_TYPE:
            state.status = "running"  # a standalone activity's host run: no workflow code, no task (actors.standalone)
            return
        state.status = "pending"
        _set_wake(state, record.at)


def _activity_scheduled(state: RunState, record: Record) -> None:
    payload, extra = record.payload, record.extra
    sequence = payload["sequence"]
    parallel = extra.get("par")
    if extra.get("local"):  # a plain local step arrives whole in one completion: no task, nothing open
        prepared = "prep" in extra  # admitted attempt by attempt (extended spec §2.3); a group tracks it
        _register_step(state, sequence, {"kind": "local_activity", "name": payload["activity_type"]},
                       extra.get("par") if prepared else None)
        if prepared:
            state.locals[sequence] = LocalStep(
                sequence, payload["activity_execution_id"], payload["activity_type"], extra["prep"], record.at, extra.get("par"),
            )
        return
    activity = Activity(
        seq=sequence,
        exec_id=payload["activity_execution_id"],
        activity_type=payload["activity_type"],
        queue=extra["queue"],
        arguments=extra.get("arguments"),
        policy=extra["policy"],
        scheduled_at=record.at,
        parallel=parallel,
        available_at=record.at,
        ready_since=record.at,
        session=extra.get("session"),
    )
    state.activities[sequence] = activity
    _register_step(state, sequence, {"kind": "activity", "name": activity.activity_type}, parallel)


def _activity_started(state: RunState, record: Record) -> None:
    beats = (record.extra.get("report") or {}).get("heartbeats")
    if beats:  # a plain local attempt reports its heartbeats with its outcome
        payload = record.payload
        details = beats[-1].get("details")
        note_heartbeat(state, payload["activity_execution_id"], payload["attempt_number"], record.at,
                       {"details": details} if details is not None else {})
    if record.extra.get("local"):
        step = state.locals.get(record.payload["sequence"])
        admission = record.extra.get("admit")
        if step is not None and admission is not None:
            step.status = "running"
            step.attempt_number = record.payload["attempt_number"]
            step.admitted_at = record.at
            step.claim = (admission["task"], admission["wta"], admission["owner"])
            step.nonce = admission["nonce"]
            step.deadlines = dict(admission["deadlines"])
            step.receipt = None
            step.acked = False
        return
    activity = state.activities[record.payload["sequence"]]
    activity.status = "running"
    activity.attempt_number = record.payload["attempt_number"]
    activity.attempt_closed = False
    activity.owner = record.extra["owner"]
    activity.lease_expires_at = activity.lease_journaled = record.extra["lease"]
    activity.poll_id = record.extra.get("poll")
    activity.claimed_at = record.at
    activity.heartbeat_base = record.at
    activity.progress = None


def _local_resolved(state: RunState, record: Record, status: str) -> None:
    step = state.locals.get(record.payload["sequence"])
    if step is None:
        return
    step.status = status
    step.receipt = record.extra.get("receipt")
    if status == "closed":
        _group_member_closed(state, step)
        _settle_wait(state, step.seq, record.at)


def _group_member_closed(state: RunState, step: LocalStep) -> None:
    """No wake-up: a prepared step resolves on the claim that runs it (which sees it through its
    history refresh) or with a task made for it (``wt_defer``); its group counts it resolved."""
    if step.parallel:
        group = state.groups.get(step.parallel["parallel_group_path"][0]["parallel_group_id"])
        if group is not None:
            group["open"].discard(step.seq)


def _activity_retry(state: RunState, record: Record) -> None:
    if record.extra.get("local"):
        _local_resolved(state, record, "retry")
        return
    activity = state.activities[record.payload["sequence"]]
    activity.status = "pending"
    activity.attempt_closed = True
    activity.owner = None
    activity.available_at = record.extra["available_at"]
    activity.ready_since = activity.available_at
    activity.attempt_number = record.extra.get("attempt_number", activity.attempt_number)


def _activity_resolved(state: RunState, record: Record) -> None:
    if record.extra.get("local"):
        _local_resolved(state, record, "closed")
        return
    activity = state.activities.pop(record.payload["sequence"])
    _member_resolved(state, activity.parallel, activity.seq, record.at)
    _settle_wait(state, activity.seq, record.at)


def _activity_cancelled(state: RunState, record: Record) -> None:
    if record.extra.get("local"):
        step = state.locals.get(record.payload["sequence"])
        if step is not None:
            step.acked = step.acked or bool(record.extra.get("acked"))
        _local_resolved(state, record, "closed")
        return
    activity = state.activities.pop(record.payload["sequence"], None)
    coop = state.coop
    if activity is None or coop is None:
        return
    if activity.status == "running":  # its worker is told to stop, and acknowledges (extended spec §5.6)
        state.stopped_attempts[activity.attempt_id()] = {
            "task_id": activity.task_id, "owner": activity.owner, "event_id": f"{state.run_id}-{_sequence(record)}",
            "acked": bool(record.extra.get("acked")),
        }
    _settle_wait(state, activity.seq, record.at)


def _settle_wait(state: RunState, sequence: int, at: float) -> None:
    """A delivery waiting for this step's activity to stop may now be made: a task replays it."""
    coop = state.coop
    if coop is not None and sequence in (coop.get("waiting") or ()):
        coop["waiting"] = [s for s in coop["waiting"] if s != sequence]
        if not coop["waiting"]:
            _set_wake(state, at)


def _timer_scheduled(state: RunState, record: Record) -> None:
    payload, extra = record.payload, record.extra
    kind = "condition" if payload.get("timer_kind") == "condition_timeout" else "user"
    parallel = extra.get("par")
    timer = Timer(
        payload["sequence"], payload["timer_id"], extra["fire_at"], payload["delay_seconds"], kind, parallel,
        dict(extra.get("extra") or {}),
    )
    state.timers[payload["sequence"]] = timer
    if kind == "user":
        _register_step(state, timer.seq, {"kind": "timer", "delay": timer.delay}, parallel)
    elif state.cond is not None:
        state.cond["timer_seq"] = timer.seq


def _timer_fired(state: RunState, record: Record) -> None:
    timer = state.timers.pop(record.payload["sequence"], None)
    if timer is None:
        return
    if timer.kind == "condition":
        state.cond = None
        _set_wake(state, record.at)
    else:
        _member_resolved(state, timer.parallel, timer.seq, record.at)


def _timer_cancelled(state: RunState, record: Record) -> None:
    state.timers.pop(record.payload["sequence"], None)


def _child_scheduled(state: RunState, record: Record) -> None:
    payload = record.payload
    parallel = record.extra.get("par")
    child = Child(
        payload["sequence"],
        payload["child_workflow_instance_id"],
        payload["child_workflow_run_id"],
        payload["child_workflow_type"],
        payload["parent_close_policy"],
        parallel,
        retry=payload.get("retry_policy"),
        cancel=payload.get("cancellation_policy"),
    )
    state.children[child.seq] = child
    _register_step(state, child.seq, {"kind": "child", "name": child.workflow_type}, parallel)


def _child_run_started(state: RunState, record: Record) -> None:
    child = state.children.get(record.payload["sequence"])
    if child is not None:
        child.run_id = record.payload["child_workflow_run_id"]
        child.run_number = record.payload.get("child_run_number", 1)
        child.attempt = record.payload.get("retry_attempt", child.attempt)
        if "start" in record.extra:
            child.start = record.extra["start"]


def _child_resolved(state: RunState, record: Record) -> None:
    child = state.children.pop(record.payload["sequence"], None)
    if child is not None:
        _member_resolved(state, child.parallel, child.seq, record.at)
        _settle_wait(state, child.seq, record.at)  # a delivery waiting for this child to close may be made


def _marker(kind: str) -> Callable[[RunState, Record], None]:
    def apply(state: RunState, record: Record) -> None:
        info: dict[str, Any] = {"kind": kind}
        if kind == "search_attributes":
            state.search_attributes = dict(record.payload.get("merged") or {})
        elif kind == "memo":
            state.meta["memo"] = dict(record.extra["memo"])  # describe, list and continue-as-new read it
        _register_step(state, record.payload["sequence"], info, None)

    return apply


def _side_effect(state: RunState, record: Record) -> None:
    _side_effect_step(state, record)
    if "workflow_stream" in record.payload:
        workflow_streams.fold_directive(state.wstreams, record.payload, record.at)


_side_effect_step = _marker("side_effect")


def _cond_opened(state: RunState, record: Record) -> None:
    payload = record.payload
    state.cond = {
        "seq": payload["sequence"],
        "wait_id": payload["condition_wait_id"],
        "key": payload.get("condition_key"),
        "fingerprint": payload.get("condition_definition_fingerprint"),
        "timeout": payload.get("timeout_seconds"),
        "deadline": record.extra.get("deadline"),
    }
    state.last_signal = None
    _register_step(state, payload["sequence"], {"kind": "condition"}, None)


def _cond_satisfied(state: RunState, record: Record) -> None:
    state.cond = None


def _signal(state: RunState, record: Record) -> None:
    if "msg" in record.extra or "msg_seed" in record.extra:
        _stream_message(state, record.extra)
    sequence = _sequence(record)
    state.last_signal = {"signal_name": record.payload["signal_name"], "workflow_signal_id": record.payload["signal_id"]}
    state.last_signal_h = sequence
    state.unseen_signals.append(sequence)
    if state.cond is not None:
        state.cond["received"] = True  # a message stream records at most one message per wait
        _set_wake(state, record.at)


def _stream_message(state: RunState, extra: dict[str, Any]) -> None:
    if "msg_seed" in extra:  # a continuation inherits the stream's counter, ids and cursor
        seed = extra["msg_seed"]
        state.streams[seed["stream"]] = {"next": seed["next"], "ids": dict(seed["ids"]), "cursor": seed["cursor"], "pending": {},
                                         "held": []}
        return
    msg = extra["msg"]
    stream = _stream(state, msg["stream"])
    stream["ids"][msg["id"]] = msg["position"]
    stream["next"] = max(stream["next"], msg["position"] + 1)
    stream["held"] = [m for m in stream["held"] if m["id"] != msg["id"]]
    if msg["position"] > stream["cursor"]:
        stream["pending"][msg["position"]] = {"id": msg["id"], "position": msg["position"], "payload": msg["payload"]}


def _stream(state: RunState, name: str) -> dict[str, Any]:
    stream = state.streams.setdefault(name, {"next": 1, "ids": {}, "cursor": 0, "pending": {}, "held": []})
    stream.setdefault("held", [])
    return stream


def _msg_held(state: RunState, record: Record) -> None:
    """A message waiting for its stream's next wait (actors.message_streams)."""
    data = record.data
    stream = _stream(state, data["stream"])
    stream["ids"][data["id"]] = data["position"]
    stream["next"] = max(stream["next"], data["position"] + 1)
    stream["held"].append({"id": data["id"], "position": data["position"], "payload": data["payload"]})


def _msg_cursor(state: RunState, record: Record) -> None:
    stream = state.streams.get(record.data["stream"])
    if stream is not None and record.data["through"] > stream["cursor"]:
        stream["cursor"] = record.data["through"]
        stream["pending"] = {p: m for p, m in stream["pending"].items() if p > stream["cursor"]}


def _update_accepted(state: RunState, record: Record) -> None:
    payload = record.payload
    state.updates[payload["update_id"]] = {
        "update_id": payload["update_id"],
        "name": payload["update_name"],
        "arguments": payload.get("arguments"),
        "command_id": payload.get("workflow_command_id"),
        "status": "accepted",
        "sequence": _sequence(record),
        "accepted_at": record.at,
        "applied_at": None,
        "closed_at": None,
        "result": None,
        "failure": None,
    }
    state.pending_updates.append(payload["update_id"])


def _update_applied(state: RunState, record: Record) -> None:
    update = state.updates.get(record.payload["update_id"])
    if update is not None:
        update["applied_at"] = record.at


def _update_completed(state: RunState, record: Record) -> None:
    payload = record.payload
    update = state.updates.get(payload["update_id"])
    if update is not None:
        update["closed_at"] = record.at
        if payload.get("failure_id"):
            update["status"] = "failed"
            update["failure"] = {
                "failure_id": payload["failure_id"], "message": payload.get("message"), "exception_type": payload.get("exception_type"),
            }
        else:
            update["status"] = "completed"
            update["result"] = payload.get("result")
    if payload["update_id"] in state.pending_updates:
        state.pending_updates.remove(payload["update_id"])
    if state.cond is not None:
        _set_wake(state, record.at)  # the handler may have made the open wait's predicate true


def _local_heartbeat(state: RunState, record: Record) -> None:
    payload = record.payload
    note_heartbeat(state, payload["activity_execution_id"], payload["attempt_number"], record.at, payload.get("progress") or {})
    step = state.locals.get(payload["sequence"])
    if step is not None and "heartbeat" in record.extra:
        step.deadlines["heartbeat"] = record.extra["heartbeat"]


def _coop_requested(state: RunState, record: Record) -> None:
    payload = record.payload
    state.coop = {
        "request_id": payload["workflow_command_id"],
        "requested_at": record.payload["cancellation"]["requested_at"],
        "cleanup_deadline_at": payload["cleanup_deadline_at"],
        "deadline": record.extra["deadline"],
        "reason": payload.get("reason"),
        "context": payload.get("cancellation"),
        "event_id": f"{state.run_id}-{_sequence(record)}",
        "h": _sequence(record),
        "delivered": None,
        "waiting": None,
    }
    _set_wake(state, record.at)  # the worker must reach its authored boundary, even without an open wait


def _coop_delivered(state: RunState, record: Record) -> None:
    payload = record.payload
    coop = state.coop
    assert coop is not None
    first, span = payload["sequence"], payload.get("sequence_span", 1)
    coop["delivered"] = {
        "boundary": {"sequence": first, "call_kind": payload["call_kind"], "sequence_span": span},
        "event_id": f"{state.run_id}-{_sequence(record)}",
    }
    coop["waiting"] = None
    steps = range(first, first + span)
    state.step_seq = max(state.step_seq, first + span - 1)  # a boundary not yet scheduled is reserved
    if state.cond is not None and state.cond["seq"] in steps:
        state.cond = None  # the interrupted wait is closed (its timeout timer is cancelled by event)
    for sequence in steps:
        activity = state.activities.get(sequence)
        if activity is not None and activity.policy.get("cancellation_policy") == "abandon":
            del state.activities[sequence]  # left running: its outcome is kept once, not written to history
            if activity.status == "running":
                state.late_outcomes[sequence] = activity.attempt_number


def _closed(state: RunState, record: Record) -> None:
    for update_id in state.pending_updates:  # accepted but never applied: their callers are released
        update = state.updates[update_id]
        update["status"] = "failed"
        update["closed_at"] = record.at
        update["failure"] = {"failure_id": None, "message": "The workflow run closed before the update was applied.", "reason": "run_closed"}
    state.pending_updates = []
    status, reason = TERMINAL_EVENTS[record.kind]
    state.status = status
    state.closed_reason = reason
    state.closed_at = record.at
    state.output = record.extra.get("output")
    if status in ("completed", "failed") and record.kind != "WorkflowTimedOut":
        state.late_outcomes = {a.seq: a.attempt_number for a in state.activities.values() if a.status == "running"}
    state.wt = None
    state.wake = False
    state.timers.clear()
    state.activities.clear()
    state.cond = None
    state.parent_close = {c.run_id: {"workflow_id": c.workflow_id, "policy": c.policy}
                          for c in state.children.values() if c.policy in PARENT_CLOSE_ACTIONS}


def _archived(state: RunState, record: Record) -> None:
    state.archived = {"at": record.at, "command_id": record.command_id, "reason": record.payload.get("reason")}


def _parent_close_settled(state: RunState, record: Record) -> None:
    state.parent_close.pop(record.payload["child_run_id"], None)


def _sequence(record: Record) -> int:
    """The history sequence of an event fold (only history events reach those)."""
    assert record.sequence is not None
    return record.sequence


_EVENT_FOLDS: dict[str, Any] = {
    "StartAccepted": _started,
    "WorkflowStarted": _started,
    "ActivityScheduled": _activity_scheduled,
    "ActivityStarted": _activity_started,
    "ActivityRetryScheduled": _activity_retry,
    "ActivityCompleted": _activity_resolved,
    "ActivityFailed": _activity_resolved,
    "ActivityTimedOut": _activity_resolved,
    "ActivityCancelled": _activity_cancelled,
    "ActivityHeartbeatRecorded": lambda state, record: _local_heartbeat(state, record),
    "TimerScheduled": _timer_scheduled,
    "TimerFired": _timer_fired,
    "TimerCancelled": _timer_cancelled,
    "ChildWorkflowScheduled": _child_scheduled,
    "ChildRunStarted": _child_run_started,
    "ChildRunCompleted": _child_resolved,
    "ChildRunFailed": _child_resolved,
    "ChildRunCancelled": _child_resolved,
    "ChildRunTerminated": _child_resolved,
    "SideEffectRecorded": _side_effect,
    "VersionMarkerRecorded": _marker("version_marker"),
    "SearchAttributesUpserted": _marker("search_attributes"),
    "MemoUpserted": _marker("memo"),
    "ConditionWaitOpened": _cond_opened,
    "ConditionWaitSatisfied": _cond_satisfied,
    "SignalReceived": _signal,
    "UpdateAccepted": _update_accepted,
    "UpdateApplied": _update_applied,
    "UpdateCompleted": _update_completed,
    "CooperativeCancellationRequested": _coop_requested,
    "CooperativeCancellationDelivered": _coop_delivered,
    "ParentClosePolicyApplied": _parent_close_settled,
    "ParentClosePolicyFailed": _parent_close_settled,
    "WorkflowArchived": _archived,
    "CancelRequested": None,
    "TerminateRequested": None,
    **{name: _closed for name in TERMINAL_EVENTS},
}


# --- internal transitions ------------------------------------------------------------
# Their fields are read under their stored names (``record.data``), as the Emitter wrote them.


def _wt_claim(state: RunState, record: Record) -> None:
    task = state.wt
    assert task is not None and task.task_id == record.data["task"]
    renewal = task.status == "leased" and task.attempt == record.data["attempt"]  # a heartbeat keeps the lease's poll
    task.status = "leased"
    task.attempt = record.data["attempt"]
    task.owner = record.data["owner"]
    task.lease_expires_at = record.data["lease"]
    task.snapshot = record.data["snap"]
    task.poll_id = record.data.get("poll") or (task.poll_id if renewal else None)
    task.sticky_mode = record.data.get("sm") or (task.sticky_mode if renewal else None)
    if task.update_id is None:
        state.wake = False  # the snapshot holds every event that set it; update tasks leave it
    if state.status == "waiting" or state.status == "pending":
        state.status = "running" if state.status == "waiting" else state.status


def _wt_done(state: RunState, record: Record) -> None:
    if "sticky" in record.data:
        state.sticky = (record.data["sticky"], record.data["sticky_until"])
    elif not record.data.get("sticky_kept"):
        state.sticky = None
    snapshot = state.wt.snapshot if state.wt is not None else 0
    state.unseen_signals = [sequence for sequence in state.unseen_signals if sequence > snapshot]
    state.wt = None
    state.wt_failures = 0
    if state.is_open:
        state.status = "waiting"
        # A signal that arrived after this task's snapshot was never seen by the worker; if the
        # completion left a wait open, the next task must replay it against that wait.
        if state.cond is not None and state.last_signal_h > snapshot:
            _set_wake(state, record.at)


def _wt_fail(state: RunState, record: Record) -> None:
    task = state.wt
    assert task is not None
    state.sticky = None  # the worker's cached replay failed: the next one starts cold
    state.wt_failures += 1
    task.status = "ready"
    task.owner = None
    task.lease_expires_at = None
    task.available_at = record.data["retry_at"]


def _wt_release(state: RunState, record: Record) -> None:
    task = state.wt
    state.sticky = None  # its lease expired or it deregistered: that worker is not one to wait for
    if task is not None and task.task_id == record.data["task"]:
        task.status = "ready"
        task.owner = None
        task.lease_expires_at = None
        task.available_at = record.at


def _act_release(state: RunState, record: Record) -> None:
    activity = state.activities.get(record.data["seq"])
    if activity is not None:
        activity.status = "pending"
        activity.attempt_closed = True
        activity.owner = None
        activity.available_at = record.at
        activity.ready_since = record.at


def _act_fresh(state: RunState, record: Record) -> None:
    """A redriven run's open step starts over: a new execution, its whole budget from now (§9.2)."""
    activity = state.activities.get(record.data["seq"])
    if activity is None:
        return
    activity.exec_id = record.data["exec"]
    activity.status = "pending"
    activity.attempt_number = 0
    activity.attempt_closed = True
    activity.owner = activity.lease_expires_at = activity.claimed_at = activity.heartbeat_base = None
    activity.progress = activity.poll_id = activity.cancel_request = activity.heartbeat_journaled = activity.lease_journaled = None
    activity.scheduled_at = activity.available_at = activity.ready_since = record.at


def _act_lease(state: RunState, record: Record) -> None:
    """A renewed attempt lease (extended §11.3): no heartbeat, no progress, only the lease."""
    data = record.data
    activity = state.activities.get(data["seq"])
    if activity is not None and activity.attempt_number == data["n"] and activity.status == "running":
        activity.lease_expires_at = max(activity.lease_expires_at or 0.0, data["lease"])
        activity.lease_journaled = max(activity.lease_journaled or 0.0, data["lease"])


def _redriven(state: RunState, record: Record) -> None:
    """This failed run was redriven: the new run it owes a start, and the receipt for repeats."""
    data = record.data
    state.pending_starts[data["start"]["run_id"]] = data["start"]
    state.redrives[data["request_id"] or data["command_id"]] = {"run_id": data["start"]["run_id"], "command_id": data["command_id"]}


def _act_hb(state: RunState, record: Record) -> None:
    """A journaled heartbeat: the progress operators see, and the attempt's clock and lease."""
    data = record.data
    note_heartbeat(state, data["exec"], data["n"], record.at, data["progress"])
    activity = state.activities.get(data["seq"])
    if activity is not None and activity.attempt_number == data["n"] and activity.status == "running":
        activity.heartbeat_base = max(activity.heartbeat_base or 0.0, record.at)
        activity.lease_expires_at = max(activity.lease_expires_at or 0.0, data["lease"])
        activity.lease_journaled = max(activity.lease_journaled or 0.0, data["lease"])
        activity.progress = data["progress"]
        activity.heartbeat_journaled = record.at


def note_heartbeat(state: RunState, exec_id: str, attempt: int, at: float, progress: dict[str, Any]) -> None:
    entry = state.heartbeats.setdefault(exec_id, {"attempts": {}})
    latest = {"last_heartbeat_at": at, "last_heartbeat_progress": progress}
    entry["attempts"][attempt] = latest
    if attempt >= max(entry["attempts"]):
        entry.update(latest)


def _act_late(state: RunState, record: Record) -> None:
    """An outcome that arrived after the run closed: stored once, no history (spec 6.5)."""
    state.late_outcomes.pop(record.data["seq"], None)


def _coop_wait(state: RunState, record: Record) -> None:
    """A delivery waits for activities to stop: the claim is released, no task until they settle."""
    coop = state.coop
    assert coop is not None
    coop["waiting"] = list(record.data["seqs"])
    for sequence in coop["waiting"]:
        activity = state.activities.get(sequence)
        if activity is not None:
            activity.cancel_request = coop["request_id"]
    state.wt = None
    state.sticky = None
    state.wake = False  # the workflow is held at the boundary: nothing moves it until the stop settles
    if state.is_open:
        state.status = "waiting"


def _wt_defer(state: RunState, record: Record) -> None:
    """A prepared attempt's retry (or the server closing it) ends the claim that ran it; the run's
    next task replays it, after the retry's backoff (extended spec §2.3)."""
    if state.wt is not None and state.wt.task_id != record.data["task"]:
        _set_wake(state, record.at)  # another task (an update's, a fresh one) is there already: it replays this too
        return
    state.wt = None
    state.sticky = None
    state.wake = False
    if state.is_open:
        state.status = "waiting"
        state.wt_counter += 1
        state.wt = WorkflowTask(workflow_task_id(state.run_id, state.wt_counter), "ready", record.data["available_at"])


def _checkpoint(state: RunState, record: Record) -> None:
    state.checkpoints[record.data["id"]] = dict(record.data["receipt"])


def _act_ack(state: RunState, record: Record) -> None:
    info = state.stopped_attempts.get(record.data["attempt"])
    if info is not None:
        info["acked"] = True


def _command(state: RunState, record: Record) -> None:
    state.commands[record.data["request_id"]] = record.data["answer"]


_INTERNAL_FOLDS: dict[str, Any] = {
    "wt_claim": _wt_claim,
    "wt_done": _wt_done,
    "wt_fail": _wt_fail,
    "wt_release": _wt_release,
    "act_release": _act_release,
    "act_fresh": _act_fresh,
    "act_lease": _act_lease,
    "redriven": _redriven,
    "act_late": _act_late,
    "act_hb": _act_hb,
    "msg_cursor": _msg_cursor,
    "msg_held": _msg_held,
    "command": _command,
    "coop_wait": _coop_wait,
    "wt_defer": _wt_defer,
    "checkpoint": _checkpoint,
    "act_ack": _act_ack,
    "coop_child": lambda state, record: state.child_requests.__setitem__(record.data["run"], dict(record.data)),
    "coop_child_done": lambda state, record: state.child_requests.get(record.data["run"], {}).__setitem__("done", True),
    "ws_append": lambda state, record: workflow_streams.fold_append(
        state.wstreams, record.data["stream"], record.data["items"], "client", None, record.at),
    "ws_close": lambda state, record: workflow_streams.fold_close(
        state.wstreams, record.data["stream"], record.data.get("error_reason"), record.data.get("retention"), record.at),
    "repair_wake": lambda state, record: _set_wake(state, record.at),  # an operator's repair pass
    "run_started": lambda state, record: state.pending_starts.pop(record.data["run"], None),  # its first commit is in
}
