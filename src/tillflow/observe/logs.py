"""Structured logs: one line per record, JSON (`observe.log_format: json`) or for a console.

The standard library's records (the code base logs with `logging.getLogger`) and structlog's go
through the same processors: the context bound with `bound` (the transaction and trace ids of
the work in hand), the current span's trace id when none is bound, the process's role, a UTC
timestamp, the formatted exception, and masking (`observe.masking`) last, so that no customer
identifier or card number reaches a line, not even inside a message or a traceback. Extra
fields of a standard library record (`log.info(..., extra={...})`) become fields of the line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import trace

from tillflow.observe.masking import mask_mapping
from tillflow.observe.settings import ObserveSettings
from tillflow.observe.trace import trace_id_of

MAX_IDS = 20  # transaction ids named on one line of a batch
QUIET = ("httpx", "httpcore", "uvicorn.access")  # a line per request: only at DEBUG


def add_trace_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current span's trace and span ids, unless the record has a trace id already."""
    if "trace_id" not in event:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event["trace_id"] = format(ctx.trace_id, "032x")
            event["span_id"] = format(ctx.span_id, "016x")
    return event


def mask_record(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The record with customer identifiers and card data masked (`observe.masking`)."""
    return mask_mapping(event)


def _with_role(role: str) -> structlog.typing.Processor:
    def add_role(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("role", role)
        return event

    return add_role


def configure_logging(settings: ObserveSettings, role: str) -> None:
    """Route the standard library's and structlog's records through one renderer (JSON lines or
    the console's), on standard error, at `observe.log_level`."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _with_role(role),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_record,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def correlation(transaction_ids: Sequence[str], traceparents: Sequence[str | None]) -> dict[str, Any]:
    """The ids a line about this work carries: `transaction_id` and `trace_id` for one
    transaction (or one trace); for more, `transaction_ids` (the first `MAX_IDS`) and their
    count, and `trace_ids` when they span several traces."""
    fields: dict[str, Any] = {}
    if len(transaction_ids) == 1:
        fields["transaction_id"] = transaction_ids[0]
    elif transaction_ids:
        fields["transaction_ids"] = list(transaction_ids[:MAX_IDS])
        fields["transactions"] = len(transaction_ids)
    traces = list(dict.fromkeys(t for t in map(trace_id_of, dict.fromkeys(traceparents)) if t))
    if len(traces) == 1:
        fields["trace_id"] = traces[0]
    elif traces:
        fields["trace_ids"] = traces[:MAX_IDS]
    return fields


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Every line logged in the block (in this thread or task, and in work it hands to a
    thread pool) carries `fields`."""
    with structlog.contextvars.bound_contextvars(**fields):
        yield
