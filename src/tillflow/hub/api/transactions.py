"""`/v1/transactions`: batch ingest, one transaction, and its trace timeline.

The batch handler's body (`answer_batch`) is shared with the store agent's local API, which
answers a till exactly as the hub does."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.errors import FormatError
from tillflow.formats.records import ImportContext
from tillflow.hub.auth import require_key
from tillflow.hub.ingest import RecordResult, forbidden_records, ingest_records, poslog_records
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model import Transaction
from tillflow.observe import logs, tracing
from tillflow.observe.metrics import count_records, count_request
from tillflow.observe.trace import child_traceparent, trace_id_of
from tillflow.ports import Principal, StoredTransaction, TransactionStore

router = APIRouter(prefix="/v1/transactions", tags=["transactions"])

_BATCH_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["transactions"],
                    "properties": {
                        "transactions": {
                            "type": "array",
                            "maxItems": 1000,
                            "items": {"$ref": "#/components/schemas/Transaction"},
                        }
                    },
                }
            },
            "application/xml": {
                "schema": {
                    "type": "string",
                    "description": "an ARTS POSLog document (2.x or 6.0); answered per Transaction element",
                }
            },
        },
    }
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "Body too large", f"the body limit is {limit} bytes", type_="body-too-large")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise Problem(413, "Body too large", f"the body limit is {limit} bytes", type_="body-too-large")
    return bytes(chunks)


@dataclass(frozen=True)
class BatchIntake:
    """What taking a batch needs beside the request: where its records go, the limits, how a
    POSLog body is read, and why records may not be taken from this caller (`forbidden`: one
    reason per record refused; any refuses the whole batch with 403)."""

    store: TransactionStore
    max_body_bytes: int
    max_batch_records: int
    import_context: ImportContext
    poslog_settings: Any
    forbidden: Callable[[Sequence[Any]], list[str]]
    # a request without a traceparent: its records start a new trace (the hub), or carry none
    # and the next hop starts it (a store agent, which forwards records of many requests at once)
    trace_untraced: bool = True


async def answer_batch(request: Request, intake: BatchIntake) -> Response:
    """Read, validate, authorise and record a batch (canonical JSON or a POSLog document); the
    answer per record: accepted / duplicate / conflict / invalid (field path and reason)."""
    received_at = datetime.now(UTC)
    body = await read_body(request, intake.max_body_bytes)
    positions: list[int] | None = None  # where each record sits in a POSLog document
    known: list[RecordResult] = []  # answers the POSLog parser already gave
    if _media_type(request) in XML_TYPES:
        try:
            parsed, known = await run_in_threadpool(
                poslog_records, body, intake.import_context, intake.poslog_settings
            )
        except FormatError as exc:
            raise Problem(400, "Unreadable POSLog", str(exc), type_="malformed-xml") from exc
        positions = [i for i, _ in parsed]
        records: list[Any] = [r for _, r in parsed]
        count = len(records) + len(known)
    else:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "Malformed JSON", str(exc), type_="malformed-json") from exc
        found = doc.get("transactions") if isinstance(doc, dict) else None
        if not isinstance(found, list):
            raise Problem(400, "Not a batch", 'the body is {"transactions": [...]}', type_="not-a-batch")
        records = found
        count = len(records)
    if count > intake.max_batch_records:
        raise Problem(
            413,
            "Batch too large",
            f"{count} records; the limit is {intake.max_batch_records}",
            type_="batch-too-large",
        )
    forbidden = intake.forbidden(records)
    if forbidden:
        raise Problem(403, "Store not allowed", "; ".join(forbidden[:20]), type_="forbidden-store")
    parent = request.headers.get("traceparent")
    edge_accepted = edge_accepted_times(request, len(records)) if positions is None else None
    with tracing.span(
        "transactions.ingest",
        kind=tracing.SpanKind.SERVER,
        parent=parent,
        attributes={"tillflow.records": count},
    ) as span:
        # the records keep the ingest span's traceparent: a search by its trace id finds them
        traceparent = span.traceparent or child_traceparent(parent)
        kept = traceparent if parent or intake.trace_untraced else None
        with logs.bound(**logs.correlation((), [kept])):
            results = await run_in_threadpool(
                ingest_records,
                records,
                intake.store,
                traceparent=kept,
                received_at=received_at,
                edge_accepted=edge_accepted,
            )
    if positions is not None:  # answer per transaction of the POSLog document, in its order
        for result in results:
            result.index = positions[result.index]
        results = sorted([*results, *known], key=lambda r: r.index)
    counts = Counter(r.status.value for r in results)
    count_records(counts)
    return json_response(
        {
            "results": [r.as_json() for r in results],
            # a POSLog document may also hold what is never posted (sign-on/off, no-sale)
            "summary": {k: counts.get(k, 0) for k in (_STATUSES if positions is None else _XML_STATUSES)},
        },
        headers={"traceparent": traceparent},
    )


@router.post("", openapi_extra=_BATCH_SCHEMA, summary="Submit a batch of canonical transactions")
async def post_transactions(request: Request, principal: Principal = Depends(require_key)) -> Response:
    """Answers per record: accepted / duplicate / conflict / invalid (field path and reason)."""
    services = request.app.state.services
    hub = services.config.hub
    stores = services.config.store_ids()
    intake = BatchIntake(
        store=services.transactions,
        max_body_bytes=hub.max_body_bytes,
        max_batch_records=hub.max_batch_records,
        import_context=services.import_context,
        poslog_settings=services.config.imports.poslog,
        forbidden=lambda records: forbidden_records(records, principal, stores),
    )
    try:
        answer = await answer_batch(request, intake)
    except Problem as exc:
        count_request(exc.status)
        raise
    count_request(answer.status_code)
    request.app.state.wake_consumers()
    return answer


EDGE_ACCEPTED = "tillflow-edge-accepted"
MAX_US = 253_402_300_800_000_000  # 10000-01-01: a time past it is not a time
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def edge_accepted_times(request: Request, count: int) -> list[datetime | None] | None:
    """When a store agent acknowledged each record of the batch on the store's disk, from its
    `Tillflow-Edge-Accepted` header (UTC epoch microseconds, comma-separated, in record order;
    empty for a record it does not know). None without the header, or when it does not hold one
    time per record."""
    said = request.headers.get(EDGE_ACCEPTED)
    if not said:
        return None
    parts = said.split(",")
    if len(parts) != count:
        return None
    times: list[datetime | None] = []
    for part in parts:
        text = part.strip()
        if not text:
            times.append(None)
        elif text.isdigit() and 0 < int(text) < MAX_US:
            times.append(_EPOCH + timedelta(microseconds=int(text)))
        else:
            return None
    return times


_STATUSES = ("accepted", "duplicate", "conflict", "invalid")
_XML_STATUSES = (*_STATUSES, "not_posted")
XML_TYPES = frozenset({"application/xml", "text/xml"})


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _find(request: Request, transaction_id: str, principal: Principal) -> StoredTransaction:
    stored: StoredTransaction | None = request.app.state.services.transactions.get_transaction(transaction_id)
    if stored is None or not principal.may_act_for(stored.store_id):
        raise Problem(404, "Transaction not found", transaction_id, type_="not-found")
    return stored


@router.get("/{transaction_id}", summary="One accepted transaction")
async def get_transaction(
    transaction_id: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    stored = await run_in_threadpool(_find, request, transaction_id, principal)
    return json_response(
        {
            "transaction_id": stored.transaction_id,
            "received_at": stored.received_at.isoformat(),
            "logged_at": stored.logged_at.isoformat(),
            "event_seq": stored.event_seq,
            "conflicts": stored.conflicts,
            "transaction": Transaction.model_validate_json(stored.data).model_dump(mode="json"),
        }
    )


@router.get("/{transaction_id}/trace", summary="Every hop of one transaction, with timestamps")
async def get_trace(
    transaction_id: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    stored = await run_in_threadpool(_find, request, transaction_id, principal)
    start = stored.received_at
    return json_response(
        {
            "transaction_id": stored.transaction_id,
            "traceparent": stored.traceparent,
            "trace_id": trace_id_of(stored.traceparent),
            "hops": [
                {
                    "hop": h.hop,
                    "at": h.at.isoformat(),
                    "since_received_ms": round((h.at - start).total_seconds() * 1000, 3),
                    "detail": h.detail,
                }
                for h in stored.hops
            ],
        }
    )
