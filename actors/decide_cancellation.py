"""Decisions for cooperative cancellation (extended spec §5): the request, its delivery at
the authored call the workflow is blocked on, the activity attempts stopped for it, and the
run closing as cancelled.

Unlike ``cancel`` (terminal, at once), a cooperative request is recorded and handed to the
workflow code, which may clean up under a shield until the cleanup deadline. Everything is
history: the request event, the delivery marker that names the interrupted call, and the
cancellation of what that call had open, so replay throws ``WorkflowCancelled`` at the same
place every time. Pure functions on plain data; the actor commits what they return.
"""

from __future__ import annotations

from typing import Any

from persistence.ids import iso
from persistence.vocabulary import encode_offset

from .closing import close_run, timer_payload
from .emit import Emitter, par_fields
from .errors import CommandError
from .errors import invalid as _invalid
from .run_state import Activity, LocalStep, RunState

CONTEXT_SCHEMA = "durable-workflow.cancellation-context/v1"
CALL_KINDS = ("activity", "local_activity", "timer", "condition", "signal", "child", "parallel", "selection_handle",
              "service_operation")
DEFAULT_CLEANUP_SECONDS = 300
MAX_SPAN = 1000
MAX_SEQUENCE = 2**63 - 1
FIRST_PAGE = encode_offset(0)  # the SDK reloads the whole history from the run's first event


def request(state: RunState, request_id: str, reason: str | None, cleanup_seconds: int | None, now: float,
            parent: dict[str, Any] | None = None) -> Emitter:
    """Record the run's one request; the fold makes a workflow task ready for it. ``parent``: the
    request comes from the parent run (a delivery at this child's boundary, or the parent's
    close): its context links to the parent's request and shares its deadline (§5.7)."""
    deadline = now + (cleanup_seconds or DEFAULT_CLEANUP_SECONDS)
    workflow_id = state.meta["workflow_id"]
    own = {"request_id": request_id, "workflow_instance_id": workflow_id, "workflow_run_id": state.run_id}
    context = {
        "schema": CONTEXT_SCHEMA,
        "request_id": request_id,
        "root_request_id": request_id,
        "root_workflow_instance_id": workflow_id,
        "root_workflow_run_id": state.run_id,
        "parent_request_id": None,
        "reason": reason,
        "requester": {"type": "control_plane"},
        "source": "control_plane",
        "requested_at": iso(now),
        "cleanup_deadline_at": iso(deadline),
        "lineage": [own],
    }
    if parent is not None:
        deadline = min(deadline, parent.get("deadline") or deadline)
        context.update({
            "parent_request_id": parent.get("request_id"),
            "root_request_id": parent.get("root_request_id") or request_id,
            "root_workflow_instance_id": parent.get("root_workflow_instance_id") or workflow_id,
            "root_workflow_run_id": parent.get("root_workflow_run_id") or state.run_id,
            "requester": {"type": "parent_workflow", "id": parent["run_id"], "label": parent["workflow_id"]},
            "source": "parent_workflow",
            "requested_at": parent.get("requested_at") or iso(now),
            "cleanup_deadline_at": iso(deadline),
            "lineage": [*(parent.get("lineage") or []), own],
        })
    payload = {
        "workflow_command_id": request_id,
        "workflow_instance_id": workflow_id,
        "workflow_run_id": state.run_id,
        "cleanup_deadline_at": iso(deadline),
        "reason": reason,
        "cancellation": context,
    }
    em = Emitter(state, now)
    em.event("CooperativeCancellationRequested", payload, extra={"deadline": deadline}, command_id=request_id)
    return em


