"""The operations API the console acts through (admin): dead letters (see `dead_letters`), one
store in detail, the transaction search, the reconciliation report, and re-sends asked of a store.

    GET  /v1/stores/{store_id}/detail?day=
        the store's entry of `GET /v1/stores/health` (its agent's last error and `missing`
        among them), with `dead_letters` and `recent_conflicts` ({"count", "newest"}: the
        newest ten), `masterdata` (the version it runs, how far behind), `reconciliation` of
        the day (default today: status, transactions, differences, posting state, the
        report's link) and `resend_requested` (what operators asked it for, still pending)
    GET  /v1/transactions-search?q=&store_id=&business_day=&limit=
        by id, id prefix or trace id, newest first (the exact id first)
    GET  /v1/reconciliation/report?day=&store_id=
        the HTML page `tillflow reconcile --format html` writes
    POST /v1/stores/{store_id}/resend  {"transaction_ids": [...], "why": "..."}
        -> 202 {"store_id", "requested", "pending"}

A re-send request is kept in the operators' audit trail; it is pending until the hub has the
transactions, for `RESEND_DAYS` days (`OperationsBook.list_resend_requests`), for a
store's heartbeat answer to ask its agent for, beside the gaps of its day closes. The agent sends
again those it holds and reports the others as `missing`.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from tillflow.errors import ConnectorError
from tillflow.hub.api import dead_letters
from tillflow.hub.api.dead_letters import dead_letter_row, list_store_dead_letters
from tillflow.hub.api.stores import MAX_RESEND, RESEND_DAYS, health_body
from tillflow.hub.api.transactions import read_body
from tillflow.hub.auth import require_admin
from tillflow.hub.ingest import errors_of
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model import Store
from tillflow.ports import Principal, TransactionMatch
from tillflow.services import Services

router = APIRouter(tags=["operations"])
router.include_router(dead_letters.router)

RECENT = 10  # dead letters and conflicts shown in a store's detail
MAX_SEARCH = 50
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")


def _store(services: Services, store_id: str) -> Store:
    store = next((s for s in services.config.stores if s.store_id == store_id), None)
    if store is None:
        raise Problem(404, "Unknown store", f"store {store_id!r} is not configured", type_="not-found")
    return store


def _day(value: str, name: str) -> date:
    """`value` as a date; 422 problem naming the parameter when it is not one."""
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        errors = [{"field": name, "reason": "a date is written YYYY-MM-DD"}]
        raise Problem(
            422, "Invalid request", f"{name} {value!r} is not a date", type_="invalid-request", errors=errors
        ) from exc


# --- one store -----------------------------------------------------------------------------------


def store_detail(services: Services, store: Store, day: date, now: datetime) -> dict[str, Any]:
    """A store's health entry (as `GET /v1/stores/health` has it) with its dead letters, its
    conflicts, the master data it runs, its reconciliation of `day` and the re-sends pending."""
    store_id = store.store_id
    latest = [h for h in services.store_health.list_health() if h.store_id == store_id]
    offline_after = services.config.hub.store_offline_seconds
    body = health_body([store_id], latest, now=now, offline_after=offline_after)
    health: dict[str, Any] = body["stores"][0]
    dead = list_store_dead_letters(services.event_log, store_id=store_id)
    count, newest = services.operations.list_conflicts(store_id, limit=RECENT)
    [sync] = services.masterdata.read_sync([store])
    since = now - timedelta(days=RESEND_DAYS)
    return health | {
        "offline_after_seconds": offline_after,
        "dead_letters": {"count": len(dead), "newest": [dead_letter_row(d, now) for d in dead[:RECENT]]},
        "recent_conflicts": {
            "count": count,
            "newest": [
                {"transaction_id": c.transaction_id, "received_at": c.received_at.isoformat()} for c in newest
            ],
        },
        "masterdata": {
            "acked_version": sync.acked_version,
            "acked_at": None if sync.acked_at is None else sync.acked_at.isoformat(),
            "latest_version": sync.latest_version,
            "behind": sync.behind,
            "up_to_date": sync.behind == 0,
        },
        "reconciliation": _reconciliation(services, store_id, day),
        "resend_requested": services.operations.list_resend_requests(store_id, since=since),
    }


def _reconciliation(services: Services, store_id: str, day: date) -> dict[str, Any]:
    from tillflow.reconciling import reconcile

    body: dict[str, Any] = {
        "business_day": day.isoformat(),
        "report": f"/v1/reconciliation/report?day={day.isoformat()}&store_id={store_id}",
    }
    try:
        [(rec, state)] = reconcile(services, day, store_id)
    except ConnectorError as exc:  # a downstream system answered what the report cannot use
        return body | {"status": "unavailable", "reason": str(exc)}
    posting = asdict(state)
    posting.pop("journals")
    return body | {
        "status": rec.status,
        "transactions": rec.transaction_count,
        "z_report": rec.z_report,
        "trial_balance": rec.trial_balance,
        "differences": list(rec.differences),
        "posting": posting,
    }


@router.get("/v1/stores/{store_id}/detail", summary="One store: health, recent errors, dead letters, books")
async def get_store_detail(
    store_id: str,
    request: Request,
    day: str | None = Query(default=None, description="business day reconciled, YYYY-MM-DD (default today)"),
    principal: Principal = Depends(require_admin),
) -> Response:
    services: Services = request.app.state.services
    store = _store(services, store_id)
    now = datetime.now(UTC)
    business_day = now.date() if day is None else _day(day, "day")
    return json_response(await run_in_threadpool(store_detail, services, store, business_day, now))


# --- the transaction search --------------------------------------------------------------------


def _match_row(m: TransactionMatch) -> dict[str, Any]:
    return {
        "transaction_id": m.transaction_id,
        "store_id": m.store_id,
        "business_day": m.business_day.isoformat(),
        "received_at": m.received_at.isoformat(),
        "event_seq": m.event_seq,
        "traceparent": m.traceparent,
    }


@router.get("/v1/transactions-search", summary="Transactions by id, id prefix or trace id, newest first")
async def search_transactions(
    request: Request,
    q: str = Query(min_length=1, max_length=200, description="a transaction id, its start, or a trace id"),
    store_id: str | None = Query(default=None, description="only this store"),
    business_day: str | None = Query(default=None, description="only this business day, YYYY-MM-DD"),
    limit: int = Query(default=MAX_SEARCH, ge=1, le=MAX_SEARCH),
    principal: Principal = Depends(require_admin),
) -> Response:
    """A query of 32 hex digits is looked up as a trace id too; the exact id comes first."""
    services: Services = request.app.state.services
    q = q.strip()
    found = await run_in_threadpool(
        services.operations.find_transactions,
        id_prefix=q,
        trace_id=q.lower() if _TRACE_ID.match(q) else None,
        store_id=store_id,
        business_day=None if business_day is None else _day(business_day, "business_day"),
        limit=limit,
    )
    found.sort(key=lambda m: m.transaction_id != q)  # stable: newest first after the exact one
    return json_response([_match_row(m) for m in found])


# --- the reconciliation report -----------------------------------------------------------------


@router.get("/v1/reconciliation/report", summary="The reconciliation report of a business day, as HTML")
async def get_reconciliation_report(
    request: Request,
    day: str = Query(description="business day, YYYY-MM-DD"),
    store_id: str | None = Query(default=None, description="only this store"),
    principal: Principal = Depends(require_admin),
) -> Response:
    """The page `tillflow reconcile --format html` writes: every store-day of the day (or one
    store's), then, for the whole day, each loyalty program's liability."""
    from tillflow.reconciling import reconcile, reconcile_loyalty
    from tillflow.reports import render_html

    business_day = _day(day, "day")
    services: Services = request.app.state.services

    def render() -> str:
        recs = [rec for rec, _ in reconcile(services, business_day, store_id)]
        liabilities = reconcile_loyalty(services) if store_id is None else []
        title = f"Reconciliation {business_day}" + (f" {store_id}" if store_id else "")
        return render_html(recs, title=title, liabilities=liabilities)

    return Response(await run_in_threadpool(render), media_type="text/html; charset=utf-8")


# --- re-sends asked of a store ------------------------------------------------------------------


class ResendRequest(BaseModel):
    transaction_ids: list[str] = Field(min_length=1, max_length=MAX_RESEND)
    why: str = Field(default="asked from the operations console", min_length=1, max_length=2000)


@router.post("/v1/stores/{store_id}/resend", summary="Ask a store's edge agent to send transactions again")
async def post_resend(
    store_id: str, request: Request, principal: Principal = Depends(require_admin)
) -> Response:
    """202 with what is pending for the store: its agent is asked at its next heartbeat. 422 for
    ids that are not transaction ids of this store (each named), 404 for an unknown store."""
    services: Services = request.app.state.services
    _store(services, store_id)
    body = await read_body(request, 64 * 1024)
    try:
        asked = ResendRequest.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed JSON", str(exc), type_="malformed-json") from exc
    except ValidationError as exc:
        errors = errors_of(exc)
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise Problem(422, "Invalid request", detail, type_="invalid-request", errors=errors) from exc
    ids = list(dict.fromkeys(i.strip() for i in asked.transaction_ids))
    foreign = [i for i in ids if not _of_store(i, store_id)]
    if foreign:
        reason = f"is no transaction id of {store_id}"
        errors = [{"field": "transaction_ids", "reason": f"{i!r} {reason}"} for i in foreign]
        raise Problem(422, "Invalid request", errors[0]["reason"], type_="invalid-request", errors=errors)
    now = datetime.now(UTC)
    actor = f"admin key {principal.key_id}"

    def record() -> list[str]:
        services.operations.request_resend(store_id, ids, actor=actor, why=asked.why, at=now)
        return services.operations.list_resend_requests(store_id, since=now - timedelta(days=RESEND_DAYS))

    pending = await run_in_threadpool(record)
    return json_response({"store_id": store_id, "requested": len(ids), "pending": pending}, status=202)


def _of_store(transaction_id: str, store_id: str) -> bool:
    """`store:register:day:sequence` of this store, with a real day and sequence."""
    parts = transaction_id.split(":")
    if len(parts) != 4 or parts[0] != store_id or not parts[1] or not parts[3].isdigit():
        return False
    try:
        date.fromisoformat(parts[2])
    except ValueError:
        return False
    return True
