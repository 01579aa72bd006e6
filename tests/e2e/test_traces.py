"""Traces and logs over real processes: a store agent forwarding to a hub that posts to the
reference ERP, all exporting spans to a small OTLP/HTTP receiver started here.

One transaction's trace holds the agent's forward span, the gateway's ingest span (its child),
the posting consumer's batch span (linked to it) and the ERP call, whose traceparent the ERP
received; its timeline starts with the agent's acknowledgement. The hub's log is JSON lines
carrying trace ids, with member ids hashed and no card number."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.e2e.conftest import hub_process, reference_service, sales
from tillflow.config import TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.observe.masking import mask_identifier
from tillflow.observe.settings import ObserveSettings
from tillflow.observe.trace import parse_traceparent
from tillflow.processes import EdgeAgentProcess
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

pytestmark = pytest.mark.e2e

STORES = demo_stores(2)
MEMBER = "M-4711-0042"
PAN = "4111111111111111"  # a test card number, as a till that failed to mask it would send it
T = TypeVar("T")


@dataclass
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    links: list[tuple[str, str]]


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: keeps every span exported to `{url}/v1/traces`."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    found.append(
                        Span(
                            service=attrs.get("service.name", ""),
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            links=[(lk.trace_id.hex(), lk.span_id.hex()) for lk in s.links],
                        )
                    )
        with self.lock:
            self.spans += found

    def named(self, name: str, service: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name and s.service == service]


@dataclass
class Seen:
    """What the recording proxy in front of the ERP passed on: (method, path, traceparent)."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                found.take(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    with serve(Handler) as url:
        found.url = url
        yield found


@contextmanager
def recording_proxy(target: str, seen: Seen) -> Iterator[str]:
    """A reverse proxy to `target` that notes the traceparent of every request it passes on."""
    client = httpx.Client(base_url=target, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _pass_on(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.requests.append((self.command, self.path, self.headers.get("traceparent")))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            answer = client.request(self.command, self.path, content=body, headers=headers)
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in (
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "content-encoding",
                ):
                    self.send_header(key, value)
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _pass_on

        def log_message(self, *args: Any) -> None:
            pass

    try:
        with serve(Handler) as url:
            yield url
    finally:
        client.close()


def eventually(find: Callable[[], T | None], what: str, seconds: float = 60) -> T:
    """What `find` returns once it returns something; fails after `seconds` without."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"never saw {what}")


def till_records(n: int) -> list[dict[str, Any]]:
    """`n` sales of S001 by a member, the first with a card number left unmasked in a tender."""
    gen = PosTrafficGenerator(STORES, business_day=date(2026, 11, 29), seed=5)
    records = [tx.model_dump(mode="json") for tx in sales(gen, "S001", n)]
    for record in records:
        record["customer"] = {"member_id": MEMBER, "program": "default"}
    records[0]["tenders"][0]["reference"] = PAN
    return records


def test_one_transaction_is_one_trace_from_the_edge_to_the_erp(tmp_path: Path, receiver: Receiver) -> None:
    seen = Seen()
    with reference_service("erp", tmp_path / "erp") as erp, recording_proxy(erp.url, seen) as erp_url:
        config = TillflowConfig(
            stores=STORES,
            connectors=ConnectorSettings(erp=HttpConnectorSettings(url=erp_url)),
            observe=ObserveSettings(otlp_endpoint=receiver.url, otlp_export_seconds=0.2, log_level="DEBUG"),
        )
        (tmp_path / "hub").mkdir()
        with hub_process(tmp_path / "hub", config) as hub:
            agent = EdgeAgentProcess(
                {"S001": hub.keys["S001"]},
                hub.url,
                tmp_path / "edge",
                options=("--config", str(hub.config_path), "--heartbeat-seconds", "1"),
            )
            try:
                agent.wait_ready()
                records = till_records(3)
                answer = httpx.post(
                    f"{agent.url}/v1/transactions", json={"transactions": records}, timeout=30
                )
                assert answer.status_code == 200, answer.text
                tx_id = answer.json()["results"][0]["transaction_id"]

                def timeline() -> dict[str, Any] | None:
                    with hub.client(hub.admin) as client:
                        got = client.get(f"/v1/transactions/{tx_id}/trace")
                    return got.json() if got.status_code == 200 else None

                trace = eventually(timeline, "the transaction at the hub")
                trace_id = trace["trace_id"]
                posted = eventually(
                    lambda: [r for r in seen.requests if r[0] == "POST" and r[1].startswith("/api/journals")],
                    "the journals posted to the ERP",
                )
            finally:
                agent.stop()
            forward = eventually(lambda: receiver.named("edge.forward", "tillflow-edge"), "the forward span")
            ingest = eventually(
                lambda: receiver.named("transactions.ingest", "tillflow-hub-api"), "the ingest span"
            )
            consume = eventually(
                lambda: receiver.named("consume posting", "tillflow-hub-worker"), "the posting batch span"
            )
            calls = eventually(lambda: receiver.named("erp POST", "tillflow-hub-worker"), "the ERP call span")
        log_text = hub.process.log_path.read_text()

    # the agent's forward span is the parent of the gateway's ingest span, in one trace
    [edge_span] = [s for s in forward if s.trace_id == trace_id]
    [hub_span] = [s for s in ingest if s.trace_id == trace_id]
    assert hub_span.trace_id == edge_span.trace_id == trace_id
    assert hub_span.parent_span_id == edge_span.span_id
    # the transaction keeps the ingest span's traceparent
    kept = parse_traceparent(trace["traceparent"])
    assert kept is not None and kept[:2] == (trace_id, hub_span.span_id)
    # the posting batch links to the transaction's trace rather than being its child
    assert any((trace_id, hub_span.span_id) in s.links for s in consume)
    assert all(s.trace_id != trace_id for s in consume)
    # the ERP call is in the transaction's trace, and the ERP received its traceparent
    [(_, _, sent)] = posted[:1]
    said = parse_traceparent(sent)
    assert said is not None and said[0] == trace_id
    assert said[1] in {c.span_id for c in calls if c.trace_id == trace_id}
    # the timeline starts with the agent's durable acknowledgement
    hops = [h["hop"] for h in trace["hops"]]
    assert hops[:3] == ["edge.accepted", "received", "logged"]
    # the hub's log: JSON lines with trace ids, member ids hashed, no card number
    lines = [orjson.loads(text) for text in log_text.splitlines() if text.startswith("{")]
    assert any(line.get("trace_id") == trace_id for line in lines)
    about_member = [line for line in lines if "member_id" in line]
    assert about_member and {line["member_id"] for line in about_member} == {mask_identifier(MEMBER)}
    assert MEMBER not in log_text
    assert PAN not in log_text
    assert any("411111…1111" in orjson.dumps(line).decode() for line in about_member)
