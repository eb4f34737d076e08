"""Decisions for control-plane commands and cross-run notifications."""

from __future__ import annotations

from typing import Any

from persistence.ids import iso

from .closing import close_run
from .emit import Emitter, blob_of, par_fields
from .run_state import RunState


def signal(state: RunState, name: str, arguments: Any, command_id: str, now: float) -> Emitter:
    em = Emitter(state, now)
    payload: dict[str, Any] = {
        "signal_name": name,
        "payload_codec": "avro",
        "signal_id": command_id,
        "workflow_command_id": command_id,
        "workflow_instance_id": state.meta["workflow_id"],
        "workflow_run_id": state.run_id,
    }
    if arguments is not None:
        payload["arguments"] = blob_of(arguments)
    if state.cond is not None:
        payload["workflow_sequence"] = state.cond["seq"]
    em.event("SignalReceived", payload, command_id=command_id)
    return em


def update(state: RunState, name: str, arguments: Any, command_id: str, update_id: str, now: float) -> Emitter:
    """Accept an update: recorded now, applied by an update task of its own (worker-plane §8.2)."""
    em = Emitter(state, now)
    payload: dict[str, Any] = {
        "update_id": update_id,
        "update_name": name,
        "arguments": blob_of(arguments),
        "payload_codec": "avro",
        "workflow_command_id": command_id,
        "workflow_instance_id": state.meta["workflow_id"],
        "workflow_run_id": state.run_id,
        "ordering_state": "ready",
    }
    em.event("UpdateAccepted", payload, command_id=command_id)
    return em


def cancel_or_terminate(state: RunState, kind: str, reason: str | None, command_id: str, now: float) -> Emitter:
    em = Emitter(state, now)
    ids = {
        "workflow_command_id": command_id,
        "workflow_instance_id": state.meta["workflow_id"],
        "workflow_run_id": state.run_id,
    }
    requested = {**ids, "command_type": kind}
    if reason is not None:
        requested["reason"] = reason
    em.event("CancelRequested" if kind == "cancel" else "TerminateRequested", requested, command_id=command_id)
    word = "cancelled" if kind == "cancel" else "terminated"
    closed = {
        **ids,
        "failure_id": f"{state.run_id}-{word}",
        "failure_category": word,
        "closed_reason": word,
        "exception_class": "WorkflowCancelled" if kind == "cancel" else "WorkflowTerminated",
        "message": f"Workflow {word}: {reason}" if reason else f"Workflow {word}.",
    }
    if reason is not None:
        closed["reason"] = reason
    close_run(state, em, "WorkflowCancelled" if kind == "cancel" else "WorkflowTerminated", closed, command_id=command_id)
    return em


def child_closed(state: RunState, seq: int, child: dict[str, Any], now: float) -> Emitter:
    """Resolve the parent's child step from the child's terminal event."""
    em = Emitter(state, now)
    link = state.children.get(seq)
    if link is None or not state.is_open:
        return em
    event, p = child["event"], child["payload"]
    base = {
        "sequence": seq,
        "child_workflow_instance_id": link.workflow_id,
        "child_workflow_run_id": child["run_id"],
        "child_workflow_type": link.workflow_type,
        "child_run_number": child.get("run_number", link.run_number),
        "closed_at": iso(child.get("closed_at")),
        **par_fields(link.parallel),
    }
    if event == "WorkflowCompleted":
        em.event(
            "ChildRunCompleted",
            {**base, "result": p.get("output"), "output": p.get("output"), "payload_codec": "avro", "child_status": "completed", "closed_reason": "completed"},
        )
        return em
    if event in ("WorkflowFailed", "WorkflowTimedOut"):
        exception = p.get("exception") or {"class": p.get("exception_class"), "type": p.get("exception_type"), "message": p.get("message")}
        em.event(
            "ChildRunFailed",
            {
                **base,
                "message": p.get("message"),
                "exception_class": p.get("exception_class"),
                "exception_type": p.get("exception_type"),
                "exception": exception,
                "code": (p.get("exception") or {}).get("code", 0),
                "failure_id": f"{state.run_id}-child{seq}",
                "failure_category": "child_workflow",
                "child_status": "failed",
                "closed_reason": "timed_out" if event == "WorkflowTimedOut" else "failed",
            },
        )
        return em
    word = "cancelled" if event == "WorkflowCancelled" else "terminated"
    em.event(
        "ChildRunCancelled" if word == "cancelled" else "ChildRunTerminated",
        {
            **base,
            "message": p.get("message"),
            "exception_class": p.get("exception_class"),
            "exception_type": p.get("exception_class"),
            "failure_id": f"{state.run_id}-child{seq}",
            "failure_category": word,
            "child_status": word,
            "closed_reason": word,
        },
    )
    return em


def child_continued(state: RunState, seq: int, new_run_id: str, run_number: int, now: float) -> Emitter:
    em = Emitter(state, now)
    link = state.children.get(seq)
    if link is None or not state.is_open or link.run_id == new_run_id:
        return em
    em.event(
        "ChildRunStarted",
        {
            "sequence": seq,
            "child_workflow_type": link.workflow_type,
            "child_workflow_instance_id": link.workflow_id,
            "child_workflow_run_id": new_run_id,
            "child_workflow_class": link.workflow_type,
            "child_run_number": run_number,
            "parent_close_policy": link.policy,
            **par_fields(link.parallel),
        },
    )
    return em
