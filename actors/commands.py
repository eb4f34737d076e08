"""Validation of the commands a worker returns with a workflow-task completion.

Pure functions: a completion is checked as a whole before anything is applied, so a
rejected completion changes nothing (worker-plane spec 5.6.1). Errors carry the
protocol's status and reason so the API layer can answer without interpretation.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from . import local_activities, memo, payload_refs, tracing, workflow_streams
from .errors import CommandError
from .errors import invalid as _invalid

__all__ = ["CommandError", "MAX_COMMANDS", "STEP_COMMANDS", "SUPPORTED_COMMANDS", "UPDATE_COMMANDS", "validate_commands"]

STEP_COMMANDS = frozenset(
    {
        "schedule_activity",
        "record_local_activity",
        "start_timer",
        "start_child_workflow",
        "record_side_effect",
        "record_version_marker",
        "upsert_search_attributes",
        "upsert_memo",
        "open_condition_wait",
    }
)
ACTIVITY_CANCELLATION_POLICIES = ("try_cancel", "wait_cancellation_completed", "abandon")
TERMINAL_COMMANDS = frozenset({"complete_workflow", "fail_workflow", "continue_as_new"})
UPDATE_COMMANDS = frozenset({"complete_update", "fail_update"})
SUPPORTED_COMMANDS = sorted(STEP_COMMANDS | TERMINAL_COMMANDS | UPDATE_COMMANDS)
PARALLEL_KEYS = (
    "parallel_group_id",
    "parallel_group_kind",
    "parallel_group_base_sequence",
    "parallel_group_size",
    "parallel_group_index",
)
PARENT_CLOSE_POLICIES = ("abandon", "request_cancel", "request_cancellation", "terminate")
CHILD_CANCELLATION_POLICIES = ("abandon", "try_cancel", "wait_cancellation_completed")
MAX_COMMANDS = 1000
MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600  # ten years: longer deadlines are almost surely unit mistakes



def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _envelope(value: Any, path: str, *, bare_ok: bool = False) -> None:
    if value is None:
        return
    if bare_ok and isinstance(value, str):
        return
    if isinstance(value, dict) and isinstance(value.get("codec"), str) and value["codec"]:
        if value["codec"] != "avro":
            raise _invalid(f"{path}.codec", f"Unknown payload codec [{value['codec']}]; only avro is supported.")
        if "blob" in value and isinstance(value["blob"], str):
            return
        if "external_storage" in value or "external_payload" in value:
            problem = payload_refs.envelope_problem(value)
            if problem is None:
                return
            raise _invalid(f"{path}.external_storage", f"The {path} reference is malformed: {problem}.")
        raise _invalid(f"{path}.blob", f"The {path}.blob field must be a string.")
    raise _invalid(path, f"The {path} field must be a payload envelope {{codec, blob}}.")


def _opt_int(cmd: dict[str, Any], key: str, path: str, minimum: int) -> int | None:
    value = cmd.get(key)
    if value is None:
        return None
    if not _is_int(value) or not minimum <= value <= MAX_DURATION_SECONDS:
        raise _invalid(f"{path}.{key}", f"The {key} field must be an integer between {minimum} and {MAX_DURATION_SECONDS}.")
    return value


def _retry_policy(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {"max_attempts": 1, "backoff_seconds": [], "non_retryable_error_types": []}
    if not isinstance(value, dict):
        raise _invalid(path, "The retry_policy field must be an object.")
    max_attempts = value.get("max_attempts", 1)
    if max_attempts is None:
        max_attempts = 1
    if not _is_int(max_attempts) or max_attempts < 1:
        raise _invalid(f"{path}.max_attempts", "The max_attempts field must be an integer of at least 1.")
    backoff = value.get("backoff_seconds") or []
    if not isinstance(backoff, list) or not all(_is_int(b) and 0 <= b <= MAX_DURATION_SECONDS for b in backoff):
        raise _invalid(f"{path}.backoff_seconds", "The backoff_seconds field must be a list of integers >= 0.")
    types = value.get("non_retryable_error_types") or []
    if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
        raise _invalid(
            f"{path}.non_retryable_error_types",
            "The non_retryable_error_types field must be a list of non-empty strings.",
        )
    return {"max_attempts": max_attempts, "backoff_seconds": backoff, "non_retryable_error_types": types}


def _parallel(cmd: dict[str, Any], path: str) -> dict[str, Any] | None:
    if "parallel_group_path" not in cmd and "parallel_group_id" not in cmd:
        return None
    entries = cmd.get("parallel_group_path")
    if not isinstance(entries, list) or not entries:
        entries = [{k: cmd.get(k) for k in PARALLEL_KEYS}]
    clean = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _invalid(f"{path}.parallel_group_path.{i}", "Parallel group path entries must be objects.")
        item: dict[str, Any] = {k: entry.get(k) for k in PARALLEL_KEYS}
        if not isinstance(item["parallel_group_id"], str) or not item["parallel_group_id"]:
            raise _invalid(f"{path}.parallel_group_path.{i}", "parallel_group_id must be a non-empty string.")
        for k in ("parallel_group_base_sequence", "parallel_group_size", "parallel_group_index"):
            if not _is_int(item[k]) or item[k] < 0:
                raise _invalid(f"{path}.parallel_group_path.{i}.{k}", f"{k} must be a non-negative integer.")
        if not 1 <= item["parallel_group_size"] <= 1000 or item["parallel_group_index"] >= item["parallel_group_size"]:
            raise CommandError(409, "invalid_commands", "Parallel group size or index out of range.")
        clean.append(item)
    meta = dict(clean[-1])
    meta["parallel_group_path"] = clean
    return meta


def validate_commands(commands: Any, *, allow_empty: bool = False) -> list[dict[str, Any]]:
    """Check a completion's command list; returns normalized commands or raises CommandError."""
    if not isinstance(commands, list) or (not commands and not allow_empty):
        raise _invalid("commands", "The commands field must be a non-empty list.")
    if len(commands) > MAX_COMMANDS:
        raise CommandError(
            422,
            "structural_limit_exceeded",
            f"A completion may carry at most {MAX_COMMANDS} commands.",
            extra={"limit_kind": "command_batch_size", "current_value": len(commands), "configured_limit": MAX_COMMANDS},
        )
    out: list[dict[str, Any]] = []
    for i, cmd in enumerate(commands):
        path = f"commands.{i}"
        if not isinstance(cmd, dict):
            raise _invalid(f"{path}.type", f"Command {i} must be an object with a type.")
        ctype = cmd.get("type")
        if not isinstance(ctype, str) or ctype not in STEP_COMMANDS | TERMINAL_COMMANDS | UPDATE_COMMANDS:
            raise _invalid(
                f"{path}.type",
                f"Unsupported command type [{ctype}]. Supported: {', '.join(SUPPORTED_COMMANDS)}.",
            )
        out.append(_VALIDATORS[ctype](cmd, path))
    for i, cmd in enumerate(out):
        if cmd["type"] in TERMINAL_COMMANDS and i != len(out) - 1:
            raise CommandError(409, "invalid_commands", "A terminal command must be the last command of a completion.")
    return out


