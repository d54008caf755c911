"""OpenTelemetry spans, when opentelemetry-api is installed (`pip install durablefuture[otel]`).

Spans: ``StartWorkflow:<type>`` in the client, ``RunWorkflow:<type>`` for each workflow task and
``RunActivity:<name>`` for each activity attempt. The client's trace context travels with the
start request (recorded in ``WorkflowStarted.headers``) and is copied onto every activity task,
so a whole workflow, across processes, is one trace. Without OpenTelemetry this is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["ENABLED", "inject", "span"]

try:  # pragma: no cover - depends on the optional extra
    from opentelemetry import context as _otel_context
    from opentelemetry import propagate as _otel_propagate
    from opentelemetry import trace as _otel_trace

    ENABLED = True
except ImportError:  # pragma: no cover
    ENABLED = False


def _configured() -> bool:
    """True once an application has installed a real tracer provider (not the default no-op)."""
    provider = _otel_trace.get_tracer_provider()
    return not isinstance(
        provider, _otel_trace.NoOpTracerProvider | _otel_trace.ProxyTracerProvider
    )


def inject() -> dict[str, str]:
    """The current trace context as string headers (empty without OpenTelemetry)."""
    if not ENABLED or not _configured():
        return {}
    carrier: dict[str, str] = {}
    _otel_propagate.inject(carrier)
    return carrier


_NO_SPAN = contextlib.nullcontext()


def span(
    name: str, parent: Mapping[str, str] | None = None, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[None]:
    """A span named ``name``, child of the context in ``parent`` headers (if any).

    Without a configured tracer provider this is one shared no-op context (nothing is built
    per call: it wraps every workflow task and activity attempt).
    """
    if not ENABLED or not _configured():
        return _NO_SPAN
    return _span(name, parent, attributes)


@contextlib.contextmanager
def _span(
    name: str, parent: Mapping[str, str] | None, attributes: Mapping[str, Any] | None
) -> Iterator[None]:
    ctx = _otel_propagate.extract(dict(parent)) if parent else None
    tracer = _otel_trace.get_tracer("durablefuture")
    token = _otel_context.attach(ctx) if ctx is not None else None
    try:
        with tracer.start_as_current_span(name, attributes=dict(attributes or {})):
            yield
    finally:
        if token is not None:
            _otel_context.detach(token)
