"""Workflow streams (extended spec §7.2): ordered output of one run that clients page or tail.

A stream belongs to a run and holds items at dense offsets from 0. The workflow appends to,
closes or errors a stream with a ``record_side_effect`` command carrying a ``workflow_stream``
directive; its ``SideEffectRecorded`` event carries the directive and, when the operation was
skipped (closed stream, backpressure), why — so the fold re-applies exactly what was decided,
and a workflow-side operation never fails the completion. Clients append and close through the
control plane (internal records ``ws_append`` / ``ws_close``), refused with 409 instead.
Appends dedupe on each item's idempotency key within its stream.

Pure functions over plain dicts (a stream is ``RunState.wstreams[name]``): validation, the plan
of an append or close, its fold, and the wire views. ``read`` (the furthest offset a subscriber
was handed) is kept in memory only: it feeds ``pending_items`` and backpressure, which are
advisory, and a reloaded run starts it at the end of each stream (lenient rather than blocking
a producer after a restart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from persistence.ids import iso

from . import payload_refs
from .errors import ProtocolError
from .errors import invalid as _invalid

MAX_ITEMS_PER_APPEND = 500
MAX_NAME_BYTES = 255
MAX_KEY_BYTES = 255
MAX_REASON_CHARS = 1000
MAX_RETENTION_SECONDS = 10 * 365 * 86400
OPERATIONS = ("append", "close", "error")
ITEM_TEXT = {"payload_reference": 2048, "payload_codec": 64, "idempotency_key": MAX_KEY_BYTES, "item_type": 128,
             "content_type": 255}


def name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "A stream name is a non-empty string."
    if len(name.encode()) > MAX_NAME_BYTES or any(ord(c) < 32 or ord(c) == 127 or c == "/" for c in name):
        return f"A stream name is at most {MAX_NAME_BYTES} bytes with no control characters and no '/' (it is a URL path segment)."
    return None


def item_problem(item: Any) -> tuple[str, str] | None:
    """(field, message) for the first thing wrong with one item, or None."""
    if not isinstance(item, dict):
        return "", "An item is an object with a payload or a payload_reference."
    payload = item.get("payload")
    if payload is not None:
        if not isinstance(payload, dict) or not isinstance(payload.get("codec"), str) or not payload["codec"] or not (
            isinstance(payload.get("blob"), str) or isinstance(payload.get("external_storage"), dict)
        ):
            return "payload", "The payload is an envelope {codec, blob} or {codec, external_storage}."
        if "blob" not in payload and payload_refs.problem(payload["external_storage"]) is not None:
            return "payload", f"The payload reference is malformed: {payload_refs.problem(payload['external_storage'])}."
    elif item.get("payload_reference") is None:
        return "payload", "An item needs a payload or a payload_reference."
    for key, limit in ITEM_TEXT.items():
        value = item.get(key)
        if value is not None and (not isinstance(value, str) or not value or len(value.encode()) > limit):
            return key, f"The {key} field is a non-empty string of at most {limit} bytes."
    return None


def check_items(raw: Any, path: str) -> list[dict[str, Any]]:
    """The items of an append, normalised to the stored keys; 422 ``validation_failed`` otherwise."""
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ITEMS_PER_APPEND:
        raise _invalid(path, f"The items field is a list of 1 to {MAX_ITEMS_PER_APPEND} items.")
    out = []
    for i, item in enumerate(raw):
        problem = item_problem(item)
        if problem is not None:
            raise _invalid(f"{path}.{i}{'.' + problem[0] if problem[0] else ''}", problem[1])
        kept = {k: item[k] for k in ("payload", *ITEM_TEXT) if item.get(k) is not None}
        kept.setdefault("payload_codec", "avro")
        out.append(kept)
    return out


def check_directive(raw: Any, path: str) -> dict[str, Any]:
    """A ``record_side_effect`` command's ``workflow_stream``, normalised; 422 when malformed."""
    if not isinstance(raw, dict):
        raise _invalid(path, "workflow_stream is an object with an operation and a stream_name.")
    operation = raw.get("operation")
    if operation not in OPERATIONS:
        raise _invalid(f"{path}.operation", "The operation is append, close or error.")
    problem = name_problem(raw.get("stream_name"))
    if problem:
        raise _invalid(f"{path}.stream_name", problem)
    out: dict[str, Any] = {"operation": operation, "stream_name": raw["stream_name"]}
    identity, ordinal = raw.get("command_identity"), raw.get("command_ordinal")
    if identity is not None:
        if not isinstance(identity, str) or len(identity) > 255:
            raise _invalid(f"{path}.command_identity", "The command_identity is a string of at most 255 characters.")
        out["command_identity"] = identity
    if ordinal is not None:
        if not _is_count(ordinal, 0):
            raise _invalid(f"{path}.command_ordinal", "The command_ordinal is an integer >= 0.")
        out["command_ordinal"] = ordinal
    if operation == "append":
        out["items"] = check_items(raw.get("items"), f"{path}.items")
        if raw.get("max_pending_items") is not None:
            if not _is_count(raw["max_pending_items"], 1):
                raise _invalid(f"{path}.max_pending_items", "The max_pending_items is an integer >= 1.")
            out["max_pending_items"] = raw["max_pending_items"]
    if operation == "error":
        reason = raw.get("error_reason")
        if not isinstance(reason, str) or not reason or len(reason) > MAX_REASON_CHARS:
            raise _invalid(f"{path}.error_reason", f"An error operation needs an error_reason of 1 to {MAX_REASON_CHARS} characters.")
        out["error_reason"] = reason
    if raw.get("retention_seconds") is not None:
        if not _is_count(raw["retention_seconds"], 1) or raw["retention_seconds"] > MAX_RETENTION_SECONDS:
            raise _invalid(f"{path}.retention_seconds", "The retention_seconds is an integer >= 1.")
        out["retention_seconds"] = raw["retention_seconds"]
    return out


