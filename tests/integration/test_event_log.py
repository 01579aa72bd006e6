"""The EventLog port's contract, run against every backend.

The stories below speak only through the port (`EventLog`), like pyeventsourcing's recorder
test cases: the `log` fixture is the one place where a backend is chosen. `engine` is
parametrized over SQLite and PostgreSQL, so each story runs on both; another backend (say
JetStream) joins by building its log in `log` as well. The embedded SQLite file has its own
stories at the end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.builders import TRACEPARENT, cloud_event
from tillflow.bus.sql import SQLEventLog, SQLiteEventLog
from tillflow.ports import EventLog
from tillflow.storage.migrate import upgrade_schema


@pytest.fixture
def log(engine: Engine) -> EventLog:
    return SQLEventLog(engine)


def ids(log: EventLog, group: str, limit: int = 100) -> list[str]:
    """The ids of the events `group` would be handed next."""
    return [e.event.id for e in log.fetch_batch(group, limit=limit)]


class TestAppending:
    def test_each_event_gets_a_higher_seq_than_the_one_before(self, log: EventLog) -> None:
        first = log.append_events([cloud_event(1), cloud_event(2)])
        second = log.append_events([cloud_event(3)])

        seqs = [*first, *second]
        assert None not in seqs
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 3

    def test_an_empty_append_logs_nothing(self, log: EventLog) -> None:
        assert log.append_events([]) == []
        assert log.read_head() == 0

    def test_an_event_already_logged_is_skipped(self, log: EventLog) -> None:
        [seq] = log.append_events([cloud_event(1)])

        again = log.append_events([cloud_event(1, data=b'{"resent":true}'), cloud_event(2)])

        assert again[0] is None
        assert again[1] is not None and again[1] > seq
        assert ids(log, "any") == ["evt-1", "evt-2"]
        assert log.fetch_batch("any", limit=1)[0].event.data == b'{"n":1}'  # the first copy stays

    def test_a_repeat_inside_one_batch_is_stored_once(self, log: EventLog) -> None:
        seqs = log.append_events([cloud_event(1), cloud_event(2), cloud_event(1)])

        assert seqs[0] is not None and seqs[1] is not None
        assert seqs[2] is None
        assert ids(log, "any") == ["evt-1", "evt-2"]
        assert log.read_head() == seqs[1]

    def test_a_batch_of_nothing_but_repeats_logs_nothing(self, log: EventLog) -> None:
        log.append_events([cloud_event(1), cloud_event(2)])
        head = log.read_head()

        assert log.append_events([cloud_event(2), cloud_event(1)]) == [None, None]
        assert log.read_head() == head

    def test_the_same_id_from_another_source_is_another_event(self, log: EventLog) -> None:
        seqs = log.append_events(
            [
                cloud_event(1, source="/stores/S001/registers/R01"),
                cloud_event(1, source="/stores/S002/registers/R01"),
            ]
        )

        assert None not in seqs
        logged = log.fetch_batch("any", limit=10)
        assert [(e.event.source, e.event.id) for e in logged] == [
            ("/stores/S001/registers/R01", "evt-1"),
            ("/stores/S002/registers/R01", "evt-1"),
        ]


class TestFetching:
    def test_events_come_oldest_first_with_the_seq_they_were_given(self, log: EventLog) -> None:
        seqs = log.append_events([cloud_event(n) for n in (3, 1, 2)])

        logged = log.fetch_batch("any", limit=10)

        assert [e.event.id for e in logged] == ["evt-3", "evt-1", "evt-2"]
        assert [e.seq for e in logged] == seqs

    def test_a_batch_holds_at_most_limit_events(self, log: EventLog) -> None:
        log.append_events([cloud_event(n) for n in range(1, 6)])

        assert ids(log, "any", limit=2) == ["evt-1", "evt-2"]

    def test_only_events_past_the_groups_position_are_fetched(self, log: EventLog) -> None:
        log.append_events([cloud_event(n) for n in range(1, 5)])
        log.ack_events("inventory", log.fetch_batch("inventory", limit=2))

        assert ids(log, "inventory") == ["evt-3", "evt-4"]

    def test_an_unacknowledged_batch_is_fetched_again(self, log: EventLog) -> None:
        log.append_events([cloud_event(1), cloud_event(2)])
        log.fetch_batch("inventory", limit=10)

        assert ids(log, "inventory") == ["evt-1", "evt-2"]

    def test_a_group_that_has_seen_everything_gets_an_empty_batch(self, log: EventLog) -> None:
        log.append_events([cloud_event(1)])
        log.ack_events("inventory", log.fetch_batch("inventory", limit=10))

        assert log.fetch_batch("inventory", limit=10) == []

    def test_events_appended_after_an_ack_are_fetched_next(self, log: EventLog) -> None:
        log.append_events([cloud_event(1)])
        log.ack_events("inventory", log.fetch_batch("inventory", limit=10))
        log.append_events([cloud_event(2)])

        assert ids(log, "inventory") == ["evt-2"]


class TestConsumerGroups:
    def test_positions_are_independent(self, log: EventLog) -> None:
        log.append_events([cloud_event(n) for n in range(1, 5)])

        log.ack_events("inventory", log.fetch_batch("inventory", limit=3))
        log.ack_events("loyalty", log.fetch_batch("loyalty", limit=1))

        assert ids(log, "inventory") == ["evt-4"]
        assert ids(log, "loyalty") == ["evt-2", "evt-3", "evt-4"]
        assert ids(log, "posting") == ["evt-1", "evt-2", "evt-3", "evt-4"]

    def test_a_new_group_starts_at_zero(self, log: EventLog) -> None:
        log.append_events([cloud_event(1)])
        log.ack_events("inventory", log.fetch_batch("inventory", limit=10))

        assert log.read_position("loyalty") == 0


class TestAcknowledging:
    def test_the_position_moves_to_the_highest_acknowledged_seq(self, log: EventLog) -> None:
        log.append_events([cloud_event(n) for n in range(1, 5)])
        batch = log.fetch_batch("inventory", limit=3)

        log.ack_events("inventory", list(reversed(batch)))

        assert log.read_position("inventory") == batch[-1].seq

    def test_acking_an_older_batch_after_a_newer_one_keeps_the_newer_position(self, log: EventLog) -> None:
        log.append_events([cloud_event(n) for n in range(1, 5)])
        older, newer = log.fetch_batch("inventory", limit=4)[:2], log.fetch_batch("inventory", limit=4)[2:]

        log.ack_events("inventory", newer)
        log.ack_events("inventory", older)

        assert log.read_position("inventory") == newer[-1].seq
        assert log.fetch_batch("inventory", limit=10) == []

    def test_acking_nothing_leaves_the_position_alone(self, log: EventLog) -> None:
        log.append_events([cloud_event(1), cloud_event(2)])
        log.ack_events("inventory", log.fetch_batch("inventory", limit=1))
        position = log.read_position("inventory")

        log.ack_events("inventory", [])

        assert log.read_position("inventory") == position


class TestHeadAndPosition:
    def test_an_empty_log_has_head_zero(self, log: EventLog) -> None:
        assert log.read_head() == 0

    def test_the_head_is_the_newest_events_seq(self, log: EventLog) -> None:
        log.append_events([cloud_event(1)])
        seqs = log.append_events([cloud_event(2), cloud_event(3)])

        assert log.read_head() == seqs[-1]

    def test_a_group_that_never_acked_is_at_zero(self, log: EventLog) -> None:
        log.append_events([cloud_event(1)])

        assert log.read_position("inventory") == 0

    def test_a_group_that_caught_up_is_at_the_head(self, log: EventLog) -> None:
        log.append_events([cloud_event(n) for n in range(1, 4)])
        log.ack_events("inventory", log.fetch_batch("inventory", limit=10))

        assert log.read_position("inventory") == log.read_head()


class TestRoundTrip:
    def test_data_and_cloudevent_fields_come_back_exactly(self, log: EventLog) -> None:
        sent = cloud_event(
            7,
            time=datetime(2026, 11, 29, 17, 42, 5, 123456, tzinfo=timezone(timedelta(hours=1))),
            subject="S001:R01:2026-11-29:00000042",
            partitionkey="S001",
            sequence="0000000042",
            traceparent=TRACEPARENT,
            data=bytes(range(256)) + '{"name":"Crème brûlée"}'.encode(),
        )
        log.append_events([sent])

        [got] = log.fetch_batch("any", limit=1)

        assert got.event == sent
        assert got.event.time.utcoffset() == timedelta(hours=1)
        assert type(got.event.data) is bytes

    def test_optional_fields_left_out_come_back_empty(self, log: EventLog) -> None:
        sent = cloud_event(1)
        log.append_events([sent])

        [got] = log.fetch_batch("any", limit=1)

        assert got.event == sent
        left_out = (got.event.subject, got.event.partitionkey, got.event.sequence, got.event.traceparent)
        assert left_out == (None, None, None, None)


# --- the embedded log: one SQLite file ---------------------------------------------------------------


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def opened() -> Iterator[list[SQLiteEventLog]]:
    """Every SQLiteEventLog a story opens, disposed of at its end."""
    logs: list[SQLiteEventLog] = []
    yield logs
    for each in logs:
        each.engine.dispose()


def open_log(db_file: Path, opened: list[SQLiteEventLog], *, migrate: bool = True) -> SQLiteEventLog:
    log = SQLiteEventLog(db_file)
    opened.append(log)
    if migrate:
        upgrade_schema(log.engine)
    return log


class TestSQLiteEventLogFile:
    def test_a_new_file_is_ready_to_append(self, db_file: Path, opened: list[SQLiteEventLog]) -> None:
        log = open_log(db_file, opened, migrate=False)

        [seq] = log.append_events([cloud_event(1)])

        assert seq is not None
        assert log.read_head() == seq

    def test_the_database_is_in_wal_mode(self, db_file: Path, opened: list[SQLiteEventLog]) -> None:
        log = open_log(db_file, opened)
        log.append_events([cloud_event(1)])

        with log.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        log.engine.dispose()
        with sqlite3.connect(db_file) as raw:  # WAL is a property of the file, not just our connections
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        raw.close()

    def test_events_and_positions_survive_reopening(
        self, db_file: Path, opened: list[SQLiteEventLog]
    ) -> None:
        first = open_log(db_file, opened)
        first.append_events([cloud_event(1), cloud_event(2, traceparent=TRACEPARENT)])
        first.ack_events("inventory", first.fetch_batch("inventory", limit=1))
        written = first.fetch_batch("any", limit=10)
        first.engine.dispose()

        reopened = open_log(db_file, opened)

        assert reopened.fetch_batch("any", limit=10) == written
        assert reopened.read_position("inventory") == written[0].seq
        assert reopened.append_events([cloud_event(1)]) == [None]  # still known after the restart


class TestFailureStreaks:
    def test_a_failing_group_shows_its_streak_until_the_next_ack(self, log: EventLog) -> None:
        log.append_events([cloud_event(1), cloud_event(2)])
        log.record_failure("inventory", "RuntimeError: ERP down")
        log.record_failure("inventory", "RuntimeError: still down")
        failing = log.read_groups()["inventory"]
        assert (failing.failures, failing.last_error, failing.lag) == (2, "RuntimeError: still down", 2)
        assert failing.last_error_at is not None
        log.ack_events("inventory", log.fetch_batch("inventory", limit=10))
        recovered = log.read_groups()["inventory"]
        assert (recovered.failures, recovered.position, recovered.lag) == (0, 2, 0)
