"""The edge hop of a trace: the agent's forward span is the parent of the gateway's ingest span,
each record keeps the ingest span's traceparent, and the time the agent acknowledged a record
shows as the first hop of its timeline."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.builders import TRACEPARENT, incoming, line, sale
from tests.unit.test_tracing import hex_ids, ids, parent_of
from tillflow.edge.forwarder import Forwarder
from tillflow.edge.outbox import SQLiteOutbox
from tillflow.formats.records import ImportContext
from tillflow.hub.api.transactions import BatchIntake, answer_batch
from tillflow.observe import tracing
from tillflow.observe.trace import trace_id_of
from tillflow.ports import IncomingTransaction, Verdict
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.sql import to_us
from tillflow.storage.transactions import SQLTransactionStore

ACCEPTED_AT = datetime(2026, 11, 29, 9, 30, 0, 123456, tzinfo=UTC)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)


class KeepingStore:
    """A transaction store that accepts everything and keeps what it was given."""

    def __init__(self) -> None:
        self.kept: list[IncomingTransaction] = []

    def record_batch(self, batch: Sequence[IncomingTransaction], *, received_at: datetime) -> list[Verdict]:
        self.kept += batch
        return [Verdict.ACCEPTED] * len(batch)


def gateway(store: KeepingStore) -> TestClient:
    app = FastAPI()

    @app.post("/v1/transactions")
    async def post(request: Request) -> Response:
        intake = BatchIntake(
            store=store,  # type: ignore[arg-type]
            max_body_bytes=1 << 20,
            max_batch_records=100,
            import_context=ImportContext(),
            poslog_settings=None,
            forbidden=lambda records: [],
        )
        return await answer_batch(request, intake)

    return TestClient(app)


def records(n: int) -> list[dict[str, Any]]:
    return [sale(i, line()).model_dump(mode="json") for i in range(1, n + 1)]


class TestTheGateway:
    def test_the_ingest_span_is_a_child_of_the_callers_and_its_records_keep_it(
        self, spans: InMemorySpanExporter
    ) -> None:
        store = KeepingStore()
        with gateway(store) as client:
            answer = client.post(
                "/v1/transactions", json={"transactions": records(3)}, headers={"traceparent": TRACEPARENT}
            )

        assert answer.status_code == 200
        [ingest] = spans.get_finished_spans()
        assert ingest.name == "transactions.ingest"
        assert ingest.kind is SpanKind.SERVER
        assert parent_of(ingest) == ids(TRACEPARENT)
        assert {ids(r.traceparent) for r in store.kept if r.traceparent} == {hex_ids(ingest)}
        assert len(store.kept) == 3
        assert answer.headers["traceparent"] == store.kept[0].traceparent

    def test_without_tracing_the_records_stay_in_the_callers_trace(self) -> None:
        store = KeepingStore()
        with gateway(store) as client:
            client.post(
                "/v1/transactions", json={"transactions": records(2)}, headers={"traceparent": TRACEPARENT}
            )

        assert {trace_id_of(r.traceparent) for r in store.kept} == {trace_id_of(TRACEPARENT)}
        assert all(r.traceparent != TRACEPARENT for r in store.kept)

    def test_the_agents_acknowledgement_times_come_with_each_record(self) -> None:
        store = KeepingStore()
        later = ACCEPTED_AT + timedelta(seconds=1)
        with gateway(store) as client:
            client.post(
                "/v1/transactions",
                json={"transactions": records(3)},
                headers={"tillflow-edge-accepted": f"{to_us(ACCEPTED_AT)},,{to_us(later)}"},
            )

        assert [r.edge_accepted_at for r in store.kept] == [ACCEPTED_AT, None, later]

    @pytest.mark.parametrize("said", ["1,2", "1,2,3,4", "1,x,3", "1,-2,3"])
    def test_times_that_do_not_fit_the_batch_are_ignored(self, said: str) -> None:
        store = KeepingStore()
        with gateway(store) as client:
            client.post(
                "/v1/transactions",
                json={"transactions": records(3)},
                headers={"tillflow-edge-accepted": said},
            )

        assert [r.edge_accepted_at for r in store.kept] == [None, None, None]


class HubThatAccepts:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path != "/v1/transactions":
            return httpx.Response(404)
        sent = orjson.loads(request.content)["transactions"]
        return httpx.Response(
            200, json={"results": [{"index": i, "status": "accepted"} for i in range(len(sent))]}
        )


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[SQLiteOutbox]:
    box = SQLiteOutbox(tmp_path / "outbox.db", "S001")
    yield box
    box.close()


class TestTheForwarder:
    def test_a_batch_is_a_forward_span_in_the_tills_trace_and_says_when_each_record_was_acknowledged(
        self, spans: InMemorySpanExporter, outbox: SQLiteOutbox
    ) -> None:
        batch = [incoming(sale(i, line()), traceparent=TRACEPARENT) for i in (1, 2)]
        outbox.record_batch(batch, received_at=ACCEPTED_AT)
        hub = HubThatAccepts()
        forwarder = Forwarder(outbox, "http://hub.test", "key", linger=0, transport=httpx.MockTransport(hub))

        forwarder.step()
        forwarder.close()

        [request] = [r for r in hub.requests if r.url.path == "/v1/transactions"]
        [forward] = spans.get_finished_spans()
        assert forward.name == "edge.forward"
        assert forward.kind is SpanKind.CLIENT
        assert parent_of(forward) == ids(TRACEPARENT)
        assert ids(request.headers["traceparent"]) == hex_ids(forward)
        assert request.headers["tillflow-edge-accepted"] == f"{to_us(ACCEPTED_AT)},{to_us(ACCEPTED_AT)}"
        assert forwarder.delivered_total == 2

    def test_without_tracing_the_request_carries_the_tills_traceparent(self, outbox: SQLiteOutbox) -> None:
        outbox.record_batch([incoming(sale(1, line()), traceparent=TRACEPARENT)], received_at=ACCEPTED_AT)
        hub = HubThatAccepts()
        forwarder = Forwarder(outbox, "http://hub.test", "key", linger=0, transport=httpx.MockTransport(hub))

        forwarder.step()
        forwarder.close()

        [request] = [r for r in hub.requests if r.url.path == "/v1/transactions"]
        assert request.headers["traceparent"] == TRACEPARENT


class TestTheTimeline:
    def test_the_edge_hop_comes_first_and_is_recorded_once(self, tmp_path: Path) -> None:
        engine = create_state_engine(sqlite_url(tmp_path / "state.db"))
        upgrade_schema(engine)
        store = SQLTransactionStore(engine)
        tx = sale(1, line())
        received = ACCEPTED_AT + timedelta(seconds=2)
        forwarded = replace(incoming(tx), edge_accepted_at=ACCEPTED_AT)

        assert store.record_batch([forwarded], received_at=received) == [Verdict.ACCEPTED]
        assert store.record_batch([forwarded], received_at=received) == [Verdict.DUPLICATE]
        stored = store.get_transaction(tx.transaction_id)
        engine.dispose()

        assert stored is not None
        assert [(h.hop, h.at) for h in stored.hops][:2] == [
            ("edge.accepted", ACCEPTED_AT),
            ("received", received),
        ]
        assert [h.hop for h in stored.hops].count("edge.accepted") == 1

    def test_a_record_sent_straight_to_the_hub_has_no_edge_hop(self, tmp_path: Path) -> None:
        engine = create_state_engine(sqlite_url(tmp_path / "state.db"))
        upgrade_schema(engine)
        store = SQLTransactionStore(engine)
        tx = sale(1, line())

        store.record_batch([incoming(tx)], received_at=ACCEPTED_AT)
        stored = store.get_transaction(tx.transaction_id)
        engine.dispose()

        assert stored is not None
        assert [h.hop for h in stored.hops] == ["received", "logged"]
