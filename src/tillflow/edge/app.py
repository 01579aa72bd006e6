"""The store agent's local HTTP API, for the tills on the store's network.

- `POST /v1/transactions`: the hub's batch endpoint, answered the same way (canonical JSON or a
  POSLog document; per record accepted / duplicate / conflict / invalid; problems as RFC 9457),
  by the handler the hub uses. A record is acknowledged once it is on the store's disk; a full
  outbox is 507 problem+json and nothing acknowledged before is touched. Each record's store
  must be one this agent serves (else 403, as the hub answers another store's key).
- `POST /v1/edge/day-close`: a Z report (the hub's `DayClose`), queued to be sent after every
  transaction of its store-day that is pending now.
- `GET /v1/edge/stores/{store_id}/days/{business_day}/transactions`: the transactions of a
  store-day the outbox holds (what `tillflow edge close-day` builds the Z report from).
- `GET /v1/edge/status`: per store, the outbox depth, oldest unsent age, last error, delivered
  and conflicts, the transactions held (with why), what the hub asked for again and what of it
  the outbox does not hold, the master data version applied with the last sync and its error,
  and the offline grants by settlement.
- `POST /v1/edge/outbox/{transaction_id}/release`: an operator lets a held transaction go (one
  whose loyalty tender names an offline grant the hub refused): it is sent as the till sent it.
  409 when it is not held, 404 when no outbox holds it.
- The lookups (`edge.lookups.router`): `GET /v1/prices/{store_id}/{sku}`, `GET /v1/items/{sku}`,
  `GET /v1/loyalty/members/{member_id}`, `POST /v1/loyalty/redemptions`, answered locally while
  the link to the hub is down.
- `GET /healthz`.

When `local_key` is set (`TILLFLOW_EDGE_LOCAL_KEY`), every `/v1` request must carry it as
`Authorization: Bearer <key>`; otherwise the API is open to the store's network.

The app's state: `agent` (the `EdgeAgent`: outboxes, forwarders, limits, import settings), and
what the lookups read: `master_caches`, `member_cache`, `offline_redemptions`, `hub_clients`.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

import tillflow
from tillflow.edge.lookups import router as lookups
from tillflow.errors import DiskFullError
from tillflow.hub.api.transactions import BatchIntake, answer_batch
from tillflow.hub.problems import Problem, install_problem_handlers, problem_response
from tillflow.hub.responses import json_response
from tillflow.model import DayClose

if TYPE_CHECKING:
    from tillflow.edge.agent import EdgeAgent


def create_edge_app(agent: EdgeAgent) -> FastAPI:
    """The local API over `agent`; the agent's forwarders start and stop with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agent.start()
        yield
        await run_in_threadpool(agent.stop)

    app = FastAPI(
        title="tillflow edge agent",
        version=tillflow.__version__,
        description=(
            "A store's agent: takes the tills' transactions durably and forwards them to the hub;"
            " answers the tills' lookups while the link is down."
        ),
        lifespan=lifespan,
        dependencies=[Depends(_local_key)],
    )
    app.state.agent = agent
    app.state.master_caches = agent.master_caches
    app.state.member_cache = agent.member_cache
    app.state.offline_redemptions = agent.offline_redemptions
    app.state.hub_clients = agent.hub_clients
    install_problem_handlers(app)

    @app.exception_handler(DiskFullError)
    async def _full(request: Request, exc: DiskFullError) -> Response:
        problem = Problem(
            507,
            "Insufficient Storage",
            f"The outbox cannot grow: {exc}. This request was not acknowledged: send it again once"
            " space is freed (what it stored answers duplicate then). Everything acknowledged"
            " before is kept.",
            type_="outbox-full",
        )
        problem.headers = {"retry-after": "30"}
        return problem_response(problem, request.url.path)

    app.add_api_route("/healthz", _healthz, methods=["GET"], summary="The process is alive")
    app.add_api_route(
        "/v1/transactions", _post_transactions, methods=["POST"], summary="Submit a batch of transactions"
    )
    app.add_api_route(
        "/v1/edge/day-close", _post_day_close, methods=["POST"], summary="Queue a store's Z report"
    )
    app.add_api_route(
        "/v1/edge/stores/{store_id}/days/{business_day}/transactions",
        _day_transactions,
        methods=["GET"],
        summary="The transactions of a store-day the outbox holds",
    )
    app.add_api_route("/v1/edge/status", _status, methods=["GET"], summary="Each store's outbox and link")
    app.add_api_route(
        "/v1/edge/outbox/{transaction_id}/release",
        _release,
        methods=["POST"],
        summary="Send a held transaction as the till sent it",
    )
    app.include_router(lookups)
    return app


