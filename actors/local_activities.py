"""Plain local activities (extended spec §2.1): the ``record_local_activity`` command.

The worker has already run the callable, retries included, inside its workflow task; the
command reports the finished outcome. The server's job is to check the report strictly (it
becomes history that replay trusts: a local step is never run again) and to record it as one
step — ``ActivityScheduled``, the attempts, the terminal event — with no activity task, no
server-side retry and no wake-up: the workflow code already went on within the same task.

Pure functions on plain data: ``validate`` for the command, ``record`` for the events.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from persistence.vocabulary import activity_execution_id

from . import payload_refs
from .emit import Emitter, blob_of, par_fields
from .errors import invalid as _invalid

OUTCOMES = ("completed", "failed", "timed_out", "cancelled")
TIMEOUT_KINDS = ("start_to_close", "schedule_to_close", "heartbeat")
TIMEOUTS = ("start_to_close_timeout", "schedule_to_close_timeout", "heartbeat_timeout")
MAX_ATTEMPTS = 100
MAX_HEARTBEATS = 1000  # per attempt, and for all attempts together
MAX_NAME_BYTES = 255
MAX_TIMEOUT_SECONDS = 10 * 365 * 24 * 3600



def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > MAX_NAME_BYTES:
        raise _invalid(path, f"The {path.rsplit('.', 1)[-1]} field must be a non-empty string of at most {MAX_NAME_BYTES} bytes.")
    return value


def _payload(value: Any, path: str) -> None:
    """An inline Avro envelope or an external-storage reference (the SDK's two forms)."""
    if isinstance(value, dict) and value.get("codec") == "avro" and isinstance(value.get("blob"), str):
        return
    if isinstance(value, dict) and "external_storage" in value:
        problem = payload_refs.problem(value["external_storage"])
        if problem is None:
            return
        raise _invalid(path, f"The {path.rsplit('.', 1)[-1]} reference is malformed: {problem}.")
    raise _invalid(path, f"The {path.rsplit('.', 1)[-1]} field must be a payload envelope {{codec: avro, blob}} or an external reference.")


def _retry_policy(value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(path, "The retry_policy field must be an object.")
    unknown = sorted(set(value) - {"max_attempts", "backoff_seconds", "non_retryable_error_types"})
    if unknown:
        raise _invalid(f"{path}.{unknown[0]}", f"A local activity's retry_policy does not accept [{unknown[0]}].")
    max_attempts = value.get("max_attempts", 1)
    if not _is_int(max_attempts) or not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise _invalid(f"{path}.max_attempts", f"The max_attempts field must be an integer from 1 to {MAX_ATTEMPTS}.")
    backoff = value.get("backoff_seconds", [])
    if not isinstance(backoff, list) or not all(_is_int(b) and 0 <= b <= MAX_TIMEOUT_SECONDS for b in backoff):
        raise _invalid(f"{path}.backoff_seconds", "The backoff_seconds field must be a list of integers >= 0.")
    if len(backoff) > max_attempts - 1:
        raise _invalid(f"{path}.backoff_seconds", "The backoff_seconds list is longer than the retries max_attempts allows.")
    types = value.get("non_retryable_error_types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) and t.strip() for t in types):
        raise _invalid(f"{path}.non_retryable_error_types", "The non_retryable_error_types field must be a list of non-empty strings.")
    return dict(value)


def _timeouts(cmd: dict[str, Any], path: str) -> dict[str, int]:
    for key in ("schedule_to_start_timeout", "queue", "worker_session"):
        if cmd.get(key) is not None:
            raise _invalid(f"{path}.{key}", f"A local activity has no {key}: it runs in the workflow worker.")
    out: dict[str, int] = {}
    for key in TIMEOUTS:
        value = cmd.get(key)
        if value is None:
            continue
        if not _is_int(value) or not 1 <= value <= MAX_TIMEOUT_SECONDS:
            raise _invalid(f"{path}.{key}", f"The {key} field must be an integer between 1 and {MAX_TIMEOUT_SECONDS}.")
        out[key] = value
    hb, stc, s2c = out.get("heartbeat_timeout"), out.get("start_to_close_timeout"), out.get("schedule_to_close_timeout")
    if hb is not None and stc is not None and hb > stc:
        raise _invalid(f"{path}.heartbeat_timeout", "heartbeat_timeout must not exceed start_to_close_timeout.")
    if stc is not None and s2c is not None and stc > s2c:
        raise _invalid(f"{path}.start_to_close_timeout", "start_to_close_timeout must not exceed schedule_to_close_timeout.")
    return out


def _failure(report: dict[str, Any], path: str, outcome: str) -> dict[str, Any]:
    """The failure fields of a non-completed outcome (command or attempt)."""
    message = report.get("message")
    if not isinstance(message, str) or not message:
        raise _invalid(f"{path}.message", "A failed, timed-out or cancelled local activity needs a non-empty message.")
    exception_type = _name(report.get("exception_type"), f"{path}.exception_type")
    if not isinstance(report.get("non_retryable"), bool):
        raise _invalid(f"{path}.non_retryable", "The non_retryable field must be true or false.")
    info = {"message": message, "exception_type": exception_type, "non_retryable": report["non_retryable"]}
    kind = report.get("timeout_kind")
    if outcome == "timed_out":
        if kind not in TIMEOUT_KINDS:
            raise _invalid(f"{path}.timeout_kind", f"A timed-out local activity needs a timeout_kind: one of {', '.join(TIMEOUT_KINDS)}.")
        info["timeout_kind"] = kind
    elif kind is not None:
        raise _invalid(f"{path}.timeout_kind", "Only a timed-out local activity has a timeout_kind.")
    return info


def _heartbeats(value: Any, path: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_HEARTBEATS:
        raise _invalid(path, f"The heartbeats field must be a list of at most {MAX_HEARTBEATS} reports.")
    last = 0
    out = []
    for i, beat in enumerate(value):
        elapsed = beat.get("elapsed_ms") if isinstance(beat, dict) else None
        if not _is_int(elapsed) or elapsed < last:
            raise _invalid(f"{path}.{i}.elapsed_ms", "Heartbeat elapsed_ms values must be non-decreasing integers >= 0.")
        last = elapsed
        details = beat.get("details")
        if details is not None and not isinstance(details, dict):
            raise _invalid(f"{path}.{i}.details", "Heartbeat details must be an object.")
        out.append({"elapsed_ms": elapsed, **({"details": details} if details is not None else {})})
    return out


def _attempts(value: Any, path: str, outcome: str, max_attempts: int) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ATTEMPTS:
        raise _invalid(path, f"The attempts field must list 1 to {MAX_ATTEMPTS} attempts.")
    if len(value) > max_attempts:
        raise _invalid(path, f"The report has {len(value)} attempts; the retry policy allows {max_attempts}.")
    out = []
    beats = 0
    for i, attempt in enumerate(value):
        at = f"{path}.{i}"
        if not isinstance(attempt, dict):
            raise _invalid(at, "Each attempt must be an object.")
        if attempt.get("attempt_number") != i + 1 or not _is_int(attempt.get("attempt_number")):
            raise _invalid(f"{at}.attempt_number", f"Attempts must be numbered 1, 2, ... in order; expected {i + 1}.")
        attempt_outcome = attempt.get("outcome")
        last = i == len(value) - 1
        if attempt_outcome not in OUTCOMES or (last and attempt_outcome != outcome) or (not last and attempt_outcome == "completed"):
            raise _invalid(f"{at}.outcome", "Every attempt but the last failed; the last attempt's outcome is the command's.")
        item: dict[str, Any] = {
            "attempt_id": _name(attempt.get("attempt_id"), f"{at}.attempt_id"),
            "attempt_number": i + 1,
            "outcome": attempt_outcome,
            "heartbeats": _heartbeats(attempt.get("heartbeats"), f"{at}.heartbeats"),
        }
        beats += len(item["heartbeats"])
        if beats > MAX_HEARTBEATS:
            raise _invalid(f"{at}.heartbeats", f"All attempts together may report at most {MAX_HEARTBEATS} heartbeats.")
        duration = attempt.get("duration_ms")
        if duration is not None:
            if not _is_int(duration) or duration < 0:
                raise _invalid(f"{at}.duration_ms", "The duration_ms field must be an integer >= 0.")
            item["duration_ms"] = duration
        if attempt_outcome != "completed":
            item.update(_failure(attempt, at, attempt_outcome))
        if not last:
            reason = attempt.get("retry_reason", "failure")
            backoff = attempt.get("backoff_seconds", 0)
            if reason not in ("failure", "timeout") or not _is_int(backoff) or backoff < 0:
                raise _invalid(f"{at}.retry_reason", "A retried attempt names retry_reason failure|timeout and an integer backoff_seconds.")
            item.update(retry_reason=reason, backoff_seconds=backoff)
        out.append(item)
    return out


def validate(cmd: dict[str, Any], path: str, parallel: dict[str, Any] | None) -> dict[str, Any]:
    """The normalized command, or ``CommandError`` (422 ``validation_failed`` naming the field)."""
    activity_type = _name(cmd.get("activity_type"), f"{path}.activity_type")
    if cmd.get("execution_mode") != "local":
        raise _invalid(f"{path}.execution_mode", "The execution_mode of record_local_activity must be \"local\".")
    if cmd.get("cancellation_policy") not in (None, "try_cancel"):
        raise _invalid(f"{path}.cancellation_policy",
                       "An explicit local cancellation policy needs prepared local activities: register the worker with them.")
    _payload(cmd.get("arguments"), f"{path}.arguments")
    outcome = cmd.get("outcome")
    if outcome not in OUTCOMES:
        raise _invalid(f"{path}.outcome", f"The outcome field must be one of {', '.join(OUTCOMES)}.")
    if outcome == "completed":
        _payload(cmd.get("result"), f"{path}.result")
        failure: dict[str, Any] = {}
    else:
        if cmd.get("result") is not None:
            raise _invalid(f"{path}.result", "Only a completed local activity has a result.")
        failure = _failure(cmd, path, outcome)
    policy = _retry_policy(cmd.get("retry_policy"), f"{path}.retry_policy")
    max_attempts = (policy or {}).get("max_attempts", 1)
    return {
        "type": "record_local_activity",
        "activity_type": activity_type,
        "arguments": cmd["arguments"],
        "outcome": outcome,
        "result": cmd.get("result"),
        "failure": failure,
        "attempts": _attempts(cmd.get("attempts"), f"{path}.attempts", outcome, max_attempts),
        "retry_policy": policy,
        "timeouts": _timeouts(cmd, path),
        "par": parallel,
    }


def record(state_run_id: str, em: Emitter, cmd: dict[str, Any], seq: int) -> None:
    """The step's events, in one completion: scheduled, each attempt, the terminal outcome."""
    activity_type = cmd["activity_type"]
    common = {
        "sequence": seq,
        "activity_type": activity_type,
        "activity_execution_id": activity_execution_id(state_run_id, seq),
        "execution_mode": "local",
        "local_activity": True,
        **par_fields(cmd.get("par")),
    }
    scheduled = {**common, "activity_class": activity_type, "workflow_task_id": em.workflow_task_id, **cmd["timeouts"]}
    if cmd["retry_policy"] is not None:
        scheduled["retry_policy"] = cmd["retry_policy"]
    em.event("ActivityScheduled", scheduled, extra={"local": True, "arguments": cmd["arguments"], "par": cmd.get("par")})
    attempts = cmd["attempts"]
    for attempt in attempts:
        ids = {"activity_attempt_id": attempt["attempt_id"], "attempt_number": attempt["attempt_number"]}
        report = {k: attempt[k] for k in ("duration_ms", "heartbeats") if k in attempt}
        em.event("ActivityStarted", {**common, **ids}, extra={"local": True, "report": report})
        if attempt is not attempts[-1]:
            retry = {
                "retry_after_attempt": attempt["attempt_number"],
                "retry_reason": attempt["retry_reason"],
                "retry_backoff_seconds": attempt["backoff_seconds"],
                "message": attempt["message"],
                "exception_type": attempt["exception_type"],
                **({"timeout_kind": attempt["timeout_kind"]} if "timeout_kind" in attempt else {}),
            }
            em.event("ActivityRetryScheduled", {**common, **ids, **retry}, extra={"local": True})
    last = {"activity_attempt_id": attempts[-1]["attempt_id"], "attempt_number": attempts[-1]["attempt_number"]}
    _terminal(em, cmd, {**common, **last})


def _terminal(em: Emitter, cmd: dict[str, Any], base: dict[str, Any]) -> None:
    outcome, failure = cmd["outcome"], cmd["failure"]
    extra = {"local": True}
    if outcome == "completed":
        em.event("ActivityCompleted", {**base, "result": blob_of(cmd["result"]), "payload_codec": "avro"}, extra=extra)
        return
    message, exception_type = failure["message"], failure["exception_type"]
    if outcome == "cancelled":
        em.event("ActivityCancelled", {**base, "message": message}, extra=extra)
        return
    exception = {"type": exception_type, "class": exception_type, "message": message}
    if outcome == "timed_out":
        em.event("ActivityTimedOut", {
            **base, "message": message, "exception_type": exception_type, "exception_class": exception_type,
            "timeout_kind": failure["timeout_kind"], "failure_category": "timeout", "non_retryable": True,
            "exception": exception, "code": 0, "failure_id": f"{base['activity_attempt_id']}-timeout",
        }, extra=extra)
        return
    em.event("ActivityFailed", {
        **base, "message": message, "exception_type": exception_type, "exception_class": exception_type,
        "non_retryable": failure["non_retryable"], "code": 0, "failure_id": f"{base['activity_attempt_id']}-f",
        "failure_category": "activity", "exception": exception,
    }, extra=extra)
