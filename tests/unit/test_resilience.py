"""The outbound resilience layer on a fake clock: throttle, breaker, maintenance windows."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from tillflow.connectors.resilience import (
    BreakerSettings,
    BreakerState,
    MaintenanceCalendar,
    MaintenanceWindow,
    Resilience,
    ResilienceSettings,
    TokenBucket,
)
from tillflow.errors import DownstreamPausedError, DownstreamRejectedError, DownstreamUnavailableError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def layer(clock: FakeClock, wall: datetime | None = None, **settings: Any) -> Resilience:
    return Resilience(
        "erp",
        ResilienceSettings(**settings),
        clock=clock,
        sleep=clock.sleep,
        now=lambda: wall or datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    )


def down() -> None:
    raise DownstreamUnavailableError("erp", "connection refused")


class TestTokenBucket:
    def test_a_burst_goes_at_once_then_calls_follow_at_the_rate(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(10, 3, clock=clock, sleep=clock.sleep)
        waits = [bucket.reserve() for _ in range(6)]
        assert waits[:3] == [0, 0, 0]
        assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])

    def test_the_rate_holds_over_a_long_run(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(20, 5, clock=clock, sleep=clock.sleep)
        start = clock.now
        for _ in range(205):
            bucket.acquire()
        # 5 at once, then 200 at 20 a second
        assert clock.now - start == pytest.approx(10.0)

    def test_a_hold_delays_every_caller_and_resumes_without_a_burst(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(10, 5, clock=clock, sleep=clock.sleep)
        bucket.hold(2.0)
        waits = [bucket.reserve() for _ in range(3)]
        assert waits == pytest.approx([2.0, 2.1, 2.2])

    def test_without_a_rate_only_holds_delay(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(None, 1, clock=clock, sleep=clock.sleep)
        assert [bucket.reserve() for _ in range(100)] == [0] * 100
        bucket.hold(1.5)
        assert bucket.reserve() == pytest.approx(1.5)


class TestThrottledCalls:
    def test_a_429_is_waited_out_as_the_system_says_and_retried_in_place(self) -> None:
        clock = FakeClock()
        resilience = layer(clock)
        answers: list[Any] = [
            DownstreamUnavailableError("erp", "too many", retry_after=2, status=429),
            DownstreamUnavailableError("erp", "too many", retry_after=3, status=429),
            "posted",
        ]

        def call() -> str:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return str(answer)

        assert resilience.call(call) == "posted"
        assert clock.slept == pytest.approx([2.0, 3.0])
        assert resilience.stats.throttled == 2
        assert resilience.breaker.state is BreakerState.CLOSED  # throttling is not a failure

    def test_too_many_429s_fail_the_call_as_unavailable(self) -> None:
        clock = FakeClock()
        resilience = layer(clock, throttle_retries=2)

        def call() -> str:
            raise DownstreamUnavailableError("erp", "too many", retry_after=1, status=429)

        with pytest.raises(DownstreamUnavailableError) as caught:
            resilience.call(call)
        assert not isinstance(caught.value, DownstreamPausedError)
        assert resilience.stats.calls == 3

    def test_a_retry_after_beyond_the_longest_wait_is_left_to_the_flow(self) -> None:
        clock = FakeClock()
        resilience = layer(clock, max_throttle_wait=10)

        def call() -> str:
            raise DownstreamUnavailableError("erp", "too many", retry_after=60, status=429)

        with pytest.raises(DownstreamUnavailableError):
            resilience.call(call)
        assert resilience.stats.calls == 1

    def test_rate_limit_headers_hold_the_next_call(self) -> None:
        clock = FakeClock()
        resilience = layer(clock)
        resilience.observe_limits(0, 0.25)
        resilience.call(lambda: None)
        assert clock.slept == pytest.approx([0.25])
        resilience.observe_limits(3, 5.0)  # tokens left: no hold
        resilience.call(lambda: None)
        assert clock.slept == pytest.approx([0.25])

    def test_the_rate_paces_calls(self) -> None:
        clock = FakeClock()
        resilience = layer(clock, rate=4, burst=1)
        start = clock.now
        for _ in range(9):
            resilience.call(lambda: None)
        assert clock.now - start == pytest.approx(2.0)
        assert resilience.stats.throttle_waits == 8


class TestCircuitBreaker:
    def test_opens_after_the_threshold_then_half_opens_and_closes(self) -> None:
        clock = FakeClock()
        resilience = layer(clock, breaker=BreakerSettings(failure_threshold=3, open_seconds=10))
        for _ in range(2):
            with pytest.raises(DownstreamUnavailableError) as caught:
                resilience.call(down)
            assert not isinstance(caught.value, DownstreamPausedError)
        with pytest.raises(DownstreamPausedError) as opened:
            resilience.call(down)
        assert opened.value.retry_after == 10
        assert resilience.breaker.state is BreakerState.OPEN

        calls: list[int] = []
        clock.now += 4
        with pytest.raises(DownstreamPausedError) as paused:
            resilience.call(lambda: calls.append(1))
        assert paused.value.retry_after == pytest.approx(6)
        assert calls == []  # an open circuit does not call

        clock.now += 6
        resilience.call(lambda: calls.append(1))  # the probe goes through and closes it
        assert calls == [1]
        assert resilience.breaker.state is BreakerState.CLOSED
        assert resilience.breaker.transitions == {
            BreakerState.OPEN: 1,
            BreakerState.HALF_OPEN: 1,
            BreakerState.CLOSED: 1,
        }

    def test_a_failed_probe_opens_it_again(self) -> None:
        clock = FakeClock()
        resilience = layer(clock, breaker=BreakerSettings(failure_threshold=1, open_seconds=5))
        with pytest.raises(DownstreamPausedError):
            resilience.call(down)
        clock.now += 5
        with pytest.raises(DownstreamPausedError):
            resilience.call(down)
        assert resilience.breaker.state is BreakerState.OPEN
        assert resilience.breaker.transitions[BreakerState.OPEN] == 2

    def test_one_probe_at_a_time(self) -> None:
        clock = FakeClock()
        breaker = layer(clock, breaker=BreakerSettings(failure_threshold=1, open_seconds=5)).breaker
        breaker.failed()
        clock.now += 5
        assert breaker.admit() is None  # the probe
        assert breaker.admit() is not None  # the others wait for its outcome
        breaker.succeeded()
        assert breaker.admit() is None

    def test_a_rejection_means_the_system_is_up(self) -> None:
        clock = FakeClock()
        resilience = layer(clock, breaker=BreakerSettings(failure_threshold=2))

        def rejected() -> None:
            raise DownstreamRejectedError("erp", "account 9999 does not exist", status=422)

        with pytest.raises(DownstreamUnavailableError):
            resilience.call(down)
        with pytest.raises(DownstreamRejectedError):
            resilience.call(rejected)
        with pytest.raises(DownstreamUnavailableError) as caught:
            resilience.call(down)
        assert not isinstance(caught.value, DownstreamPausedError)  # the count started again
        assert resilience.stats.rejected == 1


class TestMaintenanceWindows:
    def test_a_one_off_window_pauses_calls_ahead_of_time(self) -> None:
        window = MaintenanceWindow(
            start=datetime(2026, 11, 30, 12, 5, tzinfo=UTC),
            end=datetime(2026, 11, 30, 12, 30, tzinfo=UTC),
            lead_seconds=600,
        )
        clock = FakeClock()
        calls: list[int] = []
        resilience = layer(clock, wall=datetime(2026, 11, 30, 12, 0, tzinfo=UTC), maintenance=[window])
        with pytest.raises(DownstreamPausedError) as paused:
            resilience.call(lambda: calls.append(1))
        assert paused.value.retry_after == 30 * 60
        assert "until 2026-11-30T12:30:00+00:00" in str(paused.value)
        assert calls == []
        after = layer(clock, wall=datetime(2026, 11, 30, 12, 30, tzinfo=UTC), maintenance=[window])
        after.call(lambda: calls.append(1))
        assert calls == [1]

    def test_a_weekly_window_in_local_time_crosses_midnight_and_dst(self) -> None:
        # every saturday 23:00 to 01:00 in Berlin; 2026-10-24 is the saturday before DST ends
        window = MaintenanceWindow(
            days=("sat",), from_time=time(23), to_time=time(1), timezone="Europe/Berlin"
        )
        calendar = MaintenanceCalendar([window])
        summer = datetime(2026, 10, 24, 21, 30, tzinfo=UTC)  # 23:30 CEST
        assert calendar.paused_until(summer) == datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
        winter = datetime(2026, 10, 31, 22, 30, tzinfo=UTC)  # 23:30 CET
        assert calendar.paused_until(winter) == datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
        assert calendar.paused_until(winter - timedelta(hours=1)) is None  # friday would be 22:30
        assert calendar.paused_until(datetime(2026, 10, 28, 21, 30, tzinfo=UTC)) is None  # a wednesday

    def test_adjoining_windows_chain(self) -> None:
        first = MaintenanceWindow(
            start=datetime(2026, 1, 1, 0, tzinfo=UTC), end=datetime(2026, 1, 1, 1, tzinfo=UTC)
        )
        second = MaintenanceWindow(
            start=datetime(2026, 1, 1, 1, tzinfo=UTC), end=datetime(2026, 1, 1, 2, tzinfo=UTC)
        )
        calendar = MaintenanceCalendar([first, second])
        assert calendar.paused_until(datetime(2026, 1, 1, 0, 30, tzinfo=UTC)) == datetime(
            2026, 1, 1, 2, tzinfo=UTC
        )

    @pytest.mark.parametrize(
        "fields",
        [
            {"start": "2026-01-01T02:00:00Z", "end": "2026-01-01T01:00:00Z"},
            {"start": "2026-01-01T02:00:00Z"},
            {"days": ["sat"], "from_time": "23:00"},
            {"days": ["sat"], "from_time": "23:00", "to_time": "01:00", "timezone": "Mars/Olympus"},
            {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z", "days": ["sat"]},
        ],
    )
    def test_a_malformed_window_is_refused(self, fields: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            MaintenanceWindow.model_validate(fields)
