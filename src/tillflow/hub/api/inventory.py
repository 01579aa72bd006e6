"""`/v1/inventory` (stock positions, stock counts, stock alerts) and `/v1/products` (the
product master: one product; `PUT /v1/products` is an alias of `PUT /v1/items`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tillflow.hub.api.masterdata import put_items
from tillflow.hub.api.transactions import read_body
from tillflow.hub.auth import require_admin, require_key, require_store
from tillflow.hub.ingest import errors_of
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model import StockCount
from tillflow.model.events import INVENTORY_COUNTED, CloudEvent
from tillflow.ports import Principal, StockAlert, Verdict

router = APIRouter(tags=["inventory"])


def _invalid(errors: list[dict[str, str]]) -> Problem:
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:20])
    return Problem(400, "Invalid request", detail, type_="invalid-request", errors=errors)


async def _json_body(request: Request) -> Any:
    body = await read_body(request, request.app.state.services.config.hub.max_body_bytes)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed JSON", str(exc), type_="malformed-json") from exc


# --- stock counts and alerts -------------------------------------------------------------------


def count_event(count: StockCount) -> CloudEvent:
    """The event that says a store counted its stock."""
    return CloudEvent(
        id=count.count_id,
        source=f"/stores/{count.store_id}/counts",
        type=INVENTORY_COUNTED,
        time=count.counted_at,
        subject=count.count_id,
        partitionkey=count.store_id,
        data=count.model_dump_json().encode(),
    )


@router.post("/v1/inventory/counts", summary="Post a stock count: it sets the positions it names")
async def post_count(request: Request, principal: Principal = Depends(require_key)) -> Response:
    """202 when taken (the inventory flow sets the positions), 200 for the same count again,
    409 for another count under the same id."""
    services = request.app.state.services
    doc = await _json_body(request)
    store = doc.get("store_id") if isinstance(doc, dict) else None
    if isinstance(store, str):
        if store not in services.config.store_ids():
            raise Problem(
                403, "Store not allowed", f"store {store!r} is not configured", type_="forbidden-store"
            )
        require_store(principal, store)
    try:
        count = StockCount.model_validate(doc)
    except ValidationError as exc:
        raise _invalid(errors_of(exc)) from exc
    require_store(principal, count.store_id)
    if count.business_day is None:
        zone = services.import_context.timezone(count.store_id)
        count = count.model_copy(update={"business_day": count.counted_at.astimezone(zone).date()})
    verdict = await run_in_threadpool(
        services.stock.record_count, count_event(count), received_at=datetime.now(UTC)
    )
    if verdict is Verdict.CONFLICT:
        raise Problem(
            409,
            "Count conflict",
            f"count {count.count_id} of {count.store_id} was taken with other content",
            type_="count-conflict",
        )
    request.app.state.wake_consumers()
    body = {
        "count_id": count.count_id,
        "store_id": count.store_id,
        "business_day": None if count.business_day is None else count.business_day.isoformat(),
        "status": verdict.value,
    }
    return json_response(body, status=202 if verdict is Verdict.ACCEPTED else 200)


def alert_json(alert: StockAlert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind.value,
        "store_id": alert.store_id,
        "sku": alert.sku,
        "quantity": str(alert.quantity),
        "uom": alert.uom,
        "transaction_id": alert.transaction_id,
        "at": alert.at.isoformat(),
        "detail": alert.detail,
        "open": alert.cleared_at is None,
        "cleared_at": None if alert.cleared_at is None else alert.cleared_at.isoformat(),
        "cleared_by": alert.cleared_by,
    }


@router.get("/v1/inventory/alerts", summary="Stock alerts: negative stock, units with no conversion")
async def list_alerts(
    request: Request,
    store: str | None = Query(default=None, description="only this store (a store key: its own)"),
    all_: bool = Query(default=False, alias="all", description="cleared alerts too"),
    principal: Principal = Depends(require_key),
) -> Response:
    if store is None and not principal.is_admin:
        store = principal.store_id
    if store is not None:
        require_store(principal, store)
    alerts = await run_in_threadpool(
        lambda: request.app.state.services.stock.list_alerts(store_id=store, include_cleared=all_)
    )
    return json_response({"alerts": [alert_json(a) for a in alerts]})


@router.get("/v1/inventory/{store_id}/{sku}", summary="Stock on hand of one SKU in one store")
async def get_position(
    store_id: str, sku: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    require_store(principal, store_id)
    quantity = await run_in_threadpool(request.app.state.services.inventory.read_position, store_id, sku)
    if quantity is None:
        raise Problem(404, "No stock record", f"{sku} never moved in {store_id}", type_="not-found")
    return json_response({"store_id": store_id, "sku": sku, "quantity": str(quantity)})


# --- the product master ------------------------------------------------------------------------


@router.put("/v1/products", summary="Alias of PUT /v1/items: create or replace items of the product master")
async def put_products(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    """`PUT /v1/items` under its former URL: the same rows, the same answer per row."""
    return await put_items(request, principal)


@router.get("/v1/products/{sku}", summary="One product of the master")
async def get_product(sku: str, request: Request, principal: Principal = Depends(require_key)) -> Response:
    found = await run_in_threadpool(request.app.state.services.products.find_products, [sku])
    if sku not in found:
        raise Problem(404, "Product not found", sku, type_="not-found")
    return json_response(found[sku].model_dump(mode="json"))