def _schedule_activity(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    if not isinstance(cmd.get("activity_type"), str) or not cmd["activity_type"]:
        raise _invalid(f"{path}.activity_type", "The activity_type field is required.")
    _envelope(cmd.get("arguments"), f"{path}.arguments")
    queue = cmd.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise _invalid(f"{path}.queue", "The queue field must be a non-empty string.")
    session = _worker_session(cmd.get("worker_session"), f"{path}.worker_session")
    cancellation = cmd.get("cancellation_policy")
    if cancellation is not None and cancellation not in ACTIVITY_CANCELLATION_POLICIES:
        raise _invalid(f"{path}.cancellation_policy", f"cancellation_policy must be one of {', '.join(ACTIVITY_CANCELLATION_POLICIES)}.")
    if cancellation == "abandon" and cmd.get("schedule_to_close_timeout") is None:
        raise _invalid(f"{path}.cancellation_policy", "An abandoned activity needs a schedule_to_close_timeout to bound it.")
    policy = _retry_policy(cmd.get("retry_policy"), f"{path}.retry_policy")
    timeouts = {
        k: _opt_int(cmd, k, path, 1)
        for k in ("start_to_close_timeout", "schedule_to_start_timeout", "schedule_to_close_timeout", "heartbeat_timeout")
    }
    s2c, s2s, stc, hb = (
        timeouts["schedule_to_close_timeout"],
        timeouts["schedule_to_start_timeout"],
        timeouts["start_to_close_timeout"],
        timeouts["heartbeat_timeout"],
    )
    if hb is not None and stc is not None and hb > stc:
        raise _invalid(f"{path}.heartbeat_timeout", "heartbeat_timeout must not exceed start_to_close_timeout.")
    if stc is not None and s2c is not None and stc > s2c:
        raise _invalid(f"{path}.start_to_close_timeout", "start_to_close_timeout must not exceed schedule_to_close_timeout.")
    if s2s is not None and s2c is not None and s2s > s2c:
        raise _invalid(
            f"{path}.schedule_to_start_timeout", "schedule_to_start_timeout must not exceed schedule_to_close_timeout."
        )
    policy.update(timeouts)
    if cancellation not in (None, "try_cancel"):  # the default is never stored (extended spec §5.7)
        policy["cancellation_policy"] = cancellation
    return {
        "type": "schedule_activity",
        "activity_type": cmd["activity_type"],
        "queue": queue,
        "arguments": cmd.get("arguments"),
        "policy": policy,
        "par": _parallel(cmd, path),
        **({"session": session} if session is not None else {}),
    }


SESSION_INTS = ("lease_seconds", "ttl_seconds", "max_concurrent_activities")


def _worker_session(value: Any, path: str) -> dict[str, Any] | None:
    """``WorkerSessionOptions.to_wire`` (extended §11.1): the session an activity must run in."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(path, "The worker_session field must be an object.")
    sid = value.get("session_id")
    if not isinstance(sid, str) or not sid.strip() or len(sid) > 255:
        raise _invalid(f"{path}.session_id", "The session_id must be a non-empty string of at most 255 characters.")
    queue = value.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue.strip() or len(queue) > 255):
        raise _invalid(f"{path}.queue", "The queue must be a non-empty string of at most 255 characters.")
    requirements = value.get("requirements") or []
    if not isinstance(requirements, list) or not all(isinstance(r, str) and r.strip() and len(r) <= 255 for r in requirements) \
            or len(set(requirements)) != len(requirements) or len(requirements) > 64:
        raise _invalid(f"{path}.requirements", "The requirements must be at most 64 distinct non-empty strings.")
    out: dict[str, Any] = {"session_id": sid.strip(), "requirements": list(requirements)}
    if queue is not None:
        out["queue"] = queue.strip()
    for key in SESSION_INTS:
        if key in value:
            if not _is_int(value[key]) or not 1 <= value[key] <= MAX_DURATION_SECONDS:
                raise _invalid(f"{path}.{key}", f"The {key} must be a positive integer.")
            out[key] = value[key]
    for key in ("create_if_missing", "allow_reacquire_after_failure"):
        if key in value:
            if not isinstance(value[key], bool):
                raise _invalid(f"{path}.{key}", f"The {key} must be true or false.")
            out[key] = value[key]
    return out


check_schedule_activity = _schedule_activity  # a standalone activity is checked as this command (extended §8.2)


def _start_timer(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    delay = cmd.get("delay_seconds")
    if not _is_int(delay) or not 0 <= delay <= MAX_DURATION_SECONDS:
        raise _invalid(f"{path}.delay_seconds", f"The delay_seconds field must be an integer between 0 and {MAX_DURATION_SECONDS}.")
    return {"type": "start_timer", "delay_seconds": delay, "par": _parallel(cmd, path)}


def _start_child(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    if not isinstance(cmd.get("workflow_type"), str) or not cmd["workflow_type"]:
        raise _invalid(f"{path}.workflow_type", "The workflow_type field is required.")
    _envelope(cmd.get("arguments"), f"{path}.arguments")
    policy = cmd.get("parent_close_policy") or "abandon"
    if policy not in PARENT_CLOSE_POLICIES:
        raise _invalid(f"{path}.parent_close_policy", f"parent_close_policy must be one of {', '.join(PARENT_CLOSE_POLICIES)}.")
    if cmd.get("request_cancellation") is not None:
        raise _invalid(f"{path}.request_cancellation", "The request_cancellation field is not supported by this server.")
    cancellation = cmd.get("cancellation_policy") or "abandon"
    if cancellation not in CHILD_CANCELLATION_POLICIES:  # what a delivery at the child's boundary does (extended §5.7)
        raise _invalid(f"{path}.cancellation_policy", f"A child's cancellation_policy is one of {', '.join(CHILD_CANCELLATION_POLICIES)}.")
    exec_t = _opt_int(cmd, "execution_timeout_seconds", path, 1)
    run_t = _opt_int(cmd, "run_timeout_seconds", path, 1)
    if exec_t is not None and run_t is not None and run_t > exec_t:
        raise _invalid(f"{path}.run_timeout_seconds", "run_timeout_seconds must not exceed execution_timeout_seconds.")
    retry = cmd.get("retry_policy")
    if retry is not None:
        retry = _retry_policy(retry, f"{path}.retry_policy")
    return {
        "type": "start_child_workflow",
        "workflow_type": cmd["workflow_type"],
        "queue": cmd.get("queue"),
        "arguments": cmd.get("arguments"),
        "parent_close_policy": policy,
        "cancellation_policy": None if cancellation == "abandon" else cancellation,  # the default is never stored
        "trace": tracing.carrier(cmd.get("observability_context")),  # the child's own tasks carry it (§15.1)
        "retry_policy": retry,
        "execution_timeout_seconds": exec_t,
        "run_timeout_seconds": run_t,
        "par": _parallel(cmd, path),
    }


def _side_effect(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    result = cmd.get("result")
    if not (isinstance(result, str) and result) and not isinstance(result, dict):
        raise _invalid(f"{path}.result", "The result field must be a non-empty blob string.")
    out: dict[str, Any] = {"type": "record_side_effect", "result": result}
    if cmd.get("workflow_stream") is not None:  # an operation on one of the run's output streams (extended §7.2)
        out["workflow_stream"] = workflow_streams.check_directive(cmd["workflow_stream"], f"{path}.workflow_stream")
    return out


def _version_marker(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    if not isinstance(cmd.get("change_id"), str) or not cmd["change_id"]:
        raise _invalid(f"{path}.change_id", "The change_id field is required.")
    for key in ("version", "min_supported", "max_supported"):
        if not _is_int(cmd.get(key)):
            raise _invalid(f"{path}.{key}", f"The {key} field must be an integer.")
    if not cmd["min_supported"] <= cmd["version"] <= cmd["max_supported"]:
        raise _invalid(f"{path}.version", "version must lie between min_supported and max_supported.")
    return {k: cmd[k] for k in ("type", "change_id", "version", "min_supported", "max_supported")}


def _upsert_sa(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    attrs = cmd.get("attributes")
    if not isinstance(attrs, dict):
        raise _invalid(f"{path}.attributes", "The attributes field must be an object.")
    for key, value in attrs.items():
        ok = value is None or isinstance(value, str | int | float | bool)
        ok = ok or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not ok or not key:
            raise _invalid(f"{path}.attributes.{key}", "Search attribute values are strings, numbers, booleans, string lists or null.")
    return {"type": "upsert_search_attributes", "attributes": attrs}


def _condition(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    timeout = _opt_int(cmd, "timeout_seconds", path, 0)
    out: dict[str, Any] = {"type": "open_condition_wait", "timeout_seconds": timeout}
    for key in ("condition_key", "condition_definition_fingerprint"):
        if cmd.get(key) is not None:
            if not isinstance(cmd[key], str):
                raise _invalid(f"{path}.{key}", f"The {key} field must be a string.")
            out[key] = cmd[key]
    return out


def _complete(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    _envelope(cmd.get("result"), f"{path}.result", bare_ok=True)
    return {"type": "complete_workflow", "result": cmd.get("result")}


def _fail(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    if not isinstance(cmd.get("message"), str) or not cmd["message"]:
        raise _invalid(f"{path}.message", "The message field is required.")
    out = dict(cmd)
    return out


def _continue(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    _envelope(cmd.get("arguments"), f"{path}.arguments")
    for key in ("workflow_type", "queue"):
        if cmd.get(key) is not None and (not isinstance(cmd[key], str) or not cmd[key]):
            raise _invalid(f"{path}.{key}", f"The {key} field must be a non-empty string.")
    return {
        "type": "continue_as_new",
        "arguments": cmd.get("arguments"),
        "workflow_type": cmd.get("workflow_type"),
        "queue": cmd.get("queue"),
        "trace": tracing.carrier(cmd.get("observability_context")),
    }


def _update_id(cmd: dict[str, Any], path: str) -> str:
    value = cmd.get("update_id")
    if not isinstance(value, str) or not value:
        raise _invalid(f"{path}.update_id", "The update_id field is required.")
    return value


def _complete_update(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    update_id = _update_id(cmd, path)
    _envelope(cmd.get("result"), f"{path}.result", bare_ok=True)
    return {"type": "complete_update", "update_id": update_id, "result": cmd.get("result")}


def _fail_update(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    update_id = _update_id(cmd, path)
    if not isinstance(cmd.get("message"), str) or not cmd["message"]:
        raise _invalid(f"{path}.message", "The message field is required.")
    for key in ("exception_type", "exception_class"):
        if cmd.get(key) is not None and not isinstance(cmd[key], str):
            raise _invalid(f"{path}.{key}", f"The {key} field must be a string.")
    if cmd.get("non_retryable") is not None and not isinstance(cmd["non_retryable"], bool):
        raise _invalid(f"{path}.non_retryable", "The non_retryable field must be a boolean.")
    return {
        "type": "fail_update",
        "update_id": update_id,
        "message": cmd["message"],
        "exception_type": cmd.get("exception_type"),
        "exception_class": cmd.get("exception_class"),
        "non_retryable": cmd.get("non_retryable", True),
    }


_VALIDATORS = {
    "complete_update": _complete_update,
    "fail_update": _fail_update,
    "schedule_activity": _schedule_activity,
    "record_local_activity": lambda cmd, path: local_activities.validate(cmd, path, _parallel(cmd, path)),
    "start_timer": _start_timer,
    "start_child_workflow": _start_child,
    "record_side_effect": _side_effect,
    "record_version_marker": _version_marker,
    "upsert_search_attributes": _upsert_sa,
    "upsert_memo": memo.validate,
    "open_condition_wait": _condition,
    "complete_workflow": _complete,
    "fail_workflow": _fail,
    "continue_as_new": _continue,
}
