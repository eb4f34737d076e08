"""OpenTelemetry spans, or nothing: the tracer is set only when tracing is configured
(``runtime.tracing.setup``), and until then every helper here costs a None check.

Trace carriers (extended spec §15.1) are checked here too: a client's ``observability_context``
is kept only when it has exactly the SDK's shape and limits; anything else is dropped, never
refused (telemetry must not break a business request).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SCHEMA = "durable-workflow.trace-context"
LIMITS = {"traceparent": 256, "tracestate": 512, "baggage": 2048}
MAX_BYTES = 4096
CAPABILITY = {
    "supported": True, "schema": SCHEMA, "version": 1,
    "dispatch_schema": "durable-workflow.queue-trace", "links_schema": "durable-workflow.trace-links",
    "max_context_bytes": MAX_BYTES, "max_links": 32, "max_links_bytes": 4096,
}

TRACER: Any = None  # an opentelemetry Tracer once configured


def carrier(value: Any) -> dict[str, Any] | None:
    """The client's trace carrier when it is well formed, else None."""
    if not isinstance(value, dict) or set(value) != {"schema", "version", "carrier"} or value.get("schema") != SCHEMA:
        return None
    if type(value.get("version")) is not int or value["version"] != 1:
        return None
    inner = value.get("carrier")
    if not isinstance(inner, dict) or "traceparent" not in inner or not set(inner) <= LIMITS.keys():
        return None
    if any(not isinstance(v, str) or len(v.encode()) > LIMITS[k] for k, v in inner.items()):
        return None
    if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_BYTES:
        return None
    return {"schema": SCHEMA, "version": 1, "carrier": dict(inner)}


def context_of(headers: dict[str, str]) -> Any:
    """The remote parent a W3C ``traceparent`` (and ``tracestate``) names, or None."""
    if TRACER is None or not headers.get("traceparent"):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(headers)


def current() -> Any:
    """The active trace context (carried with a message to the run's actor), or None."""
    if TRACER is None:
        return None
    from opentelemetry import context

    return context.get_current()


@contextmanager
def span(name: str, parent: Any = None, **attributes: Any) -> Iterator[Any]:
    """A span when tracing is on (child of ``parent`` or of the active one), else nothing."""
    if TRACER is None:
        yield None
        return
    with TRACER.start_as_current_span(name, context=parent, attributes={k: v for k, v in attributes.items() if v is not None}) as s:
        yield s


@contextmanager
def within(parent: Any) -> Iterator[None]:
    """Make ``parent`` (a context from ``current``) the active one, in this task, for a while."""
    if TRACER is None or parent is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(parent)
    try:
        yield
    finally:
        context.detach(token)


def inject(headers: dict[str, str]) -> None:
    """Add the active span's ``traceparent`` to headers going to another node."""
    if TRACER is None:
        return
    from opentelemetry.propagate import inject as _inject

    _inject(headers)
