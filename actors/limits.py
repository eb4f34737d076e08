"""Structural limits on a run (control-plane §2.3 ``limits``/``structural_limits``).

Pure checks over a run's state and a completion's commands, so each limit is tested at its
boundary without a server: at the limit a completion is accepted, one past it is refused with
``422 structural_limit_exceeded`` naming the limit, the value it would reach and the
configured maximum — before anything of the completion is applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import CommandError
from .run_state import RunState


@dataclass(frozen=True)
class Limits:
    pending_activities: int = 2000
    pending_children: int = 2000
    pending_timers: int = 2000
    search_attributes: int = 100
    search_attribute_key_length: int = 128
    search_attribute_value_bytes: int = 2048
    operation_name_length: int = 256
    history_events: int = 50_000
    pending_signals: int = 5000
    parked_polls_per_queue: int = 1000
    stream_items: int = 10_000  # items a run's workflow streams hold together (extended spec §7.2)


DEFAULT = Limits()


def _exceeded(kind: str, current: int, limit: int, what: str) -> CommandError:
    return CommandError(
        422,
        "structural_limit_exceeded",
        f"This completion would leave {current} {what} open; the limit is {limit}.",
        extra={"limit_kind": kind, "current_value": current, "configured_limit": limit},
    )


def search_attribute_problem(attrs: dict[str, Any], limits: Limits) -> tuple[str, str] | None:
    """(field, message) for the first search-attribute limit ``attrs`` breaks, or None."""
    if len(attrs) > limits.search_attributes:
        return "search_attributes", f"At most {limits.search_attributes} search attributes are allowed, not {len(attrs)}."
    for key, value in attrs.items():
        if len(key.encode()) > limits.search_attribute_key_length:
            return f"search_attributes.{key[:40]}", f"Search attribute names are at most {limits.search_attribute_key_length} characters."
        items = value if isinstance(value, list) else [value]
        size = max((len(i.encode()) if isinstance(i, str) else len(json.dumps(i).encode()) for i in items), default=0)
        if size > limits.search_attribute_value_bytes:
            return f"search_attributes.{key}", (
                f"The value of search attribute {key} is {size} bytes; the limit is {limits.search_attribute_value_bytes}."
            )
    return None


def check_history(state: RunState, new_events: int, limits: Limits) -> None:
    """A run's history is bounded (``DW_MAX_HISTORY_EVENTS``): past it, continue as new."""
    total = len(state.events) + new_events
    if total > limits.history_events:
        raise CommandError(
            422, "structural_limit_exceeded",
            f"This completion would grow the history to {total} events; the limit is {limits.history_events}. "
            "Continue the workflow as new to start a fresh history.",
            extra={"limit_kind": "history_event_count", "current_value": total, "configured_limit": limits.history_events},
        )


def history_full(state: RunState, limits: Limits) -> bool:
    return len(state.events) >= limits.history_events


def signals_full(state: RunState, limits: Limits) -> bool:
    """Signals received that no completed workflow task has seen yet are bounded."""
    return len(state.unseen_signals) >= limits.pending_signals


def check_completion(state: RunState, commands: list[dict[str, Any]], limits: Limits) -> None:
    activities = sum(1 for a in state.activities.values() if a.status != "closed")
    children = len(state.children)
    timers = sum(1 for t in state.timers.values() if t.kind == "user")
    merged = dict(state.search_attributes)
    for cmd in commands:
        ctype = cmd["type"]
        if ctype == "schedule_activity":
            activities += 1
        elif ctype == "start_child_workflow":
            children += 1
        elif ctype == "start_timer":
            timers += 1
        elif ctype == "upsert_search_attributes":
            for key, value in cmd["attributes"].items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
    if activities > limits.pending_activities:
        raise _exceeded("pending_activity_count", activities, limits.pending_activities, "activities")
    if children > limits.pending_children:
        raise _exceeded("pending_child_count", children, limits.pending_children, "child workflows")
    if timers > limits.pending_timers:
        raise _exceeded("pending_timer_count", timers, limits.pending_timers, "timers")
    problem = search_attribute_problem(merged, limits)
    if problem is not None:
        raise CommandError(
            422, "structural_limit_exceeded", problem[1],
            extra={"limit_kind": "search_attributes", "configured_limit": limits.search_attributes},
        )
