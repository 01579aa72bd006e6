"""`/v1/transactions`: batch ingest, one transaction, and its trace timeline."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.errors import FormatError
from tillflow.hub.auth import require_key
from tillflow.hub.ingest import RecordResult, forbidden_records, ingest_records, poslog_records
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model import Transaction
from tillflow.observe.trace import child_traceparent, trace_id_of
from tillflow.ports import Principal, StoredTransaction

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


@router.post("", openapi_extra=_BATCH_SCHEMA, summary="Submit a batch of canonical transactions")
async def post_transactions(request: Request, principal: Principal = Depends(require_key)) -> Response:
    """Answers per record: accepted / duplicate / conflict / invalid (field path and reason)."""
    received_at = datetime.now(UTC)
    services = request.app.state.services
    hub = services.config.hub
    body = await read_body(request, hub.max_body_bytes)
    positions: list[int] | None = None  # where each record sits in a POSLog document
    known: list[RecordResult] = []  # answers the POSLog parser already gave
    if _media_type(request) in XML_TYPES:
        try:
            parsed, known = await run_in_threadpool(
                poslog_records, body, services.import_context, services.config.imports.poslog
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
    if count > hub.max_batch_records:
        raise Problem(
            413,
            "Batch too large",
            f"{count} records; the limit is {hub.max_batch_records}",
            type_="batch-too-large",
        )
    forbidden = forbidden_records(records, principal, services.config.store_ids())
    if forbidden:
        raise Problem(403, "Store not allowed", "; ".join(forbidden[:20]), type_="forbidden-store")
    traceparent = child_traceparent(request.headers.get("traceparent"))
    results = await run_in_threadpool(
        ingest_records, records, services.transactions, traceparent=traceparent, received_at=received_at
    )
    if positions is not None:  # answer per transaction of the POSLog document, in its order
        for result in results:
            result.index = positions[result.index]
        results = sorted([*results, *known], key=lambda r: r.index)
    request.app.state.wake_consumers()
    counts = Counter(r.status.value for r in results)
    return json_response(
        {
            "results": [r.as_json() for r in results],
            # a POSLog document may also hold what is never posted (sign-on/off, no-sale)
            "summary": {k: counts.get(k, 0) for k in (_STATUSES if positions is None else _XML_STATUSES)},
        },
        headers={"traceparent": traceparent},
    )


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
