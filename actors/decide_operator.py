"""Operator commands on one run (extended spec §9): repair, archive and the debug snapshot.

Plain functions over the run's state. Repair re-offers what an open run is missing — the same
judgement as the background repair pass (a ready task nobody took in time, a lease that ran
out, an open run with no task although nothing holds it) — and records ``RepairRequested``
only when it did something. Archive marks a closed run archived without touching its status.
"""

from __future__ import annotations

from typing import Any

from persistence.ids import iso

from . import decide_activity
from .emit import Emitter
from .run_state import HOST_TYPE, RunState

REDISPATCH_AFTER_SECONDS = 3.0  # a ready task older than this was not taken: offer it again


def repair_need(state: RunState, now: float) -> tuple[str, str | None, str | None] | None:
    """What an open run lacks, as (liveness state, task id, task type); None when nothing."""
    wt = state.wt
    if wt is not None:
        if wt.status == "leased" and (wt.lease_expires_at or 0.0) <= now:
            return "workflow_task_lease_expired", wt.task_id, "workflow"
        if wt.status == "ready" and wt.available_at <= now - REDISPATCH_AFTER_SECONDS:
            return "workflow_task_not_claimed", wt.task_id, "workflow"
    for act in sorted(state.activities.values(), key=lambda a: a.seq):
        if act.status == "running" and not act.attempt_closed and (act.lease_expires_at or 0.0) <= now:
            return "activity_lease_expired", act.task_id, "activity"
        if act.status == "pending" and act.available_at <= now - REDISPATCH_AFTER_SECONDS:
            return "activity_task_not_claimed", act.task_id, "activity"
    if wt is None and state.status in ("pending", "running") and state.meta.get("workflow_type") != HOST_TYPE:
        return "workflow_task_missing", None, "workflow"
    return None


def repair(state: RunState, now: float, command_id: str) -> tuple[Emitter, str]:
    """The records of a repair and its outcome (``repair_dispatched`` or ``repair_not_needed``)."""
    em = Emitter(state, now)
    need = repair_need(state, now)
    if need is None:
        return em, "repair_not_needed"
    liveness, task_id, task_type = need
    if liveness == "workflow_task_lease_expired":
        em.internal("wt_release", task=task_id, reason="repair")
    elif liveness == "activity_lease_expired":
        act = next(a for a in state.activities.values() if a.task_id == task_id)
        em.internal("act_release", seq=act.seq)
    elif liveness == "workflow_task_missing":
        em.internal("repair_wake")
        task_id = None
    em.event(
        "RepairRequested",
        {
            "workflow_command_id": command_id, "workflow_instance_id": state.meta["workflow_id"],
            "workflow_run_id": state.run_id, "command_type": "repair", "outcome": "repair_dispatched",
            "liveness_state": liveness, "wait_kind": state.wait_kind(), "task_id": task_id, "task_type": task_type,
        },
        command_id=command_id,
    )
    return em, "repair_dispatched"


def archive(state: RunState, now: float, command_id: str, reason: str | None) -> tuple[Emitter, str]:
    em = Emitter(state, now)
    if state.archived is not None:
        return em, "archive_not_needed"
    ids = {"workflow_command_id": command_id, "workflow_instance_id": state.meta["workflow_id"], "workflow_run_id": state.run_id}
    requested = {**ids, "command_type": "archive", "outcome": "archived", **({"reason": reason} if reason else {})}
    em.event("ArchiveRequested", requested, command_id=command_id)
    em.event("WorkflowArchived", {**ids, "archived_at": em.ts(), **({"reason": reason} if reason else {})}, command_id=command_id)
    return em, "archived"


