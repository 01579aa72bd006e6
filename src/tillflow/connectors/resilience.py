"""Outbound resilience, the same for every connector and configured per connector.

A call to a downstream system goes through, in order:

1. **Maintenance windows** from the configuration (one-off, or weekly in a time zone): inside a
   window, or `lead_seconds` before it, the call is not made. `DownstreamPausedError` tells
   the consuming flow how long to pause, so posting stops ahead of the ERP's own 503s.
2. **The circuit breaker**: closed, it counts consecutive failures of the system (no answer,
   timeouts, 5xx, 503; not a 429, which says the system is up, and not a rejection, which says
   it read our request). At `failure_threshold` it opens: calls fail at once with
   `DownstreamPausedError` until `open_seconds` have passed, then one probe goes through
   (half-open). The probe's success closes the circuit; its failure opens it again.
3. **The throttle**: a token bucket of `rate` calls per second with `burst` saved up, and at
   most `max_concurrency` calls in flight. The system's own signals hold it further: a 429's
   `Retry-After`, or `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`. A 429 is waited out
   and the call retried in place (at most `throttle_retries` times, never waiting longer than
   `max_throttle_wait`); after that it fails as unavailable and the flow retries later.

Everything is thread-safe: one `Resilience` serves every flow that talks to its system, so
they share the budget the system grants.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from enum import StrEnum
from typing import Any, Literal, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from tillflow.errors import DownstreamPausedError, DownstreamRejectedError, DownstreamUnavailableError

__all__ = [
    "BreakerSettings",
    "BreakerState",
    "CircuitBreaker",
    "MaintenanceCalendar",
    "MaintenanceWindow",
    "Resilience",
    "ResilienceSettings",
    "TokenBucket",
]

T = TypeVar("T")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow(BaseModel):
    """A time the system is known to be away: once (`start`..`end`, aware times), or every
    week on `days` from `from_time` to `to_time` in `timezone` (past midnight when `to_time`
    is earlier: sat 22:00 to 02:00 ends on sunday)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    days: tuple[Weekday, ...] = ()
    from_time: clock_time | None = None
    to_time: clock_time | None = None
    timezone: str = "UTC"
    lead_seconds: float = Field(default=0.0, ge=0)  # stop calling this long before it starts

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _shape(self) -> Self:
        once = self.start is not None or self.end is not None
        weekly = bool(self.days) or self.from_time is not None or self.to_time is not None
        if once == weekly:
            raise ValueError("a maintenance window is either start/end or days/from_time/to_time")
        if once and (self.start is None or self.end is None or self.end <= self.start):
            raise ValueError("a one-off maintenance window needs a start and a later end")
        if weekly and (not self.days or self.from_time is None or self.to_time is None):
            raise ValueError("a weekly maintenance window needs days, from_time and to_time")
        if weekly and self.from_time == self.to_time:
            raise ValueError("a weekly maintenance window needs from_time != to_time")
        return self

    def spans(self, around: datetime) -> list[tuple[datetime, datetime]]:
        """The (start, end) of this window's occurrences near `around` (the week around it)."""
        if self.start is not None and self.end is not None:
            return [(self.start, self.end)]
        assert self.from_time is not None and self.to_time is not None
        zone = ZoneInfo(self.timezone)
        local = around.astimezone(zone).date()
        found = []
        for offset in range(-8, 9):
            day = local + timedelta(days=offset)
            if WEEKDAYS[day.weekday()] not in self.days:
                continue
            start = datetime.combine(day, self.from_time, zone)
            end_day = day if self.to_time > self.from_time else day + timedelta(days=1)
            found.append((start, datetime.combine(end_day, self.to_time, zone)))
        return found


class BreakerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(default=5, ge=1)  # consecutive failures that open the circuit
    open_seconds: float = Field(default=15.0, gt=0)  # before a half-open probe


