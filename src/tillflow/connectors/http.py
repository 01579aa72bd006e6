"""What every HTTP connector shares: one pooled client, and one translation of answers into
the ports' errors, so that every downstream system fails the same way for the runner.

- 2xx: the caller reads the JSON object (`json_object`); `replayed` tells an idempotent repeat.
- 408, 429, 503 and any other 5xx: `DownstreamUnavailableError`, with the `Retry-After` seconds
  when given (delta-seconds or an HTTP date).
- Other 4xx: `DownstreamRejectedError` with the problem's reason (its `title` leading its
  `detail` when the detail does not say it already) and the status.
- No answer (connect refused, timeout, broken connection): `DownstreamUnavailableError` naming
  the URL, without `retry_after`.
- A 2xx whose body cannot be read: `DownstreamRejectedError` — a retry with the same idempotency
  key replays the same body, so retrying cannot help.

With a `Resilience`, every request goes through it (maintenance windows, circuit breaker,
throttle): an answer that says "later" (408, 429, 5xx) is raised inside it, so it can wait out a
429 and count a failure, and `X-RateLimit-Remaining` / `X-RateLimit-Reset` hold its throttle.
Without one, nothing is retried here: the consumer runner decides that.

Every request is a client span (`observe.tracing.client_call`) and carries its traceparent:
in the trace of the transaction it serves, when the batch in hand serves one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import quote

import httpx

from tillflow.connectors.resilience import Resilience
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.observe import tracing

T = TypeVar("T")
RETRY_LATER = frozenset({408, 429, 503})
_MAX_TEXT = 300  # of a body that is not a problem document, quoted in a reason


class HttpConnector:
    """A pooled JSON-over-HTTP client for one downstream system. Use as a context manager, or
    `close()` it when done. A subclass names its system and its usual timeouts (seconds)."""

    SYSTEM: ClassVar[str] = "downstream"
    TIMEOUT: ClassVar[float] = 10.0
    CONNECT_TIMEOUT: ClassVar[float] = 3.0

    def __init__(
        self,
        base_url: str,
        *,
        system: str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_connections: int = 20,
        transport: httpx.BaseTransport | None = None,
        resilience: Resilience | None = None,
        max_batch: int = 100,
    ) -> None:
        system = system or self.SYSTEM
        timeout = self.TIMEOUT if timeout is None else timeout
        connect_timeout = self.CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        self.system = system
        self.resilience = resilience
        self.max_batch = max_batch  # documents in one batch request
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={
                "accept": "application/json, application/problem+json",
                "user-agent": f"tillflow-{system}",
            },
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """One request, through the resilience layer when there is one. No answer at all, or an
        answer that says "later", is Unavailable; any other answer is returned unjudged."""
        headers = {"idempotency-key": idempotency_key} if idempotency_key is not None else None

        def exchange() -> httpx.Response:
            answer = self._request(method, path, json=json, params=params, headers=headers)
            if self.resilience is not None:
                self.resilience.observe_limits(*rate_limit(answer))
            if answer.status_code in RETRY_LATER or answer.status_code >= 500:
                raise self.failure(answer)
            return answer

        return exchange() if self.resilience is None else self.resilience.call(exchange)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        with tracing.client_call(self.system, method, f"{self.base_url}{path}") as call:
            try:
                answer = self._client.request(
                    method, path, json=json, params=params, headers=(headers or {}) | call.headers()
                )
            except httpx.TimeoutException as exc:
                reason = f"{method} {self.base_url}{path} timed out: no answer in time ({type(exc).__name__})"
                raise DownstreamUnavailableError(self.system, reason) from exc
            except httpx.RequestError as exc:
                reason = f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}"
                raise DownstreamUnavailableError(self.system, reason) from exc
            call.set("http.response.status_code", answer.status_code)
            if answer.status_code >= 400:
                call.fail(f"HTTP {answer.status_code}")
            return answer

    def json_object(self, answer: httpx.Response) -> dict[str, Any]:
        """The JSON object of a 2xx answer; any other answer raised as the port's error."""
        if not answer.is_success:
            raise self.failure(answer)
        try:
            body = answer.json()
        except ValueError as exc:
            raise self.unreadable(answer, "not JSON") from exc
        if not isinstance(body, dict):
            raise self.unreadable(answer, "not a JSON object")
        return body

    def read(self, answer: httpx.Response, build: Callable[[dict[str, Any]], T]) -> T:
        """A record built from a 2xx body; a body missing what it should hold is unreadable."""
        body = self.json_object(answer)
        try:
            return build(body)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise self.unreadable(answer, f"{type(exc).__name__}: {exc}") from exc

    def batch_results(
        self, answer: httpx.Response, names: Sequence[str], build: Callable[[dict[str, Any], bool], T]
    ) -> list[T | DownstreamRejectedError]:
        """The answers of a batch request (`{"results": [{"status", "replayed", "body"}]}`), one
        per item named in `names`, in order: a 2xx item built by `build(body, replayed)`, a 4xx
        item its rejection. An item answered 429 or 5xx fails the whole call, to be retried."""
        results = self.read(answer, lambda data: list(data["results"]))
        if len(results) != len(names):
            raise self.unreadable(answer, f"{len(results)} results for {len(names)} items")
        out: list[T | DownstreamRejectedError] = []
        for name, result in zip(names, results, strict=True):
            try:
                status, body = int(result["status"]), result.get("body") or {}
                if 200 <= status < 300:
                    out.append(build(body, bool(result.get("replayed"))))
                    continue
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self.unreadable(answer, f"{name}: {type(exc).__name__}: {exc}") from exc
            reason = f"{name}: {problem_text(body) or f'HTTP {status}'}"
            if status in RETRY_LATER or status >= 500:
                raise DownstreamUnavailableError(self.system, reason, status=status)
            out.append(DownstreamRejectedError(self.system, reason, status=status))
        return out

    def failure(self, answer: httpx.Response) -> DownstreamRejectedError | DownstreamUnavailableError:
        status = answer.status_code
        reason = problem_reason(answer)
        if status in RETRY_LATER or status >= 500:
            where = f"{answer.request.method} {answer.request.url}"
            return DownstreamUnavailableError(
                self.system,
                f"{where} answered {status}: {reason}",
                retry_after=retry_after(answer),
                status=status,
            )
        return DownstreamRejectedError(self.system, reason, status=status)

    def unreadable(self, answer: httpx.Response, why: str) -> DownstreamRejectedError:
        where = f"{answer.request.method} {answer.request.url}"
        return DownstreamRejectedError(
            self.system, f"unexpected answer from {where}: {why}", status=answer.status_code
        )


