"""The messages a RunActor takes, one frozen dataclass each, and the views it answers with.

A request reaches a run only as one of these: the route builds it, the engine delivers it,
the actor matches on its type. Fields are checked where a message is built from outside
data (``from_wire`` for posts between nodes); inside the process the types are the check.
Views are plain snapshots: whoever holds one cannot change the run through it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import trio

from persistence.journal import InstanceRow, RunRow

# --- messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Base of every actor message. ``namespace`` scopes worker-plane messages: a task of
    another namespace is unknown to the run, never leaked."""

    KIND: ClassVar[str] = ""
    namespace: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick(Message):
    """Enforce whatever is due now (timers, leases, timeouts)."""

    KIND: ClassVar[str] = "tick"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckChildren(Message):
    """After activation: ask children that may have closed while the run was away."""

    KIND: ClassVar[str] = "check_children"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Message):
    KIND: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True, kw_only=True)
class Repair(Message):
    """Give an open run that lacks a workflow task one."""

    KIND: ClassVar[str] = "repair"


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairRun(Message):
    """An operator's repair of one run (extended §9.1): re-offer what it lacks, or nothing."""

    KIND: ClassVar[str] = "repair_run"
    command_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Archive(Message):
    """Archive a closed run (extended §9.3); an open one is refused."""

    KIND: ClassVar[str] = "archive"
    command_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Redrive(Message):
    """Continue this failed run in a new one (extended §9.2); ``current``: it is the instance's current run."""

    KIND: ClassVar[str] = "redrive"
    command_id: str
    request_id: str | None = None
    current: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadDebug(Message):
    """The operator's snapshot of the run (extended §9.4)."""

    KIND: ClassVar[str] = "read_debug"
    include_payload: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalInfo(Message):
    KIND: ClassVar[str] = "terminal_info"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildClosed(Message):
    KIND: ClassVar[str] = "child_closed"
    child_run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseOwner(Message):
    """A deregistering worker hands back its workflow task."""

    KIND: ClassVar[str] = "release_owner"
    owner: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimWorkflowTask(Message):
    KIND: ClassVar[str] = "claim_workflow_task"
    task_id: str
    owner: str
    page_size: int = 500
    poll_id: str | None = None  # kept with the lease, so a re-sent poll can find what it was given


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayWorkflowTask(Message):
    """A poll retried after its answer was lost gets the same leased task again."""

    KIND: ClassVar[str] = "replay_workflow_task"
    task_id: str
    owner: str
    attempt: int
    page_size: int = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTaskHistory(Message):
    KIND: ClassVar[str] = "workflow_task_history"
    task_id: str
    owner: Any
    attempt: Any
    after: int
    page_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTaskHeartbeat(Message):
    KIND: ClassVar[str] = "workflow_task_heartbeat"
    task_id: str
    owner: Any
    attempt: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteWorkflowTask(Message):
    KIND: ClassVar[str] = "complete_workflow_task"
    task_id: str
    owner: Any
    attempt: Any
    commands: Any
    sticky: dict[str, Any] | None = None  # the sticky_cache claim, its ttl capped by the server (§12)
    cursors: Any = None  # message_stream_cursors: how far the workflow read its message streams (§7.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class FailWorkflowTask(Message):
    KIND: ClassVar[str] = "fail_workflow_task"
    task_id: str
    owner: Any
    attempt: Any
    failure: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimActivity(Message):
    KIND: ClassVar[str] = "claim_activity"
    seq: int
    owner: str
    poll_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayActivity(Message):
    KIND: ClassVar[str] = "replay_activity"
    task_id: str
    owner: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteActivity(Message):
    KIND: ClassVar[str] = "complete_activity"
    task_id: str
    attempt_id: Any
    owner: Any
    result: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class FailActivity(Message):
    KIND: ClassVar[str] = "fail_activity"
    task_id: str
    attempt_id: Any
    owner: Any
    failure: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityHeartbeat(Message):
    KIND: ClassVar[str] = "activity_heartbeat"
    task_id: str
    attempt_id: Any
    owner: Any
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal(Message):
    KIND: ClassVar[str] = "signal"
    name: str
    arguments: Any
    command_id: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendMessage(Message):
    """A message appended to one of the run's instance's message streams (extended spec §7.1)."""

    KIND: ClassVar[str] = "append_message"
    stream: str
    message_id: str
    payload: dict[str, Any]
    command_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCancellation(Message):
    """A cooperative cancellation request from the control plane (extended spec §5.1)."""

    KIND: ClassVar[str] = "request_cancellation"
    request_id: str
    reason: str | None = None
    cleanup_seconds: int | None = None
    parent: dict[str, Any] | None = None  # from the parent run: its request's context (extended spec §5.7)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimOp(Message):
    """An operation bound to a leased workflow task beyond the core four (history, heartbeat,
    complete, fail): a cancellation delivery or a prepared local activity step. ``op`` names
    it; ``body`` is the route's validated body."""

    KIND: ClassVar[str] = "claim_op"
    op: str
    task_id: str
    owner: Any
    attempt: Any
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityOp(Message):
    """An activity attempt's status or its acknowledgement of a cooperative stop (extended §5.6)."""

    KIND: ClassVar[str] = "activity_op"
    op: str
    task_id: str
    attempt_id: Any
    owner: Any
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildRequestDone(Message):
    """A child recorded the cooperative request its parent owed it (or could not be reached)."""

    KIND: ClassVar[str] = "child_request_done"
    child_run_id: str
    outcome: str  # applied | already_closed | failed
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentCloseDone(Message):
    """A closed parent's policy was applied to one of its children (or could not be)."""

    KIND: ClassVar[str] = "parent_close_done"
    child_run_id: str
    outcome: str  # applied | already_closed | failed
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Close(Message):
    """Cancel or terminate the run (``kind``), from a client, a parent-close policy or a schedule."""

    KIND: ClassVar[str] = "close"
    kind: str
    reason: str | None
    command_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Update(Message):
    KIND: ClassVar[str] = "update"
    name: str
    arguments: Any
    command_id: str
    update_id: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRun(Message):
    """Create the run: its first records and its instance row, written by the run's own actor
    under its own shard's fence. Answered with the run's ``RunView``; a run that already
    exists answers the same without writing (a retried start)."""

    KIND: ClassVar[str] = "start_run"
    meta: dict[str, Any]
    accepted: bool
    instance: InstanceRow


