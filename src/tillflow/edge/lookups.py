"""The store's lookups, answered by the edge agent itself, so a till gets them while the link to
the hub is down: prices with their promotions and items from the master data cache, members'
balances from the member cache, and redemption holds (through to the hub while it answers, else
decided by the offline redemption policy). Errors are RFC 9457 problems, as the hub's.

- `GET /v1/prices/{store_id}/{sku}?at=`: the hub's answer for the same store, SKU and instant
  (`tillflow.hub.api.masterdata.price_body`), from the version the cache runs.
- `GET /v1/items/{sku}`: the item, as the hub's `GET /v1/products/{sku}` answers it.
- `GET /v1/loyalty/members/{member_id}?program=`: the hub's answer, kept for a while; `stale`
  true while the hub cannot be reached (the last answer), and `age_seconds` since the hub gave it.
- `POST /v1/loyalty/redemptions` (Idempotency-Key required): the hub's answer while the hub
  answers; while it cannot be reached (or the loyalty platform behind it is away), a grant of the
  offline policy (201; 200 for the same request again) or a 503 problem saying why not. A key
  that got an offline grant gets that grant again, online or not.

The agent's app includes `router` and sets, on `app.state`:

- `master_caches`: ``Mapping[str, MasterCache]``, the master data cache of each store the agent
  serves, by store id (the stores it answers for);
- `member_cache`: `MemberCache`;
- `offline_redemptions`: `OfflineRedemptions`;
- `hub_clients`: ``Mapping[str, httpx.Client]``, by store id: a client to the hub with its base
  URL, that store's key and timeouts as short as a checkout may wait before the offline policy
  decides. A redemption goes through its store's client; a balance through any of them (members
  are the loyalty program's, not a store's).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import httpx
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.edge.cache import MasterCache, request_hub
from tillflow.edge.members import MemberCache, OfflineDecision, OfflineRedemptions
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.hub.api.masterdata import instant, no_price, price_body
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model.loyalty import ReserveRedemption
from tillflow.model.masterdata import Price, Promotion

__all__ = ["router"]

router = APIRouter(tags=["store lookups"])
RETRY_AFTER = "5"  # seconds a till waits before asking again what the hub could not answer


def _caches(request: Request) -> Mapping[str, MasterCache]:
    caches: Mapping[str, MasterCache] = request.app.state.master_caches
    return caches


def _cache(request: Request, store_id: str) -> MasterCache:
    cache = _caches(request).get(store_id)
    if cache is None:
        raise Problem(
            404, "Unknown store", f"store {store_id!r} is not served by this agent", type_="not-found"
        )
    return cache


def _hub(request: Request, store_id: str | None = None) -> httpx.Client:
    """The client to the hub with `store_id`'s key (None: any store's)."""
    clients: Mapping[str, httpx.Client] = request.app.state.hub_clients
    client = clients.get(store_id) if store_id is not None else next(iter(clients.values()), None)
    if client is None:
        raise Problem(
            404, "Unknown store", f"store {store_id!r} is not served by this agent", type_="not-found"
        )
    return client


def _unavailable(title: str, detail: str, type_: str, **extra: object) -> Problem:
    problem = Problem(503, title, detail, type_=type_, **extra)
    problem.headers["Retry-After"] = RETRY_AFTER
    return problem


@router.get("/v1/prices/{store_id}/{sku}", summary="The price a store charges for a SKU, and its promotions")
async def get_price(
    store_id: str,
    sku: str,
    request: Request,
    at: str | None = Query(default=None, description="an ISO 8601 instant with its offset (default: now)"),
) -> Response:
    cache = _cache(request, store_id)
    when = datetime.now(UTC) if at is None else instant(at)

    def read() -> tuple[Price | None, list[Promotion]]:
        price = cache.price(sku, when)
        if price is None:
            return None, []
        item = cache.item(sku)
        department = None if item is None else item.department
        return price, cache.promotions(when, sku=sku, department=department)

    price, active = await run_in_threadpool(read)
    if price is None:
        raise no_price(cache.store, sku, when)
    return json_response(price_body(cache.store, sku, when, price, active))


@router.get("/v1/items/{sku}", summary="One item of the master data")
async def get_item(sku: str, request: Request) -> Response:
    caches = list(_caches(request).values())
    item = await run_in_threadpool(caches[0].item, sku) if caches else None  # items are every store's
    if item is None:
        raise Problem(404, "Product not found", sku, type_="not-found")
    return json_response(item.model_dump(mode="json"))


@router.get(
    "/v1/loyalty/members/{member_id}",
    summary="A member's points balance (kept; stale while the hub cannot be reached)",
)
async def get_member(
    member_id: str, request: Request, program: str = Query(default="default", max_length=64)
) -> Response:
    members: MemberCache = request.app.state.member_cache
    try:
        found = await run_in_threadpool(members.lookup, _hub(request), member_id, program)
    except DownstreamRejectedError as exc:
        if exc.status == 404:
            raise Problem(404, "Unknown member", exc.reason, type_="unknown-member") from exc
        raise Problem(502, "Refused by the hub", exc.reason, type_="hub-refused") from exc
    if found is None:
        raise _unavailable(
            "Hub unavailable",
            f"the hub cannot be reached and no earlier balance of {member_id} is known",
            "loyalty-unavailable",
        )
    return json_response(found.body(), headers={"Cache-Control": "no-store"})


@router.post("/v1/loyalty/redemptions", summary="Hold a member's points during checkout")
async def post_redemption(
    ask: ReserveRedemption,
    request: Request,
    idempotency_key: str = Header(default="", alias="idempotency-key"),
) -> Response:
    key = idempotency_key.strip()
    if not key or len(key) > 200:
        raise Problem(
            400,
            "Idempotency-Key required",
            "Idempotency-Key: a reservation needs a key of 1 to 200 characters, the same on a retry",
            type_="idempotency-key-missing",
        )
    offline: OfflineRedemptions = request.app.state.offline_redemptions
    cache = _cache(request, ask.store_id)
    hub = _hub(request, ask.store_id)
    if await run_in_threadpool(offline.find_request, ask.store_id, key) is None:
        body = ask.model_dump(mode="json", exclude_none=True)
        try:
            answer = await run_in_threadpool(
                lambda: request_hub(
                    hub,
                    "POST",
                    "/v1/loyalty/redemptions",
                    json=body,
                    headers={"idempotency-key": key},
                )
            )
        except DownstreamUnavailableError:
            pass  # the offline policy decides
        else:
            media_type = answer.headers.get("content-type", "application/json")
            return Response(answer.content, status_code=answer.status_code, media_type=media_type)
    try:
        decision: OfflineDecision = await run_in_threadpool(
            lambda: offline.grant(ask, key, timezone=cache.store.timezone)
        )
    except ValueError as exc:
        raise Problem(422, "Idempotency-Key reused", str(exc), type_="idempotency-key-reused") from exc
    if decision.grant is None:
        raise _unavailable(
            "Redemption refused offline",
            decision.refusal or "refused",
            "offline-redemption-refused",
            remaining_points=decision.remaining,
        )
    return json_response(decision.grant.body(), status=201 if decision.new else 200)
