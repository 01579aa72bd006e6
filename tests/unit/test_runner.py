"""The consumer runner: settles every event of a batch, isolates the bad ones, survives outages."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tillflow.bus.runner import ConsumerRunner, RetryPolicy
from tillflow.errors import (
    DownstreamPausedError,
    DownstreamRejectedError,
    DownstreamUnavailableError,
    PoisonEventError,
    StorageError,
)
from tillflow.model import CloudEvent, LoggedEvent

NOW = datetime(2026, 11, 29, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def logged(seq: int, key: str | None) -> LoggedEvent:
    event = CloudEvent(id=str(seq), source="/t", type="t", time=NOW, partitionkey=key)
    return LoggedEvent(seq=seq, event=event)


class ListLog:
    """A small in-memory EventLog for these unit tests: naks are due at once, or after their
    delay on `clock` when given one; due events come back oldest first."""

    def __init__(self, keys: Sequence[str | None], clock: Clock | None = None) -> None:
        self.events = [logged(i, key) for i, key in enumerate(keys, 1)]
        self.clock = clock
        self.position = 0
        self.pending: dict[int, LoggedEvent] = {}
        self.due: dict[int, float] = {}
        self.acked: list[int] = []
        self.naks: list[tuple[int, float]] = []
        self.errors: dict[int, str] = {}  # the last nak's error of each event
        self.dead: list[tuple[int, str]] = []
        self.failures: list[str] = []

    def append(self, *keys: str | None) -> None:
        self.events += [logged(seq, key) for seq, key in enumerate(keys, len(self.events) + 1)]

    def fetch_batch(self, group: str, *, limit: int) -> list[LoggedEvent]:
        due = [
            replace(e, attempt=e.attempt + 1, redelivered=True)
            for seq, e in sorted(self.pending.items())
            if self.clock is None or self.due[seq] <= self.clock()
        ]
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
        self.due[event.seq] = (self.clock() if self.clock else 0.0) + delay
        self.naks.append((event.seq, delay))
        self.errors[event.seq] = error

    def dead_letter(self, group: str, event: LoggedEvent, *, reason: str) -> None:
        self._settle(event)
        self.dead.append((event.seq, reason))

    def record_failure(self, group: str, error: str) -> None:
        self.failures.append(error)


def runner(log: ListLog, handler: object, **policy: object) -> ConsumerRunner:
    return ConsumerRunner(
        log,
        "g",
        handler,  # type: ignore[arg-type]
        policy=RetryPolicy(**{"base_delay": 0.01, **policy}),  # type: ignore[arg-type]
        seed=1,
        clock=log.clock or Clock(),
    )


def failing_on(
    *bad: int, error: Exception | None = None, attempts: int | None = None
) -> tuple[list[int], object]:
    """A handler that records what it applied and fails on the `bad` seqs (on their first
    `attempts` deliveries, or always)."""
    applied: list[int] = []

    def handler(batch: Sequence[LoggedEvent]) -> None:
        for e in batch:
            if e.seq in bad and (attempts is None or e.attempt <= attempts):
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
        [(_, failed), *waits] = log.naks
        assert all(failed < wait <= failed + 0.06 for _, wait in waits)  # back just behind it
        assert (log.pending[1].attempt, log.pending[2].attempt) == (1, 0)  # waiting is no attempt
        assert log.errors[4] == "waits for an earlier event of store S1 (seq 1)"

    def test_unordered_flows_let_later_events_of_the_store_through(self) -> None:
        log = ListLog(["S1", "S1"])
        applied, handler = failing_on(1)
        runner(log, handler, ordered=False).run_once()
        assert applied == [2]


class TestOrderAcrossBatches:
    """An in-order flow holds a store's later events until its failed one is settled, whatever
    batch they come in; other stores go on."""

    def test_a_store_waits_for_its_failed_event_and_other_stores_go_on(self) -> None:
        clock = Clock()
        log = ListLog(["A"], clock)
        applied, handler = failing_on(1, attempts=1)
        r = runner(log, handler, base_delay=100.0)
        r.run_once()  # seq 1 of store A fails
        [(_, retry_in)] = log.naks
        assert retry_in > 1

        clock.now += 1
        log.append("A", "B")  # seqs 2 and 3, in the next batch
        r.run_once()
        assert applied == [3]  # store B went on; store A's later event was not tried
        [_, (seq, wait)] = log.naks
        assert seq == 2 and wait >= retry_in - 1  # due after the event it waits for
        assert log.due[2] > log.due[1]
        assert log.pending[2].attempt == 0  # the wait counted no attempt
        assert log.errors[2] == "waits for an earlier event of store A (seq 1)"

        clock.now = log.due[1]  # the failed event is back, alone, and goes through
        r.run_once()
        assert applied == [3, 1]
        log.append("A")  # seq 4: after seq 2, which is not due yet
        r.run_once()
        assert applied == [3, 1]  # a fresh event does not overtake the one that waited
        clock.now = max(log.due.values())
        r.run_once()
        assert applied == [3, 1, 2, 4]
        assert r.blocked == {}  # nothing out: the store is forgotten

    def test_a_store_waits_again_when_its_failed_event_fails_again(self) -> None:
        clock = Clock()
        log = ListLog(["A", "A"], clock)
        applied, handler = failing_on(1, attempts=2)
        r = runner(log, handler, base_delay=100.0, max_attempts=5)
        r.run_once()  # 1 fails, 2 waits
        clock.now = log.due[1]
        r.run_once()  # 1 fails again: due later
        clock.now = log.due[2]
        r.run_once()  # 2 is back before 1: it waits again
        assert applied == []
        assert [seq for seq, _ in log.naks] == [1, 2, 1, 2]
        assert log.due[2] > log.due[1] and log.pending[2].attempt == 0
        clock.now = max(log.due.values())
        r.run_once()
        assert applied == [1, 2]

    def test_a_failed_event_that_goes_to_dead_letters_frees_its_store(self) -> None:
        clock = Clock()
        log = ListLog(["A"], clock)
        applied, handler = failing_on(1)
        r = runner(log, handler, base_delay=100.0, max_attempts=2)
        r.run_once()  # attempt 1 of seq 1 fails
        log.append("A")
        r.run_once()  # seq 2 waits
        clock.now = log.due[1]
        r.run_once()  # attempt 2 fails: dead letters
        assert [seq for seq, _ in log.dead] == [1]
        clock.now = log.due[2]
        log.append("A")
        r.run_once()
        assert applied == [2, 3] and r.blocked == {}

    def test_an_event_that_never_comes_back_is_forgotten(self) -> None:
        clock = Clock()
        log = ListLog(["A"], clock)
        _, handler = failing_on(1)
        r = runner(log, handler, base_delay=100.0)
        r.run_once()
        log.pending.clear()  # settled elsewhere (another worker, an operator)
        clock.now += 100 + r.forget_blocks_after
        log.append("A")
        r.run_once()
        assert log.acked == [2] and r.blocked == {}

    def test_unordered_flows_hold_nothing_across_batches(self) -> None:
        clock = Clock()
        log = ListLog(["A"], clock)
        applied, handler = failing_on(1)
        r = runner(log, handler, base_delay=100.0, ordered=False)
        r.run_once()
        log.append("A")
        r.run_once()
        assert applied == [2] and [seq for seq, _ in log.naks] == [1]
        assert r.blocked == {}

    def test_events_without_a_store_wait_only_within_their_batch(self) -> None:
        clock = Clock()
        log = ListLog([None, None], clock)
        applied, handler = failing_on(1)
        r = runner(log, handler, base_delay=100.0)
        r.run_once()
        assert [seq for seq, _ in log.naks] == [1, 2]  # in the batch, 2 waits behind 1
        log.append(None)
        r.run_once()
        assert applied == [3]


class TestRetryableErrors:
    def test_a_flows_non_retryable_error_goes_to_dead_letters_at_once(self) -> None:
        log = ListLog(["S1", "S2"])
        applied, handler = failing_on(1, error=KeyError("sku"))
        runner(log, handler, non_retryable=(KeyError,)).run_once()
        assert applied == [2]
        assert (log.dead, log.naks) == ([(1, "KeyError: 'sku'")], [])

    def test_a_retryable_error_is_retried_though_it_is_also_non_retryable(self) -> None:
        log = ListLog(["S1", "S2"])
        bad_json = json.JSONDecodeError("Expecting value", "{", 1)  # a ValueError
        _, handler = failing_on(1, error=bad_json)
        runner(log, handler, retryable=(json.JSONDecodeError,)).run_once()
        assert [seq for seq, _ in log.naks] == [1] and log.dead == []

        log = ListLog(["S1"])  # a plain ValueError stays non-retryable
        _, handler = failing_on(1, error=ValueError("bad"))
        runner(log, handler, retryable=(json.JSONDecodeError,)).run_once()
        assert log.dead == [(1, "ValueError: bad")]

    def test_a_value_error_is_retried_when_the_flow_does_not_list_it(self) -> None:
        log = ListLog(["S1"])
        _, handler = failing_on(1, error=ValueError("not yet"))
        runner(log, handler, non_retryable=(PoisonEventError,)).run_once()
        assert [seq for seq, _ in log.naks] == [1] and log.dead == []


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


class TestDownstreamSystems:
    def test_a_paused_connector_pauses_the_flow_without_counting_anything(self) -> None:
        log = ListLog(["S1"] * 3)
        calls: list[int] = []
        stop = threading.Event()

        def erp_paused_then_back(batch: Sequence[LoggedEvent]) -> None:
            calls.append(len(batch))
            if len(calls) <= 8:  # more than SUSPECT_AFTER pauses in a row: still not suspected
                raise DownstreamPausedError("erp", "the circuit is open", retry_after=0.001)
            stop.set()

        r = ConsumerRunner(log, "g", erp_paused_then_back, max_backoff=0.01)
        thread = r.start(stop)
        thread.join(timeout=30)
        assert log.position == 3 and calls == [3] * 9
        assert (log.naks, log.dead, log.failures) == ([], [], [])
        assert (r.stats.pauses, r.stats.failures) == (8, 0)

    def test_a_pause_while_events_are_suspected_is_still_no_one_s_fault(self) -> None:
        log = ListLog(["S1", "S2"])
        _, handler = failing_on(2, error=DownstreamPausedError("erp", "maintenance", retry_after=60))
        with pytest.raises(DownstreamPausedError):
            runner(log, handler).run_once(suspect_events=True)
        assert log.naks == [] and log.dead == []

    def test_a_posting_the_system_refuses_is_dead_lettered_with_its_reason_at_once(self) -> None:
        log = ListLog(["S1", "S1", "S1"])
        refused = DownstreamRejectedError("erp", "account 4999 does not exist", status=422)
        applied, handler = failing_on(2, error=refused)
        runner(log, handler).run_once()
        assert applied == [1, 3]  # the store's later event is not held behind it
        [(seq, reason)] = log.dead
        assert seq == 2 and "account 4999 does not exist" in reason
        assert log.naks == []

    def test_an_unavailable_system_that_says_when_is_waited_for_that_long(self) -> None:
        log = ListLog(["S1"])
        waits: list[float] = []

        class Recording(threading.Event):
            """Records the first wait and stops the loop."""

            def wait(self, timeout: float | None = None) -> bool:
                waits.append(timeout or 0.0)
                self.set()
                return True

        def throttled(batch: Sequence[LoggedEvent]) -> None:
            raise DownstreamUnavailableError("erp", "answered 503", retry_after=7, status=503)

        ConsumerRunner(log, "g", throttled, max_backoff=0.01).run_until(Recording())
        assert waits == [7]


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


class TestTick:
    def test_the_tick_runs_on_its_schedule_even_without_events(self) -> None:
        clock = Clock()
        log = ListLog([], clock)
        ticks: list[float] = []
        r = ConsumerRunner(
            log, "g", lambda batch: None, clock=clock, tick=lambda: ticks.append(clock.now), tick_every=5
        )
        r.run_once()
        r.run_once()  # too soon
        clock.now += 5
        r.run_once()
        assert ticks == [1000.0, 1005.0]

    def test_a_failing_tick_raises_and_waits_its_turn_before_trying_again(self) -> None:
        clock = Clock()
        log = ListLog(["S1"], clock)
        applied, handler = failing_on()
        calls: list[float] = []

        def tick() -> None:
            calls.append(clock.now)
            raise DownstreamUnavailableError("erp", "away")

        r = ConsumerRunner(log, "g", handler, clock=clock, tick=tick, tick_every=5)  # type: ignore[arg-type]
        with pytest.raises(DownstreamUnavailableError):
            r.run_once()
        assert r.run_once() == 1  # the events are not held behind the tick
        assert applied == [1] and calls == [1000.0]