def segment(value: str) -> str:
    """A value as one path segment (a `/` or `?` in an id never changes the route)."""
    return quote(value, safe="")


def replayed(answer: httpx.Response) -> bool:
    """Whether the system answered an idempotency key it had already seen."""
    value: str = answer.headers.get("idempotent-replayed", "")
    return value.strip().lower() == "true"


def aware(text: str) -> datetime:
    """An ISO 8601 time; one without an offset is taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def problem(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def problem_reason(answer: httpx.Response) -> str:
    """The problem's `detail`, led by its `title` when the detail does not say it already
    ("insufficient points: 401 requested but only 400 available"); without a problem body, the
    start of the text, else the status phrase."""
    said = problem_text(problem(answer))
    if said:
        return said
    text = answer.text.strip()
    return text[:_MAX_TEXT] if text else (answer.reason_phrase or f"HTTP {answer.status_code}")


def problem_text(found: dict[str, Any]) -> str:
    """A problem document's `detail`, led by its `title` unless the detail says it already."""
    title, detail = str(found.get("title") or ""), str(found.get("detail") or "")
    if title and detail:
        return detail if title.casefold() in detail.casefold() else f"{title}: {detail}"
    return title or detail


def retry_after(answer: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = (answer.headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (aware_utc(when) - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def rate_limit(answer: httpx.Response) -> tuple[int | None, float | None]:
    """X-RateLimit-Remaining and X-RateLimit-Reset (seconds from now; a value past 10^9 is an
    epoch time), each None when absent or unreadable."""
    headers = answer.headers
    remaining: int | None = None
    reset: float | None = None
    with contextlib.suppress(KeyError, ValueError):
        remaining = int(headers["x-ratelimit-remaining"])
    with contextlib.suppress(KeyError, ValueError):
        reset = float(headers["x-ratelimit-reset"])
    if reset is not None and not math.isfinite(reset):
        reset = None
    elif reset is not None and reset > 1e9:
        reset = max(0.0, reset - datetime.now(UTC).timestamp())
    return remaining, reset


def aware_utc(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
