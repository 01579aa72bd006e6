"""Spans across edge → hub → event → flow → connector, recorded in memory: who is whose parent,
which spans link, and which traceparent each request carries; and nothing without tracing."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.builders import TRACEPARENT, canonical_bytes, line, sale
from tillflow.bus.runner import ConsumerRunner
from tillflow.connectors.http import HttpConnector
from tillflow.model import LoggedEvent
from tillflow.model.events import transaction_completed
from tillflow.observe import tracing
from tillflow.observe.trace import parse_traceparent, trace_id_of

OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def parent_of(span: ReadableSpan) -> tuple[str, str] | None:
    if span.parent is None:
        return None
    return format(span.parent.trace_id, "032x"), format(span.parent.span_id, "016x")


def linked(span: ReadableSpan) -> set[tuple[str, str]]:
    return {(format(lk.context.trace_id, "032x"), format(lk.context.span_id, "016x")) for lk in span.links}


def ids(traceparent: str) -> tuple[str, str]:
    parsed = parse_traceparent(traceparent)
    assert parsed is not None
    return parsed[0], parsed[1]


def events(*traceparents: str | None) -> list[LoggedEvent]:
    out = []
    for seq, tp in enumerate(traceparents, 1):
        tx = sale(seq, line())
        out.append(LoggedEvent(seq=seq, event=transaction_completed(tx, canonical_bytes(tx), traceparent=tp)))
    return out


class OneBatchLog:
    """An event log that hands out one batch, once, and keeps what was acked."""

    def __init__(self, batch: Sequence[LoggedEvent]) -> None:
        self.batch = list(batch)
        self.acked: list[int] = []

    def fetch_batch(self, group: str, *, limit: int) -> list[LoggedEvent]:
        batch, self.batch = self.batch, []
        return batch

    def ack_events(self, group: str, events: Sequence[LoggedEvent]) -> None:
        self.acked += [e.seq for e in events]

    def nak_event(self, group: str, event: LoggedEvent, *, delay: float, error: str) -> None:
        raise AssertionError("nothing fails here")


class Recorder:
    """A downstream system that keeps the traceparent of every request."""

    def __init__(self) -> None:
        self.traceparents: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.traceparents.append(request.headers.get("traceparent"))
        return httpx.Response(200, json={"ok": True})


def connector(recorder: Recorder) -> HttpConnector:
    return HttpConnector("http://erp.test", system="erp", transport=httpx.MockTransport(recorder))


class TestConsumerBatches:
    def test_a_batch_span_links_to_the_trace_of_each_event_and_parents_none(
        self, spans: InMemorySpanExporter
    ) -> None:
        log = OneBatchLog(events(TRACEPARENT, OTHER, TRACEPARENT, None))
        runner = ConsumerRunner(log, "posting", lambda batch: None)  # type: ignore[arg-type]

        runner.run_once()

        [batch] = spans.get_finished_spans()
        assert batch.name == "consume posting"
        assert batch.kind is SpanKind.CONSUMER
        assert parent_of(batch) is None
        assert linked(batch) == {ids(TRACEPARENT), ids(OTHER)}
        assert log.acked == [1, 2, 3, 4]

    def test_a_failing_batch_span_records_the_error(self, spans: InMemorySpanExporter) -> None:
        def handler(batch: Sequence[LoggedEvent]) -> None:
            raise ValueError("poison")

        log = OneBatchLog(events(TRACEPARENT))
        log.nak_event = lambda *a, **k: None  # type: ignore[method-assign]
        log.dead_letter = lambda *a, **k: None  # type: ignore[attr-defined]
        runner = ConsumerRunner(log, "posting", handler)  # type: ignore[arg-type]

        runner.run_once()

        finished = spans.get_finished_spans()
        assert [s.name for s in finished] == ["consume posting", "consume posting"]  # the batch, then alone
        assert all(not s.status.is_ok for s in finished)


class TestConnectorCalls:
    def test_a_call_for_one_transaction_is_in_its_trace_and_links_to_the_batch(
        self, spans: InMemorySpanExporter
    ) -> None:
        recorder = Recorder()
        with connector(recorder) as erp, tracing.serving("consume posting", [TRACEPARENT, TRACEPARENT]):
            erp.send("POST", "/api/journals/batch", json={})

        call, batch = spans.get_finished_spans()
        assert call.name == "erp POST"
        assert call.kind is SpanKind.CLIENT
        assert parent_of(call) == ids(TRACEPARENT)
        assert linked(call) == {hex_ids(batch)}
        [sent] = recorder.traceparents
        assert sent is not None and ids(sent) == hex_ids(call)

    def test_a_call_for_many_transactions_is_a_child_of_the_batch_linked_to_each(
        self, spans: InMemorySpanExporter
    ) -> None:
        recorder = Recorder()
        with connector(recorder) as erp, tracing.serving("consume posting", [TRACEPARENT, OTHER]):
            erp.send("POST", "/api/journals/batch", json={})

        call, batch = spans.get_finished_spans()
        assert parent_of(call) == hex_ids(batch)
        assert linked(call) == {ids(TRACEPARENT), ids(OTHER)}
        [sent] = recorder.traceparents
        assert sent is not None and ids(sent) == hex_ids(call)

    def test_an_answer_in_error_marks_the_span(self, spans: InMemorySpanExporter) -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(422, json={"title": "no"}))
        with HttpConnector("http://erp.test", system="erp", transport=transport) as erp:
            answer = erp.send("POST", "/api/journals", json={})

        [call] = spans.get_finished_spans()
        assert answer.status_code == 422
        assert call.attributes is not None and call.attributes["http.response.status_code"] == 422
        assert not call.status.is_ok


class TestWithoutTracing:
    def test_no_spans_and_a_call_still_carries_the_transactions_trace(self) -> None:
        assert not tracing.enabled()
        recorder = Recorder()
        with connector(recorder) as erp:
            with tracing.serving("consume posting", [TRACEPARENT]):
                erp.send("GET", "/one")
            with tracing.serving("consume posting", [TRACEPARENT, OTHER]):
                erp.send("GET", "/many")
            erp.send("GET", "/none")

        one, many, none = recorder.traceparents
        assert one is not None and trace_id_of(one) == trace_id_of(TRACEPARENT) and one != TRACEPARENT
        assert many is None and none is None

    def test_a_span_is_nothing_and_has_no_traceparent(self) -> None:
        with tracing.span("edge.forward", parent=TRACEPARENT) as span:
            span.set("k", 1)
            span.fail("why")
            assert span.traceparent is None
            assert span.headers() == {}


class TestSpans:
    def test_a_span_with_a_remote_parent_continues_its_trace(self, spans: InMemorySpanExporter) -> None:
        with tracing.span("transactions.ingest", kind=SpanKind.SERVER, parent=TRACEPARENT) as span:
            traceparent = span.traceparent

        [ingest] = spans.get_finished_spans()
        assert parent_of(ingest) == ids(TRACEPARENT)
        assert traceparent is not None and ids(traceparent) == hex_ids(ingest)
        assert trace_id_of(traceparent) == trace_id_of(TRACEPARENT)

    def test_an_invalid_parent_starts_a_new_trace(self, spans: InMemorySpanExporter) -> None:
        with tracing.span("transactions.ingest", parent="00-" + "0" * 32 + "-" + "1" * 16 + "-01"):
            pass

        [ingest] = spans.get_finished_spans()
        assert parent_of(ingest) is None

    def test_an_exception_leaving_the_block_is_recorded(self, spans: InMemorySpanExporter) -> None:
        with pytest.raises(RuntimeError), tracing.span("edge.forward"):
            raise RuntimeError("down")

        [span] = spans.get_finished_spans()
        assert not span.status.is_ok
        assert [e.name for e in span.events] == ["exception"]


def test_events_outside_a_batch_serve_no_transaction() -> None:
    assert tracing.serving_traces() == ()
    with tracing.serving("consume x", [TRACEPARENT, None, TRACEPARENT]):
        assert tracing.serving_traces() == (TRACEPARENT,)
    assert tracing.serving_traces() == ()
