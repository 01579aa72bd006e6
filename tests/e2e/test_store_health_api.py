"""Store health through a real hub process: a store's agent posts heartbeats with its key, the
store shows online with what it said and goes offline once it falls silent for longer than
`hub.store_offline_seconds`; a store never heard from is unknown; a body that is no heartbeat,
another store's key and an unknown store are refused as problem details. The answer to a
heartbeat names what the store's day closes count and the hub never received, and what the agent
reports it does not hold is shown with the store's health."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import RunningHub, hub_process
from tillflow.config import HubSettings, TillflowConfig
from tillflow.flows.z_report import z_reports
from tillflow.model import Transaction
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

PROBLEM = "application/problem+json"
OFFLINE_AFTER = 2.0
DEADLINE = 60.0  # seconds a test waits for a status before it gives up


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub for stores S001 to S003 that takes a store as offline after two silent seconds."""
    config = TillflowConfig(hub=HubSettings(store_offline_seconds=OFFLINE_AFTER), stores=demo_stores(3))
    with hub_process(tmp_path_factory.mktemp("health"), config) as hub:
        yield hub


def heartbeat(sent_at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "agent_version": "1.0.0",
        "sent_at": (sent_at or datetime.now(UTC)).isoformat(),
        "buffer_depth": 0,
        "oldest_unsent_age_seconds": None,
        "last_error": None,
        "delivered_total": 0,
        "conflicts": 0,
    } | fields


def health_of(admin: httpx.Client, store_id: str) -> dict[str, Any]:
    response = admin.get("/v1/stores/health")
    assert response.status_code == 200, response.text
    [found] = [s for s in response.json()["stores"] if s["store_id"] == store_id]
    return found


def wait_for(check: Callable[[], dict[str, Any]], status: str) -> dict[str, Any]:
    """The store's health once `check` shows it `status` (fails after DEADLINE)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = check()
        if found["status"] == status or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


class TestOnlineAndOffline:
    def test_a_store_is_online_while_it_beats_and_offline_once_it_falls_silent(
        self, running: RunningHub
    ) -> None:
        beat = heartbeat(
            agent_version="1.4.2",
            buffer_depth=17,
            oldest_unsent_age_seconds=8.5,
            last_error="hub answered 503",
            delivered_total=4200,
            conflicts=2,
        )
        with running.client(running.keys["S001"]) as store, running.client(running.admin) as admin:

            def beat_and_look() -> dict[str, Any]:  # each look follows a fresh heartbeat
                posted = store.post("/v1/stores/S001/heartbeat", json=beat)
                assert posted.status_code == 200, posted.text
                return health_of(admin, "S001")

            online = wait_for(beat_and_look, "online")
            offline = wait_for(lambda: health_of(admin, "S001"), "offline")
            summary = admin.get("/v1/stores/health").json()["summary"]

        assert online["status"] == "online"
        assert online["seconds_since"] < OFFLINE_AFTER
        said = {k: v for k, v in beat.items() if k != "sent_at"}
        assert {k: online[k] for k in said} == said
        assert offline["status"] == "offline"
        assert offline["seconds_since"] >= OFFLINE_AFTER
        assert offline["last_heartbeat_at"] == online["last_heartbeat_at"]  # the last it heard
        assert offline["buffer_depth"] == 17
        assert summary["offline"] >= 1 and sum(summary.values()) == 3

    def test_the_hub_answers_the_skew_between_its_clock_and_the_stores(self, running: RunningHub) -> None:
        behind = datetime.now(UTC) - timedelta(seconds=100)
        with running.client(running.keys["S002"]) as store, running.client(running.admin) as admin:
            posted = store.post("/v1/stores/S002/heartbeat", json=heartbeat(behind))
            shown = health_of(admin, "S002")

        assert posted.status_code == 200, posted.text
        answer = posted.json()
        assert answer["store_id"] == "S002"
        assert answer["clock_skew_seconds"] >= 100
        received = datetime.fromisoformat(answer["received_at"])
        assert answer["clock_skew_seconds"] == (received - behind).total_seconds()
        assert shown["clock_skew_seconds"] == answer["clock_skew_seconds"]
        assert shown["last_heartbeat_at"] == answer["received_at"]

    def test_a_store_never_heard_from_is_unknown(self, running: RunningHub) -> None:
        with running.client(running.admin) as admin:
            never = health_of(admin, "S003")

        assert never == {
            "store_id": "S003",
            "status": "unknown",
            "last_heartbeat_at": None,
            "seconds_since": None,
            "buffer_depth": None,
            "oldest_unsent_age_seconds": None,
            "last_error": None,
            "clock_skew_seconds": None,
            "agent_version": None,
            "delivered_total": None,
            "conflicts": None,
            "missing": None,
        }


class TestRefusals:
    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"buffer_depth": -1}, "buffer_depth"),
            ({"sent_at": "2026-11-29T10:00:00"}, "sent_at"),  # no offset
            ({"last_error": "x" * 501}, "last_error"),
            ({"oldest_unsent_age_seconds": -0.5}, "oldest_unsent_age_seconds"),
            ({"delivered_total": "many"}, "delivered_total"),
            ({"agent_version": None}, "agent_version"),
            ({"battery": 80}, "battery"),  # nothing is silently dropped
            ({"missing": "S003:R01:2026-11-29:00000001"}, "missing"),  # a list of ids
        ],
    )
    def test_a_body_that_is_no_heartbeat_is_refused_field_by_field(
        self, running: RunningHub, changes: dict[str, Any], field: str
    ) -> None:
        with running.client(running.keys["S003"]) as store:
            refused = store.post("/v1/stores/S003/heartbeat", json=heartbeat() | changes)

        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == PROBLEM
        problem = refused.json()
        assert problem["type"].endswith("/invalid-request")
        assert [e["field"] for e in problem["errors"]] == [field]
        assert problem["errors"][0]["reason"]

    def test_a_missing_field_and_malformed_json_are_refused_and_nothing_is_kept(
        self, running: RunningHub
    ) -> None:
        body = heartbeat()
        del body["conflicts"]
        with running.client(running.keys["S003"]) as store, running.client(running.admin) as admin:
            missing = store.post("/v1/stores/S003/heartbeat", json=body)
            malformed = store.post(
                "/v1/stores/S003/heartbeat",
                content=orjson.dumps(heartbeat())[:-1],
                headers={"content-type": "application/json"},
            )
            after = health_of(admin, "S003")

        assert missing.status_code == 422
        assert missing.json()["errors"] == [{"field": "conflicts", "reason": "Field required"}]
        assert malformed.status_code == 400 and malformed.headers["content-type"] == PROBLEM
        assert after["status"] == "unknown"

    def test_another_stores_key_an_unknown_store_and_a_store_key_reading_health_are_refused(
        self, running: RunningHub
    ) -> None:
        with (
            running.client(running.keys["S003"]) as s003,
            running.client(running.admin) as admin,
            running.client() as anonymous,
        ):
            foreign = s003.post("/v1/stores/S001/heartbeat", json=heartbeat(agent_version="impostor"))
            unknown = admin.post("/v1/stores/S999/heartbeat", json=heartbeat())
            reading = s003.get("/v1/stores/health")
            no_key = anonymous.post("/v1/stores/S003/heartbeat", json=heartbeat())
            s001 = health_of(admin, "S001")

        assert foreign.status_code == 403 and foreign.headers["content-type"] == PROBLEM
        assert foreign.json()["type"].endswith("/forbidden-store")
        assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
        assert reading.status_code == 403
        assert no_key.status_code == 401
        assert s001["agent_version"] != "impostor"


def store_day(store_id: str, business_day: date, n: int) -> list[Transaction]:
    """A store's transactions of a business day, in till order."""
    gen = PosTrafficGenerator(demo_stores(3), business_day=business_day, seed=business_day.day)
    return [tx for tx in gen.transactions(n) if tx.store_id == store_id]


