"""Turning tracing on: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, spans go to that collector over OTLP/HTTP through
the OpenTelemetry SDK's batch processor (the other ``OTEL_*`` variables apply as the SDK reads
them: service name, headers, sampler). Without them nothing is set up and no span is made.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from actors import tracing

log = logging.getLogger("dw.tracing")


def wanted() -> bool:
    if (os.environ.get("OTEL_SDK_DISABLED") or "").lower() == "true":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(node_id: str) -> Any:
    """Configure the exporter when the environment asks for it: its provider (``shutdown()``
    flushes the spans not yet sent), or None when tracing stays off."""
    if not wanted():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = _provider(node_id)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use(provider)
    log.info("tracing on: spans go to %s", os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
             or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return provider


def _provider(node_id: str) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "dw-server", "service.instance.id": node_id})
    return TracerProvider(resource=resource)


def use(provider: Any) -> None:
    """Trace through ``provider`` (tests pass one with an in-memory exporter)."""
    tracing.TRACER = provider.get_tracer("dw-server")


def in_memory(node_id: str = "test") -> Any:
    """A provider whose spans stay in memory (its exporter is returned): for tests."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = _provider(node_id)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use(provider)
    return exporter


def stop() -> None:
    tracing.TRACER = None
