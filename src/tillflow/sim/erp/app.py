"""The reference ERP over HTTP: a general ledger and a stock ledger that refuse like a real one.

Writes take an `Idempotency-Key`; the same key repeats the first answer, the same key with
another body is refused. Documents are idempotent by their own id as well (a journal's
`external_id`, a batch's `batch_id`), because a sender that lost its key must still not post
twice. Only a posting is remembered under a key: a refusal (422, 409) or a throttled request
changes nothing, so fixing the cause and retrying with the same key works, as with the big
payment and ERP APIs.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tillflow.errors import StorageError
from tillflow.model import MINOR_UNITS
from tillflow.sim.erp.documents import (
    JournalIn,
    MovementBatchIn,
    content_hash,
    journal_findings,
    movement_findings,
)
from tillflow.sim.erp.guards import (
    FaultInjector,
    Faults,
    TokenBucket,
    maintenance_problem,
    maintenance_retry_after,
    problem,
    utc_now,
)
from tillflow.sim.erp.settings import PERIOD, ErpSimSettings
from tillflow.sim.erp.store import ErpStore, Posted

__all__ = ["create_app"]

_REPLAYED = {"idempotent-replayed": "true"}


_NOT_JSON = object()
Document = type[JournalIn] | type[MovementBatchIn]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _money(amount: Any, currency: str) -> str:
    return f"{amount:.{MINOR_UNITS[currency]}f}"


class PeriodStatus(BaseModel):
    status: Literal["open", "closed"]


class _Books:
    """The write paths: idempotency by key and by document id, the ledger rules, the posting."""

    def __init__(self, store: ErpStore, settings: ErpSimSettings) -> None:
        self.store = store
        self.settings = settings

    def post(self, key: str, request_hash: str, doc: JournalIn | MovementBatchIn) -> Response:
        store = self.store
        journal = isinstance(doc, JournalIn)
        doc_id = doc.external_id if isinstance(doc, JournalIn) else doc.batch_id
        digest = content_hash(doc)
        with store.transaction():
            answer = store.find_answer(key)
            if answer is not None:  # a concurrent twin got here first
                return self.replay_or_refuse(answer.request_hash, request_hash, answer.status, answer.body)
            existing = store.find_journal(doc_id) if journal else store.find_batch(doc_id)
            if existing is not None:
                if existing.content_hash != digest:
                    store.count_rejection("document_conflict")
                    what = "journal external_id" if journal else "batch_id"
                    return problem(
                        409,
                        "Document conflict",
                        f"{what} {doc_id} was posted as {existing.document_number} with other content",
                        type_="document-conflict",
                        document_number=existing.document_number,
                    )
                body = self._receipt(existing, journal)
                store.remember_answer(key, request_hash, 200, body.decode())
                return Response(body, 200, headers=_REPLAYED, media_type="application/json")
            closed = store.closed_periods()
            max_lines = self.settings.max_lines_per_journal
            if isinstance(doc, JournalIn):
                findings = journal_findings(
                    doc, accounts=self.settings.accounts, closed=closed, max_lines=max_lines
                )
            else:
                findings = movement_findings(doc, closed=closed, max_lines=max_lines)
            if findings:
                store.count_rejection(findings[0].code)
                return problem(
                    422,
                    "Document refused",
                    "; ".join(f"{f.field}: {f.reason}" for f in findings),
                    type_=findings[0].code.replace("_", "-"),
                    errors=[f.as_json() for f in findings],
                )
            if isinstance(doc, JournalIn):
                posted = store.post_journal(doc, digest)
            else:
                posted = store.post_movements(doc, digest)
            body = self._receipt(posted, journal)
            store.remember_answer(key, request_hash, 201, body.decode())
            location = f"/api/{'journals' if journal else 'inventory-movements'}/{doc_id}"
            return Response(body, 201, headers={"location": location}, media_type="application/json")

    @staticmethod
    def _receipt(posted: Posted, journal: bool) -> bytes:
        body: dict[str, str] = {**posted.as_json(), "status": "posted"}
        if not journal:
            body["batch_id"] = posted.external_id
        return orjson.dumps(body)

    @staticmethod
    def replay_or_refuse(stored_hash: str, request_hash: str, status: int, body: str) -> Response:
        if stored_hash != request_hash:
            return problem(
                422,
                "Idempotency key reused",
                "idempotency key reused with another request",
                type_="idempotency-key-reused",
            )
        return Response(body, status, headers=_REPLAYED, media_type="application/json")


def create_app(db_path: Path, settings: ErpSimSettings | None = None) -> FastAPI:
    """The ERP on the SQLite file `db_path` (created if missing, reopened as it was otherwise)."""
    settings = settings or ErpSimSettings()
    store = ErpStore(db_path, closed_periods=settings.closed_periods)
    books = _Books(store, settings)
    faults = FaultInjector(settings.seed)
    limit = settings.rate_limit
    bucket = TokenBucket(limit) if limit else None
    limit_detail = f"at most {limit.per_second:g} requests a second, bursts of {limit.burst}" if limit else ""
    app = FastAPI(title="tillflow reference ERP", docs_url=None, redoc_url=None)
    app.router.on_shutdown.append(store.close)
    _install_problems(app)
    answered: Counter[str] = Counter()  # business API answers by status, for /admin/state

    @app.middleware("http")
    async def _guarded(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        answer = await _guards(request, call_next)
        answered[str(answer.status_code)] += 1
        return answer

    async def _guards(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if faults.faults.latency_ms:
            await asyncio.sleep(faults.faults.latency_ms / 1000)
        now = utc_now()
        refused = faults.refusal(now)
        if refused is not None:
            return refused
        down = maintenance_retry_after(settings.maintenance, now)
        if down is not None:
            return maintenance_problem(down[1], now)
        if bucket is None:
            return await call_next(request)
        wait_s, limits = bucket.take()
        if wait_s is not None:
            return problem(
                429,
                "Too many requests",
                limit_detail,
                type_="rate-limited",
                headers={"retry-after": str(wait_s), **limits},
            )
        answer = await call_next(request)
        answer.headers.update(limits)
        return answer

    def write_one(path: str, key: str, parsed: Any, model: Document) -> Response:
        """One write under its idempotency key, as `path` would take it alone."""
        if not key or len(key) > 255:
            return problem(
                400,
                "Idempotency key required",
                "every write needs an Idempotency-Key header (1 to 255 characters)",
                type_="idempotency-key-required",
            )
        request_hash = hashlib.sha256(
            path.encode() + b"\n" + orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        stored = store.find_answer(key)  # a millisecond of SQLite: cheaper than a thread hop
        if stored is not None:
            return books.replay_or_refuse(stored.request_hash, request_hash, stored.status, stored.body)
        try:
            doc = model.model_validate(parsed)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
            return problem(
                400,
                "Invalid request",
                "; ".join(f"{e['field']}: {e['reason']}" for e in errors),
                type_="invalid-request",
                errors=errors,
            )
        return books.post(key, request_hash, doc)

    async def read_json(request: Request) -> Any:
        try:
            return orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _NOT_JSON

    async def write(request: Request, model: Document) -> Response:
        parsed = await read_json(request)
        if parsed is _NOT_JSON:
            return problem(400, "Invalid request", "the body is not JSON", type_="invalid-request")
        key = request.headers.get("idempotency-key", "").strip()
        return write_one(request.url.path, key, parsed, model)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.post("/api/journals")
    async def post_journal(request: Request) -> Response:
        return await write(request, JournalIn)

    @app.post("/api/journals/batch")
    async def post_journal_batch(request: Request) -> Response:
        """Many journals in one request, each with its own idempotency key and its own answer
        (`results`, in order: the status and body it would get alone). The request counts
        once against the rate limit."""
        parsed = await read_json(request)
        items = parsed.get("journals") if isinstance(parsed, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= settings.max_journals_per_batch:
            detail = f"the body is {{'journals': [...]}} with 1 to {settings.max_journals_per_batch} items"
            return problem(400, "Invalid request", detail, type_="invalid-request")
        results = []
        for item in items:
            item = item if isinstance(item, dict) else {}
            key = str(item.get("idempotency_key") or "").strip()
            answer = write_one("/api/journals", key, item.get("journal"), JournalIn)
            results.append(
                {
                    "status": answer.status_code,
                    "replayed": "idempotent-replayed" in answer.headers,
                    "body": orjson.loads(bytes(answer.body)),
                }
            )
        return _json(200, {"results": results})

    @app.get("/api/journals/{external_id}")
    def journal_status(external_id: str) -> Response:
        posted = store.find_journal(external_id)
        if posted is None:
            return problem(404, "Not found", f"no journal {external_id} was posted", type_="not-found")
        return _json(200, {**posted.as_json(), "status": "posted"})

    @app.post("/api/inventory-movements")
    async def post_movements(request: Request) -> Response:
        return await write(request, MovementBatchIn)

    @app.get("/api/inventory-movements/{batch_id}")
    def batch_status(batch_id: str) -> Response:
        posted = store.find_batch(batch_id)
        if posted is None:
            return problem(404, "Not found", f"no movement batch {batch_id} was posted", type_="not-found")
        return _json(200, {**posted.as_json(), "batch_id": batch_id, "status": "posted"})

    @app.get("/api/trial-balance")
    def trial_balance(store_id: str = Query(min_length=1), business_day: date = Query()) -> Response:
        rows = store.trial_balance(store_id, business_day)
        totals: dict[str, list[Any]] = {}
        for _, currency, debit, credit in rows:
            t = totals.setdefault(currency, [0, 0])
            t[0] += debit
            t[1] += credit
        return _json(
            200,
            {
                "store_id": store_id,
                "business_day": business_day.isoformat(),
                "lines": [
                    {
                        "account": account,
                        "name": settings.accounts.get(account, ""),
                        "currency": currency,
                        "debit": _money(debit, currency),
                        "credit": _money(credit, currency),
                    }
                    for account, currency, debit, credit in rows
                ],
                "totals": [
                    {"currency": c, "debit": _money(d, c), "credit": _money(k, c)}
                    for c, (d, k) in sorted(totals.items())
                ],
            },
        )

    @app.get("/api/stock")
    def stock(store_id: str = Query(min_length=1), sku: str | None = None) -> Response:
        rows = store.stock(store_id, sku)
        return _json(
            200,
            {
                "store_id": store_id,
                "positions": [{"sku": s, "uom": u, "quantity": str(q)} for s, u, q in rows],
            },
        )

    @app.get("/api/accounts")
    def accounts() -> Response:
        chart = [{"account": a, "name": n} for a, n in sorted(settings.accounts.items())]
        return _json(200, {"accounts": chart, "closed_periods": sorted(store.closed_periods())})

    @app.get("/admin/state")
    def state() -> Response:
        figures = {"answers": dict(sorted(answered.items())), "faults": faults.faults.model_dump(mode="json")}
        return _json(200, {**store.state(), **figures})

    @app.get("/admin/faults")
    def get_faults() -> Response:
        return _json(200, faults.faults.model_dump(mode="json"))

    @app.put("/admin/faults")
    def put_faults(new: Faults) -> Response:
        faults.faults = new
        return _json(200, new.model_dump(mode="json"))

    @app.delete("/admin/faults")
    def clear_faults() -> Response:
        faults.faults = Faults()
        return _json(200, faults.faults.model_dump(mode="json"))

    @app.put("/admin/periods/{period}")
    def set_period(period: str, body: PeriodStatus) -> Response:
        """Close or reopen a fiscal period at runtime, as a controller does at month end."""
        if not PERIOD.match(period):
            detail = f"a fiscal period is written YYYY-MM, not {period}"
            return problem(400, "Invalid request", detail, type_="invalid-request")
        with store.transaction():
            store.set_period(period, closed=body.status == "closed")
        return _json(200, {"period": period, "status": body.status})

    return app


def _install_problems(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem(400, "Invalid request", detail, type_="invalid-request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return problem(
            exc.status_code, "HTTP error", str(exc.detail), type_="http", headers=dict(exc.headers or {})
        )

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError) -> Response:
        return problem(
            503,
            "Books unavailable",
            "nothing was posted; retry later",
            type_="unavailable",
            headers={"retry-after": "5"},
        )
