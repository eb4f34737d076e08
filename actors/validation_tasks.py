"""Update validation tasks (extended spec §4): ephemeral, never journaled, held by the node that
hosts the task queue — like query tasks. A worker replays the run and runs only the update's
validator; its verdict decides whether the update is recorded at all. Plain functions over a small
record, so the lease rules are tested without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from persistence.ids import iso

LEASE_SECONDS = 30.0
NEED = "task_kind:update_validation"  # what a poll must have asked for (task_kinds) to be given one


@dataclass
class ValidationTask:
    id: str
    namespace: str
    queue: str
    workflow_type: str
    body: dict[str, Any]  # the task object without its lease fields
    deadline: float
    status: str = "pending"  # pending | leased | approved | rejected | timed_out
    attempt: int = 0
    owner: str | None = None
    lease_expires: float | None = None
    claimed: bool = False  # some worker took it at least once (decides the timeout's reason)
    outcome: dict[str, Any] | None = field(default=None, repr=False)


class ValidationTaskError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def claim(task: ValidationTask, owner: str, now: float) -> dict[str, Any]:
    task.status = "leased"
    task.attempt += 1
    task.owner = owner
    task.claimed = True
    task.lease_expires = min(now + LEASE_SECONDS, task.deadline)
    return {
        **task.body, "task_kind": "update_validation", "task_id": task.id, "update_validation_task_id": task.id,
        "update_validation_attempt": task.attempt, "namespace": task.namespace, "task_queue": task.queue,
        "lease_owner": owner, "lease_expires_at": iso(task.lease_expires),
    }


def expire_lease(task: ValidationTask, now: float) -> bool:
    if task.status == "leased" and task.lease_expires is not None and now >= task.lease_expires and now < task.deadline:
        task.status, task.owner, task.lease_expires = "pending", None, None
        return True
    return False


def guard(task: ValidationTask | None, namespace: str, owner: str, attempt: int, now: float) -> None:
    """The fencing refusals the SDK treats as final and silent (extended spec §4.2)."""
    if task is None or task.namespace != namespace:
        raise ValidationTaskError(404, "update_validation_task_not_found", "Update validation task not found; its caller may have gone.")
    if task.status in ("approved", "rejected"):
        raise ValidationTaskError(409, "duplicate_update_validation_completion", "This validation task was already answered.")
    if task.status != "leased":
        raise ValidationTaskError(409, "update_validation_task_not_leased", f"Validation task [{task.id}] is {task.status}, not leased.")
    if task.owner != owner:
        raise ValidationTaskError(409, "update_validator_worker_lost", f"Validation task [{task.id}] is leased to another worker.")
    if task.attempt != attempt:
        raise ValidationTaskError(409, "stale_update_validation_completion",
                                  f"Validation task [{task.id}] is on attempt {task.attempt}, not {attempt}.")
    if task.lease_expires is not None and now >= task.lease_expires:
        raise ValidationTaskError(409, "update_validation_lease_expired", f"The lease of validation task [{task.id}] has expired.")


def approve(task: ValidationTask) -> None:
    task.status = "approved"
    task.outcome = {"approved": True}


def reject(task: ValidationTask, failure: dict[str, Any]) -> str:
    reason = failure.get("reason") if failure.get("reason") in ("update_validator_rejected", "update_validation_worker_failed") \
        else "update_validator_rejected"
    task.status = "rejected"
    task.outcome = {"approved": False, "reason": reason, "message": failure.get("message") or "The update validator rejected it.",
                    "validation_errors": failure.get("validation_errors") or {}}
    return str(reason)
