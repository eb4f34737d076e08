"""Decisions for activity tasks: claim, attempt guard, outcomes, retries and timeouts."""

from __future__ import annotations

from typing import Any

from persistence.ids import iso
from persistence.vocabulary import STOPPED_STATUSES

from .emit import Emitter, blob_of, par_fields
from .errors import GuardError
from .run_state import Activity, RunState

ACTIVITY_LEASE = 300.0


def claim(
    state: RunState, seq: int, owner: str, now: float, lease_seconds: float = ACTIVITY_LEASE, poll_id: str | None = None
) -> Emitter | None:
    act = state.activities.get(seq)
    if act is None or act.status != "pending" or act.available_at > now or not state.is_open:
        return None
    em = Emitter(state, now)
    n = act.attempt_number + 1
    lease = now + max(lease_seconds, float(act.policy.get("start_to_close_timeout") or 0))
    em.event(
        "ActivityStarted",
        {
            "sequence": seq,
            "activity_type": act.activity_type,
            "activity_execution_id": act.exec_id,
            "activity_attempt_id": act.attempt_id(n),
            "attempt_number": n,
            "lease_expires_at": iso(lease),
            **par_fields(act.parallel),
        },
        extra={"owner": owner, "lease": lease, **({"poll": poll_id} if poll_id else {})},
    )
    return em


def task_payload(state: RunState, act: Activity) -> dict[str, Any]:
    """The activity task object (worker-plane 6.2), null-valued keys dropped."""
    policy = {"snapshot_version": 1, **{k: v for k, v in act.policy.items() if v is not None and k != "cancellation_policy"}}
    task = {
        "task_id": act.task_id,
        "workflow_id": state.meta["workflow_id"],
        "run_id": state.run_id,
        "namespace": state.namespace,
        "activity_execution_id": act.exec_id,
        "activity_attempt_id": act.attempt_id(),
        "attempt_number": act.attempt_number,
        "activity_type": act.activity_type,
        "payload_codec": "avro",
        "arguments": act.arguments,
        "retry_policy": policy,
        "task_queue": act.queue,
        "lease_owner": act.owner,
        "lease_expires_at": iso(act.lease_expires_at),
        "deadlines": {k: iso(v) for k, v in deadlines(act).items()},
        "observability_context": state.meta.get("trace"),  # the carrier that started the run (extended §15.1)
    }
    if not task["deadlines"]:
        del task["deadlines"]
    return {k: v for k, v in task.items() if v is not None}


def deadlines(act: Activity) -> dict[str, float]:
    p = act.policy
    out: dict[str, float] = {}
    if p.get("schedule_to_close_timeout"):
        out["schedule_to_close"] = act.scheduled_at + p["schedule_to_close_timeout"]
    if act.status == "pending" and p.get("schedule_to_start_timeout"):
        out["schedule_to_start"] = act.ready_since + p["schedule_to_start_timeout"]
    if act.status == "running":
        if p.get("start_to_close_timeout"):
            out["start_to_close"] = (act.claimed_at or 0) + p["start_to_close_timeout"]
        if p.get("heartbeat_timeout"):
            out["heartbeat"] = (act.heartbeat_base or 0) + p["heartbeat_timeout"]
    return out


def parse_attempt(attempt_id: Any) -> tuple[str, int] | None:
    if not isinstance(attempt_id, str) or "." not in attempt_id:
        return None
    exec_id, _, n = attempt_id.rpartition(".")
    try:
        return exec_id, int(n)
    except ValueError:
        return None


