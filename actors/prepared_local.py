"""Prepared local activities (extended spec §2.2–2.5): decisions on the claim-bound routes.

In prepared mode the workflow worker asks before it runs a local callable: the server admits
the attempt (recording the step and its start), renews the claim while it runs, records its
heartbeats, decides what its outcome means (done, failed, retry after a backoff) and stops it
for a cooperative cancellation. Admission is at most once per attempt, so a result in history
is never produced twice, and a callback whose outcome was lost is settled by ``recover`` as
a failed attempt. Every receipt repeats the claim's identity; the SDK checks each field.

Pure functions on plain data; ``prepared_local_handlers`` commits what they return.
"""

from __future__ import annotations

from typing import Any

from persistence.ids import iso
from persistence.vocabulary import activity_execution_id, encode_offset

from . import decide_workflow_task as dwt
from . import local_activities as la
from . import workflow_streams
from .commands import _parallel, validate_commands
from .decide_cancellation import advance_horizon, cancel_local_step
from .emit import Emitter, blob_of, par_fields
from .errors import CommandError, invalid
from .limits import Limits, check_completion, check_history
from .run_state import LocalStep, RunState

FIRST_PAGE = encode_offset(0)
POLICIES = ("try_cancel", "wait_cancellation_completed")
DEADLINES = ("schedule_to_close", "start_to_close", "heartbeat")  # the order a tie is reported in
LOST = {"message": "The local activity's callback outcome is unknown: its worker lost the claim while it ran.",
        "exception_type": "LocalActivityCallbackLost", "non_retryable": False}


def _conflict(reason: str, message: str) -> CommandError:
    return CommandError(409, reason, message)


def descriptor(raw: Any, state: RunState) -> dict[str, Any]:
    """The call as the worker authored it, checked as ``record_local_activity`` is (422 names the field)."""
    if not isinstance(raw, dict):
        raise invalid("descriptor", "The descriptor field must be an object.")
    path = "descriptor"
    if raw.get("type") != "record_local_activity":
        raise invalid(f"{path}.type", "The descriptor's type must be record_local_activity.")
    activity_type = la._name(raw.get("activity_type"), f"{path}.activity_type")
    if raw.get("execution_mode") != "local":
        raise invalid(f"{path}.execution_mode", "The descriptor's execution_mode must be \"local\".")
    la._payload(raw.get("arguments"), f"{path}.arguments")
    policy = raw.get("cancellation_policy")
    if policy is not None and policy not in POLICIES:
        raise invalid(f"{path}.cancellation_policy", f"A local cancellation_policy is one of {', '.join(POLICIES)}.")
    out: dict[str, Any] = {
        "activity_type": activity_type,
        "retry_policy": la._retry_policy(raw.get("retry_policy"), f"{path}.retry_policy"),
        "timeouts": la._timeouts(raw, path),
        "cancellation_policy": policy,
        "par": _parallel(raw, path),
        "arguments": raw["arguments"],
        "cleanup": _cleanup(raw.get("cancellation_cleanup"), state),
    }
    return out


def _cleanup(raw: Any, state: RunState) -> dict[str, Any] | None:
    """A shielded call after a delivered request runs until the request's cleanup deadline."""
    if raw is None:
        return None
    coop = state.coop
    if not isinstance(raw, dict) or coop is None or coop.get("delivered") is None:
        raise _conflict("cancellation_cleanup_mismatch", "This run has no delivered cancellation request to clean up after.")
    if raw.get("request_id") != coop["request_id"] or raw.get("delivery_history_event_id") != coop["delivered"]["event_id"]:
        raise _conflict("cancellation_cleanup_mismatch", "The cancellation_cleanup does not name this run's delivered request.")
    return {"request_id": coop["request_id"], "root_request_id": coop["request_id"],
            "delivery_history_event_id": coop["delivered"]["event_id"], "cleanup_deadline_at": coop["cleanup_deadline_at"]}


def _common(step: LocalStep) -> dict[str, Any]:
    return {"sequence": step.seq, "activity_type": step.activity_type, "activity_execution_id": step.exec_id,
            "execution_mode": "local", "local_activity": True, **par_fields(step.parallel)}


