"""Decisions for control-plane commands and cross-run notifications."""

from __future__ import annotations

from typing import Any

from persistence.ids import iso

from .closing import close_run
from .emit import Emitter, NewRun, blob_of, new_run_meta, par_fields
from .run_state import Child, RunState


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
        **link.policy_fields(),
        **par_fields(link.parallel),
    }
    if event == "WorkflowCompleted":
        em.event(
            "ChildRunCompleted",
            {**base, "result": p.get("output"), "output": p.get("output"), "payload_codec": "avro", "child_status": "completed", "closed_reason": "completed"},
        )
        return em
    if event in ("WorkflowFailed", "WorkflowTimedOut"):
        if _retries(link, p):
            _retry_child(state, em, link, child)
            return em
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


def _retries(link: Child, failure: dict[str, Any]) -> bool:
    """Extended spec §6: another attempt iff the budget allows and the failure is retryable."""
    policy = link.retry
    if not policy or link.start is None or link.attempt >= policy.get("max_attempts", 1):
        return False
    if failure.get("non_retryable") is True:
        return False
    names = set(policy.get("non_retryable_error_types") or [])
    return not names & {failure.get("exception_type"), failure.get("exception_class")}


def _retry_child(state: RunState, em: Emitter, link: Child, closed: dict[str, Any]) -> None:
    """A fresh run of the same child instance, after the backoff; the parent is not woken: it
    awaits one logical step and sees only the final outcome."""
    policy, previous = link.retry or {}, link.start or {}
    backoff = policy.get("backoff_seconds") or []
    delay = backoff[min(link.attempt - 1, len(backoff) - 1)] if backoff else 0
    count = previous.get("shard_count", state.meta.get("shard_count", 64))
    run_id = em.ids.run_ulid(previous.get("shard", 0), em.now)
    attempt = link.attempt + 1
    meta = new_run_meta(
        run_id=run_id, namespace=previous["namespace"], workflow_id=link.workflow_id, workflow_type=link.workflow_type,
        task_queue=previous.get("task_queue"), run_number=link.run_number + 1, arguments=previous.get("arguments"), now=em.now,
        execution_timeout=previous.get("execution_timeout"), run_timeout=previous.get("run_timeout"),
        execution_deadline=previous.get("execution_deadline"), business_key=previous.get("business_key"),
        memo=previous.get("memo"), search_attributes=previous.get("search_attributes"), parent=previous.get("parent"),
        shard=previous.get("shard", 0), shard_count=count,
    )
    meta.update(first_task_at=em.now + delay, retry_attempt=attempt, retry_of=closed["run_id"],
                instance_created_at=previous.get("instance_created_at", previous.get("started_at")))
    payload = {
        "sequence": link.seq, "child_call_id": f"{state.run_id}-c{link.seq}", "child_workflow_instance_id": link.workflow_id,
        "child_workflow_run_id": run_id, "child_workflow_type": link.workflow_type, "child_workflow_class": link.workflow_type,
        "child_run_number": link.run_number + 1, **link.policy_fields(), "retry_attempt": attempt,
        "retry_of_child_workflow_run_id": closed["run_id"], "retry_backoff_seconds": delay, "retry_policy": policy,
        **par_fields(link.parallel),
    }
    em.event("ChildRunStarted", payload, extra={"start": meta})
    em.new_runs.append(NewRun(run_id, meta))


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
            **link.policy_fields(),
            **par_fields(link.parallel),
        },
    )
    return em


def parent_close_done(state: RunState, child_run_id: str, outcome: str, error: str | None, now: float) -> Emitter:
    """Record, on the closed parent, how its policy went for one child (worker-plane §10.8);
    nothing when it is recorded already (a re-application after a reload answered twice)."""
    em = Emitter(state, now)
    pending = state.parent_close.get(child_run_id)
    if pending is None:
        return em
    payload = {"child_instance_id": pending["workflow_id"], "child_run_id": child_run_id, "policy": pending["policy"],
               "reason": "parent_closed", "outcome": outcome}
    if outcome == "failed":
        em.event("ParentClosePolicyFailed", {**payload, "error": error or "unknown"})
    else:
        em.event("ParentClosePolicyApplied", payload)
    return em
