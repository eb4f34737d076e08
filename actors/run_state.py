"""A run's folded state and the fold that builds it from journal records.

The journal holds two kinds of records for a run: *history events* (``h`` set, the
PascalCase events the SDK replays) and *internal transitions* (lower-case ``t``: task
claims, releases, failures). Folding both, in journal order, yields everything the
actor needs: status, the one workflow-task slot, open activities, timers, children,
the open condition wait. ``fold`` is deterministic and does no I/O: every id and
instant it uses is carried by the record, so recovery is replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from persistence.ids import iso
from persistence.vocabulary import TERMINAL_STATUSES, workflow_task_id

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

    @property
    def task_id(self) -> str:
        return self.exec_id

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


def fold(state: RunState, rec: dict[str, Any]) -> RunState:
    """Apply one journal record to the run state (in place) and return it."""
    t = rec["t"]
    at = rec["at"]
    state.jseq += 1
    if "h" in rec:
        _history(state, rec)
        state.last_progress_at = at
        handler = _EVENT_FOLDS.get(t)
    else:
        handler = _INTERNAL_FOLDS[t]
    if handler is not None:
        handler(state, rec)
    extra = rec.get("x")
    if extra and "start" in extra:  # this record created a run: it stays pending until confirmed
        state.pending_starts[extra["start"]["run_id"]] = extra["start"]
    _schedule(state, at)
    return state


def _history(state: RunState, rec: dict[str, Any]) -> None:
    h = rec["h"]
    assert h == state.next_h, f"history gap in {state.run_id}: expected {state.next_h}, got {h}"
    state.next_h = h + 1
    ts = iso(rec["at"])
    state.events.append(
        {
            "id": f"{state.run_id}-{h}",
            "sequence": h,
            "event_type": rec["t"],
            "namespace": state.meta.get("namespace"),
            "workflow_task_id": rec.get("wt"),
            "workflow_command_id": rec.get("cmd"),
            "recorded_at": ts,
            "timestamp": ts,
            "payload": rec.get("p") or {},
        }
    )


def _schedule(state: RunState, at: float) -> None:
    """The scheduler: at most one workflow task per run, created only when woken; the oldest
    accepted update gets a task of its own first (never merged with an ordinary wake-up)."""
    if state.is_open and state.wt is None and (state.pending_updates or state.wake):
        state.wt_counter += 1
        update_id = state.pending_updates[0] if state.pending_updates else None
        state.wt = WorkflowTask(workflow_task_id(state.run_id, state.wt_counter), "ready", at, update_id=update_id)


def _set_wake(state: RunState, at: float) -> None:
    state.wake = True
    wt = state.wt
    if wt is not None and wt.status == "ready" and wt.available_at > at:
        wt.available_at = at  # a new wake event cuts a failure backoff short


def _member_resolved(state: RunState, par: dict[str, Any] | None, seq: int, at: float) -> None:
    """Wake the workflow for a resolved step; for a parallel member only when its whole group resolved."""
    if not par:
        _set_wake(state, at)
        return
    group = state.groups.get(par["parallel_group_path"][0]["parallel_group_id"])
    if group is None:
        _set_wake(state, at)
        return
    group["open"].discard(seq)
    if not group["open"]:
        _set_wake(state, at)


def _register_step(state: RunState, seq: int, info: dict[str, Any], par: dict[str, Any] | None) -> None:
    state.step_seq = max(state.step_seq, seq)
    state.steps[seq] = info
    if par:
        outer = par["parallel_group_path"][0]
        group = state.groups.setdefault(outer["parallel_group_id"], {"open": set()})
        group["open"].add(seq)


# --- history event folds -------------------------------------------------------------


def _started(state: RunState, rec: dict[str, Any]) -> None:
    meta = rec.get("x", {}).get("meta")
    if meta is not None:
        state.meta = dict(meta)
        state.search_attributes = dict(meta.get("search_attributes") or {})
    if rec["t"] == "WorkflowStarted":
        state.status = "pending"
        _set_wake(state, rec["at"])


def _activity_scheduled(state: RunState, rec: dict[str, Any]) -> None:
    x = rec["x"]
    seq = rec["p"]["sequence"]
    par = x.get("par")
    act = Activity(
        seq=seq,
        exec_id=rec["p"]["activity_execution_id"],
        activity_type=rec["p"]["activity_type"],
        queue=x["queue"],
        arguments=x.get("arguments"),
        policy=x["policy"],
        scheduled_at=rec["at"],
        parallel=par,
        available_at=rec["at"],
        ready_since=rec["at"],
    )
    state.activities[seq] = act
    _register_step(state, seq, {"kind": "activity", "name": act.activity_type}, par)


def _activity_started(state: RunState, rec: dict[str, Any]) -> None:
    act = state.activities[rec["p"]["sequence"]]
    act.status = "running"
    act.attempt_number = rec["p"]["attempt_number"]
    act.attempt_closed = False
    act.owner = rec["x"]["owner"]
    act.lease_expires_at = rec["x"]["lease"]
    act.claimed_at = rec["at"]
    act.heartbeat_base = rec["at"]
    act.progress = None


def _activity_retry(state: RunState, rec: dict[str, Any]) -> None:
    act = state.activities[rec["p"]["sequence"]]
    act.status = "pending"
    act.attempt_closed = True
    act.owner = None
    act.available_at = rec["x"]["available_at"]
    act.ready_since = act.available_at
    act.attempt_number = rec["x"].get("attempt_number", act.attempt_number)


def _activity_resolved(state: RunState, rec: dict[str, Any]) -> None:
    act = state.activities.pop(rec["p"]["sequence"])
    _member_resolved(state, act.parallel, act.seq, rec["at"])


def _activity_cancelled(state: RunState, rec: dict[str, Any]) -> None:
    state.activities.pop(rec["p"]["sequence"], None)


def _timer_scheduled(state: RunState, rec: dict[str, Any]) -> None:
    p = rec["p"]
    kind = "condition" if p.get("timer_kind") == "condition_timeout" else "user"
    par = rec.get("x", {}).get("par")
    x = rec["x"]
    timer = Timer(p["sequence"], p["timer_id"], x["fire_at"], p["delay_seconds"], kind, par, dict(x.get("extra") or {}))
    state.timers[p["sequence"]] = timer
    if kind == "user":
        _register_step(state, timer.seq, {"kind": "timer", "delay": timer.delay}, par)
    elif state.cond is not None:
        state.cond["timer_seq"] = timer.seq


def _timer_fired(state: RunState, rec: dict[str, Any]) -> None:
    timer = state.timers.pop(rec["p"]["sequence"], None)
    if timer is None:
        return
    if timer.kind == "condition":
        state.cond = None
        _set_wake(state, rec["at"])
    else:
        _member_resolved(state, timer.parallel, timer.seq, rec["at"])


def _timer_cancelled(state: RunState, rec: dict[str, Any]) -> None:
    state.timers.pop(rec["p"]["sequence"], None)


def _child_scheduled(state: RunState, rec: dict[str, Any]) -> None:
    p = rec["p"]
    par = rec.get("x", {}).get("par")
    child = Child(
        p["sequence"],
        p["child_workflow_instance_id"],
        p["child_workflow_run_id"],
        p["child_workflow_type"],
        p["parent_close_policy"],
        par,
    )
    state.children[child.seq] = child
    _register_step(state, child.seq, {"kind": "child", "name": child.workflow_type}, par)


def _child_run_started(state: RunState, rec: dict[str, Any]) -> None:
    child = state.children.get(rec["p"]["sequence"])
    if child is not None:
        child.run_id = rec["p"]["child_workflow_run_id"]
        child.run_number = rec["p"].get("child_run_number", 1)


def _child_resolved(state: RunState, rec: dict[str, Any]) -> None:
    child = state.children.pop(rec["p"]["sequence"], None)
    if child is not None:
        _member_resolved(state, child.parallel, child.seq, rec["at"])


def _marker(kind: str) -> Callable[[RunState, dict[str, Any]], None]:
    def apply(state: RunState, rec: dict[str, Any]) -> None:
        p = rec["p"]
        info: dict[str, Any] = {"kind": kind}
        if kind == "search_attributes":
            state.search_attributes = dict(p.get("merged") or {})
        _register_step(state, p["sequence"], info, None)

    return apply


def _cond_opened(state: RunState, rec: dict[str, Any]) -> None:
    p = rec["p"]
    state.cond = {
        "seq": p["sequence"],
        "wait_id": p["condition_wait_id"],
        "key": p.get("condition_key"),
        "fingerprint": p.get("condition_definition_fingerprint"),
        "timeout": p.get("timeout_seconds"),
        "deadline": rec.get("x", {}).get("deadline"),
    }
    state.last_signal = None
    _register_step(state, p["sequence"], {"kind": "condition"}, None)


def _cond_satisfied(state: RunState, rec: dict[str, Any]) -> None:
    state.cond = None


def _signal(state: RunState, rec: dict[str, Any]) -> None:
    state.last_signal = {"signal_name": rec["p"]["signal_name"], "workflow_signal_id": rec["p"]["signal_id"]}
    state.last_signal_h = rec["h"]
    state.unseen_signals.append(rec["h"])
    if state.cond is not None:
        _set_wake(state, rec["at"])


def _update_accepted(state: RunState, rec: dict[str, Any]) -> None:
    p = rec["p"]
    state.updates[p["update_id"]] = {
        "update_id": p["update_id"],
        "name": p["update_name"],
        "arguments": p.get("arguments"),
        "command_id": p.get("workflow_command_id"),
        "status": "accepted",
        "h": rec["h"],
        "accepted_at": rec["at"],
        "applied_at": None,
        "closed_at": None,
        "result": None,
        "failure": None,
    }
    state.pending_updates.append(p["update_id"])


def _update_applied(state: RunState, rec: dict[str, Any]) -> None:
    up = state.updates.get(rec["p"]["update_id"])
    if up is not None:
        up["applied_at"] = rec["at"]


def _update_completed(state: RunState, rec: dict[str, Any]) -> None:
    p = rec["p"]
    up = state.updates.get(p["update_id"])
    if up is not None:
        up["closed_at"] = rec["at"]
        if p.get("failure_id"):
            up["status"] = "failed"
            up["failure"] = {"failure_id": p["failure_id"], "message": p.get("message"), "exception_type": p.get("exception_type")}
        else:
            up["status"] = "completed"
            up["result"] = p.get("result")
    if p["update_id"] in state.pending_updates:
        state.pending_updates.remove(p["update_id"])
    if state.cond is not None:
        _set_wake(state, rec["at"])  # the handler may have made the open wait's predicate true


def _closed(state: RunState, rec: dict[str, Any]) -> None:
    for update_id in state.pending_updates:  # accepted but never applied: their callers are released
        up = state.updates[update_id]
        up["status"] = "failed"
        up["closed_at"] = rec["at"]
        up["failure"] = {"failure_id": None, "message": "The workflow run closed before the update was applied.", "reason": "run_closed"}
    state.pending_updates = []
    status, reason = TERMINAL_EVENTS[rec["t"]]
    state.status = status
    state.closed_reason = reason
    state.closed_at = rec["at"]
    state.output = rec.get("x", {}).get("output")
    if status in ("completed", "failed") and rec["t"] != "WorkflowTimedOut":
        state.late_outcomes = {a.seq: a.attempt_number for a in state.activities.values() if a.status == "running"}
    state.wt = None
    state.wake = False
    state.timers.clear()
    state.activities.clear()
    state.cond = None


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
    "TimerScheduled": _timer_scheduled,
    "TimerFired": _timer_fired,
    "TimerCancelled": _timer_cancelled,
    "ChildWorkflowScheduled": _child_scheduled,
    "ChildRunStarted": _child_run_started,
    "ChildRunCompleted": _child_resolved,
    "ChildRunFailed": _child_resolved,
    "ChildRunCancelled": _child_resolved,
    "ChildRunTerminated": _child_resolved,
    "SideEffectRecorded": _marker("side_effect"),
    "VersionMarkerRecorded": _marker("version_marker"),
    "SearchAttributesUpserted": _marker("search_attributes"),
    "ConditionWaitOpened": _cond_opened,
    "ConditionWaitSatisfied": _cond_satisfied,
    "SignalReceived": _signal,
    "UpdateAccepted": _update_accepted,
    "UpdateApplied": _update_applied,
    "UpdateCompleted": _update_completed,
    "CancelRequested": None,
    "TerminateRequested": None,
    **{name: _closed for name in TERMINAL_EVENTS},
}


# --- internal transitions ------------------------------------------------------------


def _wt_claim(state: RunState, rec: dict[str, Any]) -> None:
    wt = state.wt
    assert wt is not None and wt.task_id == rec["task"]
    wt.status = "leased"
    wt.attempt = rec["attempt"]
    wt.owner = rec["owner"]
    wt.lease_expires_at = rec["lease"]
    wt.snapshot = rec["snap"]
    if wt.update_id is None:
        state.wake = False  # the snapshot holds every event that set it; update tasks leave it
    if state.status == "waiting" or state.status == "pending":
        state.status = "running" if state.status == "waiting" else state.status


def _wt_done(state: RunState, rec: dict[str, Any]) -> None:
    snapshot = state.wt.snapshot if state.wt is not None else 0
    state.unseen_signals = [h for h in state.unseen_signals if h > snapshot]
    state.wt = None
    state.wt_failures = 0
    if state.is_open:
        state.status = "waiting"
        # A signal that arrived after this task's snapshot was never seen by the worker; if the
        # completion left a wait open, the next task must replay it against that wait.
        if state.cond is not None and state.last_signal_h > snapshot:
            _set_wake(state, rec["at"])


def _wt_fail(state: RunState, rec: dict[str, Any]) -> None:
    wt = state.wt
    assert wt is not None
    state.wt_failures += 1
    wt.status = "ready"
    wt.owner = None
    wt.lease_expires_at = None
    wt.available_at = rec["retry_at"]


def _wt_release(state: RunState, rec: dict[str, Any]) -> None:
    wt = state.wt
    if wt is not None and wt.task_id == rec["task"]:
        wt.status = "ready"
        wt.owner = None
        wt.lease_expires_at = None
        wt.available_at = rec["at"]


def _act_release(state: RunState, rec: dict[str, Any]) -> None:
    act = state.activities.get(rec["seq"])
    if act is not None:
        act.status = "pending"
        act.attempt_closed = True
        act.owner = None
        act.available_at = rec["at"]
        act.ready_since = rec["at"]


def _act_late(state: RunState, rec: dict[str, Any]) -> None:
    """An outcome that arrived after the run closed: stored once, no history (spec 6.5)."""
    state.late_outcomes.pop(rec["seq"], None)


def _command(state: RunState, rec: dict[str, Any]) -> None:
    state.commands[rec["request_id"]] = rec["answer"]


_INTERNAL_FOLDS: dict[str, Any] = {
    "wt_claim": _wt_claim,
    "wt_done": _wt_done,
    "wt_fail": _wt_fail,
    "wt_release": _wt_release,
    "act_release": _act_release,
    "act_late": _act_late,
    "command": _command,
    "repair_wake": lambda state, rec: _set_wake(state, rec["at"]),  # an operator's repair pass
    "run_started": lambda state, rec: state.pending_starts.pop(rec["run"], None),  # its first commit is in
}
