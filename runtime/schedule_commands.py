"""The schedule operations of control-plane §6.2-6.10, on top of ``ScheduleService``.

Each operation loads the schedule on its owner, derives a new ``ScheduleState`` from it, and
commits that with its audit events before answering; the service installs the new state only
once it is durable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from actors.limits import DEFAULT as DEFAULT_LIMITS
from actors.limits import Limits, search_attribute_problem
from actors.records import from_stored
from persistence import avro, codec
from persistence.ids import iso, ulid

from . import page_tokens
from .errors import ProtocolError, validation
from .schedule_state import ScheduleState
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


def _options(
    body: dict[str, Any], schedule: ScheduleState, max_memo: int, limits: Limits = DEFAULT_LIMITS
) -> tuple[ScheduleState, list[str]]:
    """Apply the optional fields common to create and update; returns the new state and the names changed."""
    changes: dict[str, Any] = {}
    if "overlap_policy" in body and body["overlap_policy"] is not None:
        if body["overlap_policy"] not in OVERLAP_POLICIES:
            raise validation("overlap_policy", f"The overlap_policy must be one of {', '.join(OVERLAP_POLICIES)}.")
        changes["overlap_policy"] = body["overlap_policy"]
    if "jitter_seconds" in body and body["jitter_seconds"] is not None:
        jitter = body["jitter_seconds"]
        if isinstance(jitter, bool) or not isinstance(jitter, int) or not 0 <= jitter <= 3600:
            raise validation("jitter_seconds", "The jitter_seconds must be an integer from 0 to 3600.")
        changes["jitter_seconds"] = jitter
    if "max_runs" in body and body["max_runs"] is not None:
        max_runs = body["max_runs"]
        if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
            raise validation("max_runs", "The max_runs must be an integer of at least 1.")
        if schedule.max_runs is None or max_runs > schedule.fires_count:
            changes["remaining_actions"] = max(max_runs - schedule.fires_count, 0)
        changes["max_runs"] = max_runs
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
            changes[key] = value
    if body.get("note") is not None:
        if not isinstance(body["note"], str) or len(body["note"]) > 1000:
            raise validation("note", "The note must be a string of at most 1000 characters.")
        changes["note"] = body["note"]
    changed = [name for name in changes if name != "remaining_actions"]
    return replace(schedule, **changes), changed


async def create(svc: ScheduleService, namespace: str, body: Any) -> tuple[int, dict[str, Any]]:
    if not isinstance(body, dict):
        raise validation("body", "The request body must be a JSON object with spec and action.")
    schedule_id = body.get("schedule_id") or ulid()
    if not isinstance(schedule_id, str) or len(schedule_id) > 128 or not ID.match(schedule_id):
        raise validation("schedule_id", "The schedule_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'.")
    svc._local(namespace, schedule_id)
    if "spec" not in body:
        raise validation("spec", "The spec field is required.")
    spec = svc.validate_spec(body["spec"], schedule_id)
    if "action" not in body:
        raise validation("action", "The action field is required.")
    now = svc.engine.clock.now()
    schedule = ScheduleState(
        namespace=namespace, schedule_id=schedule_id, spec=spec, action=_action(body["action"]), created_at=iso(now), updated_at=iso(now)
    )
    schedule, _ = _options(body, schedule, svc.max_memo_bytes, svc.engine.limits)
    if body.get("paused") is not None and not isinstance(body["paused"], bool):
        raise validation("paused", "The paused field must be a boolean.")
    async with svc._lock((namespace, schedule_id)):
        existing = [r for r in await svc.engine.journal.list_objects(KIND, namespace) if r.name == schedule_id]
        if existing:
            raise ProtocolError(
                409, "schedule_already_exists", f"Schedule [{schedule_id}] already exists in namespace [{namespace}].", schedule_id=schedule_id
            )
        schedule = svc._plan_next(schedule, now)
        events: list[tuple[str, dict[str, Any]]] = [
            ("ScheduleCreated", {"spec": spec, "action": schedule.action, "overlap_policy": schedule.overlap_policy})
        ]
        if body.get("paused"):
            schedule = replace(schedule, status="paused", paused_at=iso(now), next_fire_at=None, next_occurrence=None)
            events.append(("SchedulePaused", {"note": schedule.note}))
        await svc._commit(schedule, events)
    return 201, {"schedule_id": schedule_id, "outcome": "created"}


def view(schedule: ScheduleState) -> dict[str, Any]:
    paused = schedule.status == "paused"
    next_fire_at = iso_or_none(schedule.next_fire_at)
    info = {
        "next_fire": next_fire_at, "last_fire": schedule.last_fired_at,
        "fires_count": schedule.fires_count, "failures_count": schedule.failures_count,
        "recent_actions": list(schedule.recent_actions), "buffered_actions": list(schedule.buffered_actions),
        "skipped_trigger_count": schedule.skipped_trigger_count, "last_skip_reason": schedule.last_skip_reason,
        "last_skipped_at": schedule.last_skipped_at,
    }
    return {
        "schedule_id": schedule.schedule_id, "namespace": schedule.namespace, "workflow_type": schedule.action["workflow_type"],
        "status": schedule.status, "paused": paused, "note": schedule.note,
        "spec": schedule.spec, "action": schedule.action, "overlap_policy": schedule.overlap_policy,
        "state": {"status": schedule.status, "paused": paused, "note": schedule.note},
        "info": info, "memo": schedule.memo or {}, "search_attributes": schedule.search_attributes or {},
        "created_at": schedule.created_at, "updated_at": schedule.updated_at,
        "jitter_seconds": schedule.jitter_seconds, "max_runs": schedule.max_runs, "remaining_actions": schedule.remaining_actions,
        "latest_workflow_instance_id": schedule.latest_workflow_instance_id,
        "fires_count": schedule.fires_count, "failures_count": schedule.failures_count,
        "next_fire_at": next_fire_at, "last_fired_at": schedule.last_fired_at, "paused_at": schedule.paused_at,
        "next_fire": next_fire_at, "last_fire": schedule.last_fired_at,
    }


def iso_or_none(value: Any) -> str | None:
    return iso(value) if isinstance(value, (int, float)) else None


async def describe(svc: ScheduleService, namespace: str, schedule_id: str) -> dict[str, Any]:
    return view(await svc.load(namespace, schedule_id))


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
        message = next(iter(errors.values()))[0]
        raise ProtocolError(422, "validation_failed", message, errors=errors, validation_errors=errors, field=next(iter(errors)))
    workflow_type = q.get("workflow_type") or None
    fingerprint = page_tokens.fingerprint(namespace, status, workflow_type)
    after = _read_token(q.get("next_page_token"), namespace, fingerprint)
    schedules = [ScheduleState.from_record(r.body) for r in await svc.engine.journal.list_objects(KIND, namespace)]
    schedules = [
        schedule for schedule in schedules
        if schedule.status != "deleted" and (status is None or schedule.status == status)
        and (workflow_type is None or schedule.action["workflow_type"] == workflow_type)
    ]
    schedules.sort(key=lambda schedule: schedule.schedule_id)
    schedules.sort(key=lambda schedule: schedule.created_at, reverse=True)
    if after is not None:  # created_at descending, then schedule_id ascending
        schedules = [
            schedule for schedule in schedules
            if schedule.created_at < after[0] or (schedule.created_at == after[0] and schedule.schedule_id > after[1])
        ]
    page, more = schedules[:size], len(schedules) > size
    token = None
    if more:
        token = page_tokens.encode({"c": page[-1].created_at, "s": page[-1].schedule_id, "n": namespace, "f": fingerprint})
    return {"namespace": namespace, "schedules": [view(schedule) for schedule in page], "schedule_count": len(page), "next_page_token": token}


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


Events = list[tuple[str, dict[str, Any]]]
Change = Callable[[ScheduleState, Events, float], Awaitable[tuple[ScheduleState, dict[str, Any]]]]


async def _change(svc: ScheduleService, namespace: str, schedule_id: str, change: Change) -> dict[str, Any]:
    """Run ``change`` on the schedule under its lock; commit its new state if it differs or it
    recorded events (a buffered fire changes the state without an audit event)."""
    async with svc._lock((namespace, schedule_id)):
        before = await svc.load(namespace, schedule_id)
        events: Events = []
        after, answer = await change(before, events, svc.engine.clock.now())
        if events or after != before:
            await svc._commit(after, events)
        return answer


async def update(svc: ScheduleService, namespace: str, schedule_id: str, body: Any) -> dict[str, Any]:
    await svc.load(namespace, schedule_id)  # 404 before validation
    if not isinstance(body, dict):
        raise validation("body", "The request body must be a JSON object.")

    async def apply(schedule: ScheduleState, events: Events, now: float) -> tuple[ScheduleState, dict[str, Any]]:
        changed = []
        if body.get("spec") is not None:
            schedule = replace(schedule, spec=svc.validate_spec(body["spec"], schedule_id))
            changed.append("spec")
        if body.get("action") is not None:
            schedule = replace(schedule, action=_action(body["action"], schedule.action))
            changed.append("action")
        schedule, options = _options(body, schedule, svc.max_memo_bytes, svc.engine.limits)
        changed += options
        if schedule.status == "active":
            schedule = svc._plan_next(schedule, now)
        events.append(("ScheduleUpdated", {"changed_fields": changed, "spec": schedule.spec, "action": schedule.action,
                                           "overlap_policy": schedule.overlap_policy, "next_fire_at": iso_or_none(schedule.next_fire_at)}))
        return schedule, {"schedule_id": schedule_id, "outcome": "updated"}

    return await _change(svc, namespace, schedule_id, apply)


async def delete(svc: ScheduleService, namespace: str, schedule_id: str) -> dict[str, Any]:
    async def apply(schedule: ScheduleState, events: Events, now: float) -> tuple[ScheduleState, dict[str, Any]]:
        events.append(("ScheduleDeleted", {"reason": "deleted"}))
        deleted = replace(schedule, status="deleted", deleted_at=iso(now), next_fire_at=None, next_occurrence=None)
        return deleted, {"schedule_id": schedule_id, "outcome": "deleted"}

    return await _change(svc, namespace, schedule_id, apply)


async def pause(svc: ScheduleService, namespace: str, schedule_id: str, body: Any, paused: bool) -> dict[str, Any]:
    note = body.get("note") if isinstance(body, dict) else None
    if note is not None and (not isinstance(note, str) or len(note) > 1000):
        raise validation("note", "The note must be a string of at most 1000 characters.")

    async def apply(schedule: ScheduleState, events: Events, now: float) -> tuple[ScheduleState, dict[str, Any]]:
        if note is not None:
            schedule = replace(schedule, note=note)
        if paused:
            schedule = replace(schedule, status="paused", paused_at=iso(now), next_fire_at=None, next_occurrence=None)
            events.append(("SchedulePaused", {"note": schedule.note}))
        elif schedule.status == "paused":
            schedule = svc._plan_next(replace(schedule, status="active", paused_at=None), now)  # missed fires are not replayed: backfill them
            events.append(("ScheduleResumed", {"note": schedule.note, "next_fire_at": iso_or_none(schedule.next_fire_at)}))
        elif note is not None:
            events.append(("ScheduleUpdated", {"changed_fields": ["note"]}))
        return schedule, {"schedule_id": schedule_id, "outcome": "paused" if paused else "resumed",
                          "paused": schedule.status == "paused", "note": schedule.note, "paused_at": schedule.paused_at}

    return await _change(svc, namespace, schedule_id, apply)


def _policy(body: Any) -> str | None:
    policy = body.get("overlap_policy") if isinstance(body, dict) else None
    if policy is not None and policy not in OVERLAP_POLICIES:
        raise validation("overlap_policy", f"The overlap_policy must be one of {', '.join(OVERLAP_POLICIES)}.")
    return policy


async def trigger(svc: ScheduleService, namespace: str, schedule_id: str, body: Any) -> dict[str, Any]:
    policy = _policy(body)

    async def apply(schedule: ScheduleState, events: Events, now: float) -> tuple[ScheduleState, dict[str, Any]]:
        schedule, outcome = await svc._fire(schedule, now, policy or schedule.overlap_policy, events, now)
        return schedule, {"schedule_id": schedule_id, "workflow_id": None, "run_id": None, "reason": None, **outcome}

    return await _change(svc, namespace, schedule_id, apply)


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


async def backfill(svc: ScheduleService, namespace: str, schedule_id: str, body: Any) -> dict[str, Any]:
    await svc.load(namespace, schedule_id)
    if not isinstance(body, dict):
        raise validation("body", "The request body must be a JSON object with start_time and end_time.")
    start, end = _time(body, "start_time"), _time(body, "end_time")
    if end <= start:
        raise ProtocolError(422, "invalid_time_range", "end_time must be after start_time.")
    policy = _policy(body)

    async def apply(schedule: ScheduleState, events: Events, now: float) -> tuple[ScheduleState, dict[str, Any]]:
        from actors.schedule_spec import occurrences, parse_spec

        results = []
        chosen = policy or schedule.overlap_policy
        if chosen in ("buffer_one", "buffer_all"):
            chosen = "allow_all"  # buffers act as allow_all during a backfill (§6.9)
        for occurrence in occurrences(parse_spec(schedule.spec), start, end):
            if schedule.remaining_actions == 0:
                break
            schedule, outcome = await svc._fire(schedule, occurrence, chosen, events, now, backfill=True)
            item = {"fire_time": datetime.fromtimestamp(occurrence, UTC).isoformat(), "outcome": outcome["outcome"]}
            if outcome["outcome"] == "triggered":
                item.update(outcome="started", workflow_id=outcome["workflow_id"], run_id=outcome["run_id"])
            elif outcome.get("reason"):
                item["reason"] = outcome["reason"]
            results.append(item)
        return schedule, {"schedule_id": schedule_id, "outcome": "backfill_started", "fires_attempted": len(results), "results": results}

    return await _change(svc, namespace, schedule_id, apply)


async def history(svc: ScheduleService, namespace: str, schedule_id: str, q: dict[str, str]) -> dict[str, Any]:
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
    svc._local(namespace, schedule_id)
    bodies = await svc.engine.journal.read_records(f"schedule:{namespace}:{schedule_id}")
    if not bodies:
        raise ProtocolError(404, "schedule_not_found", f"Schedule [{schedule_id}] not found in namespace [{namespace}].", schedule_id=schedule_id)
    events = []
    for raw in bodies:
        record = from_stored(codec.loads(raw))
        sequence = record.sequence
        assert sequence is not None, "a schedule's audit stream holds history events only"
        if sequence <= after:
            continue
        payload = record.payload
        events.append({
            "id": f"{schedule_id}-{sequence}", "sequence": sequence, "event_type": record.kind, "payload": payload,
            "workflow_instance_id": payload.get("workflow_instance_id"), "workflow_run_id": payload.get("workflow_run_id"),
            "recorded_at": iso(record.at),
        })
    page, more = events[:limit], len(events) > limit
    return {"schedule_id": schedule_id, "namespace": namespace, "events": page,
            "next_cursor": page[-1]["sequence"] if more and page else None, "has_more": more}
