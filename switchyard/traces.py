"""Traces: OpenTelemetry spans for route, hold, call and settle, exported over OTLP/HTTP when asked for.

:func:`span` opens a span on the global tracer. Until :func:`configure` installs an SDK tracer provider the
API's no-op tracer answers, so a span costs a function call and nothing is exported. :func:`configure` installs
one only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; the exporter
reads the endpoint, headers and timeout from the standard ``OTEL_*`` variables itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider, Span

TRACER_NAME = "switchyard"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
AttributeValue = str | int | float | bool
_configured: list[str] = []
# A proxy until a provider is installed (then it delegates to it): a no-op span until then, made once here.
_tracer = trace.get_tracer(TRACER_NAME)


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when an OTLP endpoint is set: spans are then recorded and exported."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in ENDPOINT_VARIABLES)


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install a tracer provider exporting over OTLP/HTTP in batches, once per process, when an endpoint is set.

    ``service`` names this process in the traces (``switchyard-worker``, ``switchyard-api``). Returns whether
    spans are exported."""
    if _configured:
        return True
    if not enabled(environ):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    env = os.environ if environ is None else environ
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured.append(service)
    return True


def flush(timeout_ms: int = 5000) -> None:
    """Send the spans still batched (a process about to exit)."""
    provider = trace.get_tracer_provider()
    force = getattr(provider, "force_flush", None)
    if callable(force):
        force(timeout_ms)


@contextmanager
def span(name: str, **attributes: AttributeValue | None) -> Iterator[Span]:
    """A span named ``name`` under the current one, with ``attributes`` (None values left out); an exception
    leaving the block is recorded on it and marks it as an error."""
    if isinstance(trace.get_tracer_provider(), ProxyTracerProvider):  # no provider installed: nothing to record
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(name) as current:
        if current.is_recording():
            current.set_attributes({f"switchyard.{k}": v for k, v in attributes.items() if v is not None})
        yield current


def annotate(current: Span, **attributes: AttributeValue | None) -> None:
    """Add ``attributes`` to ``current`` (results known only at the end: tokens, cost)."""
    if current.is_recording():
        current.set_attributes({f"switchyard.{k}": v for k, v in attributes.items() if v is not None})
