"""Plain snapshots of a run's committed state, for everything outside the actor.

The actor answers reads with these; nothing outside it holds its ``RunState``.
"""

from __future__ import annotations

import copy

from persistence.journal import RunRow

from . import decide_activity, decide_time, standalone
from .messages import ActivityView, RunView, TaskView, WorkView
from .run_state import HOST_TYPE, RunState


def run_view(s: RunState, visible: int) -> RunView:
    m = s.meta
    continued_to = None
    if s.closed_reason == "continued" and s.events:
        continued_to = s.events[-1]["payload"].get("continued_to_run_id")
    return RunView(
        run_id=s.run_id,
        namespace=m["namespace"],
        workflow_id=m["workflow_id"],
        workflow_type=m["workflow_type"],
        business_key=m.get("business_key"),
        task_queue=m.get("task_queue"),
        run_number=m["run_number"],
        status=s.status,
        closed_reason=s.closed_reason,
        is_open=s.is_open,
        arguments=m.get("arguments"),
        output=s.output,
        started_at=m["started_at"],
        closed_at=s.closed_at,
        last_progress_at=s.last_progress_at,
        wait_kind=s.wait_kind(),
        memo=copy.deepcopy(m.get("memo") or {}),
        search_attributes=copy.deepcopy(s.search_attributes),
        execution_timeout=m.get("execution_timeout"),
        run_timeout=m.get("run_timeout"),
        execution_deadline=m.get("execution_deadline"),
        run_deadline=m.get("run_deadline"),
        continued_to=continued_to,
        visible=visible,
        row=run_row(s),
        meta=dict(m),
        archived_at=s.archived["at"] if s.archived else None,
        redriven_to=next(iter(s.redrives.values()))["run_id"] if s.redrives else None,
    )


def activity_view(s: RunState, execution_id: str) -> ActivityView | None:
    act = next((a for a in s.activities.values() if a.exec_id == execution_id), None)
    return None if act is None else ActivityView(execution_id, act.status)


def work_view(s: RunState) -> WorkView:
    wt = s.wt
    task = None
    if wt is not None:
        task = TaskView(
            queue=s.task_queue, task_id=wt.task_id, task_type="workflow", status=wt.status, available_at=wt.available_at,
            lease_owner=wt.owner, lease_expires_at=wt.lease_expires_at, attempt=wt.attempt,
            poll_id=wt.poll_id if wt.status == "leased" else None,
        )
    activities = tuple(
        TaskView(
            queue=a.queue, task_id=a.task_id, task_type="activity", status=a.status, available_at=a.available_at,
            lease_owner=a.owner, lease_expires_at=a.lease_expires_at, attempt=a.attempt_number,
            attempt_id=a.attempt_id() if a.status == "running" and not a.attempt_closed else None,
            execution_id=a.exec_id, seq=a.seq, deadlines=tuple(decide_activity.deadlines(a).values()),
            attempt_closed=a.attempt_closed, poll_id=a.poll_id if a.status == "running" else None,
        )
        for a in s.activities.values()
    )
    return WorkView(
        run_id=s.run_id, namespace=s.namespace, workflow_id=s.meta.get("workflow_id"), status=s.status,
        is_open=s.is_open, workflow_task=task, activities=activities,
        needs_workflow_task=s.meta.get("workflow_type") != HOST_TYPE,
        workflow_type=s.meta.get("workflow_type"), workflow_task_failures=s.wt_failures, sticky=s.sticky is not None,
    )


def run_row(s: RunState, now: float | None = None) -> RunRow:
    m = s.meta
    wt = s.wt
    attention = s.is_open and (wt is not None or any(a.status != "closed" for a in s.activities.values()))
    return RunRow(
        run_id=s.run_id,
        namespace=m["namespace"],
        workflow_id=m["workflow_id"],
        run_number=m["run_number"],
        workflow_type=m["workflow_type"],
        task_queue=m.get("task_queue"),
        status=s.status,
        closed_reason=s.closed_reason,
        business_key=m.get("business_key"),
        started_at=m["started_at"],
        closed_at=s.closed_at,
        wake_at=decide_time.next_deadline(s, s.last_progress_at or 0.0 if now is None else now),
        # open: a task, a lease or a child to watch; closed: parent-close policies still owed
        attention=bool(attention) or (s.is_open and bool(s.children)) or bool(s.parent_close),
        last_seq=s.next_h - 1,
        search_attributes=s.search_attributes,
        memo=m.get("memo") or {},
        detail=standalone.view(s, with_result=False) if m["workflow_type"] == HOST_TYPE else {},
    )
