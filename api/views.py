"""The wire bodies and status codes of the workflow control plane, rendered from the domain
results the runtime returns (``runtime.workflows``). The runtime decides what happened; this
module decides how the protocol says it."""

from __future__ import annotations

from typing import Any

from actors.messages import RunView
from persistence import avro
from persistence.ids import iso
from persistence.journal import RunRow
from persistence.vocabulary import BUCKET_OF, TERMINAL_STATUSES
from runtime.errors import ProtocolError
from runtime.workflows import CommandResult, Described, InstanceRuns, RunPage, Started, UpdateResult

Answer = tuple[int, dict[str, Any]]


# --- start and reads -----------------------------------------------------------------


def _start_body(view: RunView) -> dict[str, Any]:
    return {
        "workflow_id": view.workflow_id,
        "run_id": view.run_id,
        "workflow_type": view.workflow_type,
        "namespace": view.namespace,
        "status": view.status,
        "business_key": view.business_key,
        "payload_codec": "avro",
    }


def started(result: Started) -> Answer:
    body = _start_body(result.run)
    if result.outcome == "started_new":
        return 201, {**body, "outcome": "started_new"}
    if result.outcome == "returned_existing_active":
        return 200, {**body, "outcome": "returned_existing_active"}
    return 409, {
        **body,
        "outcome": "rejected_duplicate",
        "reason": "duplicate_not_allowed",
        "rejection_reason": "instance_already_started",
        "message": f"Workflow [{result.run.workflow_id}] has already been started; workflow ids are never reused.",
    }


def described(result: Described) -> dict[str, Any]:
    view, current = result.run, result.current
    is_current = view.run_id == current.run_id
    open_ = view.is_open
    return {
        "workflow_id": view.workflow_id,
        "run_id": view.run_id,
        "namespace": view.namespace,
        "workflow_type": view.workflow_type,
        "business_key": view.business_key,
        "status": view.status,
        "status_bucket": BUCKET_OF[view.status],
        "is_terminal": view.status in TERMINAL_STATUSES,
        "closed_reason": view.closed_reason,
        "task_queue": view.task_queue,
        "run_number": view.run_number,
        "run_count": current.run_number,
        "is_current_run": is_current,
        "compatibility": view.meta.get("compatibility"),
        "payload_codec": "avro",
        "execution_timeout_seconds": view.execution_timeout,
        "run_timeout_seconds": view.run_timeout,
        "execution_deadline_at": iso(view.execution_deadline),
        "run_deadline_at": iso(view.run_deadline),
        "input": avro.decode_envelope(view.arguments),
        "output": avro.decode_envelope(view.output),
        "input_envelope": view.arguments,
        "output_envelope": view.output,
        "started_at": iso(view.started_at),
        "closed_at": iso(view.closed_at),
        "last_progress_at": iso(view.last_progress_at),
        "wait_kind": view.wait_kind,
        "wait_reason": None,
        "memo": view.memo,
        "search_attributes": view.search_attributes,
        "actions": {
            "can_signal": open_ and is_current,
            "can_query": open_,
            "can_update": open_ and is_current,
            "can_cancel": open_ and is_current,
            "can_terminate": open_ and is_current,
            "can_repair": open_ and is_current,
            "can_archive": not open_ and is_current and view.archived_at is None,
            "can_redrive": is_current and view.status == "failed" and view.closed_reason == "failed",
        },
        "archived_at": iso(view.archived_at),
        "redriven_to_run_id": view.redriven_to,
    }


def run_summary(row: RunRow, *, is_current: bool | None = None) -> dict[str, Any]:
    out = {
        "workflow_id": row.workflow_id,
        "run_id": row.run_id,
        "run_number": row.run_number,
        "workflow_type": row.workflow_type,
        "namespace": row.namespace,
        "business_key": row.business_key,
        "status": row.status,
        "status_bucket": BUCKET_OF.get(row.status, "running"),
        "is_terminal": row.status in TERMINAL_STATUSES,
        "closed_reason": row.closed_reason,
        "task_queue": row.task_queue,
        "payload_codec": "avro",
        "started_at": iso(row.started_at),
        "closed_at": iso(row.closed_at),
        "memo": row.memo,
        "search_attributes": row.search_attributes,
    }
    if is_current is not None:
        out["is_current_run"] = is_current
    return out


def instance_runs(result: InstanceRuns) -> dict[str, Any]:
    runs = [run_summary(row, is_current=row.run_id == result.current_run_id) for row in result.runs]
    return {"workflow_id": result.workflow_id, "run_count": len(runs), "runs": runs}


