"""OpenTelemetry spans across edge → hub → event → flow → connector.

`configure_tracing` installs a tracer provider that sends spans to an OTLP/HTTP collector (in
batches) when `observe.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise nothing
is installed and every helper here does next to nothing (no span objects, no links).

The spans, one per request or batch, never one per record:

- `edge.forward` (client): a store agent's batch to the hub; its parent is the trace the till
  started, and its traceparent is the one the request carries;
- `transactions.ingest` (server): the gateway taking a batch, child of the caller's traceparent;
  each record it accepts keeps this span's traceparent (and its event carries it);
- `consume <group>` (consumer): a flow handling a batch of events, linked to (not a child of)
  the trace of each event, since one batch serves many transactions;
- `<system> <METHOD>` (client): a connector's call. While a batch of one trace is handled (a
  single transaction, or events that came in one request) it is a child of that trace and links
  to the batch span; otherwise a child of the batch span, linked to the traces it serves. The
  call carries its own traceparent; without tracing it still carries one in the transaction's
  trace when it serves one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from tillflow.observe.settings import ObserveSettings
from tillflow.observe.trace import child_traceparent, format_traceparent, parse_traceparent

__all__ = [
    "SpanKind",
    "client_call",
    "configure_tracing",
    "enabled",
    "flush_tracing",
    "serving",
    "shutdown_tracing",
    "span",
]

MAX_LINKS = 128  # the SDK keeps at most this many links per span by default
COMPONENTS = {"all": "hub-api", "api": "hub-api", "worker": "hub-worker", "edge": "edge"}


class _State:
    tracer: trace.Tracer | None = None
    provider: Any = None


_state = _State()
# the traceparents of the transactions the work in hand serves (set around a consumer's batch)
_serving: ContextVar[tuple[str, ...]] = ContextVar("tillflow_serving", default=())


def component(role: str) -> str:
    """What a process is, for `service.name`: hub-api, hub-worker or edge."""
    return COMPONENTS.get(role, role)


def configure_tracing(settings: ObserveSettings, role: str) -> bool:
    """Set the process's tracer provider: an OTLP exporter when configured, nothing when not.
    Returns whether spans are exported."""
    explicit = settings.otlp_endpoint
    if not (
        explicit
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import tillflow

    resource = Resource.create(
        {
            "service.name": f"{settings.service_name}-{component(role)}",
            "service.namespace": settings.service_name,
            "service.version": tillflow.__version__,
            "tillflow.role": role,
        }
    )
    provider = TracerProvider(resource=resource)
    exporter = (
        OTLPSpanExporter(endpoint=f"{explicit.rstrip('/')}/v1/traces") if explicit else OTLPSpanExporter()
    )
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=settings.otlp_export_seconds * 1000)
    )
    trace.set_tracer_provider(provider)
    use_provider(provider)
    return True


def use_provider(provider: Any) -> None:
    """Make spans with `provider` (a TracerProvider), or with none (None): no spans at all."""
    _state.provider = provider
    _state.tracer = None if provider is None else provider.get_tracer("tillflow")


def shutdown_tracing() -> None:
    """Send the spans still waiting and stop the exporter (at the end of the process)."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def flush_tracing(timeout_seconds: float = 10.0) -> None:
    """Send the finished spans now (before a component stops), waiting at most the timeout."""
    if _state.provider is not None:
        _state.provider.force_flush(int(timeout_seconds * 1000))


def enabled() -> bool:
    return _state.tracer is not None


class SpanHandle:
    """The span in hand: its W3C traceparent (None without tracing), and what to note on it."""

    __slots__ = ("_span", "traceparent")

    def __init__(self, span_: Span | None) -> None:
        self._span = span_
        self.traceparent: str | None = None
        if span_ is not None:
            ctx = span_.get_span_context()
            self.traceparent = format_traceparent(
                format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), format(ctx.trace_flags, "02x")
            )

    def headers(self) -> dict[str, str]:
        """The header that carries this span's trace on a request (none without one)."""
        return {"traceparent": self.traceparent} if self.traceparent else {}

    def set(self, key: str, value: str | int | float | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, description: str) -> None:
        """Mark the span as failed, with why."""
        if self._span is not None:
            self._span.set_status(Status(StatusCode.ERROR, description[:500]))


_NO_SPAN = SpanHandle(None)


def span_context(traceparent: str | None) -> SpanContext | None:
    """The remote span a traceparent names, or None when it is not a valid one."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )


def _links(traceparents: Sequence[str]) -> list[Link]:
    found = (span_context(tp) for tp in dict.fromkeys(traceparents))
    return [Link(ctx) for ctx in found if ctx is not None][:MAX_LINKS]


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    links: Sequence[str] = (),
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[SpanHandle]:
    """A span, current while the block runs: a child of `parent` (a traceparent) when it is
    valid, else of the current span; linked to the spans `links` name. An exception that
    leaves the block is recorded on it. Without tracing: nothing, its traceparent None."""
    tracer = _state.tracer
    if tracer is None:
        yield _NO_SPAN
        return
    remote = span_context(parent)
    context = trace.set_span_in_context(NonRecordingSpan(remote)) if remote is not None else None
    with tracer.start_as_current_span(
        name, context=context, kind=kind, links=_links(links), attributes=attributes
    ) as current:
        yield SpanHandle(current)


def serving_traces() -> tuple[str, ...]:
    """The traceparents of the transactions the work in hand serves (empty outside a batch)."""
    return _serving.get()


@contextmanager
def serving(name: str, traceparents: Sequence[str | None], **attributes: str | int) -> Iterator[SpanHandle]:
    """A consumer's span around handling a batch: linked to the trace of each of its events,
    and what a connector call made meanwhile serves."""
    distinct = tuple(dict.fromkeys(tp for tp in traceparents if tp))
    token = _serving.set(distinct)
    try:
        if _state.tracer is None:
            yield _NO_SPAN
        else:
            with span(name, kind=SpanKind.CONSUMER, links=distinct, attributes=attributes) as handle:
                yield handle
    finally:
        _serving.reset(token)


@contextmanager
def client_call(system: str, method: str, url: str) -> Iterator[SpanHandle]:
    """A connector's call; the handle's `headers()` carry its trace on the request."""
    traces = _serving.get()
    single = traces[0] if len(traces) == 1 else None
    if _state.tracer is None:
        handle = SpanHandle(None)
        handle.traceparent = child_traceparent(single) if single else None
        yield handle
        return
    batch = trace.get_current_span().get_span_context()
    if single is not None:
        parent, links = single, []
        if batch.is_valid:
            links = [format_traceparent(format(batch.trace_id, "032x"), format(batch.span_id, "016x"))]
    else:
        parent, links = None, list(traces)
    attributes = {"http.request.method": method, "url.full": url, "tillflow.system": system}
    with span(
        f"{system} {method}", kind=SpanKind.CLIENT, parent=parent, links=links, attributes=attributes
    ) as handle:
        yield handle
