"""The reference loyalty platform's HTTP API (FastAPI): members, accruals, reversals, holds
and their refunds, the member's ledger, a program's outstanding points and its ledger as a
statement, and the admin endpoints (faults, the service clock, summary figures).

Every write needs an `Idempotency-Key`: the first answer to a key, refusals included, is
stored with the effect and replayed for a repeat (marked `Idempotent-Replayed: true`); the
same key with another body is refused with 422. Errors are RFC 9457 problem+json.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tillflow.model.base import CurrencyCode, Ident
from tillflow.model.money import Dec
from tillflow.sim.loyalty import points
from tillflow.sim.loyalty.faults import FaultInjector, Faults
from tillflow.sim.loyalty.settings import LoyaltySimSettings
from tillflow.sim.loyalty.store import Body, LoyaltyStore, Refusal, fingerprint, iso, problem_body

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
Program = Field(default="default", min_length=1, max_length=64)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EarningLineIn(_Request):
    amount: Dec
    category: str | None = Field(default=None, max_length=64)


class AccrualIn(_Request):
    member_id: Ident
    program: Ident = "default"
    transaction_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    lines: list[EarningLineIn] = Field(min_length=1, max_length=1000)


class ReversalIn(_Request):
    member_id: Ident
    program: Ident = "default"
    transaction_id: str = Field(min_length=1, max_length=128)
    points: int | None = Field(default=None, gt=0)  # None: all that is left of what it earned


class HoldIn(_Request):
    member_id: Ident
    program: Ident = "default"
    points: int = Field(gt=0)
    ttl_seconds: int | None = None  # None: the platform's default


class CommitIn(_Request):
    transaction_id: str = Field(min_length=1, max_length=128)


class ReleaseIn(_Request):
    pass


class RefundIn(_Request):
    transaction_id: str = Field(min_length=1, max_length=128)  # the post-void's


class ClockIn(_Request):
    now: AwareDatetime | None = None  # None: back to wall time


MAX_BATCH = 200  # accruals in one batch request


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    media = PROBLEM_JSON if status >= 400 else "application/json"
    return Response(orjson.dumps(body), status_code=status, media_type=media, headers=headers)


def _problem(refusal: Refusal, instance: str, headers: dict[str, str] | None = None) -> Response:
    return _json(problem_body(refusal) | {"instance": instance}, refusal.status, headers)


def _invalid(exc: ValidationError | RequestValidationError) -> Refusal:
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors) or "the request does not match the API"
    return Refusal(400, "Invalid request", detail, type_="invalid-request", errors=errors)


def create_app(db_path: Path, settings: LoyaltySimSettings | None = None) -> FastAPI:
    """The loyalty platform over the SQLite file at `db_path` (created and seeded on first use)."""
    settings = settings or LoyaltySimSettings()
    store = LoyaltyStore(db_path, settings, seed=points.seed_members)
    injector = FaultInjector(settings.fault_seed)
    app = FastAPI(title="tillflow reference loyalty platform", on_shutdown=[store.close])
    app.state.store = store

    @app.exception_handler(Refusal)
    async def _refused(request: Request, exc: Refusal) -> Response:
        return _problem(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _bad(request: Request, exc: RequestValidationError) -> Response:
        return _problem(_invalid(exc), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        refusal = Refusal(exc.status_code, str(exc.detail), str(exc.detail))
        return _problem(refusal, request.url.path, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        refusal = Refusal(500, "Internal error", type(exc).__name__, type_="internal")
        return _problem(refusal, request.url.path)

    @app.middleware("http")
    async def _faults(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        verdict = injector.judge()
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        if verdict.status is None:
            return await call_next(request)
        title = {500: "Internal error", 503: "Service unavailable", 429: "Too many requests"}[verdict.status]
        headers = {} if verdict.retry_after is None else {"Retry-After": str(verdict.retry_after)}
        refusal = Refusal(verdict.status, title, verdict.reason, type_="injected-fault")
        return _problem(refusal, request.url.path, headers)

    async def write(
        request: Request, model: type[_Request], operation: Callable[..., Body], status: int
    ) -> Response:
        key = request.headers.get("idempotency-key", "").strip()
        if not key or len(key) > 255:
            raise Refusal(
                400,
                "Idempotency-Key required",
                "Idempotency-Key: every write needs a key of 1 to 255 characters",
                type_="idempotency-key-missing",
            )
        raw = await request.body()
        try:
            payload = model.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            raise _invalid(exc) from None
        print_ = fingerprint(request.method, request.url.path, raw)

        def effect(conn: Any, now: datetime) -> tuple[int, Body]:
            return status, operation(conn, settings, now, payload)

        code, body, replayed = await anyio.to_thread.run_sync(partial(store.write, key, print_, effect))
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        if code >= 400:
            body = body | {"instance": request.url.path}
        return _json(body, code, headers)

    # -- health and admin (never faulted)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/admin/state")
    def state() -> Response:
        return _json(store.run(lambda conn, now: points.summary(conn, settings, now)))

    @app.get("/admin/faults")
    def get_faults() -> Response:
        return _json(injector.faults.model_dump(mode="json"))

    @app.put("/admin/faults")
    def put_faults(faults: Faults) -> Response:
        return _json(injector.set(faults).model_dump(mode="json"))

    @app.delete("/admin/faults")
    def delete_faults() -> Response:
        return _json(injector.clear().model_dump(mode="json"))

    @app.get("/admin/clock")
    def get_clock() -> Response:
        return _json({"now": iso(store.now())})

    @app.post("/admin/clock")
    def set_clock(clock: ClockIn) -> Response:
        return _json({"now": iso(store.set_clock(clock.now))})

    # -- reads

    @app.get("/api/programs/{program}")
    def program_rules(program: str) -> Response:
        if program not in settings.programs:
            raise Refusal(404, "unknown program", f"program: no program {program!r}", type_="unknown-program")
        rules = settings.model_dump(
            mode="json", include={"tiers", "earn", "category_multipliers", "point_value", "expiry_days"}
        )
        return _json({"program": program, **rules})

    @app.get("/api/programs/{program}/outstanding")
    def outstanding(program: str) -> Response:
        return _json(store.run(lambda conn, now: points.outstanding(conn, settings, now, program)))

    @app.get("/api/programs/{program}/entries")
    def entries(
        program: str, after: int = 0, limit: int = 1000, kind: list[str] = Query(default=[])
    ) -> Response:
        """The program's ledger past seq `after`, `limit` entries at most, of the `kind`s given."""
        return _json(
            store.run(
                lambda conn, now: points.statement(
                    conn, settings, now, program, after=after, limit=limit, kinds=kind
                )
            )
        )

    @app.get("/api/members/{member_id}")
    def member(member_id: str, program: str = "default") -> Response:
        return _json(store.run(lambda conn, now: points.member_view(conn, settings, now, program, member_id)))

    @app.get("/api/members/{member_id}/ledger")
    def ledger(member_id: str, program: str = "default") -> Response:
        return _json(store.run(lambda conn, now: points.ledger_view(conn, settings, now, program, member_id)))

    @app.get("/api/holds/{hold_id}")
    def hold(hold_id: str) -> Response:
        return _json(store.run(lambda conn, now: points.hold_view(conn, settings, now, hold_id)))

    # -- writes

    def _accrue(conn: Any, s: LoyaltySimSettings, now: datetime, p: AccrualIn) -> Body:
        lines: list[tuple[Decimal, str | None]] = [(line.amount, line.category) for line in p.lines]
        return points.accrue(
            conn,
            s,
            now,
            program=p.program,
            member_id=p.member_id,
            transaction_id=p.transaction_id,
            currency=p.currency,
            lines=lines,
        )

    def _reverse(conn: Any, s: LoyaltySimSettings, now: datetime, p: ReversalIn) -> Body:
        return points.reverse(
            conn,
            s,
            now,
            program=p.program,
            member_id=p.member_id,
            transaction_id=p.transaction_id,
            points=p.points,
        )

    def _reserve(conn: Any, s: LoyaltySimSettings, now: datetime, p: HoldIn) -> Body:
        ttl = s.hold_ttl_seconds if p.ttl_seconds is None else p.ttl_seconds
        return points.reserve(
            conn, s, now, program=p.program, member_id=p.member_id, points=p.points, ttl=ttl
        )

    @app.post("/api/accruals")
    async def accruals(request: Request) -> Response:
        return await write(request, AccrualIn, _accrue, 201)

    @app.post("/api/accruals/batch")
    async def accrual_batch(request: Request) -> Response:
        """Many accruals in one request, each under its own idempotency key and answered on its
        own (`results`, in order: the status and body it would get alone)."""
        try:
            items = orjson.loads(await request.body()).get("accruals")
        except (orjson.JSONDecodeError, AttributeError):
            items = None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            detail = f"the body is {{'accruals': [...]}} with 1 to {MAX_BATCH} items"
            raise Refusal(400, "Invalid request", detail, type_="invalid-request")
        results = await anyio.to_thread.run_sync(partial(_accrue_each, items))
        return _json({"results": results})

    def _accrue_each(items: list[Any]) -> list[dict[str, Any]]:
        results = []
        for item in items:
            item = item if isinstance(item, dict) else {}
            key = str(item.get("idempotency_key") or "").strip()
            body = orjson.dumps(item.get("accrual"))
            try:
                if not key or len(key) > 255:
                    raise Refusal(400, "Idempotency-Key required", "each accrual needs an idempotency_key")
                try:
                    payload = AccrualIn.model_validate_json(body)
                except ValidationError as exc:
                    raise _invalid(exc) from None

                def effect(conn: Any, now: datetime, payload: AccrualIn = payload) -> tuple[int, Body]:
                    return 201, _accrue(conn, settings, now, payload)

                code, answer, replayed = store.write(key, fingerprint("POST", "/api/accruals", body), effect)
            except Refusal as refusal:
                code, answer, replayed = refusal.status, problem_body(refusal), False
            results.append({"status": code, "replayed": replayed, "body": answer})
        return results

    @app.post("/api/reversals")
    async def reversals(request: Request) -> Response:
        return await write(request, ReversalIn, _reverse, 201)

    @app.post("/api/holds")
    async def holds(request: Request) -> Response:
        return await write(request, HoldIn, _reserve, 201)

    @app.post("/api/holds/{hold_id}/commit")
    async def commit(hold_id: str, request: Request) -> Response:
        def op(conn: Any, s: LoyaltySimSettings, now: datetime, p: CommitIn) -> Body:
            return points.commit(conn, s, now, hold_id, p.transaction_id)

        return await write(request, CommitIn, op, 200)

    @app.post("/api/holds/{hold_id}/release")
    async def release(hold_id: str, request: Request) -> Response:
        def op(conn: Any, s: LoyaltySimSettings, now: datetime, p: ReleaseIn) -> Body:
            return points.release(conn, s, now, hold_id)

        return await write(request, ReleaseIn, op, 200)

    @app.post("/api/holds/{hold_id}/refund")
    async def refund(hold_id: str, request: Request) -> Response:
        def op(conn: Any, s: LoyaltySimSettings, now: datetime, p: RefundIn) -> Body:
            return points.refund(conn, s, now, hold_id, p.transaction_id)

        return await write(request, RefundIn, op, 201)

    return app
