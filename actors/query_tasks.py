"""Query tasks: ephemeral, never journaled, owned by the node hosting the task queue.

A query is read-only, so nothing about it needs to survive a restart: the caller holds an
HTTP request open and gives up after its timeout anyway. These are plain functions over
a small record so the lease rules (worker-plane spec §7) are tested without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from persistence.ids import iso

LEASE_SECONDS = 60.0


@dataclass
class QueryTask:
    id: str
    namespace: str
    queue: str
    workflow_type: str
    body: dict[str, Any]  # the task object without its lease fields
    deadline: float  # when the caller stops waiting
    status: str = "pending"  # pending | leased | completed | failed | timed_out
    attempt: int = 0
    owner: str | None = None
    lease_expires: float | None = None
    outcome: dict[str, Any] | None = field(default=None, repr=False)
    admitted_at: float = 0.0  # when the caller's query was admitted (extended §11.4)
    timing: dict[str, str] = field(default_factory=dict)  # the current claim's timing strings, as the worker got them


class QueryTaskError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def claim(task: QueryTask, owner: str, now: float) -> dict[str, Any]:
    """Lease the task to ``owner``: the task object the worker receives.

    The lease never outlives the caller: past the caller's deadline an answer has no
    one to go to, and the SDK abandons its work when the lease passes.
    """
    task.status = "leased"
    task.attempt += 1
    task.owner = owner
    task.lease_expires = min(now + LEASE_SECONDS, task.deadline)
    task.timing = {
        "lease_expires_at": str(iso(task.lease_expires)),
        "query_admitted_at": str(iso(task.admitted_at or now)),
        "query_deadline_at": str(iso(task.deadline)),
    }
    return {
        **task.body,
        "query_task_id": task.id,
        "query_task_attempt": task.attempt,
        "namespace": task.namespace,
        "task_queue": task.queue,
        "lease_owner": owner,
        **task.timing,
        "server_time": iso(now),
    }


def status(task: QueryTask | None, namespace: str, owner: str, attempt: int, now: float) -> dict[str, Any]:
    """Whether the claim (owner, attempt) may go on answering (extended §11.4): it never renews
    the lease, and its timing strings are the claim's own, byte for byte."""
    if task is None or task.namespace != namespace:
        raise QueryTaskError(404, "query_task_not_found", "Query task not found; it may have timed out and been dropped.")
    reply: dict[str, Any] = {"query_task_id": task.id, "query_task_attempt": attempt, "lease_owner": owner,
                             "server_time": iso(now), **task.timing}
    mine = task.owner == owner and task.attempt == attempt
    if task.status == "leased" and mine and task.lease_expires is not None and now < task.lease_expires:
        return {**reply, "query_task_status": "leased", "can_continue": True, "reason": None}
    if task.status == "leased" and mine:
        reason, state = ("query_task_timed_out", "timed_out") if now >= task.deadline else ("lease_expired", "pending")
    elif task.status == "timed_out":
        reason, state = "query_task_timed_out", "timed_out"
    else:
        reason, state = "query_task_not_leased", task.status
    return {**reply, "query_task_status": state, "can_continue": False, "reason": reason}


def expire_lease(task: QueryTask, now: float) -> bool:
    """A leased task whose worker went quiet goes back to pending while the caller still waits."""
    if task.status == "leased" and task.lease_expires is not None and now >= task.lease_expires and now < task.deadline:
        task.status = "pending"
        task.owner = None
        task.lease_expires = None
        return True
    return False


def guard(task: QueryTask | None, namespace: str, owner: str, attempt: int, now: float) -> None:
    """The checks of §7.3, in the spec's order; raises QueryTaskError on the first that fails."""
    if task is None or task.namespace != namespace:
        raise QueryTaskError(404, "query_task_not_found", "Query task not found; it may have timed out and been dropped.")
    if task.status != "leased":
        raise QueryTaskError(
            409, "query_task_not_leased", f"Query task [{task.id}] is {task.status}, not leased; its answer is no longer awaited."
        )
    if task.owner != owner:
        raise QueryTaskError(409, "lease_owner_mismatch", f"Query task [{task.id}] is leased to another worker.")
    if task.attempt != attempt:
        raise QueryTaskError(
            409, "query_task_attempt_mismatch", f"Query task [{task.id}] is on attempt {task.attempt}, not {attempt}."
        )
    if task.lease_expires is not None and now >= task.lease_expires:
        raise QueryTaskError(409, "lease_expired", f"The lease of query task [{task.id}] has expired.")


def complete(task: QueryTask, result: Any, envelope: Any) -> None:
    task.status = "completed"
    task.outcome = {"result": result, "result_envelope": envelope}


def fail(task: QueryTask, failure: dict[str, Any]) -> str:
    """Record the worker's failure; returns the reason the caller will see."""
    reason = failure.get("reason") or "query_rejected"
    task.status = "failed"
    task.outcome = {
        "reason": reason,
        "message": failure.get("message"),
        **{k: failure[k] for k in ("type", "validation_errors") if failure.get(k) is not None},
    }
    return str(reason)
