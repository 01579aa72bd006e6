"""The stores' heartbeats on SQLite and PostgreSQL: the latest per store, what it said, when the
hub received it and the skew between the clocks; and the health of every configured store read
in one query, online, offline or unknown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tillflow.hub.api.stores import health_body
from tillflow.model import StoreHeartbeat
from tillflow.ports import LatestHeartbeat
from tillflow.storage.health import SQLStoreHealthBook

AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))


def beat(sent_at: datetime = AT, **fields: Any) -> StoreHeartbeat:
    values: dict[str, Any] = {
        "agent_version": "1.2.0",
        "sent_at": sent_at,
        "buffer_depth": 0,
        "delivered_total": 0,
        "conflicts": 0,
    }
    return StoreHeartbeat.model_validate(values | fields)


@pytest.fixture
def book(engine: Engine) -> SQLStoreHealthBook:
    return SQLStoreHealthBook(engine)


class TestHeartbeats:
    def test_a_heartbeat_is_kept_with_what_it_said_and_when_it_arrived(
        self, book: SQLStoreHealthBook
    ) -> None:
        sent = beat(
            AT.astimezone(PARIS),
            buffer_depth=42,
            oldest_unsent_age_seconds=12.5,
            last_error="hub unreachable: connection refused",
            delivered_total=1_000_000,
            conflicts=3,
        )

        book.record_heartbeat("S001", sent, AT + timedelta(seconds=2, microseconds=250_000))

        [found] = book.list_health()
        assert found.store_id == "S001"
        assert found.beat == sent  # the same instant, whatever its offset
        assert found.received_at == AT + timedelta(seconds=2, microseconds=250_000)
        assert found.clock_skew_seconds == 2.25

    def test_what_the_agent_did_not_say_stays_unsaid(self, book: SQLStoreHealthBook) -> None:
        book.record_heartbeat("S001", beat(), AT)

        [found] = book.list_health()

        assert found.beat.oldest_unsent_age_seconds is None
        assert found.beat.last_error is None

    def test_a_store_ahead_of_the_hub_has_a_negative_skew(self, book: SQLStoreHealthBook) -> None:
        book.record_heartbeat("S001", beat(AT + timedelta(seconds=90)), AT)

        [found] = book.list_health()

        assert found.clock_skew_seconds == -90.0

    def test_what_the_agent_was_asked_for_and_does_not_hold_is_kept_and_shown(
        self, book: SQLStoreHealthBook
    ) -> None:
        missing = ("S001:R01:2026-11-28:00000007", "S001:R02:2026-11-28:00000001")
        book.record_heartbeat("S001", beat(missing=missing), AT)

        [found] = book.list_health()
        body = health_body(["S001"], [found], now=AT, offline_after=30)

        assert found.beat.missing == missing
        assert body["stores"][0]["missing"] == list(missing)

    def test_a_newer_heartbeat_replaces_the_one_before(self, book: SQLStoreHealthBook) -> None:
        book.record_heartbeat("S001", beat(buffer_depth=500, last_error="timeout"), AT)
        later = beat(AT + timedelta(seconds=5), agent_version="1.3.0", buffer_depth=0, delivered_total=500)

        book.record_heartbeat("S001", later, AT + timedelta(seconds=5))

        assert book.list_health() == [LatestHeartbeat("S001", later, AT + timedelta(seconds=5))]

    def test_each_store_has_its_own_latest_listed_by_store_id(self, book: SQLStoreHealthBook) -> None:
        for store_id, depth in (("S003", 3), ("S001", 1), ("S002", 2), ("S001", 10)):
            book.record_heartbeat(store_id, beat(buffer_depth=depth), AT)

        found = book.list_health()

        assert [(f.store_id, f.beat.buffer_depth) for f in found] == [("S001", 10), ("S002", 2), ("S003", 3)]

    def test_no_store_heard_from_lists_nothing(self, book: SQLStoreHealthBook) -> None:
        assert book.list_health() == []


def store_ids(n: int) -> list[str]:
    return [f"S{i:04d}" for i in range(1, n + 1)]


def statements_of(engine: Engine) -> list[str]:
    """A list that fills with every SQL statement `engine` runs from now on."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    return seen


class TestHealthOfEveryStore:
    def test_online_offline_and_unknown_by_the_age_of_the_latest_heartbeat(
        self, book: SQLStoreHealthBook
    ) -> None:
        now = AT + timedelta(minutes=10)
        book.record_heartbeat("S001", beat(), now - timedelta(seconds=5))  # recent
        book.record_heartbeat("S002", beat(), now - timedelta(seconds=30))  # exactly the limit
        book.record_heartbeat("S003", beat(), now - timedelta(minutes=9))
        book.record_heartbeat("GONE", beat(), now)  # no longer configured

        body = health_body(["S001", "S002", "S003", "S004"], book.list_health(), now=now, offline_after=30)

        assert [(s["store_id"], s["status"], s["seconds_since"]) for s in body["stores"]] == [
            ("S001", "online", 5.0),
            ("S002", "offline", 30.0),
            ("S003", "offline", 540.0),
            ("S004", "unknown", None),
        ]
        assert body["summary"] == {"online": 1, "offline": 2, "unknown": 1}

    def test_a_store_heard_from_shows_its_latest_heartbeat(self, book: SQLStoreHealthBook) -> None:
        sent = beat(
            AT - timedelta(seconds=1),
            agent_version="2.0.1",
            buffer_depth=7,
            oldest_unsent_age_seconds=3.5,
            last_error="503 from the hub",
            delivered_total=120,
            conflicts=1,
        )
        book.record_heartbeat("S001", sent, AT)

        body = health_body(["S001"], book.list_health(), now=AT + timedelta(seconds=4), offline_after=30)

        assert body["stores"] == [
            {
                "store_id": "S001",
                "status": "online",
                "last_heartbeat_at": AT.isoformat(),
                "seconds_since": 4.0,
                "buffer_depth": 7,
                "oldest_unsent_age_seconds": 3.5,
                "last_error": "503 from the hub",
                "clock_skew_seconds": 1.0,
                "agent_version": "2.0.1",
                "delivered_total": 120,
                "conflicts": 1,
                "missing": [],
            }
        ]

    def test_twelve_hundred_stores_are_read_in_one_query(
        self, engine: Engine, book: SQLStoreHealthBook
    ) -> None:
        stores = store_ids(1200)
        for i, store_id in enumerate(stores[:1000]):
            book.record_heartbeat(store_id, beat(buffer_depth=i), AT - timedelta(seconds=i % 60))
        statements = statements_of(engine)

        body = health_body(stores, book.list_health(), now=AT, offline_after=30)

        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
        assert body["summary"] == {"online": 510, "offline": 490, "unknown": 200}
        assert [s["buffer_depth"] for s in body["stores"][:3]] == [0, 1, 2]