def run_page(result: RunPage) -> dict[str, Any]:
    items = [run_summary(row) for row in result.runs]
    return {"workflows": items, "workflow_count": len(items), "next_page_token": result.next_page_token}


# --- commands ------------------------------------------------------------------------


def _command_body(result: CommandResult) -> dict[str, Any]:
    target, run_id = result.target, result.requested_run_id
    return {
        "workflow_id": target.workflow_id,
        "run_id": target.run_id,
        "requested_run_id": run_id,
        "resolved_run_id": target.run_id,
        "command_id": result.answer.get("command_id", ""),
        "target_scope": "run" if run_id else "instance",
        "workflow_type": target.workflow_type,
        "command_status": "accepted",
        "command_source": "control_plane",
        "reason": None,
        "rejection_reason": None,
        "validation_errors": {},
    }


def _rejected(body: dict[str, Any], code: str) -> dict[str, Any]:
    return {
        **body,
        "outcome": "rejected_not_active",
        "command_status": "rejected",
        "reason": code,
        "rejection_reason": code,
        "message": "The workflow run is no longer active.",
    }


def _history_full(body: dict[str, Any], limit: int) -> ProtocolError:
    return ProtocolError(
        422, "history_limit_exceeded",
        f"The run's history has reached its limit of {limit} events; it accepts no more signals or updates "
        "until it continues as new.",
        limit=limit, workflow_id=body["workflow_id"], run_id=body["run_id"],
    )


def signalled(result: CommandResult, name: str, *, history_limit: int, pending_signal_limit: int) -> Answer:
    body = _command_body(result)
    body["signal_name"] = name
    rejected = result.answer.get("rejected")
    if rejected == "history_limit_exceeded":
        raise _history_full(body, history_limit)
    if rejected == "pending_signal_limit_exceeded":
        raise ProtocolError(
            422, "pending_signal_limit_exceeded",
            f"The run already holds {pending_signal_limit} signals its workflow has not processed yet; retry once it catches up.",
            limit=pending_signal_limit, workflow_id=body["workflow_id"], run_id=body["run_id"],
        )
    if rejected == "unknown_signal":
        return 404, _unknown(body, "signal", name)
    if rejected is not None:
        return 409, _rejected(body, "run_not_active")
    return 202, {**body, "outcome": "signal_received", "command_sequence": result.answer["sequence"]}


def message_appended(result: CommandResult, stream: str, message_id: str, *, history_limit: int,
                     pending_signal_limit: int) -> Answer:
    """Extended spec §7.1: 202 with the message's position, 200 for a repeated message id."""
    answer = result.answer
    body = {"workflow_id": result.target.workflow_id, "run_id": result.target.run_id, "stream_name": stream,
            "message_id": message_id}
    rejected = answer.get("rejected")
    if rejected == "history_limit_exceeded":
        raise _history_full(body, history_limit)
    if rejected == "pending_signal_limit_exceeded":
        raise ProtocolError(422, "pending_signal_limit_exceeded",
                            f"The run already holds {pending_signal_limit} messages and signals its workflow has not processed yet; "
                            "retry once it catches up.", limit=pending_signal_limit, **body)
    if rejected is not None:
        return 409, {**body, "outcome": "rejected_not_active", "reason": "run_not_active",
                     "message": "The workflow run is no longer active."}
    duplicate = bool(answer["duplicate"])
    return (200 if duplicate else 202), {**body, "position": answer["position"], "duplicate": duplicate,
                                         "outcome": "message_appended"}