def _is_count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least



# --- plans -----------------------------------------------------------------------------


@dataclass
class Plan:
    """What an append would do: ``outcome`` None when it goes ahead (``fresh`` items at ``offsets``)."""

    outcome: str | None = None  # rejected_closed | rejected_backpressure
    detail: str = ""
    fresh: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    deduped: int = 0


def plan_append(streams: dict[str, dict[str, Any]], name: str, items: list[dict[str, Any]],
                max_pending: int | None, run_limit: int) -> Plan:
    stream = streams.get(name)
    if stream is not None and stream["status"] != "open":
        return Plan("rejected_closed", f"Stream [{name}] is {stream['status']}; it takes no more items.")
    keys = stream["keys"] if stream is not None else {}
    seen: set[str] = set()
    plan = Plan()
    for item in items:
        key = item.get("idempotency_key")
        if key is not None and (key in keys or key in seen):
            plan.deduped += 1
            continue
        if key is not None:
            seen.add(key)
        plan.fresh.append(item)
    total = len(stream["items"]) if stream is not None else 0
    pending = total - (stream["read"] if stream is not None else 0) + len(plan.fresh)
    if max_pending is not None and plan.fresh and pending > max_pending:
        return Plan("rejected_backpressure", f"Stream [{name}] would hold {pending} unread items; max_pending_items is {max_pending}.")
    held = sum(len(s["items"]) for s in streams.values()) + len(plan.fresh)
    if plan.fresh and held > run_limit:
        return Plan("rejected_backpressure", f"The run's streams would hold {held} items; the server's limit is {run_limit} "
                                             "(DW_MAX_STREAM_ITEMS_PER_RUN).")
    plan.offsets = list(range(total, total + len(plan.fresh)))
    return plan


def close_refusal(streams: dict[str, dict[str, Any]], name: str) -> str | None:
    stream = streams.get(name)
    if stream is not None and stream["status"] != "open":
        return f"Stream [{name}] is already {stream['status']}."
    return None


# --- fold ------------------------------------------------------------------------------


def _stream(streams: dict[str, dict[str, Any]], name: str, at: float) -> dict[str, Any]:
    stream = streams.get(name)
    if stream is None:
        stream = streams[name] = {**unborn(), "opened_at": at}
    return stream


def unborn() -> dict[str, Any]:
    """What a stream no one has appended to yet looks like (never stored)."""
    return {"status": "open", "items": [], "keys": {}, "opened_at": None, "last_appended_at": None, "closed_at": None,
            "retention_seconds": None, "error_reason": None, "read": 0}


def fold_append(streams: dict[str, dict[str, Any]], name: str, items: list[dict[str, Any]], origin: str,
                reference: str | None, at: float) -> None:
    stream = _stream(streams, name, at)
    for item in items:
        key = item.get("idempotency_key")
        if key is not None and key in stream["keys"]:
            continue
        offset = len(stream["items"])
        if key is not None:
            stream["keys"][key] = offset
        stream["items"].append({**item, "offset": offset, "origin": origin, "origin_reference": reference, "at": at})
        stream["last_appended_at"] = at


def fold_close(streams: dict[str, dict[str, Any]], name: str, error_reason: str | None, retention: int | None,
               at: float) -> None:
    stream = _stream(streams, name, at)
    if stream["status"] != "open":
        return
    stream["status"] = "errored" if error_reason is not None else "closed"
    stream["error_reason"] = error_reason
    stream["retention_seconds"] = retention
    stream["closed_at"] = at