def schedule(state: RunState, em: Emitter, seq: int, d: dict[str, Any]) -> None:
    """``ActivityScheduled`` of a prepared step (at its first prepare, or as a group member)."""
    payload: dict[str, Any] = {
        "sequence": seq, "activity_type": d["activity_type"], "activity_class": d["activity_type"],
        "activity_execution_id": activity_execution_id(state.run_id, seq), "execution_mode": "local", "local_activity": True,
        **d["timeouts"], **par_fields(d["par"]),
    }
    if d["retry_policy"] is not None:
        payload["retry_policy"] = d["retry_policy"]
    if d["cancellation_policy"] is not None:  # only when authored: replay compares it (extended spec §2.5)
        payload["cancellation_policy"] = d["cancellation_policy"]
    prep = {k: d[k] for k in ("retry_policy", "timeouts", "cancellation_policy", "cleanup")}
    em.event("ActivityScheduled", payload, extra={"local": True, "prep": prep, "par": d["par"], "arguments": d["arguments"]})


def _claim(state: RunState) -> tuple[str, int, str]:
    wt = state.wt
    assert wt is not None and wt.owner is not None
    return wt.task_id, wt.attempt, wt.owner


def prepare(state: RunState, body: dict[str, Any], d: dict[str, Any], now: float, lease: float) -> tuple[Emitter, dict[str, Any]]:
    """Admit the step's next attempt (extended spec §2.3)."""
    seq, nonce = body["sequence"], body["worker_attempt_id"]
    claim = _claim(state)
    em = Emitter(state, now, workflow_task_id=claim[0])
    step = state.locals.get(seq)
    if step is not None and step.status == "running" and step.claim == claim and step.nonce == nonce:
        return em, admission_receipt(state, step, now, duplicate=True)
    _refuse_while_cancellation_pending(state, d)
    if step is None:
        if seq != state.step_seq + 1:
            raise _conflict("local_activity_sequence_mismatch",
                            f"Step {seq} is not the run's next step ({state.step_seq + 1}): the history and the worker disagree.")
        schedule(state, em, seq, d)
        first_at = now
        number = 1
    elif step.status in ("scheduled", "retry") and step.activity_type == d["activity_type"]:
        first_at = step.scheduled_at
        number = step.attempt_number + 1
    else:
        raise _conflict("local_activity_sequence_mismatch",
                        f"Step {seq} is not a local activity waiting for an attempt: the history and the worker disagree.")
    deadlines = _deadlines(d if step is None else step.descriptor, now, first_at, state)
    started = {"sequence": seq, "activity_type": d["activity_type"], "execution_mode": "local", "local_activity": True,
               "activity_execution_id": activity_execution_id(state.run_id, seq),
               "activity_attempt_id": f"{activity_execution_id(state.run_id, seq)}.{number}", "attempt_number": number,
               **par_fields(d["par"])}
    admission = {"task": claim[0], "wta": claim[1], "owner": claim[2], "nonce": nonce, "deadlines": deadlines}
    em.event("ActivityStarted", started, extra={"local": True, "admit": admission})
    advance_horizon(state, em, now + lease)
    return em, {}


def _refuse_while_cancellation_pending(state: RunState, d: dict[str, Any]) -> None:
    coop = state.coop
    if coop is not None and coop.get("delivered") is None and d.get("cleanup") is None:
        raise _conflict("cancellation_requested",
                        "The run has a cancellation request to deliver first; heartbeat the task to observe it.")


def _deadlines(d: dict[str, Any], now: float, first_at: float, state: RunState) -> dict[str, float]:
    t = d["timeouts"]
    out: dict[str, float] = {}
    if t.get("start_to_close_timeout"):
        out["start_to_close"] = now + t["start_to_close_timeout"]
    if t.get("schedule_to_close_timeout"):
        out["schedule_to_close"] = first_at + t["schedule_to_close_timeout"]
    if t.get("heartbeat_timeout"):
        out["heartbeat"] = now + t["heartbeat_timeout"]
    if d.get("cleanup") is not None and state.coop is not None:
        end = state.coop["deadline"]
        out = {k: min(v, end) for k, v in out.items()}
        out.setdefault("heartbeat", end)
    return out


