"""Faults injected at runtime through the admin API: errors, latency, an outage, throttling.

They apply to the business endpoints only, so a test can always read the state and clear the
faults. Outage windows run on the wall clock, not the service clock: moving business time a
year ahead must not end (or start) a maintenance window. The RNG is seeded, so a run with the
same seed and the same requests fails the same requests.
"""

from __future__ import annotations

import math
import random
import threading
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Throttle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(ge=0, le=1)  # share of requests answered 429
    retry_after: int = Field(default=1, ge=0)  # seconds, in the Retry-After header


class Faults(BaseModel):
    """`PUT /admin/faults` replaces the whole set; a field left out is no fault."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0, ge=0, le=1)  # share of requests answered 500
    latency_ms: int = Field(default=0, ge=0, le=60_000)  # added to every business request
    outage_until: AwareDatetime | None = None  # 503 + Retry-After until then
    throttle: Throttle | None = None
    seed: int | None = None  # reseed the RNG (None: keep its state)


class Verdict(BaseModel):
    """What to do with one request: wait `delay` seconds, then answer `status` (None: serve it)."""

    delay: float = 0
    status: int | None = None
    retry_after: int | None = None
    reason: str = ""


class FaultInjector:
    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults = Faults()

    @property
    def faults(self) -> Faults:
        return self._faults

    def set(self, faults: Faults) -> Faults:
        with self._lock:
            if faults.seed is not None:
                self._rng = random.Random(faults.seed)
            self._faults = faults
            return faults

    def clear(self) -> Faults:
        return self.set(Faults())

    def judge(self) -> Verdict:
        """The fate of the next business request: outage first, then throttling, then errors."""
        with self._lock:
            f = self._faults
            delay = f.latency_ms / 1000
            now = datetime.now(UTC)
            if f.outage_until is not None and now < f.outage_until:
                wait = max(1, math.ceil((f.outage_until - now).total_seconds()))
                until = f.outage_until.isoformat()
                return Verdict(
                    delay=delay, status=503, retry_after=wait, reason=f"in maintenance until {until}"
                )
            if f.throttle is not None and f.throttle.rate > 0 and self._rng.random() < f.throttle.rate:
                return Verdict(
                    delay=delay, status=429, retry_after=f.throttle.retry_after, reason="too many requests"
                )
            if f.error_rate > 0 and self._rng.random() < f.error_rate:
                return Verdict(delay=delay, status=500, reason="injected server error")
            return Verdict(delay=delay)
