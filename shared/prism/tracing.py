"""OpenTelemetry tracing: spans around decode, encode, fuse, search (and rerank), exported over
OTLP/HTTP when an endpoint is set, free otherwise.

``setup_tracing(service)`` installs a tracer provider only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; without it the OpenTelemetry API hands out no-op
spans, so the instrumented code costs a function call.  The trace context crosses gRPC in the
``traceparent`` metadata (W3C Trace Context): clients inject it, the shared server interceptor
extracts it, so one search is one trace across the gateway and the encoders.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

_lock = threading.Lock()
_configured: set[str] = set()

TRACER_NAME = "prism"


def endpoint_configured() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service: str, *, exporter: Any = None) -> bool:
    """Install the tracer provider for this process once; returns whether spans are exported.

    ``exporter`` (a SpanExporter) is for tests and tools; otherwise OTLP/HTTP to the configured
    endpoint, batched off the request path.
    """
    with _lock:
        if _configured:
            return True
        if exporter is None and not endpoint_configured():
            return False
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        name = os.environ.get("OTEL_SERVICE_NAME", service)
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _configured.add(service)
        return True


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span named ``prism.<name>`` with these attributes (None values dropped)."""
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(f"prism.{name}") as s:
        for k, v in attributes.items():
            if v is not None:
                s.set_attribute(f"prism.{k}", v)
        yield s


def inject(carrier: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The current trace context as ``traceparent``/``tracestate`` headers (empty without a span)."""
    out: dict[str, str] = dict(carrier or {})
    propagate.inject(out)
    return out


@contextmanager
def extracted(headers: Mapping[str, str]) -> Iterator[None]:
    """Run the block in the trace context that ``headers`` carry (gRPC metadata, Celery headers)."""
    token = otel_context.attach(propagate.extract(dict(headers)))
    try:
        yield
    finally:
        otel_context.detach(token)