def child_request(state: RunState, child_run: str, child_workflow: str, request_id: str | None) -> dict[str, Any]:
    """What a cooperative request to one child carries about this (parent) run: its own request
    when there is one (a delivery), or none (its close under ``request_cancellation``)."""
    coop = state.coop
    context = (coop or {}).get("context") or {}
    parent_request = coop["request_id"] if coop is not None else None
    return {
        "run": child_run, "workflow_id": child_workflow,
        "request_id": request_id or f"{parent_request or state.run_id}:{child_run}",
        "parent": {
            "workflow_id": state.meta["workflow_id"], "run_id": state.run_id, "request_id": parent_request,
            "root_request_id": context.get("root_request_id"), "root_workflow_instance_id": context.get("root_workflow_instance_id"),
            "root_workflow_run_id": context.get("root_workflow_run_id"), "lineage": context.get("lineage") or [],
            "requested_at": context.get("requested_at"), "deadline": coop["deadline"] if coop is not None else None,
        },
        "reason": (coop or {}).get("reason") or "Parent workflow requested cancellation.",
    }


def observation(state: RunState) -> dict[str, Any] | None:
    """The ``cancellation_request`` every workflow task and heartbeat of the run carries while
    the request stands: byte-identical each time (the SDK drops a claim whose view changes)."""
    coop = state.coop
    if coop is None or not state.is_open:
        return None
    return {
        "request_id": coop["request_id"],
        "requested_at": coop["requested_at"],
        "cleanup_deadline_at": coop["cleanup_deadline_at"],
        "history_refresh_page_token": FIRST_PAGE,
    }