def debug(state: RunState, now: float, *, include_payload: bool = False) -> dict[str, Any]:
    """The operator's snapshot of a run (``GET …/debug``): its folded state, pending tasks and
    leases, recent failures and what looks wrong."""
    wt = state.wt
    tasks = []
    if wt is not None:
        expired = wt.status == "leased" and (wt.lease_expires_at or 0.0) <= now
        tasks.append({
            "id": wt.task_id, "type": "workflow", "status": wt.status,
            "transport_state": "leased" if wt.status == "leased" else ("ready" if wt.available_at <= now else "delayed"),
            "lease_owner": wt.owner, "lease_expires_at": iso(wt.lease_expires_at), "lease_expired": expired,
            "attempt_count": wt.attempt, "last_error": None, "available_at": iso(wt.available_at),
            "compatibility": state.meta.get("compatibility"), "workflow_wait_kind": state.wait_kind(),
            "update_id": wt.update_id,
        })
    pending_activities = []
    for act in sorted(state.activities.values(), key=lambda a: a.seq):
        beat = state.heartbeats.get(act.exec_id) or {}
        pending_activities.append({
            "sequence": act.seq, "activity_execution_id": act.exec_id, "activity_type": act.activity_type, "task_id": act.task_id,
            "task_queue": act.queue, "status": act.status, "attempt_number": act.attempt_number, "lease_owner": act.owner,
            "lease_expires_at": iso(act.lease_expires_at),
            "lease_expired": act.status == "running" and (act.lease_expires_at or 0.0) <= now,
            "available_at": iso(act.available_at), "deadlines": {k: iso(v) for k, v in decide_activity.deadlines(act).items()},
            "last_heartbeat_at": iso(beat.get("last_heartbeat_at")), "last_heartbeat_progress": beat.get("last_heartbeat_progress"),
        })
    failures = [e for e in state.events if e["event_type"] in ("ActivityFailed", "ActivityTimedOut", "ActivityRetryScheduled",
                                                               "WorkflowFailed", "WorkflowTimedOut")][-10:]
    recent = [{"sequence": e["sequence"], "event_type": e["event_type"], "recorded_at": e["recorded_at"],
               "message": e["payload"].get("message"), "exception_class": e["payload"].get("exception_class")} for e in failures]
    findings = _findings(state, now)
    if not state.is_open:
        status = "closed"
    elif any(f["code"] in ("workflow_task_lease_expired", "activity_lease_expired", "workflow_task_missing") for f in findings):
        status = "repair_needed"
    elif wt is not None or any(a.status != "closed" for a in state.activities.values()):
        status = "healthy"
    else:
        status = "waiting"
    last = state.events[-1] if state.events else None
    return {
        "generated_at": iso(now),
        "workflow_id": state.meta.get("workflow_id"),
        "run_id": state.run_id,
        "namespace": state.namespace,
        "diagnostic_status": status,
        "execution": {
            "workflow_type": state.meta.get("workflow_type"), "status": state.status, "closed_reason": state.closed_reason,
            "run_number": state.meta.get("run_number"), "wait_kind": state.wait_kind(), "history_events": len(state.events),
            "last_event_type": last["event_type"] if last else None, "last_event_at": last["recorded_at"] if last else None,
            **({"last_event_payload": last["payload"]} if include_payload and last else {}),
            "open_timers": len(state.timers), "open_children": len(state.children), "pending_updates": list(state.pending_updates),
            "workflow_task_failures": state.wt_failures, "cancellation_requested": state.coop is not None,
            "archived_at": iso(state.archived["at"]) if state.archived else None,
        },
        "pending_workflow_tasks": tasks,
        "pending_activities": pending_activities,
        "task_queue": state.task_queue,
        "recent_failures": recent,
        "compatibility": state.meta.get("compatibility"),
        "findings": findings,
    }


def _findings(state: RunState, now: float) -> list[dict[str, str]]:
    out = []
    need = repair_need(state, now) if state.is_open else None
    if need is not None:
        out.append({"code": need[0], "severity": "warning",
                    "message": f"The run lacks progress ({need[0].replace('_', ' ')}); POST …/repair re-offers it."})
    if state.wt_failures >= 3:
        out.append({"code": "workflow_task_failing", "severity": "error",
                    "message": f"The workflow task failed {state.wt_failures} times in a row; see the worker's failure."})
    if state.status == "failed":
        out.append({"code": "run_failed", "severity": "info", "message": "The run failed; POST …/runs/{run}/redrive can continue it."})
    return out