def fold_directive(streams: dict[str, dict[str, Any]], payload: dict[str, Any], at: float) -> None:
    """A ``SideEffectRecorded`` that carries a stream operation the decision let through."""
    directive = payload.get("workflow_stream")
    if not isinstance(directive, dict) or payload.get("workflow_stream_outcome"):
        return
    name = directive["stream_name"]
    if directive["operation"] == "append":
        fold_append(streams, name, directive["items"], "workflow", directive.get("command_identity"), at)
    else:
        fold_close(streams, name, directive.get("error_reason"), directive.get("retention_seconds"), at)


def mark_loaded(streams: dict[str, dict[str, Any]]) -> None:
    """A run loaded from the journal counts what its streams hold as read (see the module doc)."""
    for stream in streams.values():
        stream["read"] = len(stream["items"])


def decide(streams: dict[str, dict[str, Any]], directive: dict[str, Any], run_limit: int) -> str | None:
    """The outcome a workflow-side operation records: None (applied) or why it was skipped."""
    if directive["operation"] != "append":
        return "rejected_closed" if close_refusal(streams, directive["stream_name"]) else None
    plan = plan_append(streams, directive["stream_name"], directive["items"], directive.get("max_pending_items"), run_limit)
    return plan.outcome


# --- views -----------------------------------------------------------------------------


def status_of(stream: dict[str, Any], run_closed_at: float | None) -> tuple[str, float | None]:
    """A stream left open when its run closed reads as closed then: nobody can append any more,
    and a subscriber iterating it must reach its end instead of waiting for ever."""
    if stream["status"] == "open" and run_closed_at is not None:
        return "closed", run_closed_at
    return stream["status"], stream["closed_at"]


def expired(stream: dict[str, Any], run_closed_at: float | None, now: float) -> bool:
    status, closed_at = status_of(stream, run_closed_at)
    retention = stream["retention_seconds"]
    return status != "open" and retention is not None and closed_at is not None and now > closed_at + retention


def describe(name: str, stream: dict[str, Any], workflow_id: str, run_id: str, run_closed_at: float | None) -> dict[str, Any]:
    status, closed_at = status_of(stream, run_closed_at)
    total = len(stream["items"])
    return {
        "stream_name": name, "workflow_id": workflow_id, "workflow_run_id": run_id, "status": status,
        "last_offset": total - 1 if total else None, "total_items": total, "pending_items": max(total - stream["read"], 0),
        "error_reason": stream["error_reason"], "opened_at": iso(stream["opened_at"]),
        "last_appended_at": iso(stream["last_appended_at"]), "closed_at": iso(closed_at),
        "retention_seconds": stream["retention_seconds"],
    }


def wire_item(item: dict[str, Any]) -> dict[str, Any]:
    out = {"offset": item["offset"], "payload": item.get("payload"), "payload_codec": item.get("payload_codec", "avro"),
           "origin": item["origin"], "emitted_at": iso(item["at"])}
    for key in ("payload_reference", "idempotency_key", "item_type", "content_type", "origin_reference"):
        if item.get(key) is not None:
            out[key] = item[key]
    return out


def page(stream: dict[str, Any], start: int, limit: int, run_closed_at: float | None) -> tuple[list[dict[str, Any]], int, bool]:
    """(items, next offset, terminal) from offset ``start``; it marks them read."""
    items = stream["items"][start:start + limit]
    next_offset = start + len(items)
    stream["read"] = max(stream["read"], min(next_offset, len(stream["items"])))
    status, _ = status_of(stream, run_closed_at)
    return [wire_item(i) for i in items], next_offset, status != "open" and next_offset >= len(stream["items"])


def not_found(name: str, why: str = "") -> ProtocolError:
    return ProtocolError(404, "stream_not_found", f"Workflow stream [{name}] was not found{why}.", stream_name=name)


def annotate(streams: dict[str, dict[str, Any]], commands: list[dict[str, Any]], run_limit: int) -> None:
    """Decide each stream operation of one completion in order, as if the earlier ones had been
    folded already (a close then an append in one completion skips the append), and mark the
    skipped ones with their ``stream_outcome``. The run's streams are not touched."""
    directives = [c for c in commands if c["type"] == "record_side_effect" and "workflow_stream" in c]
    if not directives:
        return
    work = {name: {**s, "items": list(s["items"]), "keys": dict(s["keys"])} for name, s in streams.items()}
    for cmd in directives:
        outcome = decide(work, cmd["workflow_stream"], run_limit)
        if outcome:
            cmd["stream_outcome"] = outcome
        else:
            fold_directive(work, {"workflow_stream": cmd["workflow_stream"]}, 0.0)
