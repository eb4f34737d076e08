"""The schedule operations of control-plane §6.2-6.10, on top of ``ScheduleService``.

Each operation loads the schedule on its owner, changes a copy, and commits the change with
its audit event before answering; the service installs the new state only once it is durable.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from typing import Any

from actors.limits import DEFAULT as DEFAULT_LIMITS
from actors.limits import Limits, search_attribute_problem
from persistence import avro, codec
from persistence.ids import iso, ulid

from . import page_tokens
from .errors import ProtocolError, validation
from .schedules import KIND, OVERLAP_POLICIES, ScheduleService

ID = re.compile(r"^[a-zA-Z0-9._:-]+$")


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def _action(raw: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise validation("action", "The action must be an object with at least workflow_type.")
    out = dict(base or {})
    for legacy, name in (("workflow_execution_timeout", "execution_timeout_seconds"), ("workflow_run_timeout", "run_timeout_seconds")):
        if legacy in raw and name not in raw:
            raw = {**raw, name: raw[legacy]}
    for key in ("workflow_type", "task_queue", "input", "execution_timeout_seconds", "run_timeout_seconds"):
        if key in raw and not (base is not None and key == "workflow_type" and raw[key] is None):
            out[key] = raw[key]
    if not isinstance(out.get("workflow_type"), str) or not out["workflow_type"]:
        raise validation("action.workflow_type", "The action.workflow_type field is required.")
    if out.get("task_queue") is not None and (not isinstance(out["task_queue"], str) or not out["task_queue"]):
        raise validation("action.task_queue", "The action.task_queue must be a non-empty string.")
    for key in ("execution_timeout_seconds", "run_timeout_seconds"):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise validation(f"action.{key}", f"The action.{key} must be an integer of at least 1.")
    if isinstance(out.get("input"), list):
        try:
            out["input"] = avro.envelope(out["input"])
        except avro.PayloadError as exc:
            raise validation("action.input", f"The action.input cannot be encoded: {exc}.") from None
    elif out.get("input") is not None and not (isinstance(out["input"], dict) and out["input"].get("codec") == "avro"):
        raise validation("action.input", "The action.input must be a list of arguments or an avro payload envelope.")
    return out


def _options(body: dict[str, Any], st: dict[str, Any], max_memo: int, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Apply the optional fields common to create and update; returns the names changed."""
    changed = []
    if "overlap_policy" in body and body["overlap_policy"] is not None:
        if body["overlap_policy"] not in OVERLAP_POLICIES:
            raise validation("overlap_policy", f"The overlap_policy must be one of {', '.join(OVERLAP_POLICIES)}.")
        st["overlap_policy"] = body["overlap_policy"]
        changed.append("overlap_policy")
    if "jitter_seconds" in body and body["jitter_seconds"] is not None:
        j = body["jitter_seconds"]
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j <= 3600:
            raise validation("jitter_seconds", "The jitter_seconds must be an integer from 0 to 3600.")
        st["jitter_seconds"] = j
        changed.append("jitter_seconds")
    if "max_runs" in body and body["max_runs"] is not None:
        m = body["max_runs"]
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise validation("max_runs", "The max_runs must be an integer of at least 1.")
        fired = st.get("fires_count", 0)
        if st.get("max_runs") is None or m > fired:
            st["remaining_actions"] = max(m - fired, 0)
        st["max_runs"] = m
        changed.append("max_runs")
    for key in ("memo", "search_attributes"):
        if key in body:
            value = body[key] or {}
            if not isinstance(value, dict):
                raise validation(key, f"The {key} must be an object.")
            if key == "search_attributes":
                problem = search_attribute_problem(value, limits)
                if problem is not None:
                    raise validation(problem[0], problem[1])
            if key == "memo" and _json_size(value) > max_memo:
                raise ProtocolError(422, "memo_too_large", f"The memo exceeds the maximum allowed size of {max_memo} bytes.", limit=max_memo)
            st[key] = value
            changed.append(key)
    if body.get("note") is not None:
        if not isinstance(body["note"], str) or len(body["note"]) > 1000:
            raise validation("note", "The note must be a string of at most 1000 characters.")
        st["note"] = body["note"]
        changed.append("note")
    return changed


