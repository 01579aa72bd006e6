"""The consumer runner: batches in, acks only after the handler succeeds, survives failures."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from tillflow.bus.runner import ConsumerRunner
from tillflow.model import CloudEvent, LoggedEvent


class ListLog:
    """An in-memory EventLog for this unit test: a list and one position per group."""

    def __init__(self, n: int) -> None:
        now = datetime(2026, 11, 29, tzinfo=UTC)
        self.events = [
            LoggedEvent(seq=i, event=CloudEvent(id=str(i), source="/test", type="t", time=now))
            for i in range(1, n + 1)
        ]
        self.positions: dict[str, int] = {}
        self.acks = 0
        self.failures: list[tuple[str, str]] = []

    def append_events(self, events: Sequence[CloudEvent]) -> list[int | None]:
        raise NotImplementedError

    def fetch_batch(self, group: str, *, limit: int) -> list[LoggedEvent]:
        position = self.positions.get(group, 0)
        return [e for e in self.events if e.seq > position][:limit]

    def ack_events(self, group: str, events: Sequence[LoggedEvent]) -> None:
        self.acks += 1
        self.positions[group] = max(self.positions.get(group, 0), *(e.seq for e in events))

    def record_failure(self, group: str, error: str) -> None:
        self.failures.append((group, error))

    def read_groups(self) -> dict[str, object]:
        raise NotImplementedError

    def read_position(self, group: str) -> int:
        return self.positions.get(group, 0)

    def read_head(self) -> int:
        return len(self.events)


class TestConsumerRunner:
    def test_batches_are_handled_in_order_and_acked(self) -> None:
        log = ListLog(7)
        seen: list[int] = []
        runner = ConsumerRunner(log, "g", lambda batch: seen.extend(e.seq for e in batch), batch_size=3)
        assert [runner.run_once() for _ in range(4)] == [3, 3, 1, 0]
        assert seen == list(range(1, 8))
        assert log.read_position("g") == 7
        assert runner.stats.events == 7 and runner.stats.batches == 3

    def test_a_failing_handler_leaves_the_batch_unacked(self) -> None:
        log = ListLog(2)

        def broken(batch: Sequence[LoggedEvent]) -> None:
            raise RuntimeError("ERP down")

        runner = ConsumerRunner(log, "g", broken)
        with pytest.raises(RuntimeError, match="ERP down"):
            runner.run_once()
        assert log.read_position("g") == 0
        assert log.acks == 0

    def test_the_loop_retries_after_a_failure_and_then_catches_up(self) -> None:
        log = ListLog(5)
        calls: list[int] = []
        stop = threading.Event()

        def flaky(batch: Sequence[LoggedEvent]) -> None:
            calls.append(len(batch))
            if len(calls) == 1:
                raise RuntimeError("transient")
            if log.read_position("g") + len(batch) >= 5:
                stop.set()

        runner = ConsumerRunner(log, "g", flaky, max_backoff=0.01)
        thread = runner.start(stop)
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert log.read_position("g") == 5
        assert runner.stats.failures == 1
        assert runner.stats.last_error == "RuntimeError: transient"
        assert log.failures == [("g", "RuntimeError: transient")]  # visible beyond this process
        assert calls[:2] == [5, 5]  # the same batch again, nothing skipped