def _deadline_fields(step: LocalStep) -> dict[str, Any]:
    return {f"{k}_deadline_at": iso(step.deadlines.get(k)) for k in ("start_to_close", "schedule_to_close", "heartbeat")}


def admission_receipt(state: RunState, step: LocalStep, now: float, duplicate: bool = False) -> dict[str, Any]:
    wt = state.wt
    assert wt is not None and step.claim is not None
    return {
        "prepared": True, "duplicate": duplicate, "reason": None, "workflow_task_id": step.claim[0],
        "lease_owner": step.claim[2], "workflow_task_attempt": step.claim[1], "worker_attempt_id": step.nonce,
        "activity_execution_id": step.exec_id, "activity_attempt_id": step.attempt_id(), "attempt_number": step.attempt_number,
        "server_time": iso(now), "lease_expires_at": iso(wt.lease_expires_at), "workflow_lease_expires_at": iso(wt.lease_expires_at),
        **_deadline_fields(step), "cancellation_cleanup": step.descriptor.get("cleanup"),
    }


def attempt_of(state: RunState, attempt_id: str) -> LocalStep:
    """The running attempt the claim names, admitted by this very claim (409 otherwise)."""
    exec_id, _, n = attempt_id.rpartition(".")
    step = next((s for s in state.locals.values() if s.exec_id == exec_id), None)
    if step is None or not n.isdigit():
        raise CommandError(404, "attempt_not_found", f"Local activity attempt [{attempt_id}] was not found.")
    if step.attempt_number != int(n) or step.claim != _claim(state):
        raise _conflict("stale_attempt", "This local activity attempt is no longer the claim's current one.")
    return step


def stop_reason(state: RunState, step: LocalStep, now: float) -> str | None:
    """Why the callback must stop now, or None while it may run on."""
    coop = state.coop
    if step.status != "running":
        return "attempt_closed"
    if coop is not None:
        if step.descriptor.get("cleanup") is None:
            return "cancellation_requested"
        if now >= coop["deadline"]:
            return "cancellation_deadline_expired"
    for kind in ("schedule_to_close", "start_to_close", "heartbeat"):
        if kind in step.deadlines and now >= step.deadlines[kind]:
            return f"{kind}_deadline_expired"
    return None


def control_receipt(state: RunState, step: LocalStep, now: float, reason: str | None, *, heartbeat_event: str | None = None,
                    renewed: bool = True) -> dict[str, Any]:
    wt = state.wt
    assert wt is not None and step.claim is not None
    active = reason is None
    receipt: dict[str, Any] = {
        "workflow_task_id": step.claim[0], "workflow_task_attempt": step.claim[1], "lease_owner": step.claim[2],
        "activity_execution_id": step.exec_id, "activity_attempt_id": step.attempt_id(),
        "active": active, "renewed": active and renewed, "stop_required": not active, "reason": reason,
        "heartbeat_recorded": heartbeat_event is not None and active, "heartbeat_history_event_id": heartbeat_event if active else None,
        "server_time": iso(now), **_deadline_fields(step),
        "lease_expires_at": iso(wt.lease_expires_at), "workflow_lease_expires_at": iso(wt.lease_expires_at),
        "cancellation_cleanup": step.descriptor.get("cleanup"),
    }
    coop = state.coop
    if reason in ("cancellation_requested", "cancellation_deadline_expired") and coop is not None:
        receipt.update(fenced=True, cancellation_request=coop["context"], cancellation_history_event_id=coop["event_id"],
                       history_refresh_page_token=FIRST_PAGE)
    return receipt


