"""`/v1/inventory`: a store's stock position in one SKU."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.hub.auth import require_key
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.ports import Principal

router = APIRouter(prefix="/v1/inventory", tags=["inventory"])


@router.get("/{store_id}/{sku}", summary="Stock on hand of one SKU in one store")
async def get_position(
    store_id: str, sku: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    if not principal.may_act_for(store_id):
        raise Problem(
            403, "Store not allowed", f"this key is for store {principal.store_id}", type_="forbidden-store"
        )
    quantity = await run_in_threadpool(request.app.state.services.inventory.read_position, store_id, sku)
    if quantity is None:
        raise Problem(404, "No stock record", f"{sku} never moved in {store_id}", type_="not-found")
    return json_response({"store_id": store_id, "sku": sku, "quantity": str(quantity)})