def _unknown(body: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """No worker of the run's queue declares this name for its workflow type (control-plane §4.6)."""
    return {
        **body, "outcome": f"rejected_unknown_{kind}", "command_status": "rejected", "reason": f"unknown_{kind}",
        "rejection_reason": f"unknown_{kind}",
        "message": f"Workflow type [{body.get('workflow_type')}] declares no {kind} named [{name}] in the command contracts "
                   f"its workers registered; check the {kind} name.",
    }


def updated(result: UpdateResult, name: str, wait_for: str, wait_timeout: float, *, history_limit: int) -> Answer:
    body = _command_body(result)
    body.update(update_name=name, wait_for=wait_for, wait_timeout_seconds=int(wait_timeout) if wait_for == "completed" else None)
    rejected = result.answer.get("rejected")
    if rejected == "history_limit_exceeded":
        raise _history_full(body, history_limit)
    if rejected == "unknown_update":
        return 404, {**_unknown(body, "update", name), "update_status": "rejected", "update_id": None}
    if rejected is not None:
        return 409, {**_rejected(body, "run_not_active"), "update_status": "rejected", "update_id": None}
    body["update_id"] = result.answer["update_id"]
    body["command_sequence"] = result.answer["sequence"]
    up = result.record or {"status": "accepted"}
    body.update(
        wait_timed_out=result.timed_out,
        workflow_sequence=None,
        accepted_at=iso(up.get("accepted_at")),
        applied_at=iso(up.get("applied_at")),
        rejected_at=None,
        closed_at=iso(up.get("closed_at")),
        result=None,
        result_envelope=None,
        failure_id=None,
        failure_message=None,
    )
    if up["status"] == "completed" and wait_for == "completed":
        envelope = {"codec": "avro", "blob": up["result"]} if isinstance(up["result"], str) else up["result"]
        return 200, {
            **body, "outcome": "update_completed", "update_status": "completed",
            "result": avro.decode_envelope(envelope), "result_envelope": envelope,
        }
    if up["status"] == "failed" and wait_for == "completed":
        failure = up.get("failure") or {}
        if failure.get("reason") == "run_closed":
            return 409, {
                **body, "outcome": "rejected_run_closed", "update_status": "rejected", "command_status": "rejected",
                "reason": "run_closed", "rejection_reason": "run_closed", "rejected_at": iso(up.get("closed_at")),
                "message": failure.get("message"),
            }
        return 422, {
            **body, "outcome": "update_failed", "update_status": "failed", "reason": "update_failed",
            "failure_id": failure.get("failure_id"), "failure_message": failure.get("message"),
            "message": failure.get("message") or "The update handler failed.",
        }
    return 202, {**body, "outcome": None, "update_status": "accepted"}


def cancellation_requested(result: CommandResult) -> Answer:
    """Extended spec §5.1: the run's one request, the first or (``duplicate``) the standing one."""
    body = _command_body(result)
    if "rejected" in result.answer:
        return 409, _rejected(body, "run_not_active")
    return 200, {**body, "accepted": True, "duplicate": result.answer["duplicate"], "outcome": "cancellation_requested",
                 "cancellation_request": result.answer["cancellation_request"]}


def closed(result: CommandResult, kind: str, reason: str | None) -> Answer:
    body = _command_body(result)
    if "rejected" in result.answer:
        return 409, _rejected(body, "run_not_active")
    body["reason"] = reason
    return 200, {**body, "outcome": "cancelled" if kind == "cancel" else "terminated", "command_sequence": result.answer["sequence"]}


def repaired(result: CommandResult) -> Answer:
    """Extended spec §9.1: dispatched (a RepairRequested event) or not needed (nothing written)."""
    body = _command_body(result)
    if "rejected" in result.answer:
        return 409, _rejected(body, "run_not_active")
    body["command_id"] = result.answer.get("command_id")
    return 200, {**body, "outcome": result.answer["outcome"], "command_sequence": result.answer.get("sequence")}


def archived(result: CommandResult) -> Answer:
    """Extended spec §9.3: archived, or already archived (nothing written); an open run is refused."""
    body = _command_body(result)
    if "rejected" in result.answer:
        return 409, {**body, "outcome": "rejected_run_not_closed", "command_status": "rejected", "reason": "run_not_closed",
                     "rejection_reason": "run_not_closed", "message": "Only a closed run can be archived; cancel or terminate it first."}
    body["command_id"] = result.answer.get("command_id")
    return 200, {**body, "outcome": result.answer["outcome"], "archived_at": iso(result.answer.get("archived_at")),
                 "archive_reason": result.answer.get("reason")}


def redriven(result: CommandResult) -> Answer:
    """Extended spec §9.2: the new run continuing the failed one (the same receipt for a repeated request id)."""
    body = _command_body(result)
    reason = result.answer.get("rejected")
    if reason == "selected_run_not_current":
        return 409, {**body, "outcome": "rejected_not_current", "command_status": "rejected", "reason": reason,
                     "rejection_reason": reason,
                     "message": "Only the instance's current run can be redriven (this one was redriven or continued already)."}
    if reason is not None:
        return 409, {**body, "outcome": "rejected_not_redrivable", "command_status": "rejected", "reason": "run_not_redrivable",
                     "rejection_reason": "run_not_redrivable", "message": result.answer.get("message") or "The run cannot be redriven."}
    return 200, {**body, "outcome": "redriven", "redriven_from_run_id": result.answer["redriven_from_run_id"],
                 "duplicate": result.answer.get("duplicate", False)}
