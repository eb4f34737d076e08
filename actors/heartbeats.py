"""Activity heartbeat progress (extended spec §14): bounded, kept durable, never replayed.

A heartbeat's progress (``message``, ``current``, ``total``, ``unit``, ``details``) is what an
operator looks at for a running activity, so it outlives a restart of the server: it is written to
the journal as an internal record (never as history). A chatty activity is compacted: at most one
record per attempt every ``JOURNAL_INTERVAL`` seconds (the newest progress is kept in memory in
between, and a crash loses at most that much), and each progress is bounded in size.
"""

from __future__ import annotations

import json
import math
from typing import Any

JOURNAL_INTERVAL = 10.0  # seconds between two journaled heartbeats of one attempt
MAX_MESSAGE = 280
MAX_UNIT = 64
MAX_DETAIL_BYTES = 64 * 1024  # the SDK's DETAIL_BYTES


def normalize(progress: dict[str, Any]) -> dict[str, Any]:
    """The stored form: trimmed, bounded; details over the limit are replaced by their size."""
    out: dict[str, Any] = {}
    message = progress.get("message")
    if isinstance(message, str) and message.strip():
        out["message"] = message.strip()[:MAX_MESSAGE]
    number = False
    for key in ("current", "total"):
        value = progress.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            out[key] = value
            number = True
    unit = progress.get("unit")
    if number and isinstance(unit, str) and unit.strip():
        out["unit"] = unit.strip()[:MAX_UNIT]
    details = progress.get("details")
    if isinstance(details, dict):
        size = len(json.dumps(details, separators=(",", ":"), ensure_ascii=False).encode())
        out["details"] = details if size <= MAX_DETAIL_BYTES else {"_truncated": True, "size_bytes": size}
    return out


def due(last_journaled: float | None, now: float) -> bool:
    return last_journaled is None or now - last_journaled >= JOURNAL_INTERVAL
