"""Request bodies as JSON, refused at the edge when the journal could not keep them faithfully.

Everything a client sends may end up in a run's journal (CBOR) and be read back by every
later load of that run, so what cannot be read back must never be accepted: nesting deeper
than ``max_depth`` (the journal's decoder stops at 400 levels; we stay far below, leaving
room for the record around the payload) and numbers that are not finite (``1e400`` parses
as infinity, which JSON cannot carry back to a client). Integers beyond 64 bits are fine
here (CBOR keeps them); the typed places that need 64 bits check it themselves.
"""

from __future__ import annotations

import json
import math
from typing import Any

from runtime.errors import ProtocolError

DEFAULT_MAX_DEPTH = 64


class _NotFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def depth(value: Any, limit: int) -> int:
    """The nesting depth of ``value`` (a scalar is 0), counting no further than ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        stack.extend((child, level) for child in children if isinstance(child, (dict, list)))
    return deepest


def too_deep(limit: int) -> ProtocolError:
    return ProtocolError(
        422, "payload_too_deep",
        f"The request body nests objects and arrays more than {limit} levels deep; flatten it or send it as an "
        "encoded payload (the SDK's codec envelope).",
        limit=limit,
    )


def parse(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The body's JSON value; ``ProtocolError`` (400 malformed, 422 too deep or not finite) otherwise."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NotFinite as exc:
        raise ProtocolError(
            422, "non_finite_number",
            f"The number {str(exc)[:40]} is too large to be stored; numbers must be finite (at most about 1.8e308).",
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        detail = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
        raise ProtocolError(400, "malformed_json", "Request bodies must contain valid JSON.", json_error=detail) from None
    # Cheap first: a body with fewer brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") > max_depth and depth(value, max_depth) > max_depth:
        raise too_deep(max_depth)
    return value
