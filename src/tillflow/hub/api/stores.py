"""The health of the stores' edge agents: their heartbeats, and the status of every store.

Each store's agent posts a heartbeat every few seconds (`POST /v1/stores/{id}/heartbeat`,
with the store's key): its version, its clock, how many transactions wait in its outbox and
the age of the oldest, its last error, how many it delivered and saw refused as conflicts, and
the transactions the hub asked for that it does not hold (`missing`). The hub keeps the latest
one per store and answers with the skew between the clocks and what it misses of the store:

    {"store_id": "S001", "received_at": "2026-11-29T10:00:00.120000+00:00",
     "clock_skew_seconds": 0.12, "resend": ["S001:R01:2026-11-28:00000042"]}

`clock_skew_seconds` is the hub's receive time minus the agent's `sent_at`: positive when the
store's clock is behind the hub's (or the beat was long on the way). `resend` names the
transactions the store's day closes count that the hub has not received, for the day closes
still waiting for them or posted with them flagged as a gap, over the last `RESEND_DAYS`
business days: most recent days first, then those an operator asked for again
(`POST /v1/stores/{id}/resend`); at most `MAX_RESEND`. The agent sends again those it
still holds (the hub answers accepted, or duplicate) and reports the others as `missing`.

`GET /v1/stores/health` (admin) shows every configured store: online while its latest heartbeat
is younger than `hub.store_offline_seconds`, offline once it is older, unknown when the hub has
never heard from it; with a count per status.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tillflow.flows.store_day import missing_transactions
from tillflow.hub.api.transactions import read_body
from tillflow.hub.auth import require_admin, require_key, require_store
from tillflow.hub.ingest import errors_of
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model import StoreHeartbeat, StoreStatus
from tillflow.model.health import store_status
from tillflow.ports import CloseState, LatestHeartbeat, Principal, StoreDays, TransactionStore
from tillflow.services import Services

router = APIRouter(tags=["stores"])
MAX_HEARTBEAT_BYTES = 256 * 1024  # a beat may name up to `MAX_MISSING` transactions
RESEND_DAYS = 14  # business days back the hub asks a store for what its day closes miss
MAX_RESEND = 300  # transactions asked for in one answer


@router.post("/v1/stores/{store_id}/heartbeat", summary="A store's edge agent reports its health")
async def post_heartbeat(
    store_id: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    """200 with the clock skew; 422 for a body that is not a heartbeat (each field and why),
    403 for another store's key, 404 for a store that is not configured."""
    received_at = datetime.now(UTC)
    require_store(principal, store_id)
    services: Services = request.app.state.services
    if store_id not in services.config.store_ids():
        raise Problem(404, "Unknown store", f"store {store_id!r} is not configured", type_="not-found")
    body = await read_body(request, MAX_HEARTBEAT_BYTES)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed JSON", str(exc), type_="malformed-json") from exc
    try:
        beat = StoreHeartbeat.model_validate(doc)
    except ValidationError as exc:
        errors = errors_of(exc)
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise Problem(422, "Invalid heartbeat", detail, type_="invalid-request", errors=errors) from exc
    await run_in_threadpool(services.store_health.record_heartbeat, store_id, beat, received_at)
    latest = LatestHeartbeat(store_id=store_id, beat=beat, received_at=received_at)

    def asked_for() -> list[str]:
        """What its day closes miss, then what an operator asked it to send again."""
        missed = missed_transactions(services.store_days, services.transactions, store_id, received_at.date())
        since = received_at - timedelta(days=RESEND_DAYS)
        requested = services.operations.list_resend_requests(store_id, since=since)
        return list(dict.fromkeys([*missed, *requested]))[:MAX_RESEND]

    resend = await run_in_threadpool(asked_for)
    return json_response(
        {
            "store_id": store_id,
            "received_at": received_at.isoformat(),
            "clock_skew_seconds": latest.clock_skew_seconds,
            "resend": resend,
        }
    )


def missed_transactions(
    days: StoreDays, transactions: TransactionStore, store_id: str, today: date, *, limit: int = MAX_RESEND
) -> list[str]:
    """The transactions the store's day closes count that the hub has not received: of the day
    closes waiting, or posted (or failed) with a gap, from the day after `today` (a store's day
    may be ahead of the hub's) back `RESEND_DAYS` days, most recent first; at most `limit`."""
    found: list[str] = []
    latest = today + timedelta(days=1)
    closes = days.list_day_closes(store_id=store_id, since=today - timedelta(days=RESEND_DAYS - 1))
    for record in sorted(closes, key=lambda r: r.close.business_day, reverse=True):
        if record.close.business_day > latest:
            continue
        if record.state is not CloseState.WAITING and not record.gap:
            continue
        # counted afresh: a flagged gap may have been filled by late sales since
        have = transactions.list_sequences(store_id, record.close.business_day)
        found += missing_transactions(record.close, have, limit=limit - len(found))
        if len(found) >= limit:
            break
    return found


def health_body(
    store_ids: list[str], latest: list[LatestHeartbeat], *, now: datetime, offline_after: float
) -> dict[str, Any]:
    """Every store of `store_ids` with its status and latest heartbeat, and a count per status."""
    by_store = {found.store_id: found for found in latest}
    stores = [_store_health(store_id, by_store.get(store_id), now, offline_after) for store_id in store_ids]
    counts = Counter(store["status"] for store in stores)
    return {
        "as_of": now.isoformat(),
        "offline_after_seconds": offline_after,
        "summary": {status.value: counts.get(status.value, 0) for status in StoreStatus},
        "stores": stores,
    }


def _store_health(
    store_id: str, found: LatestHeartbeat | None, now: datetime, offline_after: float
) -> dict[str, Any]:
    if found is None:
        return {
            "store_id": store_id,
            "status": StoreStatus.UNKNOWN.value,
            "last_heartbeat_at": None,
            "seconds_since": None,
            "buffer_depth": None,
            "oldest_unsent_age_seconds": None,
            "last_error": None,
            "clock_skew_seconds": None,
            "agent_version": None,
            "delivered_total": None,
            "conflicts": None,
            "missing": None,
        }
    beat = found.beat
    # another API process may have received it by a clock a little ahead of this one's
    seconds_since = max(0.0, (now - found.received_at).total_seconds())
    return {
        "store_id": store_id,
        "status": store_status(seconds_since, offline_after).value,
        "last_heartbeat_at": found.received_at.isoformat(),
        "seconds_since": seconds_since,
        "buffer_depth": beat.buffer_depth,
        "oldest_unsent_age_seconds": beat.oldest_unsent_age_seconds,
        "last_error": beat.last_error,
        "clock_skew_seconds": found.clock_skew_seconds,
        "agent_version": beat.agent_version,
        "delivered_total": beat.delivered_total,
        "conflicts": beat.conflicts,
        "missing": list(beat.missing or ()),
    }


@router.get("/v1/stores/health", summary="Per configured store: online, offline or unknown, and its backlog")
async def get_health(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    """Every configured store, also those never heard from (`unknown`), in configuration order."""
    services: Services = request.app.state.services
    latest = await run_in_threadpool(services.store_health.list_health)
    return json_response(
        health_body(
            [store.store_id for store in services.config.stores],
            latest,
            now=datetime.now(UTC),
            offline_after=services.config.hub.store_offline_seconds,
        )
    )
