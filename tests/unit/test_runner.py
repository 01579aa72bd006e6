"""The consumer runner: settles every event of a batch, isolates the bad ones, survives outages."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tillflow.bus.runner import ConsumerRunner, RetryPolicy
from tillflow.errors import PoisonEventError, StorageError
from tillflow.model import CloudEvent, LoggedEvent

NOW = datetime(2026, 11, 29, tzinfo=UTC)


class ListLog:
    """A small in-memory EventLog for these unit tests: naks are due at once."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.events = [
            LoggedEvent(seq=i, event=CloudEvent(id=str(i), source="/t", type="t", time=NOW, partitionkey=key))
            for i, key in enumerate(keys, 1)
        ]
        self.position = 0
        self.pending: dict[int, LoggedEvent] = {}
        self.acked: list[int] = []
        self.naks: list[tuple[int, float]] = []
        self.dead: list[tuple[int, str]] = []
        self.failures: list[str] = []

    def fetch_batch(self, group: str, *, limit: int) -> list[LoggedEvent]:
        due = [replace(e, attempt=e.attempt + 1, redelivered=True) for e in self.pending.values()]
        return (due + [e for e in self.events if e.seq > self.position])[:limit]

    def _settle(self, event: LoggedEvent) -> None:
        self.pending.pop(event.seq, None)
        self.position = max(self.position, event.seq)

    def ack_events(self, group: str, events: Sequence[LoggedEvent]) -> None:
        for e in events:
            self._settle(e)
            self.acked.append(e.seq)

    def nak_event(self, group: str, event: LoggedEvent, *, delay: float, error: str) -> None:
        self._settle(event)
        self.pending[event.seq] = event
        self.naks.append((event.seq, delay))

    def dead_letter(self, group: str, event: LoggedEvent, *, reason: str) -> None:
        self._settle(event)
        self.dead.append((event.seq, reason))

    def record_failure(self, group: str, error: str) -> None:
        self.failures.append(error)


def runner(log: ListLog, handler: object, **policy: object) -> ConsumerRunner:
    return ConsumerRunner(log, "g", handler, policy=RetryPolicy(base_delay=0.01, **policy), seed=1)  # type: ignore[arg-type]


def failing_on(*bad: int, error: Exception | None = None) -> tuple[list[int], object]:
    applied: list[int] = []

    def handler(batch: Sequence[LoggedEvent]) -> None:
        for e in batch:
            if e.seq in bad:
                raise error or RuntimeError(f"cannot apply {e.seq}")
        applied.extend(e.seq for e in batch)

    return applied, handler


class TestHappyPath:
    def test_batches_are_handled_in_order_and_acked(self) -> None:
        log = ListLog(["S1"] * 7)
        applied, handler = failing_on()
        r = ConsumerRunner(log, "g", handler, batch_size=3)  # type: ignore[arg-type]
        assert [r.run_once() for _ in range(4)] == [3, 3, 1, 0]
        assert applied == list(range(1, 8)) and log.position == 7
        assert (r.stats.events, r.stats.batches) == (7, 3)


class TestPoison:
    def test_a_poison_event_is_dead_lettered_at_once_and_the_rest_proceeds(self) -> None:
        log = ListLog(["S1", "S2", "S3"])
        applied, handler = failing_on(2, error=PoisonEventError("line 3 has no SKU"))
        runner(log, handler).run_once()
        assert applied == [1, 3]
        assert log.dead == [(2, "PoisonEventError: line 3 has no SKU")]
        assert log.naks == [] and log.position == 3

    def test_a_body_that_cannot_be_decoded_is_poison(self) -> None:
        log = ListLog(["S1"])
        _, handler = failing_on(1, error=ValueError("invalid JSON"))
        runner(log, handler).run_once()
        assert log.dead == [(1, "ValueError: invalid JSON")]


class TestRetries:
    def test_a_failing_event_is_retried_with_backoff_then_dead_lettered(self) -> None:
        log = ListLog(["S1", "S2"])
        applied, handler = failing_on(1)
        r = runner(log, handler, max_attempts=3)
        for _ in range(5):
            r.run_once()
        assert applied == [2]
        assert [seq for seq, _ in log.naks] == [1, 1]  # attempts 1 and 2
        assert log.dead == [(1, "RuntimeError: cannot apply 1")]  # attempt 3 is the last
        assert all(0 <= delay <= 0.01 * 2 for _, delay in log.naks)

    def test_backoff_grows_exponentially_with_full_jitter_and_a_cap(self) -> None:
        import random

        policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
        rng = random.Random(5)
        for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 10.0)]:
            delays = [policy.backoff(attempt, rng) for _ in range(200)]
            assert min(delays) >= 0 and max(delays) <= cap
            assert max(delays) > cap * 0.8  # spread over the whole range, not a fixed wait

    def test_in_order_flows_hold_back_later_events_of_the_same_store(self) -> None:
        log = ListLog(["S1", "S1", "S2", "S1"])
        applied, handler = failing_on(1)
        runner(log, handler).run_once()
        assert applied == [3]
        assert [seq for seq, _ in log.naks] == [1, 2, 4]
        assert len({delay for _, delay in log.naks}) == 1  # they come back together, in order
        assert (log.pending[1].attempt, log.pending[2].attempt) == (1, 0)  # waiting is no attempt

    def test_unordered_flows_let_later_events_of_the_store_through(self) -> None:
        log = ListLog(["S1", "S1"])
        applied, handler = failing_on(1)
        runner(log, handler, ordered=False).run_once()
        assert applied == [2]


class TestOutages:
    def test_a_batch_that_keeps_failing_as_an_outage_has_its_events_suspected(self) -> None:
        log = ListLog(["S1", "S2", "S3"])
        applied, handler = failing_on(2, error=StorageError("value too long for type character varying(64)"))
        runner(log, handler).run_once(suspect_events=True)
        assert applied == [1, 3]
        assert [seq for seq, _ in log.naks] == [2]  # retried and counted, then dead letters

    def test_an_infrastructure_failure_settles_nothing_and_counts_no_attempt(self) -> None:
        log = ListLog(["S1", "S2"])
        _, handler = failing_on(1, error=StorageError("database is locked"))
        with pytest.raises(StorageError):
            runner(log, handler).run_once()
        assert (log.acked, log.naks, log.dead, log.position) == ([], [], [], 0)

    def test_the_loop_backs_off_through_an_outage_and_catches_up(self) -> None:
        log = ListLog(["S1"] * 5)
        calls: list[int] = []
        stop = threading.Event()

        def flaky(batch: Sequence[LoggedEvent]) -> None:
            calls.append(len(batch))
            if len(calls) == 1:
                raise StorageError("state store restarting")
            stop.set()

        r = ConsumerRunner(log, "g", flaky, max_backoff=0.01)
        thread = r.start(stop)
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert log.position == 5 and calls[:2] == [5, 5]
        assert log.failures == ["StorageError: state store restarting"]
        assert r.stats.failures == 1


class TestRelays:
    def test_a_consumer_whose_failures_are_all_outages_never_suspects_its_events(self) -> None:
        log = ListLog(["S1"])
        calls: list[int] = []
        stop = threading.Event()

        def broker_down(batch: Sequence[LoggedEvent]) -> None:
            calls.append(len(batch))
            if len(calls) >= 8:
                stop.set()
            raise StorageError("broker unreachable")

        r = ConsumerRunner(log, "relay", broker_down, max_backoff=0.001, suspect_after=None)
        r.start(stop).join(timeout=30)
        assert len(calls) >= 8
        assert (log.naks, log.dead, log.position) == ([], [], 0)  # waited: nothing counted or set aside
