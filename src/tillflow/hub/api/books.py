"""`/v1/day-closes` (a store's Z report) and `/v1/reconciliation` (Z vs hub vs ERP)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.hub.auth import require_admin, require_key, require_store
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model import DayClose
from tillflow.ports import DayCloseRecord, Principal, Verdict

router = APIRouter(tags=["books"])


def _close_body(record: DayCloseRecord) -> dict[str, Any]:
    close = record.close
    return {
        "store_id": close.store_id,
        "business_day": close.business_day.isoformat(),
        "state": record.state.value,
        "received_at": record.received_at.isoformat(),
        "deadline": record.deadline.isoformat(),
        "posted_at": None if record.posted_at is None else record.posted_at.isoformat(),
        "gap": list(record.gap),
        "reason": record.reason,
        "registers": [
            {
                "register_id": r.register_id,
                "transaction_count": r.transaction_count,
                "last_sequence": r.last_sequence,
                "totals_by_tender": {k.value: format(v, "f") for k, v in r.totals_by_tender.items()},
            }
            for r in close.registers
        ],
    }


@router.post("/v1/day-closes", summary="Close a store's business day with its Z report")
async def post_day_close(
    close: DayClose, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    """201 when kept (a corrected Z report replaces one whose day is not posted yet), 200 for
    the same report again, 409 for a different one after the day was posted. An `aggregated`
    store's day is posted once every transaction the report counts is in, or after the grace."""
    require_store(principal, close.store_id)
    services = request.app.state.services
    grace = timedelta(seconds=services.config.posting.day_close_grace)
    verdict = await run_in_threadpool(
        services.store_days.record_day_close, close, received_at=datetime.now(UTC), grace=grace
    )
    if verdict is Verdict.CONFLICT:
        raise Problem(
            409,
            "Day already posted",
            f"the day {close.business_day} of {close.store_id} is posted with another Z report;"
            " late sales go into adjustment journals, the report cannot change",
            type_="day-close-conflict",
        )
    request.app.state.wake_consumers()
    record = await run_in_threadpool(services.store_days.find_day_close, close.store_id, close.business_day)
    return json_response(
        {"verdict": verdict.value, **_close_body(record)}, status=201 if verdict is Verdict.ACCEPTED else 200
    )


@router.get("/v1/day-closes", summary="Day closes of a business day, with their posting state")
async def list_day_closes(
    request: Request,
    day: date = Query(description="business day, YYYY-MM-DD"),
    store: str | None = Query(default=None, description="only this store"),
    principal: Principal = Depends(require_key),
) -> Response:
    if store is None and not principal.is_admin:
        store = principal.store_id
    if store is not None:
        require_store(principal, store)
    services = request.app.state.services
    records = await run_in_threadpool(services.store_days.list_day_closes, business_day=day)
    body = [_close_body(r) for r in records if store is None or r.close.store_id == store]
    return json_response({"business_day": day.isoformat(), "day_closes": body})


@router.get("/v1/reconciliation", summary="Z report vs hub-accepted vs ERP-posted, per store-day")
async def get_reconciliation(
    request: Request,
    day: date = Query(description="business day, YYYY-MM-DD"),
    store: str | None = Query(default=None, description="only this store"),
    format: Literal["json", "csv", "html"] = Query(default="json"),
    principal: Principal = Depends(require_key),
) -> Response:
    from tillflow.flows.reconciliation import as_dict
    from tillflow.reconciling import reconcile
    from tillflow.reports import render_csv, render_html

    if store is None and not principal.is_admin:
        store = principal.store_id
    if store is not None:
        require_store(principal, store)
    results = await run_in_threadpool(reconcile, request.app.state.services, day, store)
    recs = [rec for rec, _ in results]
    if format == "csv":
        return Response(render_csv(recs), media_type="text/csv; charset=utf-8")
    if format == "html":
        return Response(
            render_html(recs, title=f"Reconciliation {day}"), media_type="text/html; charset=utf-8"
        )
    return json_response(
        {
            "business_day": day.isoformat(),
            "matched": all(rec.status == "matched" for rec in recs),
            "store_days": [{**as_dict(rec), "posting": asdict(state)} for rec, state in results],
        }
    )


@router.post(
    "/v1/day-closes/{store_id}/{business_day}/retry",
    summary="Post a store-day's refused journals again (after the ERP's cause is fixed)",
)
async def retry_day(
    store_id: str, business_day: date, request: Request, principal: Principal = Depends(require_admin)
) -> Response:
    services = request.app.state.services
    count = await run_in_threadpool(services.store_days.retry_failed, store_id, business_day)
    request.app.state.wake_consumers()
    return json_response({"store_id": store_id, "business_day": business_day.isoformat(), "journals": count})
