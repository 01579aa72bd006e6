"""RFC 9457 problem details: every HTTP error the hub answers is `application/problem+json`."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tillflow.errors import StorageError, TillflowError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_BASE = "https://tillflow.dev/problems/"


class Problem(TillflowError):
    """Raised when a request is answered with an HTTP error as problem+json; `type_` is a short
    slug under the problems URL, `extra` goes into the body as extension members."""

    def __init__(
        self, status: int, title: str, detail: str = "", *, type_: str = "about:blank", **extra: Any
    ):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type_ = type_
        self.extra = extra
        self.headers: dict[str, str] = {}


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    body: dict[str, Any] = {
        "type": problem.type_ if problem.type_ == "about:blank" else _BASE + problem.type_,
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    body.update(problem.extra)
    return Response(
        orjson.dumps(body), status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        problem = Problem(exc.status_code, str(exc.detail) if exc.detail else "HTTP error")
        problem.headers = dict(exc.headers or {})
        return problem_response(problem, request.url.path)

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError) -> Response:
        log.error("state store failed on %s: %s", request.url.path, exc)
        problem = Problem(
            503, "State store unavailable", "nothing was stored; retry later", type_="unavailable"
        )
        problem.headers = {"retry-after": "5"}
        return problem_response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return problem_response(
            Problem(500, "Internal error", type(exc).__name__, type_="internal"), request.url.path
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        problem = Problem(
            400,
            "Invalid request",
            "the request does not match the API",
            type_="invalid-request",
            errors=errors,
        )
        return problem_response(problem, request.url.path)
