"""What a log line is about: request id, namespace, workflow id, run id.

Set where that is known (the API for a request, a run's actor for its own task) in a context
variable, which trio copies into the tasks a task starts; the JSON log formatter
(``ops.log_format``) adds the fields to every line logged within. Plain text logs ignore it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("dw_log_context", default=None)


def bind(**fields: Any) -> None:
    """Add fields to the current task's log context (None values are left out)."""
    current = CONTEXT.get() or {}
    CONTEXT.set({**current, **{k: v for k, v in fields.items() if v is not None}})


def current() -> dict[str, Any]:
    return CONTEXT.get() or {}


def enter(**fields: Any) -> Token[dict[str, Any] | None]:
    """Replace the current task's context with ``fields`` until ``leave`` (a request on a
    keep-alive connection must not inherit the one before it)."""
    return CONTEXT.set({k: v for k, v in fields.items() if v is not None})


def leave(token: Token[dict[str, Any] | None]) -> None:
    CONTEXT.reset(token)