def heartbeat(state: RunState, em: Emitter, step: LocalStep, progress: Any, now: float) -> str:
    """Record the user's progress and move the heartbeat deadline (never past a cleanup deadline)."""
    details = progress.get("details") if isinstance(progress, dict) else None
    extra: dict[str, Any] = {"local": True}
    timeout = step.descriptor["timeouts"].get("heartbeat_timeout")
    if timeout:
        moved = now + timeout
        if step.descriptor.get("cleanup") is not None and state.coop is not None:
            moved = min(moved, state.coop["deadline"])
        extra["heartbeat"] = max(moved, step.deadlines.get("heartbeat", moved))
    record = em.event("ActivityHeartbeatRecorded", {
        "sequence": step.seq, "activity_execution_id": step.exec_id, "activity_attempt_id": step.attempt_id(),
        "attempt_number": step.attempt_number, "heartbeat_at": iso(now),
        "progress": {"details": details} if isinstance(details, dict) else {},
    }, extra=extra)
    return f"{state.run_id}-{record.sequence}"


def parse_report(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("outcome") not in ("completed", "failed"):
        raise invalid("report.outcome", "The report's outcome must be completed or failed.")
    if raw["outcome"] == "completed":
        la._payload(raw.get("result"), "report.result")
        return {"outcome": "completed", "result": raw["result"]}
    exception_type = la._name(raw.get("exception_type"), "report.exception_type")
    message = raw.get("message")
    if not isinstance(message, str):
        raise invalid("report.message", "The report's message must be a string.")
    if not isinstance(raw.get("non_retryable"), bool):
        raise invalid("report.non_retryable", "The report's non_retryable field must be true or false.")
    return {"outcome": "failed", "message": message or f"local activity failed with {exception_type}",
            "exception_type": exception_type, "non_retryable": raw["non_retryable"]}


def resolve(state: RunState, em: Emitter, step: LocalStep, report: dict[str, Any], now: float,
            lease: float | None, receipt: dict[str, Any], recovery: dict[str, Any] | None = None) -> dict[str, Any]:
    """Decide an attempt's outcome: recorded done or failed, or retried on a task of its own
    after the backoff (the claim that ran it is released). Returns the receipt fields.
    ``lease``: the calling claim's renewal (it then sees the event); None for the sweeper."""
    base = {**_common(step), "activity_attempt_id": step.attempt_id(), "attempt_number": step.attempt_number}
    if recovery is not None:
        base["local_recovery"] = recovery
    expired: list[str] = [k for k in DEADLINES if k in step.deadlines and now >= step.deadlines[k]]
    if report["outcome"] == "completed" and not expired:
        kind, payload = "ActivityCompleted", {**base, "result": blob_of(report["result"]), "payload_codec": "avro"}
    else:
        kind, payload = _failure(step, report, expired, now, base)
    event_id = f"{state.run_id}-{em.next_sequence}"
    claim = _claim(state) if state.wt is not None and state.wt.status == "leased" else None
    retry = kind == "ActivityRetryScheduled"
    created: list[str] = []
    fields = {**receipt, "event_type": kind, "event_id": event_id, "recorded_at": iso(now), "claim_released": retry,
              "created_task_ids": created}
    if retry:
        created.append(f"{state.run_id}-wt{state.wt_counter + 1}")
    else:
        fields["history_refresh_page_token"] = FIRST_PAGE
    em.event(kind, payload, extra={"local": True, "receipt": fields})
    if retry:  # the next attempt is admitted on a task of its own, after the backoff
        em.internal("wt_defer", task=claim[0] if claim else "", available_at=now + payload["retry_backoff_seconds"])
    elif claim is not None and lease is not None:
        advance_horizon(state, em, now + lease)
    return fields


def _failure(step: LocalStep, report: dict[str, Any], due: list[str], now: float,
             base: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    policy = step.descriptor.get("retry_policy") or {}
    max_attempts = policy.get("max_attempts", 1)
    backoff = policy.get("backoff_seconds") or []
    delay = backoff[step.attempt_number - 1] if step.attempt_number - 1 < len(backoff) else 0
    if due:
        kind = due[0]
        message = f"Local activity {step.activity_type} {kind} deadline expired."
        info = {"message": message, "exception_type": "ActivityTimeout", "exception_class": "ActivityTimeoutError",
                "timeout_kind": kind}
        retryable = kind != "schedule_to_close"
    else:
        info = {"message": report["message"], "exception_type": report["exception_type"],
                "exception_class": report["exception_type"]}
        retryable = not report["non_retryable"] and report["exception_type"] not in (policy.get("non_retryable_error_types") or [])
    s2c = step.deadlines.get("schedule_to_close")
    if retryable and step.attempt_number < max_attempts and (s2c is None or now + delay < s2c):
        return "ActivityRetryScheduled", {
            **base, **info, "retry_after_attempt": step.attempt_number, "retry_reason": "timeout" if due else "failure",
            "retry_backoff_seconds": delay, "retry_available_at": iso(now + delay), "max_attempts": max_attempts,
        }
    exception = {"type": info["exception_type"], "class": info["exception_class"], "message": info["message"]}
    if due:
        return "ActivityTimedOut", {**base, **info, "failure_category": "timeout", "non_retryable": True, "code": 0,
                                    "exception": exception, "failure_id": f"{base['activity_attempt_id']}-timeout"}
    return "ActivityFailed", {**base, **info, "non_retryable": not retryable, "code": 0, "failure_category": "activity",
                              "exception": exception, "failure_id": f"{base['activity_attempt_id']}-f"}


def expire(state: RunState, em: Emitter, step: LocalStep, now: float) -> None:
    """The sweeper: a running attempt past a deadline is closed as timed out (retried if allowed)."""
    claim = step.claim
    assert claim is not None
    receipt = {"recorded": True, "duplicate": False, "reason": None, "workflow_task_id": claim[0], "workflow_task_attempt": claim[1],
               "workflow_run_id": state.run_id, "lease_owner": claim[2], "activity_execution_id": step.exec_id,
               "activity_attempt_id": step.attempt_id(), "worker_attempt_id": step.nonce}
    fields = resolve(state, em, step, {"outcome": "failed"}, now, None, receipt)
    wt = state.wt
    if not fields["claim_released"] and wt is not None and wt.status == "leased" and (wt.task_id, wt.attempt, wt.owner) == claim:
        em.internal("wt_defer", task=wt.task_id, available_at=now)  # its claim is fenced; a fresh task replays the outcome


def due(state: RunState, now: float) -> list[LocalStep]:
    return [s for s in state.locals.values()
            if s.status == "running" and any(now >= v for v in s.deadlines.values())]


def outcome_receipt(state: RunState, step: LocalStep) -> dict[str, Any]:
    claim = _claim(state)
    return {"recorded": True, "duplicate": False, "reason": None, "workflow_task_id": claim[0], "workflow_task_attempt": claim[1],
            "workflow_run_id": state.run_id, "lease_owner": claim[2], "activity_execution_id": step.exec_id,
            "activity_attempt_id": step.attempt_id(), "worker_attempt_id": step.nonce}


def recover(state: RunState, seq: int, d: dict[str, Any], now: float, lease: float) -> tuple[Emitter, dict[str, Any]]:
    """A later claim found the step started and never resolved: its callback's fate is unknown,
    so the attempt counts as failed (retried if the policy allows) — never as run twice."""
    claim = _claim(state)
    em = Emitter(state, now, workflow_task_id=claim[0])
    step = state.locals.get(seq)
    recovery = {"workflow_task_id": claim[0], "workflow_task_attempt": claim[1], "lease_owner": claim[2],
                "callback_stop_state": "unknown"}
    if step is not None and step.receipt is not None and step.receipt.get("local_recovery") == recovery:
        return em, {**step.receipt, "duplicate": True}
    _refuse_while_cancellation_pending(state, d)
    if step is None or step.status != "running" or step.activity_type != d["activity_type"]:
        raise _conflict("local_activity_sequence_mismatch",
                        f"Step {seq} is not a started, unresolved local activity: the history and the worker disagree.")
    receipt = {"recovered": True, "duplicate": False, "reason": None, "workflow_task_id": claim[0],
               "activity_execution_id": step.exec_id, "activity_attempt_id": step.attempt_id(), "callback_stop_state": "unknown",
               "local_recovery": recovery}
    return em, resolve(state, em, step, {"outcome": "failed", **LOST}, now, lease, receipt, recovery)


def acknowledge(state: RunState, step: LocalStep, request_id: Any, now: float, lease: float) -> tuple[Emitter, dict[str, Any]]:
    """The worker joined a callback it stopped for the cooperative request: the step is cancelled."""
    coop = state.coop
    if coop is None or request_id != coop["request_id"]:
        raise _conflict("cancellation_request_mismatch", "The request_id does not name this run's cancellation request.")
    em = Emitter(state, now, workflow_task_id=_claim(state)[0])
    body = {"acknowledged": True, "reason": None}
    if step.acked and step.receipt is not None:
        return em, {**body, "duplicate": True, "history_event_id": step.receipt["event_id"]}
    if step.status != "running":
        raise _conflict("stale_attempt", "This local activity attempt has already resolved.")
    event_id = cancel_local_step(state, em, step, coop["request_id"], acknowledged=True)
    advance_horizon(state, em, now + lease)
    return em, {**body, "duplicate": False, "history_event_id": event_id}


CHECKPOINT_COMMANDS = frozenset({"record_side_effect", "record_version_marker", "upsert_search_attributes", "upsert_memo"})
GROUP_COMMANDS = frozenset({"schedule_activity", "start_timer", "start_child_workflow"})


def checkpoint(state: RunState, body: dict[str, Any], now: float, lease: float, limits: Limits, *,
               group: bool) -> tuple[Emitter, dict[str, Any]]:
    """Make the commands a replay produced before a prepared call durable first (extended spec
    §2.4); with ``group``, a whole parallel group whose local members get their steps only."""
    claim = _claim(state)
    em = Emitter(state, now, workflow_task_id=claim[0])
    known = state.checkpoints.get(body["checkpoint_id"])
    if known is not None:
        return em, {**known, "duplicate": True}
    _refuse_while_cancellation_pending(state, {})
    start = body["start_sequence"]
    if start != state.step_seq + 1:
        raise _conflict("checkpoint_sequence_mismatch",
                        f"start_sequence {start} is not the run's next step ({state.step_seq + 1}): the history and the worker disagree.")
    raw = body["commands"]
    if not isinstance(raw, list) or not raw:
        raise invalid("commands", "The commands field must be a non-empty list.")
    is_local = [group and isinstance(c, dict) and c.get("type") == "prepare_local_activity" for c in raw]
    others = validate_commands([c for c, local in zip(raw, is_local, strict=True) if not local], allow_empty=True)
    allowed = GROUP_COMMANDS if group else CHECKPOINT_COMMANDS
    for i, cmd in enumerate(others):
        if cmd["type"] not in allowed:
            raise invalid(f"commands.{i}.type", f"A {'group' if group else 'checkpoint'} cannot carry {cmd['type']}.")
    check_completion(state, others, limits)
    check_history(state, len(raw), limits)
    workflow_streams.annotate(state.wstreams, others, limits.stream_items)
    pending = iter(others)
    step = start - 1
    locals_out: list[dict[str, Any]] = []
    for i, (command, local) in enumerate(zip(raw, is_local, strict=True)):
        step += 1
        cmd = descriptor({**command, "type": "record_local_activity"}, state) if local else next(pending)
        par = cmd.get("par")
        if group and (not par or par["parallel_group_base_sequence"] + par["parallel_group_index"] != step):
            raise CommandError(409, "invalid_commands", f"Group member {i} is not placed at step {step} by its parallel metadata.")
        if local:
            schedule(state, em, step, cmd)
            locals_out.append({"sequence": step, "activity_execution_id": activity_execution_id(state.run_id, step)})
        else:
            dwt._STEP_APPLY[cmd["type"]](state, em, cmd, step, None)
    receipt: dict[str, Any] = {
        "checkpointed": True, "duplicate": False, "checkpoint_id": body["checkpoint_id"], "task_id": claim[0],
        "workflow_run_id": state.run_id, "workflow_task_attempt": claim[1], "lease_owner": claim[2],
        "start_sequence": start, "next_sequence": step + 1, "reason": None, "history_refresh_page_token": FIRST_PAGE,
    }
    if group:
        receipt["local_activities"] = locals_out
    em.internal("checkpoint", id=body["checkpoint_id"], receipt=receipt)
    advance_horizon(state, em, now + lease)
    return em, receipt
