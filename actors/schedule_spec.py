"""Schedule arithmetic (control-plane §6.1): when does a schedule fire?

Plain functions over plain data. Cron expressions are parsed and stepped by ``croniter``
(a maintained library; the standard 5-field dialect with lists, ranges, steps and
``@hourly``-style macros), evaluated in the schedule's IANA time zone via ``zoneinfo``.
Intervals are ISO-8601 durations counted from the Unix epoch plus an offset (months are
30 days, years 365), so they fire at the same instants on every node and after restarts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_UNITS = {"y": 365 * 86400, "mo": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "mi": 60, "s": 1}
MAX_BACKFILL_OCCURRENCES = 10_000


class SpecError(ValueError):
    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Spec:
    crons: tuple[str, ...]
    intervals: tuple[tuple[float, float], ...]  # (every, offset) seconds
    tz: str
    start_at: float | None = None  # no occurrence before this instant
    end_at: float | None = None  # nor after this one


def _bound(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise SpecError("invalid_schedule_spec", f"spec.{key}", f"The spec.{key} must be an ISO-8601 time with a zone, e.g. 2026-05-01T00:00:00Z.")
    return when.timestamp()


def duration_seconds(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    m = _DURATION.match(text.strip().upper())
    if m is None:
        return None
    return sum(float(v) * _UNITS[k] for k, v in m.groupdict().items() if v)


def parse_spec(raw: Any) -> Spec:
    """Validate a spec object; raises SpecError naming the field to fix."""
    if not isinstance(raw, dict):
        raise SpecError("invalid_schedule_spec", "spec", "The spec must be an object with cron_expressions and/or intervals.")
    tz = raw.get("timezone") or "UTC"
    if not isinstance(tz, str) or len(tz) > 64:
        raise SpecError("invalid_schedule_spec", "spec.timezone", "The timezone must be an IANA name such as Europe/Paris.")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError("invalid_timezone", "spec.timezone", f"Unknown time zone [{tz}]; use an IANA name such as Europe/Paris.") from None
    crons = raw.get("cron_expressions") or []
    intervals = raw.get("intervals") or []
    if not isinstance(crons, list) or not all(isinstance(c, str) for c in crons):
        raise SpecError("invalid_schedule_spec", "spec.cron_expressions", "The cron_expressions field must be a list of strings.")
    if not isinstance(intervals, list):
        raise SpecError("invalid_schedule_spec", "spec.intervals", "The intervals field must be a list of {every, offset?} objects.")
    if not crons and not intervals:
        raise SpecError("invalid_schedule_spec", "spec", "A schedule needs at least one cron expression or interval.")
    for i, expr in enumerate(crons):
        if len(expr.split()) not in (1, 5) or not croniter.is_valid(expr) or (len(expr.split()) == 1 and not expr.startswith("@")):
            raise SpecError(
                "invalid_cron_expression", "spec.cron_expressions",
                f"Cron expression #{i + 1} [{expr}] is not valid: use 5 fields (minute hour day month weekday) or a macro like @hourly.",
            )
    parsed: list[tuple[float, float]] = []
    for i, item in enumerate(intervals):
        if not isinstance(item, dict):
            raise SpecError("invalid_schedule_spec", f"spec.intervals.{i}", "Each interval must be an object {every, offset?}.")
        every = duration_seconds(item.get("every"))
        if every is None or every <= 0 or len(str(item.get("every"))) > 64:
            raise SpecError(
                "invalid_schedule_spec", f"spec.intervals.{i}.every",
                f"Interval #{i + 1} needs a positive ISO-8601 duration in every (e.g. PT30M, P1D), not {item.get('every')!r}.",
            )
        offset = 0.0
        if item.get("offset") is not None:
            off = duration_seconds(item.get("offset"))
            if off is None:
                raise SpecError("invalid_schedule_spec", f"spec.intervals.{i}.offset", "The offset must be an ISO-8601 duration.")
            offset = off
        parsed.append((every, offset))
    start_at, end_at = _bound(raw, "start_at"), _bound(raw, "end_at")
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise SpecError("invalid_schedule_spec", "spec.end_at", "The spec.end_at must be after spec.start_at.")
    return Spec(tuple(crons), tuple(parsed), tz, start_at, end_at)


def next_fire(spec: Spec, after: float) -> float | None:
    """The earliest occurrence strictly after ``after`` (epoch seconds), over every rule,
    within the spec's start/end bounds; None once the end has passed."""
    if spec.start_at is not None and after < spec.start_at:
        after = spec.start_at - 1e-6
    zone = ZoneInfo(spec.tz)
    start = datetime.fromtimestamp(after, UTC).astimezone(zone)
    candidates = [croniter(expr, start).get_next(float) for expr in spec.crons]
    for every, offset in spec.intervals:
        k = (after - offset) // every + 1
        candidates.append(offset + k * every)
    found = min(candidates) if candidates else None
    if found is not None and spec.end_at is not None and found > spec.end_at:
        return None
    return found


def previous_fire(spec: Spec, at: float) -> float | None:
    """The latest occurrence at or before ``at`` (the catch-up fire after downtime)."""
    if spec.end_at is not None and at > spec.end_at:
        at = spec.end_at
    zone = ZoneInfo(spec.tz)
    start = datetime.fromtimestamp(at + 1e-3, UTC).astimezone(zone)
    candidates = [croniter(expr, start).get_prev(float) for expr in spec.crons]
    for every, offset in spec.intervals:
        candidates.append(offset + ((at - offset) // every) * every)
    found = [c for c in candidates if c <= at and (spec.start_at is None or c >= spec.start_at)]
    return max(found) if found else None


def occurrences(spec: Spec, start: float, end: float) -> list[float]:
    """Every occurrence t with start <= t < end, in order (for backfill)."""
    out: list[float] = []
    t = start - 1e-6
    while len(out) < MAX_BACKFILL_OCCURRENCES:
        nxt = next_fire(spec, t)
        if nxt is None or nxt >= end:
            break
        if nxt >= start:
            out.append(nxt)
        t = nxt
    return out