def guard(state: RunState, task_id: str, attempt_id: Any, owner: Any, verb: str) -> Activity | None:
    """Attempt guard (worker-plane 6.6); returns the live activity, or None for a closed run's late outcome."""
    parsed = parse_attempt(attempt_id)
    seq = _seq_of(state, task_id)
    if seq is None or state.steps.get(seq, {}).get("kind") != "activity":
        raise GuardError(404, "task_not_found", f"Activity task [{task_id}] was not found.", task_id=task_id)
    if parsed is None or parsed[1] < 1:
        raise GuardError(404, "attempt_not_found", f"Activity attempt [{attempt_id}] was not found.")
    if parsed[0] != task_id:
        raise GuardError(409, "task_mismatch", "The activity attempt belongs to another task.")
    if attempt_id in state.stopped_attempts:
        raise GuardError(
            409, "activity_cancelled", "The activity was cancelled for the workflow's cancellation request; its outcome is ignored.",
            task_id=task_id, activity_attempt_id=attempt_id, outcome="ignored", recorded=False, next_task_id=None,
            cancel_requested=True, can_continue=False,
        )
    act = state.activities.get(seq)
    base = {"task_id": task_id, "activity_attempt_id": attempt_id, "outcome": verb, "recorded": False, "next_task_id": None}
    if state.status in STOPPED_STATUSES:
        raise GuardError(
            409,
            f"run_{state.status}",
            f"Workflow run was {state.status}; the activity outcome is ignored.",
            **{**base, "outcome": "ignored"},
            cancel_requested=True,
            can_continue=False,
            run_status=state.status,
            activity_status="cancelled",
            attempt_status="cancelled",
        )
    if act is None:
        if state.late_outcomes.get(seq) == parsed[1]:
            return None  # the attempt was running when the run closed: accept once, no history
        if seq > state.step_seq:
            raise GuardError(404, "task_not_found", f"Activity task [{task_id}] was not found.", task_id=task_id)
        raise GuardError(409, "stale_attempt", "This activity attempt is no longer current.", **base)
    if parsed[1] > act.attempt_number:
        raise GuardError(404, "attempt_not_found", f"Activity attempt [{attempt_id}] was not found.")
    if owner != act.owner and parsed[1] == act.attempt_number and not act.attempt_closed:
        raise GuardError(409, "lease_owner_mismatch", "The activity attempt is leased to another worker.", lease_owner=act.owner)
    if parsed[1] != act.attempt_number or act.attempt_closed or act.status != "running":
        raise GuardError(409, "stale_attempt", "This activity attempt is no longer current.", **base)
    return act


IDENTITY_REFUSALS = ("task_not_found", "attempt_not_found", "task_mismatch", "lease_owner_mismatch")
CANCELLED = ("run_cancelled", "run_terminated", "activity_cancelled")


def may_continue(state: RunState, task_id: str, attempt_id: Any, owner: Any, verb: str) -> tuple[Activity | None, str | None]:
    """The live attempt its worker may go on with, or why it must stop (a stale attempt, a
    closed or cancelled run, a cooperative request for this attempt): what a heartbeat or a
    lease renewal tells the worker. Identity refusals (unknown task or attempt, another
    owner) raise: they are not that worker's to observe."""
    try:
        act = guard(state, task_id, attempt_id, owner, verb)
    except GuardError as exc:
        if exc.reason in IDENTITY_REFUSALS:
            raise
        return None, exc.reason
    if act is None:
        return None, "run_closed"
    if act.cancel_request is not None and state.coop is not None and act.cancel_request == state.coop["request_id"]:
        return None, "activity_cancelled"
    return act, None


def _seq_of(state: RunState, task_id: str) -> int | None:
    prefix = f"{state.run_id}-a"
    if not isinstance(task_id, str) or not task_id.startswith(prefix):
        return None
    try:
        return int(task_id[len(prefix) :])
    except ValueError:
        return None


def complete(state: RunState, act: Activity, result: Any, now: float) -> Emitter:
    em = Emitter(state, now)
    em.event(
        "ActivityCompleted",
        {
            "sequence": act.seq,
            "activity_type": act.activity_type,
            "result": blob_of(result),
            "payload_codec": "avro",
            "activity_execution_id": act.exec_id,
            "activity_attempt_id": act.attempt_id(),
            "attempt_number": act.attempt_number,
            **par_fields(act.parallel),
        },
    )
    return em


