"""What stands between a caller and the ERP's books: injected faults, maintenance, the rate limit.

Each guard answers like a real ERP does, with a problem+json body and a `Retry-After` that a
well-behaved connector can obey. Faults are set at runtime (`/admin/faults`) and live in the
process only: a restart clears them, as a real incident ends. Random draws come from a seeded
RNG so that a run with the same seed and the same requests fails the same way.
"""

from __future__ import annotations

import math
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tillflow.sim.erp.settings import MaintenanceWindow, RateLimit

__all__ = [
    "FaultInjector",
    "Faults",
    "Throttle",
    "TokenBucket",
    "maintenance_problem",
    "maintenance_retry_after",
    "problem",
]

PROBLEM_JSON = "application/problem+json"
_BASE = "https://tillflow.dev/problems/erp/"


def problem(
    status: int, title: str, detail: str, *, type_: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """An RFC 9457 problem answer."""
    body = {"type": _BASE + type_, "title": title, "status": status, "detail": detail, **extra}
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


class Throttle(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: float = Field(ge=0, le=1)
    retry_after: int = Field(default=1, ge=1)


class Faults(BaseModel):
    """The faults in force; the empty value is a healthy ERP."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_rate: float = Field(default=0, ge=0, le=1)
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    outage_until: AwareDatetime | None = None
    maintenance_until: AwareDatetime | None = None  # an unscheduled maintenance window, from now
    throttle: Throttle | None = None


class FaultInjector:
    def __init__(self, seed: int) -> None:
        self.faults = Faults()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _draw(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._rng.random() < rate

    def refusal(self, now: datetime) -> Response | None:
        """The injected failure for this request, if one is due (latency is the caller's)."""
        faults = self.faults
        if faults.outage_until is not None and now < faults.outage_until:
            wait = max(1, math.ceil((faults.outage_until - now).total_seconds()))
            return problem(
                503,
                "Service unavailable",
                f"the ERP is down until {faults.outage_until.isoformat()}",
                type_="outage",
                headers={"retry-after": str(wait)},
            )
        if faults.maintenance_until is not None and now < faults.maintenance_until:
            return maintenance_problem(faults.maintenance_until, now)
        if self._draw(faults.error_rate):
            return problem(500, "Internal error", "injected server error", type_="internal")
        if faults.throttle is not None and self._draw(faults.throttle.rate):
            return problem(
                429,
                "Too many requests",
                "injected throttling",
                type_="throttled",
                headers={"retry-after": str(faults.throttle.retry_after)},
            )
        return None


class TokenBucket:
    """`per_second` tokens flow in, at most `burst` wait; a request takes one or is refused with
    the whole seconds until the next token. Every answer tells the caller where it stands, in
    `X-RateLimit-Limit` (a second's worth), `-Remaining` (tokens left) and `-Reset` (seconds,
    to the millisecond, until the next token)."""

    def __init__(self, limit: RateLimit) -> None:
        self._rate = limit.per_second
        self._burst = float(limit.burst)
        self._tokens = float(limit.burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> tuple[int | None, dict[str, str]]:
        """(None when admitted, otherwise the Retry-After in seconds (at least 1); the
        X-RateLimit-* headers of the answer)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            admitted = self._tokens >= 1
            if admitted:
                self._tokens -= 1
            tokens = self._tokens
        next_token = 0.0 if tokens >= 1 else (1 - tokens) / self._rate
        headers = {
            "x-ratelimit-limit": f"{self._rate:g}",
            "x-ratelimit-remaining": str(int(tokens)),
            "x-ratelimit-reset": f"{next_token:.3f}",
        }
        return (None if admitted else max(1, math.ceil(next_token))), headers


def maintenance_problem(until: datetime, now: datetime) -> Response:
    """The answer while the ERP is in a maintenance window that ends at `until`."""
    wait = max(1, math.ceil((until - now).total_seconds()))
    return problem(
        503,
        "Scheduled maintenance",
        f"the ERP is in a maintenance window until {until.isoformat()}",
        type_="maintenance",
        headers={"retry-after": str(wait)},
    )


def maintenance_retry_after(windows: list[MaintenanceWindow], now: datetime) -> tuple[int, datetime] | None:
    """(seconds until the ERP is back, when) if `now` falls in a window; adjoining windows chain."""
    end: datetime | None = None
    moment = now
    while True:
        covering = [w.end for w in windows if w.covers(moment)]
        if not covering:
            break
        end = moment = max(covering)
    if end is None:
        return None
    return max(1, math.ceil((end - now).total_seconds())), end


def utc_now() -> datetime:
    return datetime.now(UTC)