async def create(svc: ScheduleService, namespace: str, body: Any) -> tuple[int, dict[str, Any]]:
    if not isinstance(body, dict):
        raise validation("body", "The request body must be a JSON object with spec and action.")
    sid = body.get("schedule_id") or ulid()
    if not isinstance(sid, str) or len(sid) > 128 or not ID.match(sid):
        raise validation("schedule_id", "The schedule_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'.")
    svc._local(namespace, sid)
    if "spec" not in body:
        raise validation("spec", "The spec field is required.")
    spec = svc.validate_spec(body["spec"], sid)
    if "action" not in body:
        raise validation("action", "The action field is required.")
    now = svc.engine.clock.now()
    st: dict[str, Any] = {
        "namespace": namespace, "schedule_id": sid, "spec": spec, "action": _action(body["action"]),
        "overlap_policy": "skip", "jitter_seconds": 0, "max_runs": None, "remaining_actions": None,
        "memo": {}, "search_attributes": {}, "note": None, "status": "active", "paused_at": None, "deleted_at": None,
        "created_at": iso(now), "updated_at": iso(now), "next_fire_at": None, "next_occurrence": None, "last_fired_at": None,
        "fires_count": 0, "failures_count": 0, "recent_actions": [], "buffered_actions": [], "skipped_trigger_count": 0,
        "last_skip_reason": None, "last_skipped_at": None, "latest_workflow_instance_id": None, "event_seq": 0,
    }
    _options(body, st, svc.max_memo_bytes, svc.engine.limits)
    if body.get("paused") is not None and not isinstance(body["paused"], bool):
        raise validation("paused", "The paused field must be a boolean.")
    async with svc._lock((namespace, sid)):
        existing = [r for r in await svc.engine.journal.list_objects(KIND, namespace) if r.name == sid]
        if existing:
            raise ProtocolError(409, "schedule_already_exists", f"Schedule [{sid}] already exists in namespace [{namespace}].", schedule_id=sid)
        svc._plan_next(st, now)
        events: list[tuple[str, dict[str, Any]]] = [("ScheduleCreated", {"spec": spec, "action": st["action"], "overlap_policy": st["overlap_policy"]})]
        if body.get("paused"):
            st.update(status="paused", paused_at=iso(now), next_fire_at=None, next_occurrence=None)
            events.append(("SchedulePaused", {"note": st["note"]}))
        await svc._commit(st, events)
    return 201, {"schedule_id": sid, "outcome": "created"}


def view(st: dict[str, Any], *, brief: bool = False) -> dict[str, Any]:
    info = {
        "next_fire": iso_or_none(st.get("next_fire_at")), "last_fire": st.get("last_fired_at"),
        "fires_count": st.get("fires_count", 0), "failures_count": st.get("failures_count", 0),
        "recent_actions": st.get("recent_actions", []), "buffered_actions": st.get("buffered_actions", []),
        "skipped_trigger_count": st.get("skipped_trigger_count", 0), "last_skip_reason": st.get("last_skip_reason"),
        "last_skipped_at": st.get("last_skipped_at"),
    }
    out = {
        "schedule_id": st["schedule_id"], "namespace": st["namespace"], "workflow_type": st["action"]["workflow_type"],
        "status": st["status"], "paused": st["status"] == "paused", "note": st.get("note"),
        "spec": st["spec"], "action": st["action"], "overlap_policy": st["overlap_policy"],
        "state": {"status": st["status"], "paused": st["status"] == "paused", "note": st.get("note")},
        "info": info, "memo": st.get("memo") or {}, "search_attributes": st.get("search_attributes") or {},
        "created_at": st["created_at"], "updated_at": st["updated_at"],
        "jitter_seconds": st.get("jitter_seconds", 0), "max_runs": st.get("max_runs"), "remaining_actions": st.get("remaining_actions"),
        "latest_workflow_instance_id": st.get("latest_workflow_instance_id"),
        "fires_count": info["fires_count"], "failures_count": info["failures_count"],
        "next_fire_at": info["next_fire"], "last_fired_at": st.get("last_fired_at"), "paused_at": st.get("paused_at"),
        "next_fire": info["next_fire"], "last_fire": st.get("last_fired_at"),
    }
    return out


def iso_or_none(value: Any) -> str | None:
    return iso(value) if isinstance(value, (int, float)) else None


async def describe(svc: ScheduleService, namespace: str, sid: str) -> dict[str, Any]:
    return view(await svc.load(namespace, sid))


