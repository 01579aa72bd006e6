"""`HttpLoyalty`: the loyalty platform port over HTTP, against the reference loyalty service's
API (`/api/members`, `/api/accruals`, `/api/reversals`, `/api/holds`).

One pooled `httpx.Client` per adapter. Every write sends its `Idempotency-Key`; an answer
marked `Idempotent-Replayed: true` comes back with `repeated=True`. Answers are translated:

    2xx                         the port's record
    404 unknown member (a read) None
    400 / 404 / 409 / 422 ...   DownstreamRejectedError(reason = the problem's title: detail, status)
    408 / 429 / 503             DownstreamUnavailableError(retry_after = Retry-After seconds)
    other 5xx                   DownstreamUnavailableError
    timeout, connection error   DownstreamUnavailableError (the reason names the URL)

No retries here: the resilience layer and the runner decide when to try again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx

from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.ports import EarningLine, HoldState, Member, PointsHold, PointsMove

__all__ = ["HttpLoyalty"]

_RETRY_LATER = frozenset({408, 429, 503})
_UNKNOWN_MEMBER = "unknown-member"
T = TypeVar("T")


class HttpLoyalty:
    """The loyalty platform reached over HTTP (implements `tillflow.ports.LoyaltyPlatform`)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        max_connections: int = 20,
        system: str = "loyalty",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.system = system
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"Accept": "application/json, application/problem+json"},
            transport=transport,
        )

    # -- lifecycle

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the port

    def find_member(self, member_id: str, *, program: str = "default") -> Member | None:
        """The member's tier, available balance and held points, or None when unknown."""
        answer = self._send("GET", f"/api/members/{_seg(member_id)}", params={"program": program})
        if answer.status_code == 404 and _problem_type(answer).endswith(_UNKNOWN_MEMBER):
            return None
        body = self._body(answer)
        return self._read(
            answer,
            lambda: Member(
                member_id=str(body["member_id"]),
                program=str(body["program"]),
                tier=str(body["tier"]),
                balance=int(body["balance"]),
                held=int(body.get("held", 0)),
            ),
        )

    def accrue(
        self,
        member_id: str,
        *,
        program: str,
        transaction_id: str,
        currency: str,
        lines: Sequence[EarningLine],
        idempotency_key: str,
    ) -> PointsMove:
        """Earn points for a completed transaction; the platform's rules decide how many."""
        payload = {
            "member_id": member_id,
            "program": program,
            "transaction_id": transaction_id,
            "currency": currency,
            "lines": [{"amount": format(line.amount, "f"), "category": line.category} for line in lines],
        }
        return self._move(self._write("/api/accruals", payload, idempotency_key))

    def reverse(
        self, member_id: str, *, program: str, transaction_id: str, points: int | None, idempotency_key: str
    ) -> PointsMove:
        """Take back points a transaction earned (`points`, or all of them when None)."""
        payload = {
            "member_id": member_id,
            "program": program,
            "transaction_id": transaction_id,
            "points": points,
        }
        return self._move(self._write("/api/reversals", payload, idempotency_key))

    def reserve(
        self, member_id: str, *, program: str, points: int, ttl: timedelta, idempotency_key: str
    ) -> PointsHold:
        """Hold points during checkout; they cannot be held or spent twice while held."""
        payload = {
            "member_id": member_id,
            "program": program,
            "points": points,
            "ttl_seconds": math.ceil(ttl.total_seconds()),  # whole seconds, never shorter than asked
        }
        return self._hold(self._write("/api/holds", payload, idempotency_key))

    def commit(self, hold_id: str, *, transaction_id: str, idempotency_key: str) -> PointsHold:
        """Spend a held reservation for a completed transaction."""
        payload = {"transaction_id": transaction_id}
        return self._hold(self._write(f"/api/holds/{_seg(hold_id)}/commit", payload, idempotency_key))

    def release(self, hold_id: str, *, idempotency_key: str) -> PointsHold:
        """Give held points back (a void, an abandoned checkout)."""
        return self._hold(self._write(f"/api/holds/{_seg(hold_id)}/release", {}, idempotency_key))

    # -- HTTP

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request; no answer at all (timeout, refused connection) is Unavailable."""
        url = self._client.build_request(method, path, params=params).url
        try:
            return self._client.request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise DownstreamUnavailableError(
                self.system, f"{method} {url} timed out ({type(exc).__name__})"
            ) from exc
        except httpx.RequestError as exc:
            raise DownstreamUnavailableError(
                self.system, f"{method} {url} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _write(self, path: str, payload: Mapping[str, Any], idempotency_key: str) -> httpx.Response:
        return self._send("POST", path, json=payload, headers={"Idempotency-Key": idempotency_key})

    def _body(self, answer: httpx.Response) -> dict[str, Any]:
        """The JSON object of a 2xx answer; any other answer raised as the port's error."""
        if not answer.is_success:
            raise self._refusal(answer)
        try:
            body = answer.json()
        except ValueError as exc:
            raise self._unreadable(answer, "not JSON") from exc
        if not isinstance(body, dict):
            raise self._unreadable(answer, "not a JSON object")
        return body

    def _refusal(self, answer: httpx.Response) -> DownstreamRejectedError | DownstreamUnavailableError:
        status = answer.status_code
        where = f"{answer.request.method} {answer.request.url}"
        reason = _problem_detail(answer)
        if status in _RETRY_LATER:
            return DownstreamUnavailableError(
                self.system, f"{where} answered {status}: {reason}", retry_after=_retry_after(answer)
            )
        if status >= 500:
            return DownstreamUnavailableError(self.system, f"{where} answered {status}: {reason}")
        return DownstreamRejectedError(self.system, reason, status=status)

    def _unreadable(self, answer: httpx.Response, why: str) -> DownstreamRejectedError:
        # A 2xx we cannot read will read the same when replayed: retrying does not help.
        where = f"{answer.request.method} {answer.request.url}"
        return DownstreamRejectedError(
            self.system, f"unexpected answer from {where}: {why}", status=answer.status_code
        )

    def _read(self, answer: httpx.Response, build: Callable[[], T]) -> T:
        """Build a record from a 2xx body; a body missing what it should hold is unreadable."""
        try:
            result = build()
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unreadable(answer, f"{type(exc).__name__}: {exc}") from exc
        return result

    # -- answers to records

    def _move(self, answer: httpx.Response) -> PointsMove:
        body = self._body(answer)
        return self._read(
            answer,
            lambda: PointsMove(
                entry_id=str(body["entry_id"]),
                member_id=str(body["member_id"]),
                points=int(body["points"]),
                balance=int(body["balance"]),
                repeated=_replayed(answer),
            ),
        )

    def _hold(self, answer: httpx.Response) -> PointsHold:
        body = self._body(answer)
        return self._read(
            answer,
            lambda: PointsHold(
                hold_id=str(body["hold_id"]),
                member_id=str(body["member_id"]),
                points=int(body["points"]),
                state=HoldState(body["state"]),
                expires_at=_aware(str(body["expires_at"])),
                transaction_id=None if body.get("transaction_id") is None else str(body["transaction_id"]),
                repeated=_replayed(answer),
            ),
        )


def _seg(value: str) -> str:
    """A value as one path segment (a `/` or `?` in an id never changes the route)."""
    return quote(value, safe="")


def _replayed(answer: httpx.Response) -> bool:
    value: str = answer.headers.get("idempotent-replayed", "")
    return value.strip().lower() == "true"


def _aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _problem(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _problem_type(answer: httpx.Response) -> str:
    return str(_problem(answer).get("type", ""))


def _problem_detail(answer: httpx.Response) -> str:
    """The problem's `detail`, led by its `title` when the detail does not say it already
    ("insufficient points: points: 401 requested but only 400 available (600 already held)");
    without a problem body, the start of the text, else the status phrase."""
    problem = _problem(answer)
    title, detail = str(problem.get("title") or ""), str(problem.get("detail") or "")
    if title and detail:
        return detail if title.casefold() in detail.casefold() else f"{title}: {detail}"
    if title or detail:
        return title or detail
    text = answer.text.strip()
    return text[:300] if text else (answer.reason_phrase or f"HTTP {answer.status_code}")


def _retry_after(answer: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = answer.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
