"""Master data to the stores: batch loads (`PUT /v1/items`, `/v1/prices`, `/v1/promotions`;
`PUT /v1/products` is an alias of `PUT /v1/items`), each store's delta and its acknowledgement,
the status of every store, and the price lookup.

Loads answer per row: created / updated / unchanged / withdrawn / absent, or invalid with an
RFC 9457 problem (type, title, detail) and the field and reason of each error; the valid rows
load even when others are refused. A row ``{"withdraw": KEY}`` in `PUT /v1/prices` (KEY: the
`key` a load answered, `SKU|scope|effective_from`) or `PUT /v1/promotions` (the promotion id),
or `DELETE /v1/promotions/{id}`, withdraws a record: stores that had it get a withdrawal in their
next delta. Records load first, then withdrawals (each in one commit).

The delta (`GET /v1/stores/{id}/masterdata?since=V[&limit=N]`):

    {"store_id": "S001", "since": 120, "version": 245, "complete": true,
     "changes": [{"version": 131, "kind": "price", "key": "SKU1|all|2026-01-01T00:00:00",
                  "record": {...}},
                 {"version": 140, "kind": "promotion", "key": "P7", "record": null}]}

`changes` are what applies to that store, one per key (the latest), in version order: the record
replaces the store's record under (kind, key); `record: null` deletes it (withdrawn, or retargeted
away from the store). Apply them, then ask again with ``since=version`` (while `complete` is
false, a limit cut the answer) and acknowledge `version`. Applying an answer twice changes
nothing; ``since=0`` is the full snapshot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from tillflow.flows.compliance import alerting, summarise
from tillflow.flows.masterdata import active_promotions, local_time, price_at
from tillflow.hub.api.transactions import read_body
from tillflow.hub.auth import require_admin, require_key, require_store
from tillflow.hub.ingest import errors_of
from tillflow.hub.problems import _BASE, Problem
from tillflow.hub.responses import json_response
from tillflow.model import Product, Store
from tillflow.model.masterdata import MasterKind, Price, Promotion, key_of
from tillflow.ports import Deviation, MasterData, MasterDelta, MasterOutcome, Principal
from tillflow.services import Services

router = APIRouter(tags=["master data"])
FIELDS = ("version", "kind", "key", "record")  # of each change in a delta, an array
_STATUSES = ("created", "updated", "unchanged", "withdrawn", "absent", "invalid")


def delta_body(delta: MasterDelta) -> bytes:
    """The delta as JSON; records go in as stored (canonical JSON), never parsed again."""
    return orjson.dumps(
        {
            "store_id": delta.store_id,
            "since": delta.since,
            "version": delta.version,
            "complete": delta.complete,
            "fields": FIELDS,
            "changes": [
                (version, kind, key, None if record is None else orjson.Fragment(record))
                for version, kind, key, record in delta.entries
            ],
        }
    )


async def _json_body(request: Request) -> Any:
    body = await read_body(request, request.app.state.services.config.hub.max_body_bytes)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed JSON", str(exc), type_="malformed-json") from exc


def _store(services: Services, store_id: str) -> Store:
    for store in services.config.stores:
        if store.store_id == store_id:
            return store
    raise Problem(404, "Unknown store", f"store {store_id!r} is not configured", type_="not-found")


# --- loads -------------------------------------------------------------------------------------


def _invalid_row(i: int, key: object, errors: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "index": i,
        "key": key if isinstance(key, str) else None,
        "status": "invalid",
        "type": _BASE + "invalid-record",
        "title": "Invalid record",
        "detail": "; ".join(f"{e['field']}: {e['reason']}" for e in errors),
        "errors": errors,
    }


async def _load(
    request: Request,
    model: type[BaseModel],
    record: Callable[[MasterData, Sequence[Any], datetime], list[MasterOutcome]],
    kind: MasterKind,
    hint: str,
) -> Response:
    services: Services = request.app.state.services
    doc = await _json_body(request)
    if not isinstance(doc, list):
        raise Problem(400, "Not a list", "the body is a JSON list of records", type_="not-a-batch")
    limit = services.config.hub.max_batch_records
    if len(doc) > limit:
        raise Problem(
            413, "Batch too large", f"{len(doc)} records; the limit is {limit}", type_="batch-too-large"
        )
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, Any]] = []
    withdrawals: list[tuple[int, str]] = []
    for i, row in enumerate(doc):
        if isinstance(row, dict) and "withdraw" in row and kind is not MasterKind.ITEM:
            key = row["withdraw"]
            if not isinstance(key, str) or not key or len(row) != 1:
                errors = [{"field": "withdraw", "reason": 'a withdrawal is {"withdraw": KEY}, alone'}]
                results.append(_invalid_row(i, key, errors))
                continue
            withdrawals.append((i, key))
            results.append({"index": i, "key": key, "status": "pending"})
            continue
        try:
            parsed = model.model_validate(row)
        except ValidationError as exc:
            results.append(_invalid_row(i, row.get(hint) if isinstance(row, dict) else None, errors_of(exc)))
            continue
        valid.append((i, parsed))
        results.append({"index": i, "key": key_of(parsed), "status": "pending"})  # type: ignore[arg-type]
    master: MasterData = services.masterdata
    now = datetime.now(UTC)

    def store() -> tuple[list[MasterOutcome], list[MasterOutcome]]:
        loaded = record(master, [r for _, r in valid], now) if valid else []
        gone = master.withdraw_records(kind, [k for _, k in withdrawals], at=now) if withdrawals else []
        return loaded, gone

    loaded, gone = await run_in_threadpool(store)
    for (i, _), outcome in zip([*valid, *withdrawals], [*loaded, *gone], strict=True):
        results[i]["status"] = outcome.value
    counts = Counter(r["status"] for r in results)
    summary = {k: counts.get(k, 0) for k in _STATUSES}
    return json_response({"results": results, "summary": summary, "version": master.read_head()})


@router.put("/v1/items", summary="Create or replace items (the product master), a JSON list")
async def put_items(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    """Answers per row; every accepted change gets a version. `PUT /v1/products` is an alias."""
    return await _load(request, Product, lambda m, r, at: m.record_items(r, at=at), MasterKind.ITEM, "sku")


@router.put("/v1/prices", summary="Create, replace or withdraw prices, a JSON list")
async def put_prices(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    """Answers per row; a row `{"withdraw": KEY}` withdraws the price under that key."""
    return await _load(request, Price, lambda m, r, at: m.record_prices(r, at=at), MasterKind.PRICE, "sku")


@router.put("/v1/promotions", summary="Create, replace or withdraw promotions, a JSON list")
async def put_promotions(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    """Answers per row; a row `{"withdraw": ID}` withdraws that promotion."""
    return await _load(
        request,
        Promotion,
        lambda m, r, at: m.record_promotions(r, at=at),
        MasterKind.PROMOTION,
        "promotion_id",
    )


@router.delete("/v1/promotions/{promotion_id}", summary="Withdraw a promotion")
async def delete_promotion(
    promotion_id: str, request: Request, principal: Principal = Depends(require_admin)
) -> Response:
    master: MasterData = request.app.state.services.masterdata
    [outcome] = await run_in_threadpool(
        lambda: master.withdraw_records(MasterKind.PROMOTION, [promotion_id], at=datetime.now(UTC))
    )
    if outcome is MasterOutcome.ABSENT:
        raise Problem(404, "No such promotion", promotion_id, type_="not-found")
    return json_response({"key": promotion_id, "status": outcome.value, "version": master.read_head()})


# --- deltas, acks, status ----------------------------------------------------------------------


@router.get("/v1/stores/{store_id}/masterdata", summary="What changed for a store since a version")
async def get_delta(
    store_id: str,
    request: Request,
    since: int = Query(ge=0, description="the version the store runs (0: the full snapshot)"),
    limit: int | None = Query(default=None, ge=1, description="at most this many changes"),
    principal: Principal = Depends(require_key),
) -> Response:
    require_store(principal, store_id)
    services: Services = request.app.state.services
    store = _store(services, store_id)
    delta = await run_in_threadpool(lambda: services.masterdata.read_delta(store, since=since, limit=limit))
    if since > delta.version:
        raise Problem(
            409,
            "Ahead of the hub",
            f"the hub's latest version is {delta.version}, not {since}: load the snapshot (since=0)",
            type_="version-ahead",
            latest=delta.version,
        )
    return Response(delta_body(delta), media_type="application/json")


class Ack(BaseModel):
    version: int


@router.post("/v1/stores/{store_id}/masterdata/ack", summary="A store applied master data up to a version")
async def post_ack(store_id: str, request: Request, principal: Principal = Depends(require_key)) -> Response:
    require_store(principal, store_id)
    services: Services = request.app.state.services
    _store(services, store_id)
    try:
        ack = Ack.model_validate(await _json_body(request))
    except ValidationError as exc:
        errors = errors_of(exc)
        raise Problem(
            400, "Invalid request", errors[0]["reason"], type_="invalid-request", errors=errors
        ) from exc
    if ack.version < 0:
        raise Problem(400, "Invalid request", "version: must be 0 or more", type_="invalid-request")
    acked = await run_in_threadpool(
        lambda: services.masterdata.record_ack(store_id, ack.version, at=datetime.now(UTC))
    )
    if acked is None:
        raise Problem(
            409, "Version not reached", f"version {ack.version} is beyond the latest", type_="version-ahead"
        )
    return json_response({"store_id": store_id, "acked_version": acked})


@router.get("/v1/masterdata/status", summary="Per store: the version it runs and how far behind it is")
async def get_status(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    services: Services = request.app.state.services

    def read() -> dict[str, Any]:
        head = services.masterdata.read_head()
        states = services.masterdata.read_sync(services.config.stores)
        return {
            "version": head,
            "stores": [
                {
                    "store_id": s.store_id,
                    "acked_version": s.acked_version,
                    "acked_at": None if s.acked_at is None else s.acked_at.isoformat(),
                    "latest_version": s.latest_version,
                    "behind": s.behind,
                    "up_to_date": s.behind == 0,
                }
                for s in states
            ],
        }

    return json_response(await run_in_threadpool(read))


# --- the price lookup --------------------------------------------------------------------------


@router.get("/v1/prices/{store_id}/{sku}", summary="The price a store charges for a SKU, and its promotions")
async def get_price(
    store_id: str,
    sku: str,
    request: Request,
    at: str | None = Query(default=None, description="an ISO 8601 instant with its offset (default: now)"),
    principal: Principal = Depends(require_key),
) -> Response:
    require_store(principal, store_id)
    services: Services = request.app.state.services
    store = _store(services, store_id)
    when = datetime.now(UTC) if at is None else instant(at)

    def read() -> tuple[list[Price], list[Promotion], Product | None]:
        found = services.products.find_products([sku])
        master = services.masterdata
        return master.find_price_lists([sku]).get(sku, []), master.list_promotions(), found.get(sku)

    prices, promotions, product = await run_in_threadpool(read)
    price = price_at(prices, store, when)
    if price is None:
        raise no_price(store, sku, when)
    department = None if product is None else product.department
    active = active_promotions(promotions, store, when, sku=sku, department=department)
    return json_response(price_body(store, sku, when, price, active))


def price_body(
    store: Store, sku: str, when: datetime, price: Price, promotions: Sequence[Promotion]
) -> dict[str, Any]:
    """The answer of a price lookup: the price `store` charges for `sku` at instant `when`, and
    the promotions running then that name the SKU or its department."""
    return {
        "store_id": store.store_id,
        "sku": sku,
        "at": when.isoformat(),
        "local_time": local_time(store, when).isoformat(),
        "price": price.model_dump(mode="json", exclude_defaults=True),
        "promotions": [p.model_dump(mode="json", exclude_defaults=True) for p in promotions],
    }


def no_price(store: Store, sku: str, when: datetime) -> Problem:
    """The problem a price lookup answers when the store has no price for `sku` at `when`."""
    return Problem(
        404, "No price", f"{sku} has no price in {store.store_id} at {when.isoformat()}", type_="not-found"
    )


def instant(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise Problem(400, "Invalid request", f"at: {exc}", type_="invalid-request") from exc
    if when.tzinfo is None:
        raise Problem(
            400, "Invalid request", "at: an instant needs its offset (or Z)", type_="invalid-request"
        )
    return when


def deviation_body(d: Deviation) -> dict[str, Any]:
    return {
        "transaction_id": d.transaction_id,
        "line_no": d.line_no,
        "kind": d.kind.value,
        "promotion_id": d.promotion_id,
        "expected": format(d.expected, "f"),
        "actual": format(d.actual, "f"),
        "currency": d.currency,
        "detail": d.detail,
    }


@router.get("/v1/compliance", summary="Per store-day: what departs from the promotion calendar")
async def get_compliance(
    request: Request,
    day: date = Query(description="business day, YYYY-MM-DD"),
    store: str | None = Query(default=None, description="only this store"),
    principal: Principal = Depends(require_key),
) -> Response:
    """Each store-day's deviations (unauthorised discounts, promotions not applied) with their
    counts by kind; a store-day with `hub.compliance_alert_deviations` of them or more is in
    `alerts`. A store key sees its own store."""
    if store is None and not principal.is_admin:
        store = principal.store_id
    if store is not None:
        require_store(principal, store)
    services: Services = request.app.state.services
    found = await run_in_threadpool(services.deviations.find_deviations, day, store)
    counts = summarise(found)
    threshold = services.config.hub.compliance_alert_deviations
    alerts = set(alerting(counts, threshold))
    return json_response(
        {
            "business_day": day.isoformat(),
            "alert_threshold": threshold,
            "alerts": [store_day.store_id for store_day in counts if store_day in alerts],
            "store_days": [
                {
                    "store_id": store_day.store_id,
                    "counts": by_kind,
                    "alert": store_day in alerts,
                    "deviations": [deviation_body(d) for d in found if d.store_id == store_day.store_id],
                }
                for store_day, by_kind in counts.items()
            ],
        }
    )