def fail(state: RunState, act: Activity, failure: dict[str, Any], now: float) -> Emitter:
    em = Emitter(state, now)
    ftype = failure.get("type")
    fclass = failure.get("class")
    policy = act.policy
    non_retryable = bool(failure.get("non_retryable")) or any(
        t in (policy.get("non_retryable_error_types") or []) for t in (ftype, fclass) if t
    )
    exception = {
        "type": ftype,
        "class": fclass or "RuntimeError",
        "message": failure.get("message"),
        "code": failure.get("code") or 0,
        "non_retryable": non_retryable,
    }
    if failure.get("details") is not None:
        exception["details"] = failure["details"]
        exception["details_payload_codec"] = "avro"
    info = {
        "exception_type": ftype,
        "exception_class": fclass or "RuntimeError",
        "message": failure.get("message"),
        "code": failure.get("code") or 0,
        "exception": exception,
    }
    if not non_retryable and act.attempt_number < policy.get("max_attempts", 1):
        _retry(em, act, info, now)
    else:
        em.event(
            "ActivityFailed",
            {
                "sequence": act.seq,
                "activity_type": act.activity_type,
                **info,
                "non_retryable": non_retryable,
                "failure_id": f"{act.attempt_id()}-f",
                "failure_category": "activity",
                "activity_execution_id": act.exec_id,
                "activity_attempt_id": act.attempt_id(),
                "attempt_number": act.attempt_number,
                **par_fields(act.parallel),
            },
        )
    return em


def _retry(em: Emitter, act: Activity, info: dict[str, Any], now: float, k: int | None = None, **extra: Any) -> None:
    backoff = act.policy.get("backoff_seconds") or []
    k = act.attempt_number if k is None else k
    delay = backoff[min(k - 1, len(backoff) - 1)] if backoff else 0
    available = now + delay
    em.event(
        "ActivityRetryScheduled",
        {
            "sequence": act.seq,
            "activity_execution_id": act.exec_id,
            "activity_attempt_id": act.attempt_id(),
            "activity_type": act.activity_type,
            "retry_task_id": act.task_id,
            "retry_available_at": iso(available),
            "retry_backoff_seconds": delay,
            "retry_after_attempt": k,
            "max_attempts": act.policy.get("max_attempts", 1),
            **info,
            **extra,
            **par_fields(act.parallel),
        },
        extra={"available_at": available, "attempt_number": k},
    )


def timeout(em: Emitter, act: Activity, kind: str, deadline: float) -> None:
    """Close the current attempt on a missed deadline: retry if the budget allows, else time out."""
    message = f"Activity {act.activity_type} {kind} deadline expired at {iso(deadline)}."
    info = {"exception_class": "ActivityTimeoutError", "message": message, "exception_type": "ActivityTimeout", "code": 0}
    # An attempt that timed out before any worker claimed it still spends one attempt of the budget.
    k = act.attempt_number + 1 if act.status == "pending" else act.attempt_number
    if kind != "schedule_to_close" and k < act.policy.get("max_attempts", 1):
        _retry(em, act, info, em.now, k, retry_reason="timeout", timeout_kind=kind)
        return
    em.event(
        "ActivityTimedOut",
        {
            "sequence": act.seq,
            "activity_type": act.activity_type,
            **info,
            "exception": {"class": "ActivityTimeoutError", "type": "ActivityTimeout", "message": message},
            "failure_id": f"{act.attempt_id()}-timeout",
            "failure_category": "timeout",
            "timeout_kind": kind,
            "non_retryable": True,
            "activity_execution_id": act.exec_id,
            "activity_attempt_id": act.attempt_id(),
            "attempt_number": act.attempt_number,
            **par_fields(act.parallel),
        },
    )