async def list_(svc: ScheduleService, namespace: str, q: dict[str, str]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    if (q.get("query") or "").strip():
        raise ProtocolError(
            422, "unsupported_schedule_list_filter", "The query filter is not supported for schedules; filter by status or workflow_type.",
            field="query", errors={"query": ["Not supported."]}, validation_errors={"query": ["Not supported."]},
        )
    status = q.get("status") or None
    if status is not None and status not in ("active", "paused"):
        errors["status"] = ["The status filter must be active or paused."]
    size = page_tokens.page_size(q, errors)
    if errors:
        msg = next(iter(errors.values()))[0]
        raise ProtocolError(422, "validation_failed", msg, errors=errors, validation_errors=errors, field=next(iter(errors)))
    wtype = q.get("workflow_type") or None
    fingerprint = page_tokens.fingerprint(namespace, status, wtype)
    after = _read_token(q.get("next_page_token"), namespace, fingerprint)
    rows = [r.body for r in await svc.engine.journal.list_objects(KIND, namespace)]
    rows = [
        st for st in rows
        if st.get("status") != "deleted" and (status is None or st["status"] == status)
        and (wtype is None or st["action"]["workflow_type"] == wtype)
    ]
    rows.sort(key=lambda st: st["schedule_id"])
    rows.sort(key=lambda st: st["created_at"], reverse=True)
    if after is not None:  # created_at descending, then schedule_id ascending
        rows = [st for st in rows if st["created_at"] < after[0] or (st["created_at"] == after[0] and st["schedule_id"] > after[1])]
    page, more = rows[:size], len(rows) > size
    token = None
    if more:
        token = page_tokens.encode({"c": page[-1]["created_at"], "s": page[-1]["schedule_id"], "n": namespace, "f": fingerprint})
    return {"namespace": namespace, "schedules": [view(st) for st in page], "schedule_count": len(page), "next_page_token": token}


def _read_token(token: Any, namespace: str, fingerprint: str) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        data = json.loads(page_tokens.decode_raw(token))
        position = (str(data["c"]), str(data["s"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ProtocolError(400, "malformed_schedule_page_token", "The next_page_token is malformed; start again without it.") from None
    if data.get("n") != namespace:
        raise ProtocolError(403, "schedule_page_token_namespace_mismatch", "The next_page_token belongs to another namespace.")
    if data.get("f") != fingerprint:
        raise ProtocolError(409, "schedule_page_token_filter_mismatch", "The next_page_token was issued for other filters.")
    return position


async def _change(svc: ScheduleService, namespace: str, sid: str, fn: Any) -> Any:
    async with svc._lock((namespace, sid)):
        before = await svc.load(namespace, sid)
        st = copy.deepcopy(before)
        events: list[tuple[str, dict[str, Any]]] = []
        answer = await fn(st, events, svc.engine.clock.now())
        if events or st != before:  # a buffered fire changes the state without an audit event
            await svc._commit(st, events)
        return answer


async def update(svc: ScheduleService, namespace: str, sid: str, body: Any) -> dict[str, Any]:
    await svc.load(namespace, sid)  # 404 before validation
    if not isinstance(body, dict):
        raise validation("body", "The request body must be a JSON object.")

    async def apply(st: dict[str, Any], events: list[Any], now: float) -> dict[str, Any]:
        changed = []
        if body.get("spec") is not None:
            st["spec"] = svc.validate_spec(body["spec"], sid)
            changed.append("spec")
        if body.get("action") is not None:
            st["action"] = _action(body["action"], st["action"])
            changed.append("action")
        changed += _options(body, st, svc.max_memo_bytes, svc.engine.limits)
        if st["status"] == "active":
            svc._plan_next(st, now)
        events.append(("ScheduleUpdated", {"changed_fields": changed, "spec": st["spec"], "action": st["action"],
                                           "overlap_policy": st["overlap_policy"], "next_fire_at": iso_or_none(st.get("next_fire_at"))}))
        return {"schedule_id": sid, "outcome": "updated"}

    return await _change(svc, namespace, sid, apply)


async def delete(svc: ScheduleService, namespace: str, sid: str) -> dict[str, Any]:
    async def apply(st: dict[str, Any], events: list[Any], now: float) -> dict[str, Any]:
        st.update(status="deleted", deleted_at=iso(now), next_fire_at=None, next_occurrence=None)
        events.append(("ScheduleDeleted", {"reason": "deleted"}))
        return {"schedule_id": sid, "outcome": "deleted"}

    return await _change(svc, namespace, sid, apply)


async def pause(svc: ScheduleService, namespace: str, sid: str, body: Any, paused: bool) -> dict[str, Any]:
    note = body.get("note") if isinstance(body, dict) else None
    if note is not None and (not isinstance(note, str) or len(note) > 1000):
        raise validation("note", "The note must be a string of at most 1000 characters.")

    async def apply(st: dict[str, Any], events: list[Any], now: float) -> dict[str, Any]:
        if note is not None:
            st["note"] = note
        if paused:
            st.update(status="paused", paused_at=iso(now), next_fire_at=None, next_occurrence=None)
            events.append(("SchedulePaused", {"note": st.get("note")}))
        elif st["status"] == "paused":
            st.update(status="active", paused_at=None)
            svc._plan_next(st, now)  # missed fires are not replayed: backfill them
            events.append(("ScheduleResumed", {"note": st.get("note"), "next_fire_at": iso_or_none(st.get("next_fire_at"))}))
        elif note is not None:
            events.append(("ScheduleUpdated", {"changed_fields": ["note"]}))
        return {"schedule_id": sid, "outcome": "paused" if paused else "resumed", "paused": st["status"] == "paused",
                "note": st.get("note"), "paused_at": st.get("paused_at")}

    return await _change(svc, namespace, sid, apply)


def _policy(body: Any) -> str | None:
    policy = body.get("overlap_policy") if isinstance(body, dict) else None
    if policy is not None and policy not in OVERLAP_POLICIES:
        raise validation("overlap_policy", f"The overlap_policy must be one of {', '.join(OVERLAP_POLICIES)}.")
    return policy


async def trigger(svc: ScheduleService, namespace: str, sid: str, body: Any) -> dict[str, Any]:
    policy = _policy(body)

    async def apply(st: dict[str, Any], events: list[Any], now: float) -> dict[str, Any]:
        outcome = await svc._fire(st, now, policy or st["overlap_policy"], events, now)
        return {"schedule_id": sid, "workflow_id": None, "run_id": None, "reason": None, **outcome}

    return await _change(svc, namespace, sid, apply)


def _time(body: dict[str, Any], key: str) -> float:
    raw = body.get(key)
    if not isinstance(raw, str):
        raise validation(key, f"The {key} field is required (an ISO-8601 date-time).")
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise validation(key, f"The {key} field must be an ISO-8601 date-time.") from None
    if when.tzinfo is None:
        raise validation(key, f"The {key} field needs a time zone (e.g. 2026-04-20T00:00:00Z).")
    return when.timestamp()


async def backfill(svc: ScheduleService, namespace: str, sid: str, body: Any) -> dict[str, Any]:
    await svc.load(namespace, sid)
    if not isinstance(body, dict):
        raise validation("body", "The request body must be a JSON object with start_time and end_time.")
    start, end = _time(body, "start_time"), _time(body, "end_time")
    if end <= start:
        raise ProtocolError(422, "invalid_time_range", "end_time must be after start_time.")
    policy = _policy(body)

    async def apply(st: dict[str, Any], events: list[Any], now: float) -> dict[str, Any]:
        from actors.schedule_spec import occurrences, parse_spec

        results = []
        chosen = policy or st["overlap_policy"]
        if chosen in ("buffer_one", "buffer_all"):
            chosen = "allow_all"  # buffers act as allow_all during a backfill (§6.9)
        for t in occurrences(parse_spec(st["spec"]), start, end):
            if st.get("remaining_actions") == 0:
                break
            outcome = await svc._fire(st, t, chosen, events, now, backfill=True)
            item = {"fire_time": datetime.fromtimestamp(t, UTC).isoformat(), "outcome": outcome["outcome"]}
            if outcome["outcome"] == "triggered":
                item.update(outcome="started", workflow_id=outcome["workflow_id"], run_id=outcome["run_id"])
            elif outcome.get("reason"):
                item["reason"] = outcome["reason"]
            results.append(item)
        return {"schedule_id": sid, "outcome": "backfill_started", "fires_attempted": len(results), "results": results}

    return await _change(svc, namespace, sid, apply)


async def history(svc: ScheduleService, namespace: str, sid: str, q: dict[str, str]) -> dict[str, Any]:
    try:
        limit = int(q.get("limit") or 100)
    except ValueError:
        limit = 100
    limit = 100 if limit <= 0 else min(limit, 500)
    after_raw = q.get("after_sequence")
    after = 0
    if after_raw not in (None, ""):
        if not str(after_raw).isdigit():
            raise ProtocolError(422, "invalid_after_sequence", "after_sequence must be a non-negative integer.")
        after = int(str(after_raw))
    svc._local(namespace, sid)
    bodies = await svc.engine.journal.read_records(f"schedule:{namespace}:{sid}")
    if not bodies:
        raise ProtocolError(404, "schedule_not_found", f"Schedule [{sid}] not found in namespace [{namespace}].", schedule_id=sid)
    events = []
    for raw in bodies:
        rec = codec.loads(raw)
        if rec["h"] <= after:
            continue
        p = rec["p"]
        events.append({
            "id": f"{sid}-{rec['h']}", "sequence": rec["h"], "event_type": rec["t"], "payload": p,
            "workflow_instance_id": p.get("workflow_instance_id"), "workflow_run_id": p.get("workflow_run_id"),
            "recorded_at": iso(rec["at"]),
        })
    page, more = events[:limit], len(events) > limit
    return {"schedule_id": sid, "namespace": namespace, "events": page,
            "next_cursor": page[-1]["sequence"] if more and page else None, "has_more": more}
