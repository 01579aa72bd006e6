"""Structured logs: the standard library's records as JSON lines carrying the bound transaction
and trace ids (or the current span's), with customer identifiers and card numbers masked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from tests.builders import TRACEPARENT
from tillflow.observe import logs, tracing
from tillflow.observe.logs import QUIET, configure_logging
from tillflow.observe.masking import mask_identifier
from tillflow.observe.settings import ObserveSettings

VISA = "4111111111111111"


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """A function that configures logging as a worker process would (on the standard error
    the test runs with) and returns the JSON lines written since. The set-up is put back
    afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in QUIET})

    def read(*, start: bool = False) -> list[dict[str, Any]]:
        if start:
            configure_logging(ObserveSettings(log_format="json", log_level="INFO"), "worker")
        return [orjson.loads(text) for text in capsys.readouterr().err.splitlines() if text.strip()]

    yield read
    handlers, level, quiet = saved
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)
    structlog.reset_defaults()


def test_a_standard_library_record_is_a_json_line_with_the_bound_ids(lines: Any) -> None:
    lines(start=True)
    log = logging.getLogger("tillflow.flows.posting")
    with logs.bound(**logs.correlation(["S001|R01|2026-11-29|1"], [TRACEPARENT])):
        log.warning("posting %s failed", "S001|R01|2026-11-29|1")
    log.info("outside")

    inside, outside = lines()
    assert inside["event"] == "posting S001|R01|2026-11-29|1 failed"
    assert inside["level"] == "warning"
    assert inside["logger"] == "tillflow.flows.posting"
    assert inside["role"] == "worker"
    assert inside["transaction_id"] == "S001|R01|2026-11-29|1"
    assert inside["trace_id"] == TRACEPARENT.split("-")[1]
    assert "timestamp" in inside
    assert "transaction_id" not in outside and "trace_id" not in outside


def test_a_batch_names_its_transactions_and_traces(lines: Any) -> None:
    lines(start=True)
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ids = [f"T{i}" for i in range(25)]
    with logs.bound(**logs.correlation(ids, [TRACEPARENT, other, TRACEPARENT])):
        logging.getLogger("x").error("batch failed")

    [line] = lines()
    assert line["transaction_ids"] == ids[:20]
    assert line["transactions"] == 25
    assert line["trace_ids"] == [TRACEPARENT.split("-")[1], other.split("-")[1]]


def test_member_ids_and_card_numbers_never_reach_a_line(lines: Any) -> None:
    lines(start=True)
    log = logging.getLogger("tillflow.hub.ingest")
    log.info("tender %s refused", VISA, extra={"member_id": "M-4711", "tenders": [{"reference": VISA}]})
    try:
        raise ValueError(f"card {VISA} declined")
    except ValueError:
        log.exception("failed")

    first, second = lines()
    text = orjson.dumps([first, second]).decode()
    assert VISA not in text and "M-4711" not in text
    assert first["event"] == "tender 411111…1111 refused"
    assert first["member_id"] == mask_identifier("M-4711")
    assert first["tenders"] == [{"reference": "411111…1111"}]
    assert "ValueError: card 411111…1111 declined" in second["exception"]


def test_the_current_spans_trace_is_on_a_line_when_none_is_bound(lines: Any) -> None:
    lines(start=True)
    tracing.use_provider(TracerProvider())
    try:
        with tracing.span("consume posting") as span:
            logging.getLogger("x").warning("inside a span")
    finally:
        tracing.use_provider(None)

    [line] = lines()
    assert span.traceparent is not None
    assert line["trace_id"] == span.traceparent.split("-")[1]
    assert line["span_id"] == span.traceparent.split("-")[2]


def test_request_lines_of_the_http_client_are_kept_for_debugging(lines: Any) -> None:
    lines(start=True)
    logging.getLogger("httpx").info("HTTP Request: POST http://erp/api/journals")

    assert lines() == []