class ResilienceSettings(BaseModel):
    """How one connector paces and protects its calls (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: float | None = Field(default=None, gt=0)  # calls per second; None: no limit of ours
    burst: int = Field(default=10, ge=1)
    max_concurrency: int = Field(default=8, ge=1)
    throttle_retries: int = Field(default=5, ge=0)
    max_throttle_wait: float = Field(default=30.0, ge=0)
    breaker: BreakerSettings = BreakerSettings()
    maintenance: list[MaintenanceWindow] = []


class MaintenanceCalendar:
    def __init__(self, windows: list[MaintenanceWindow]) -> None:
        self.windows = windows

    def paused_until(self, now: datetime) -> datetime | None:
        """When calls may resume, if `now` is in a window or its lead (adjoining ones chain)."""
        end: datetime | None = None
        moment = now
        while True:
            covering = [
                stop
                for window in self.windows
                for start, stop in window.spans(moment)
                if start - timedelta(seconds=window.lead_seconds) <= moment < stop
            ]
            if not covering:
                return end
            end = moment = max(covering)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up (a GCRA: each caller reserves its slot
    and sleeps until it), plus holds the system asks for. No `rate`: only holds delay."""

    def __init__(
        self,
        rate: float | None,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 0.0 if rate is None else 1.0 / rate
        self.tolerance = (burst - 1) * self.interval
        self.clock = clock
        self.sleep = sleep
        self._tat = 0.0  # the theoretical arrival time of the next call at the steady rate
        self._held_until = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; the seconds to wait for it."""
        with self._lock:
            now = self.clock()
            at = max(self._tat - self.tolerance, now, self._held_until)
            self._tat = max(self._tat, at) + self.interval
            return at - now

    def acquire(self) -> float:
        """Wait for a slot; the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self.sleep(wait)
        return wait

    def hold(self, seconds: float) -> None:
        """No call before `seconds` from now; then the steady rate, without a burst."""
        with self._lock:
            until = self.clock() + seconds
            if until > self._held_until:
                self._held_until = until
                self._tat = max(self._tat, until + self.tolerance)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False
        self.transitions: dict[BreakerState, int] = dict.fromkeys(BreakerState, 0)
        self._lock = threading.Lock()

    def _move(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            self.transitions[state] += 1

    def admit(self) -> float | None:
        """None when a call may go; otherwise the seconds until it may try again."""
        with self._lock:
            if self.state is BreakerState.CLOSED:
                return None
            if self.state is BreakerState.OPEN:
                left = self.opened_at + self.settings.open_seconds - self.clock()
                if left > 0:
                    return left
                self._move(BreakerState.HALF_OPEN)
            if self.probing:  # one probe at a time; the others wait for its outcome
                return min(1.0, self.settings.open_seconds)
            self.probing = True
            return None

    def succeeded(self) -> None:
        with self._lock:
            self.failures = 0
            self.probing = False
            self._move(BreakerState.CLOSED)

    def failed(self) -> bool:
        """Count a failure; True when it (re)opened the circuit."""
        with self._lock:
            self.failures += 1
            self.probing = False
            if self.state is BreakerState.HALF_OPEN or self.failures >= self.settings.failure_threshold:
                self.opened_at = self.clock()
                self._move(BreakerState.OPEN)
                return True
            return False

    def released(self) -> None:
        """The probe ended without a verdict on the system (throttled): let another probe go."""
        with self._lock:
            self.probing = False


@dataclass
class ResilienceStats:
    calls: int = 0
    throttle_waits: int = 0
    throttle_wait_seconds: float = 0.0
    throttled: int = 0  # 429 answers
    failures: int = 0
    rejected: int = 0
    paused_by_breaker: int = 0
    paused_by_maintenance: int = 0


class Resilience:
    """Maintenance windows, circuit breaker and throttle around one system's calls."""

    def __init__(
        self,
        system: str,
        settings: ResilienceSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.system = system
        self.settings = settings
        self.now = now
        self.sleep = sleep
        self.calendar = MaintenanceCalendar(settings.maintenance)
        self.breaker = CircuitBreaker(settings.breaker, clock=clock)
        self.bucket = TokenBucket(settings.rate, settings.burst, clock=clock, sleep=sleep)
        self.slots = threading.BoundedSemaphore(settings.max_concurrency)
        self.stats = ResilienceStats()
        self._lock = threading.Lock()

    def _count(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def call(self, attempt: Callable[[], T]) -> T:
        """Run `attempt` (one request to the system) under the windows, the breaker and the
        throttle; raises what it raises, or `DownstreamPausedError` without running it."""
        self._check_maintenance()
        wait = self.breaker.admit()
        if wait is not None:
            self._count(paused_by_breaker=1)
            raise DownstreamPausedError(self.system, "the circuit is open", retry_after=wait)
        throttled = 0
        while True:
            with self.slots:
                waited = self.bucket.acquire()
                if waited > 0:
                    self._count(throttle_waits=1, throttle_wait_seconds=waited)
                self._count(calls=1)
                try:
                    result = attempt()
                except DownstreamUnavailableError as exc:
                    if not exc.throttled:
                        self._count(failures=1)
                        if self.breaker.failed():
                            raise DownstreamPausedError(
                                self.system,
                                f"the circuit opened after {exc.reason}",
                                retry_after=self.settings.breaker.open_seconds,
                            ) from exc
                        raise
                    self._count(throttled=1)
                    pause = exc.retry_after if exc.retry_after is not None else 1.0
                    self.bucket.hold(pause)
                    if throttled >= self.settings.throttle_retries or pause > self.settings.max_throttle_wait:
                        self.breaker.released()
                        raise
                    throttled += 1
                    continue
                except DownstreamRejectedError:
                    self._count(rejected=1)
                    self.breaker.succeeded()  # it answered: the system is up
                    raise
                except BaseException:
                    self.breaker.released()
                    raise
                self.breaker.succeeded()
                return result

    def _check_maintenance(self) -> None:
        if not self.settings.maintenance:
            return
        now = self.now()
        until = self.calendar.paused_until(now)
        if until is not None:
            self._count(paused_by_maintenance=1)
            raise DownstreamPausedError(
                self.system,
                f"a maintenance window is on until {until.isoformat()}",
                retry_after=max(0.0, (until - now).total_seconds()),
            )

    def observe_limits(self, remaining: int | None, reset: float | None) -> None:
        """The system's X-RateLimit-Remaining / -Reset: nothing left → hold until the reset."""
        if remaining is not None and remaining <= 0 and reset is not None and reset > 0:
            self.bucket.hold(min(reset, self.settings.max_throttle_wait))

    def snapshot(self) -> dict[str, Any]:
        """The figures and the breaker's state, for the summary and the metrics."""
        with self._lock:
            figures = asdict(self.stats)
        figures["breaker"] = self.breaker.state.value
        figures["breaker_transitions"] = {s.value: n for s, n in self.breaker.transitions.items()}
        return figures
