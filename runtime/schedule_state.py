"""A schedule's state (control-plane §6.1) as one typed, immutable value.

Every change makes a new value (``dataclasses.replace``): the state the service serves and
fires from is never edited in place, so a change that fails to commit leaves nothing behind,
and "did anything change?" is a plain comparison. The journal keeps the state as the JSON body
of the schedule's object row; ``to_record`` and ``from_record`` are the only translation
between the two, and the stored keys are exactly those written before this type existed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_SEQUENCES = ("recent_actions", "buffered_actions")  # tuples here, lists in the stored record


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleState:
    """Field order is the stored record's key order. ``spec`` and ``action`` stay the protocol's
    own objects (echoed verbatim by describe); nested dicts are never mutated, only replaced."""

    namespace: str
    schedule_id: str
    spec: dict[str, Any]
    action: dict[str, Any]
    overlap_policy: str = "skip"
    jitter_seconds: int = 0
    max_runs: int | None = None
    remaining_actions: int | None = None  # None: unlimited; 0 deletes the schedule
    memo: dict[str, Any] = field(default_factory=dict)
    search_attributes: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    status: str = "active"  # active, paused or deleted
    paused_at: str | None = None
    deleted_at: str | None = None
    created_at: str
    updated_at: str
    next_fire_at: float | None = None  # the occurrence plus its jitter: when the ticker fires
    next_occurrence: float | None = None  # the spec's occurrence that fire stands for
    last_fired_at: str | None = None
    fires_count: int = 0
    failures_count: int = 0
    recent_actions: tuple[dict[str, Any], ...] = ()  # the last ten starts or failed starts
    buffered_actions: tuple[dict[str, Any], ...] = ()  # fires waiting for the running workflow to close
    skipped_trigger_count: int = 0
    last_skip_reason: str | None = None
    last_skipped_at: str | None = None
    latest_workflow_instance_id: str | None = None
    event_seq: int = 0  # sequence of the last audit event in the schedule's history stream

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ScheduleState:
        """The state from its stored form; keys a record lacks take their defaults."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.name in record:
                value = copy.deepcopy(record[item.name])  # the journal's object is not ours to share
                values[item.name] = tuple(value or ()) if item.name in _SEQUENCES else value
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        """The stored form: a JSON object with the same keys, in the same order, as always."""
        record: dict[str, Any] = {}
        for item in fields(self):
            value = copy.deepcopy(getattr(self, item.name))
            record[item.name] = list(value) if item.name in _SEQUENCES else value
        return record

    def is_due(self, now: float) -> bool:
        return self.next_fire_at is not None and self.next_fire_at <= now
