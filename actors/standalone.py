"""Standalone activities (extended spec §8): an activity run as a top-level job.

Each one is a *host run*: a run of type ``dw.standalone_activity`` whose id is the activity
id, opened with ``ActivityScheduled`` at step 1 and never given a workflow task. Its activity
follows the ordinary worker-plane path (poll, heartbeat, retries, timeouts) and the run closes
in the same commit as the activity's final outcome, so a describe never sees a finished
activity in a running job. Everything here is plain functions over the run's state.
"""

from __future__ import annotations

from typing import Any

from persistence.ids import iso
from persistence.vocabulary import activity_execution_id

from .emit import Emitter, blob_of
from .records import Record, history_event
from .run_state import HOST_TYPE, RunState

STEP = 1  # the host run's one step
FINAL = ("ActivityCompleted", "ActivityFailed", "ActivityTimedOut")


def is_host(meta: dict[str, Any]) -> bool:
    return meta.get("workflow_type") == HOST_TYPE


def scheduled_record(meta: dict[str, Any], sequence: int, at: float) -> Record:
    """The host run's ``ActivityScheduled``, written with its start (``meta["standalone"]``
    holds the validated activity: type, class, queue, arguments, policy)."""
    spec = meta["standalone"]
    payload = {
        "sequence": STEP,
        "activity_type": spec["activity_type"],
        "activity_class": spec["activity_class"],
        "activity_execution_id": activity_execution_id(meta["run_id"], STEP),
        "activity": {"snapshot_version": 1, "task_queue": spec["queue"], **spec["policy"]},
    }
    extra = {"queue": spec["queue"], "arguments": spec.get("arguments"), "policy": spec["policy"]}
    return history_event("ActivityScheduled", sequence, at, payload, extra)


def close_with_activity(state: RunState, em: Emitter) -> None:
    """Append the host run's terminal event when ``em`` resolves its activity for good
    (a retry is not final). Called on every commit of a host run, before the fold."""
    if not is_host(state.meta) or not state.is_open:
        return
    final = next((r for r in em.records if r.kind in FINAL and r.payload.get("sequence") == STEP), None)
    if final is None or any(r.kind.startswith("Workflow") and r.kind != "WorkflowStarted" for r in em.records):
        return
    p = final.payload
    if final.kind == "ActivityCompleted":
        result = p.get("result")
        env = result if isinstance(result, dict) else {"codec": "avro", "blob": result}
        em.event("WorkflowCompleted", {"output": blob_of(result), "payload_codec": "avro"}, extra={"output": env})
        return
    failure = {
        "failure_id": f"{state.run_id}-f",
        "source_kind": "activity_execution",
        "source_id": p.get("activity_execution_id"),
        "failure_category": p.get("failure_category", "activity"),
        "non_retryable": bool(p.get("non_retryable", False)),
        "exception_type": p.get("exception_type"),
        "exception_class": p.get("exception_class"),
        "message": p.get("message"),
        "exception": p.get("exception"),
        "failed_step_sequence": STEP,
        "failed_activity_execution_id": p.get("activity_execution_id"),
    }
    em.event("WorkflowFailed", {k: v for k, v in failure.items() if v is not None})


ACTIVITY_STATUS = {
    "ActivityCompleted": "completed",
    "ActivityFailed": "failed",
    "ActivityTimedOut": "timed_out",
    "ActivityCancelled": "cancelled",
}


def view(state: RunState, *, with_result: bool = True) -> dict[str, Any]:
    """The job as ``GET /api/activities/{id}`` shows it (``StandaloneActivityExecution``):
    the host run's status beside its activity's, read from the run's own history."""
    m = state.meta
    spec = m.get("standalone") or {}
    exec_id = activity_execution_id(state.run_id, STEP)
    act = state.activities.get(STEP)
    activity_status = "pending"
    attempts = 0
    for event in state.events:
        kind = event["event_type"]
        if kind == "ActivityStarted":
            attempts = max(attempts, int(event["payload"].get("attempt_number") or 0))
        elif kind in ACTIVITY_STATUS:
            activity_status = ACTIVITY_STATUS[kind]
    if act is not None:
        activity_status = "running" if act.status == "running" else "pending"
        attempts = max(attempts, act.attempt_number)
    elif activity_status == "pending" and not state.is_open:
        activity_status = "cancelled"  # closed before any outcome (cancel or terminate)
    beat = state.heartbeats.get(exec_id) or {}
    policy = spec.get("policy") or {}
    scheduled_at = m.get("started_at") or 0.0
    s2s = policy.get("schedule_to_start_timeout")
    s2c = policy.get("schedule_to_close_timeout")
    item: dict[str, Any] = {
        "activity_id": m.get("workflow_id"),
        "workflow_run_id": state.run_id,
        "activity_execution_id": exec_id,
        "workflow_type": HOST_TYPE,
        "activity_type": spec.get("activity_type"),
        "activity_class": spec.get("activity_class"),
        "task_queue": spec.get("queue"),
        "namespace": state.namespace,
        "status": state.status if state.status != "pending" else "running",
        "activity_status": activity_status,
        "closed_reason": state.closed_reason,
        "business_key": m.get("business_key"),
        "payload_codec": "avro",
        "run_number": m.get("run_number", 1),
        "started_at": iso(scheduled_at),
        "closed_at": iso(state.closed_at),
        "last_progress_at": iso(state.last_progress_at),
        "last_heartbeat_at": iso(beat.get("last_heartbeat_at")),
        "last_heartbeat_progress": beat.get("last_heartbeat_progress"),
        "schedule_to_start_deadline_at": iso(scheduled_at + s2s) if s2s and attempts == 0 else None,
        "schedule_to_close_deadline_at": iso(scheduled_at + s2c) if s2c else None,
        "attempt_count": attempts,
        "retry_policy": {k: policy.get(k) for k in ("max_attempts", "backoff_seconds", "non_retryable_error_types")},
    }
    if with_result:
        item["result"] = state.output if state.status == "completed" else None
        if state.status in ("failed", "cancelled", "terminated"):
            item["failure"] = _failure(state)
    return item


def _failure(state: RunState) -> dict[str, Any] | None:
    last = state.events[-1] if state.events else None
    if last is None:
        return None
    p = last["payload"]
    return {k: p.get(k) for k in ("exception_type", "exception_class", "message", "failure_category", "reason") if p.get(k) is not None}
