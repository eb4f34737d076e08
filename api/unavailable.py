"""503 answers: what is briefly unavailable (the database, a shard in transit, a run reloading).

Every such answer is retryable and says when to come back (``retry_after_seconds`` and the
``Retry-After`` header). For the worker requests the SDK can hold and resend on its own — polls,
registration, heartbeats — the body is the full ``backend_unavailable`` contract
(extended.md: operation, outcome "unknown", the echoed identity); the worker then waits and
sends the same request again without using up its retries. A request that lacks what the
contract echoes gets the generic body instead: the SDK fails fast on a partial contract.
"""

from __future__ import annotations

from typing import Any

RETRY_AFTER_SECONDS = 1
_OPERATIONS = {
    "/api/worker/workflow-tasks/poll": "poll_workflow_task",
    "/api/worker/activity-tasks/poll": "poll_activity_task",
    "/api/worker/query-tasks/poll": "poll_query_task",
    "/api/worker/register": "register_worker",
    "/api/worker/heartbeat": "heartbeat_worker",
}
_WT_PREFIX, _WT_SUFFIX = "/api/worker/workflow-tasks/", "/heartbeat"


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _contract(path: str, submitted: Any) -> dict[str, Any] | None:
    if not isinstance(submitted, dict):
        return None
    if path.startswith(_WT_PREFIX) and path.endswith(_WT_SUFFIX):
        task_id = path[len(_WT_PREFIX):-len(_WT_SUFFIX)]
        owner, attempt = submitted.get("lease_owner"), submitted.get("workflow_task_attempt")
        if not task_id or "/" in task_id or not _text(owner) or type(attempt) is not int or attempt <= 0:
            return None
        return {"operation": "heartbeat_workflow_task", "worker_id": owner, "task_queue": None, "task_id": task_id,
                "lease_owner": owner, "workflow_task_attempt": attempt}
    operation = _OPERATIONS.get(path)
    worker_id, queue = submitted.get("worker_id"), submitted.get("task_queue")
    if operation is None or not _text(worker_id) or (operation != "heartbeat_worker" and not _text(queue)):
        return None
    body: dict[str, Any] = {"operation": operation, "worker_id": worker_id, "task_queue": queue}
    if operation.startswith("poll_"):
        poll_id = submitted.get("poll_request_id")
        if not _text(poll_id):
            return None
        body.update(task=None, poll_status="backend_unavailable", poll_request_id=poll_id, retry_same_poll_request_id=True)
    return body


def body(path: str, submitted: Any, reason: str, message: str) -> dict[str, Any]:
    """The 503 body for a request to ``path`` whose JSON body was ``submitted``."""
    out: dict[str, Any] = {"message": message, "reason": reason, "retryable": True, "retry_after_seconds": RETRY_AFTER_SECONDS}
    contract = _contract(path, submitted)
    if contract is not None:
        out.update(contract, reason="backend_unavailable", outcome="unknown", cause=reason)
    return out