@dataclass(frozen=True, slots=True, kw_only=True)
class RunsStarted(Message):
    """Runs this run created have committed their first records: it stops re-sending them."""

    KIND: ClassVar[str] = "runs_started"
    run_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingStart(Message):
    """The start of a run this run created that is not confirmed yet (None when there is none)."""

    KIND: ClassVar[str] = "pending_start"
    run_id: str


# --- reads (answered from the actor's committed state) ------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Describe(Message):
    """The run's summary. ``allow_damaged``: a run with unreadable records still answers (to
    be located for terminate), where every other read is refused."""

    KIND: ClassVar[str] = "describe"
    allow_damaged: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadHistory(Message):
    KIND: ClassVar[str] = "read_history"
    after: int
    limit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadUpdate(Message):
    KIND: ClassVar[str] = "read_update"
    update_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadHeartbeats(Message):
    """The latest heartbeat progress of each activity execution (for history exports)."""

    KIND: ClassVar[str] = "read_heartbeats"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadJob(Message):
    """A standalone activity's view (actors.standalone) and the event its next commit sets."""

    KIND: ClassVar[str] = "read_job"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadStreams(Message):
    """The run's workflow streams (``stream`` None), or one stream's page from ``start`` (extended §7.2)."""

    KIND: ClassVar[str] = "read_streams"
    stream: str | None = None
    start: int | None = None  # a page of items from this offset; None: the description only
    limit: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamAppend(Message):
    """A client's items for one of the run's workflow streams (validated, normalised)."""

    KIND: ClassVar[str] = "stream_append"
    stream: str
    items: list[dict[str, Any]]
    max_pending: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamClose(Message):
    KIND: ClassVar[str] = "stream_close"
    stream: str
    error_reason: str | None = None
    retention: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadActivity(Message):
    """The state of one activity execution (by its execution id), for the timeout pass."""

    KIND: ClassVar[str] = "read_activity"
    execution_id: str


_KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        Tick, CheckChildren, Ping, Repair, TerminalInfo, ChildClosed, ReleaseOwner, ClaimWorkflowTask,
        ReplayWorkflowTask, WorkflowTaskHistory, WorkflowTaskHeartbeat, CompleteWorkflowTask, FailWorkflowTask,
        ClaimActivity, ReplayActivity, CompleteActivity, FailActivity, ActivityHeartbeat, Signal, Close, Update,
        StartRun, RunsStarted, PendingStart, Describe, ReadHistory, ReadUpdate, ReadActivity, ParentCloseDone,
        ChildRequestDone, RequestCancellation,
    )
}
POSTABLE = frozenset({"tick", "check_children", "child_closed", "close", "runs_started", "parent_close_done", "child_request_done",
                      "request_cancellation"})  # what one node may post to another's run


class BadMessage(ValueError):
    pass


def to_wire(message: Message) -> tuple[str, dict[str, Any]]:
    """The (kind, fields) form a message travels in between nodes."""
    return message.KIND, asdict(message)


def from_wire(kind: Any, args: Any) -> Message:
    """A message posted by a peer; only the postable kinds, with exactly their fields."""
    cls = _KINDS.get(kind) if kind in POSTABLE else None
    if cls is None or not isinstance(args, dict):
        raise BadMessage(f"not a postable message: {kind!r}")
    names = {f.name for f in fields(cls)}
    unknown = set(args) - names
    if unknown:
        raise BadMessage(f"message {kind} has no field(s) {sorted(unknown)}")
    try:
        return cls(**args)
    except TypeError as exc:
        raise BadMessage(f"message {kind}: {exc}") from None


# --- views --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunView:
    """What the control plane shows of a run; built from committed state only."""

    run_id: str
    namespace: str
    workflow_id: str
    workflow_type: str
    business_key: str | None
    task_queue: str | None
    run_number: int
    status: str
    closed_reason: str | None
    is_open: bool
    arguments: Any
    output: Any
    started_at: float
    closed_at: float | None
    last_progress_at: float | None
    wait_kind: str | None
    memo: dict[str, Any]
    search_attributes: dict[str, Any]
    execution_timeout: Any
    run_timeout: Any
    execution_deadline: float | None
    run_deadline: float | None
    continued_to: str | None
    visible: int
    row: RunRow
    meta: dict[str, Any]  # the run's start metadata (a copy), for exports
    archived_at: float | None = None  # set once an operator archived the closed run (extended §9.3)
    redriven_to: str | None = None  # the run that continues this failed one (extended §9.2)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Committed events from an offset; ``changed`` fires at the run's next commit or stop."""

    events: list[dict[str, Any]]
    visible: int
    is_open: bool
    status: str
    changed: trio.Event


@dataclass(frozen=True, slots=True)
class UpdateView:
    record: dict[str, Any] | None
    changed: trio.Event


@dataclass(frozen=True, slots=True)
class StreamsView:
    """Stream descriptions (and a page); ``changed`` fires at the run's next commit or stop."""

    workflow_id: str
    run_id: str
    streams: list[dict[str, Any]]
    items: list[dict[str, Any]]
    next_offset: int
    terminal: bool
    changed: trio.Event


@dataclass(frozen=True, slots=True)
class ActivityView:
    execution_id: str
    status: str


@dataclass(frozen=True, slots=True)
class TaskView:
    """A ready or leased task of a run, for operator scans."""

    queue: str | None
    task_id: str
    task_type: str
    status: str
    available_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    attempt: int | None
    attempt_id: str | None = None
    execution_id: str | None = None
    seq: int | None = None
    deadlines: tuple[float, ...] = ()
    attempt_closed: bool = False
    poll_id: str | None = None  # the poll it is leased to, while leased


@dataclass(frozen=True, slots=True)
class WorkView:
    """A live run's outstanding work, as of its last commit (operator scans read it without
    queueing behind the run's mailbox)."""

    run_id: str
    namespace: str
    workflow_id: str | None
    status: str
    is_open: bool
    workflow_task: TaskView | None
    activities: tuple[TaskView, ...]
    needs_workflow_task: bool = True  # False for a standalone activity's host run (actors.standalone)
    workflow_type: str | None = None
    workflow_task_failures: int = 0  # consecutive failed workflow tasks
    sticky: bool = False  # its next workflow task prefers the worker that cached it