class TestWhatTheHubMisses:
    def test_the_answer_names_the_gaps_of_the_stores_day_closes_most_recent_day_first(
        self, running: RunningHub
    ) -> None:
        today = datetime.now(UTC).date()
        older, newer = (
            store_day("S002", today - timedelta(days=2), 60),
            store_day("S002", today - timedelta(days=1), 60),
        )
        lost = [older[5], older[9], newer[3]]
        with running.client(running.keys["S002"]) as store, running.client(running.admin) as admin:
            sent = [tx.model_dump(mode="json") for tx in older + newer if tx not in lost]
            assert store.post("/v1/transactions", json={"transactions": sent}).status_code == 200
            for report in z_reports(older + newer, closed_at=datetime.now(UTC)):
                closed = store.post("/v1/day-closes", json=orjson.loads(report.model_dump_json()))
                assert closed.status_code == 201, closed.text
            first = store.post("/v1/stores/S002/heartbeat", json=heartbeat()).json()["resend"]
            late = store.post("/v1/transactions", json={"transactions": [lost[2].model_dump(mode="json")]})
            assert late.status_code == 200
            reported = heartbeat(missing=[lost[0].transaction_id, lost[1].transaction_id])
            second = store.post("/v1/stores/S002/heartbeat", json=reported).json()["resend"]
            shown = health_of(admin, "S002")

        older_gap = sorted(tx.transaction_id for tx in lost[:2])  # by register, then sequence
        assert first == [lost[2].transaction_id, *older_gap]
        assert second == older_gap  # the late one came
        assert shown["missing"] == [lost[0].transaction_id, lost[1].transaction_id]

    def test_a_store_whose_days_are_complete_is_asked_for_nothing(self, running: RunningHub) -> None:
        with running.client(running.keys["S001"]) as store:
            answer = store.post("/v1/stores/S001/heartbeat", json=heartbeat())

        assert answer.status_code == 200 and answer.json()["resend"] == []