def _int(body: dict[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = body[key] if key in body else default  # an absent span means 1; a null one is invalid
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _invalid(key, f"The {key} field must be an integer from {low} to {high}.")
    return value


def parse_delivery(body: dict[str, Any]) -> dict[str, Any]:
    """The boundary a worker names, checked as the SDK checks the delivery event (422 otherwise)."""
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 255:
        raise _invalid("request_id", "The request_id field must be the run's cancellation request id.")
    kind = body.get("call_kind")
    if kind not in CALL_KINDS:
        raise _invalid("call_kind", f"The call_kind field must be one of {', '.join(CALL_KINDS)}.")
    sequence = _int(body, "sequence", 1, MAX_SEQUENCE)
    span = _int(body, "sequence_span", 1, MAX_SPAN, 1)
    if kind != "parallel" and span != 1:
        raise _invalid("sequence_span", "Only a parallel boundary spans more than one step.")
    if kind in ("selection_handle", "service_operation", "signal"):
        raise CommandError(
            422, "cancellation_boundary_unsupported",
            f"This server does not deliver cooperative cancellation at a {kind} boundary.", {"call_kind": [kind]},
        )
    if body.get("operation_sequence") is not None or body.get("operation_sequence_span") not in (None, 1):
        raise _invalid("operation_sequence", "operation_sequence is only for a selection_handle boundary.")
    return {"request_id": request_id, "sequence": sequence, "call_kind": kind, "sequence_span": span}


def _boundary_reply(state: RunState, task_id: str, d: dict[str, Any], event_id: str, duplicate: bool) -> dict[str, Any]:
    return {
        "delivered": True, "duplicate": duplicate, "reason": None, "task_id": task_id, "workflow_run_id": state.run_id,
        "request_id": d["request_id"], "sequence": d["sequence"], "call_kind": d["call_kind"],
        "sequence_span": d["sequence_span"], "operation_sequence": None, "operation_sequence_span": 1,
        "history_event_id": event_id, "claim_released": False, "history_refresh_page_token": FIRST_PAGE,
    }


def _policy(act: Activity) -> str:
    return str(act.policy.get("cancellation_policy") or "try_cancel")


def deliver(state: RunState, task_id: str, d: dict[str, Any], now: float) -> tuple[Emitter, dict[str, Any]]:
    """Deliver the request at the boundary the worker's replay reached (extended spec §5.4)."""
    coop = state.coop
    em = Emitter(state, now, workflow_task_id=task_id)
    if coop is None or coop["request_id"] != d["request_id"]:
        raise CommandError(409, "cancellation_request_mismatch", "The request_id does not name this run's cancellation request.")
    boundary = {k: d[k] for k in ("sequence", "call_kind", "sequence_span")}
    delivered = coop.get("delivered")
    if delivered is not None:
        if delivered["boundary"] != boundary:
            raise CommandError(409, "cancellation_already_delivered",
                               "This run's cancellation request was already delivered at another call.")
        return em, _boundary_reply(state, task_id, d, delivered["event_id"], True)
    first, span = d["sequence"], d["sequence_span"]
    if first > state.step_seq + 1:
        raise CommandError(409, "cancellation_boundary_mismatch",
                           f"Step {first} is beyond the run's next step {state.step_seq + 1}: the history and the worker disagree.")
    steps = range(first, first + span)
    running = [a for a in state.activities.values() if a.seq in steps]
    waiting = [a for a in running if _policy(a) == "wait_cancellation_completed" and a.status == "running"]
    children = sorted((c for c in state.children.values() if c.seq in steps), key=lambda c: c.seq)
    for child in children:  # try_cancel and wait_cancellation_completed ask the child to stop (once each)
        if child.cancel in ("try_cancel", "wait_cancellation_completed") and child.run_id not in state.child_requests:
            em.internal("coop_child", **child_request(state, child.run_id, child.workflow_id, None))
    awaited = [c for c in children if c.cancel == "wait_cancellation_completed"]
    if waiting or awaited:
        em.internal("coop_wait", task=task_id, seqs=[a.seq for a in waiting] + [c.seq for c in awaited])
        return em, {
            "delivered": False, "duplicate": False, "claim_released": True,
            "reason": "cancellation_waiting_for_activity" if waiting else "cancellation_waiting_for_child",
            "task_id": task_id, "workflow_run_id": state.run_id, "request_id": None, "sequence": None, "call_kind": None,
            "sequence_span": None, "operation_sequence": None, "operation_sequence_span": None,
        }
    payload = {"workflow_command_id": coop["request_id"], "workflow_run_id": state.run_id, **boundary,
               "cancellation": coop["context"]}
    event = em.event("CooperativeCancellationDelivered", payload, command_id=coop["request_id"])
    event_id = f"{state.run_id}-{event.sequence}"
    for act in sorted(running, key=lambda a: a.seq):
        if _policy(act) != "abandon":
            stop_activity(em, act, coop["request_id"])
    for step in sorted(state.locals.values(), key=lambda s: s.seq):
        if step.seq in steps and step.status != "closed":  # its callback, if any, was stopped through control
            cancel_local_step(state, em, step, coop["request_id"])
    for timer in sorted(state.timers.values(), key=lambda t: t.seq):
        if timer.seq in steps:
            em.event("TimerCancelled", timer_payload(timer, {"cancelled_at": em.ts(), "cancellation_request_id": coop["request_id"]}))
    advance_horizon(state, em)
    return em, _boundary_reply(state, task_id, d, event_id, False)


def stop_activity(em: Emitter, act: Activity, request_id: str, *, acknowledged: bool = False) -> str:
    """Close the step for the request; a running attempt's worker is told to stop. Returns the event id."""
    state = "stopped" if acknowledged else "requested" if act.status == "running" else "not_started"
    record = em.event("ActivityCancelled", {
        "sequence": act.seq, "activity_execution_id": act.exec_id, "activity_attempt_id": act.attempt_id(),
        "activity_type": act.activity_type, "attempt_number": act.attempt_number, "cancellation_request_id": request_id,
        "callback_state": state, "cancelled_at": em.ts(), **par_fields(act.parallel),
    }, extra={"acked": True} if acknowledged else None)
    return f"{em.state.run_id}-{record.sequence}"


def advance_horizon(state: RunState, em: Emitter, lease: float | None = None) -> None:
    """Let the live claim see what this decision recorded: its history pages now reach the
    newest event (the claim horizon, extended spec §0.2); ``lease`` renews it as well."""
    wt = state.wt
    assert wt is not None
    em.internal("wt_claim", task=wt.task_id, attempt=wt.attempt, owner=wt.owner,
                lease=wt.lease_expires_at if lease is None else lease, snap=em.next_sequence - 1)


def closes_cancelled(state: RunState, cmd: dict[str, Any]) -> bool:
    """A workflow that let a delivered request propagate fails with ``WorkflowCancelled``: the
    run closes as cancelled, not failed (extended spec §5.5)."""
    coop = state.coop
    return coop is not None and coop.get("delivered") is not None and cmd.get("exception_type") == "WorkflowCancelled"


def close_cancelled(state: RunState, em: Emitter, reason: str | None, message: str, *, effects: bool = True) -> None:
    coop = state.coop
    assert coop is not None
    close_run(state, em, "WorkflowCancelled", {
        "workflow_command_id": coop["request_id"], "workflow_instance_id": state.meta["workflow_id"],
        "workflow_run_id": state.run_id, "failure_id": f"{state.run_id}-cancelled", "failure_category": "cancelled",
        "closed_reason": "cancelled", "exception_class": "WorkflowCancelled", "message": message,
        "reason": reason, "cancellation_request_id": coop["request_id"],
    }, command_id=coop["request_id"], effects=effects)


def cleanup_expired(state: RunState, now: float) -> bool:
    coop = state.coop
    return coop is not None and state.is_open and now >= coop["deadline"]


def stopped_status(state: RunState, task_id: str, attempt_id: str, owner: Any) -> dict[str, Any] | None:
    """The status of an attempt stopped for the cooperative request (or None if it was not):
    the worker joins its callback, then acknowledges (extended spec §5.6). It stays answerable
    after the run closed, so the acknowledgement still lands."""
    info = state.stopped_attempts.get(attempt_id)
    if info is None or info["task_id"] != task_id or info["owner"] != owner or state.coop is None:
        return None
    coop = state.coop
    return {
        "task_id": task_id, "activity_attempt_id": attempt_id, "lease_owner": owner, "can_continue": False,
        "cancel_requested": True, "heartbeat_recorded": False, "reason": "activity_cancelled",
        "cancellation_acknowledgement": {
            "callback_state": "stopped" if info.get("acked") else "unknown", "request_id": coop["request_id"],
            "root_request_id": coop["request_id"], "cleanup_deadline_at": coop["cleanup_deadline_at"],
            "cancellation_history_event_id": info["event_id"],
        },
    }


def waiting_status(state: RunState, act: Activity) -> dict[str, Any] | None:
    """A running attempt the request asks to stop while the delivery waits for it."""
    coop = state.coop
    if coop is None or act.cancel_request != coop["request_id"]:
        return None
    return {
        "task_id": act.task_id, "activity_attempt_id": act.attempt_id(), "lease_owner": act.owner, "can_continue": False,
        "cancel_requested": True, "heartbeat_recorded": False, "reason": "activity_cancelled",
        "cancellation_acknowledgement": {
            "callback_state": "unknown", "request_id": coop["request_id"], "root_request_id": coop["request_id"],
            "cleanup_deadline_at": coop["cleanup_deadline_at"], "cancellation_history_event_id": coop["event_id"],
        },
    }



def cancel_local_step(state: RunState, em: Emitter, step: LocalStep, request_id: str, *, acknowledged: bool = False) -> str:
    """Close a prepared local step for the request; returns the event id. Acknowledged: its
    worker joined the stopped callback; otherwise its fate is unknown (or it never started)."""
    event_id = f"{state.run_id}-{em.next_sequence}"
    callback = "stopped" if acknowledged else "unknown" if step.status == "running" else "not_started"
    em.event("ActivityCancelled", {
        "sequence": step.seq, "activity_type": step.activity_type, "activity_execution_id": step.exec_id,
        "execution_mode": "local", "local_activity": True, "activity_attempt_id": step.attempt_id(),
        "attempt_number": step.attempt_number, "cancellation_request_id": request_id, "callback_state": callback,
        **par_fields(step.parallel),
    }, extra={"local": True, "acked": acknowledged, "receipt": {"event_id": event_id}})
    return event_id