def _local_key(request: Request) -> None:
    """401 problem unless the request carries the local key (when one is set)."""
    expected: str | None = request.app.state.agent.local_key
    if expected is None or not request.url.path.startswith("/v1/"):
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        problem = Problem(
            401, "Local key required", "send Authorization: Bearer <key>", type_="unauthenticated"
        )
        problem.headers = {"www-authenticate": 'Bearer realm="tillflow-edge"'}
        raise problem


async def _healthz() -> Response:
    return json_response({"status": "ok"})


async def _post_transactions(request: Request) -> Response:
    """Answers per record, as the hub does; acknowledged records are on the store's disk."""
    agent: EdgeAgent = request.app.state.agent
    intake = BatchIntake(
        store=agent.outboxes,
        max_body_bytes=agent.settings.max_body_bytes,
        max_batch_records=agent.settings.max_batch_records,
        import_context=agent.import_context,
        poslog_settings=agent.poslog_settings,
        forbidden=lambda records: _not_served(records, agent.outboxes.store_ids),
        trace_untraced=False,
    )
    return await answer_batch(request, intake)


def _not_served(records: Sequence[Any], served: frozenset[str]) -> list[str]:
    reasons = []
    for i, record in enumerate(records):
        store = record.get("store_id") if isinstance(record, dict) else None
        if isinstance(store, str) and store not in served:
            reasons.append(f"record {i}: store {store!r} is not served by this agent")
    return reasons


async def _post_day_close(close: DayClose, request: Request) -> Response:
    """202: the Z report is kept, to be sent after the store-day's pending transactions."""
    agent: EdgeAgent = request.app.state.agent
    outbox = agent.outboxes.get(close.store_id)
    if outbox is None:
        raise Problem(
            403,
            "Store not allowed",
            f"store {close.store_id!r} is not served by this agent",
            type_="forbidden-store",
        )
    verdict = await run_in_threadpool(outbox.record_day_close, close, received_at=datetime.now(UTC))
    return json_response(
        {
            "store_id": close.store_id,
            "business_day": close.business_day.isoformat(),
            "verdict": verdict.value,
            "state": "queued",
        },
        status=202,
    )


async def _day_transactions(store_id: str, business_day: date, request: Request) -> Response:
    agent: EdgeAgent = request.app.state.agent
    outbox = agent.outboxes.get(store_id)
    if outbox is None:
        raise Problem(
            404, "Store not served", f"store {store_id!r} is not served by this agent", type_="not-found"
        )
    stored = await run_in_threadpool(outbox.read_store_day, store_id, business_day)
    return json_response(
        {
            "store_id": store_id,
            "business_day": business_day.isoformat(),
            "transactions": [orjson.Fragment(s.data) for s in stored],  # as the tills sent them
        }
    )


async def _status(request: Request) -> Response:
    agent: EdgeAgent = request.app.state.agent
    return json_response(await run_in_threadpool(agent.status))


async def _release(transaction_id: str, request: Request) -> Response:
    """200 once the held transaction is pending again (the forwarder sends it as the till did)."""
    agent: EdgeAgent = request.app.state.agent
    store_id, before = await run_in_threadpool(agent.release, transaction_id)
    if before is None:
        raise Problem(404, "Unknown transaction", f"no outbox holds {transaction_id}", type_="not-found")
    if before != "held":
        raise Problem(
            409,
            "Not held",
            f"{transaction_id} is {before}, not held: only a held transaction is released",
            type_="not-held",
            state=before,
        )
    return json_response({"transaction_id": transaction_id, "store_id": store_id, "state": "pending"})
