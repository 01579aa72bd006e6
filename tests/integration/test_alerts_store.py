"""The alert book on SQLite and PostgreSQL: an alert opens once however many evaluators race to
open it, resolves once, opens anew after; the listing puts firing alerts first, newest first;
acknowledging keeps who and when; the right to tell the webhook is held by one process at a time
and what was not told is found again. And the evaluator over a hub's real state."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.builders import cloud_event
from tillflow.bootstrap import bootstrap
from tillflow.config import HubSettings, TillflowConfig
from tillflow.model import StoreHeartbeat
from tillflow.observe.alert_rules import AlertSettings, DeadLettersRule, StoreOfflineRule
from tillflow.observe.alerting import AlertEvaluator
from tillflow.ports import AlertFiring, AlertState, DeadLetterSelection
from tillflow.sim.pos import demo_stores
from tillflow.storage.alerts import SQLAlertBook

AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)


def firing(subject: str = "S001", rule: str = "store-offline") -> AlertFiring:
    return AlertFiring(rule, "store_offline", "critical", subject, 6.0, 5.0, f"store {subject} offline")


@pytest.fixture
def book(engine: Engine) -> SQLAlertBook:
    return SQLAlertBook(engine)


class TestTransitions:
    def test_an_alert_opens_once_while_it_is_open(self, book: SQLAlertBook) -> None:
        opened = book.open_alert(firing(), at=AT, notify_until=None)
        again = book.open_alert(firing(), at=AT + timedelta(seconds=5), notify_until=None)

        assert opened is not None and again is None
        assert (opened.rule, opened.subject, opened.state) == ("store-offline", "S001", AlertState.FIRING)
        assert (opened.value, opened.threshold, opened.fired_at) == (6.0, 5.0, AT)
        assert [a.id for a in book.list_alerts()] == [opened.id]

    def test_evaluators_racing_to_open_the_same_alert_open_it_once(self, book: SQLAlertBook) -> None:
        start = threading.Barrier(6)
        won: list[int] = []

        def evaluator() -> None:
            start.wait()
            opened = book.open_alert(firing(), at=AT, notify_until=AT + LEASE)
            if opened is not None:
                won.append(opened.id)

        threads = [threading.Thread(target=evaluator) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(won) == 1
        assert [a.id for a in book.list_alerts(state=None)] == won

    def test_an_alert_resolves_once_and_opens_anew_after(self, book: SQLAlertBook) -> None:
        first = book.open_alert(firing(), at=AT, notify_until=None)
        resolved = book.resolve_alert(
            "store-offline", "S001", at=AT + timedelta(minutes=1), notify_until=None
        )
        again = book.resolve_alert("store-offline", "S001", at=AT + timedelta(minutes=2), notify_until=None)
        reopened = book.open_alert(firing(), at=AT + timedelta(minutes=3), notify_until=None)

        assert first is not None and resolved is not None and reopened is not None
        assert resolved.id == first.id and resolved.resolved_at == AT + timedelta(minutes=1)
        assert resolved.state is AlertState.RESOLVED
        assert again is None
        assert reopened.id != first.id

    def test_each_subject_of_a_rule_is_its_own_alert(self, book: SQLAlertBook) -> None:
        assert book.open_alert(firing("S001"), at=AT, notify_until=None) is not None
        assert book.open_alert(firing("S002"), at=AT, notify_until=None) is not None
        assert book.open_alert(firing("S001", rule="other"), at=AT, notify_until=None) is not None


class TestListing:
    def test_firing_first_then_newest_first(self, book: SQLAlertBook) -> None:
        old = book.open_alert(firing("S001"), at=AT, notify_until=None)
        cleared = book.open_alert(firing("S002"), at=AT + timedelta(minutes=5), notify_until=None)
        new = book.open_alert(firing("S003"), at=AT + timedelta(minutes=1), notify_until=None)
        book.resolve_alert("store-offline", "S002", at=AT + timedelta(minutes=6), notify_until=None)
        assert old and cleared and new

        assert [a.subject for a in book.list_alerts()] == ["S003", "S001", "S002"]
        assert [a.subject for a in book.list_alerts(state=AlertState.FIRING)] == ["S003", "S001"]
        assert [a.subject for a in book.list_alerts(state=AlertState.RESOLVED)] == ["S002"]

    def test_acknowledging_keeps_who_and_when_the_first_time(self, book: SQLAlertBook) -> None:
        opened = book.open_alert(firing(), at=AT, notify_until=None)
        assert opened is not None

        acked = book.acknowledge_alert(opened.id, by="ana", at=AT + timedelta(minutes=1))
        again = book.acknowledge_alert(opened.id, by="bo", at=AT + timedelta(minutes=2))

        assert acked is not None and again is not None
        assert (acked.acknowledged_by, acked.acknowledged_at) == ("ana", AT + timedelta(minutes=1))
        assert (again.acknowledged_by, again.acknowledged_at) == ("ana", AT + timedelta(minutes=1))
        assert acked.state is AlertState.FIRING  # acknowledged, still shown
        assert book.acknowledge_alert(opened.id + 1000, by="ana", at=AT) is None


class TestDeliveryRight:
    def test_the_process_that_opened_it_holds_the_right_and_gives_it_up_once_told(
        self, book: SQLAlertBook
    ) -> None:
        opened = book.open_alert(firing(), at=AT, notify_until=AT + LEASE)
        assert opened is not None and opened.notify_until == AT + LEASE

        # another process cannot take it while it runs
        assert not book.claim_delivery(opened.id, now=AT + timedelta(seconds=1), until=AT + 2 * LEASE)
        assert book.list_undelivered(now=AT + timedelta(seconds=1), since=AT - timedelta(days=1)) == []
        # its holder renews it, and records what it told
        assert book.claim_delivery(opened.id, now=AT, until=AT + 2 * LEASE, held=AT + LEASE)
        assert book.record_delivery(opened.id, AlertState.FIRING, held=AT + 2 * LEASE)

        told = book.find_alert(opened.id)
        assert told is not None and (told.notified, told.notify_until) == (AlertState.FIRING, None)
        assert book.list_undelivered(now=AT + 3 * LEASE, since=AT - timedelta(days=1)) == []

    def test_a_right_that_ran_out_is_taken_by_one_process(self, book: SQLAlertBook) -> None:
        opened = book.open_alert(firing(), at=AT, notify_until=AT + LEASE)
        assert opened is not None
        later = AT + LEASE + timedelta(seconds=1)

        [untold] = book.list_undelivered(now=later, since=AT - timedelta(days=1))
        first = book.claim_delivery(untold.id, now=later, until=later + LEASE)
        second = book.claim_delivery(untold.id, now=later, until=later + LEASE + timedelta(seconds=1))

        assert untold.id == opened.id and (first, second) == (True, False)
        # the one that ran out cannot record its delivery any more
        assert not book.record_delivery(opened.id, AlertState.FIRING, held=AT + LEASE)

    def test_resolving_while_the_firing_is_told_keeps_its_right_and_tells_the_resolution_after(
        self, book: SQLAlertBook
    ) -> None:
        opened = book.open_alert(firing(), at=AT, notify_until=AT + LEASE)
        assert opened is not None

        resolved = book.resolve_alert(
            "store-offline", "S001", at=AT + timedelta(seconds=5), notify_until=AT + 2 * LEASE
        )

        assert resolved is not None and resolved.notify_until == AT + LEASE  # still the firing's
        assert book.list_undelivered(now=AT + timedelta(seconds=6), since=AT) == []
        assert book.record_delivery(opened.id, AlertState.FIRING, held=AT + LEASE)
        [untold] = book.list_undelivered(now=AT + timedelta(seconds=7), since=AT)
        assert untold.state is AlertState.RESOLVED and untold.notified is AlertState.FIRING

    def test_a_resolution_the_webhook_was_not_told_is_found_again(self, book: SQLAlertBook) -> None:
        opened = book.open_alert(firing(), at=AT, notify_until=AT + LEASE)
        assert opened is not None
        book.record_delivery(opened.id, AlertState.FIRING, held=AT + LEASE)
        book.resolve_alert("store-offline", "S001", at=AT + timedelta(minutes=1), notify_until=AT + LEASE)

        [untold] = book.list_undelivered(now=AT + 2 * LEASE, since=AT - timedelta(days=1))

        assert untold.state is AlertState.RESOLVED and untold.notified is AlertState.FIRING
        assert book.list_undelivered(now=AT + 2 * LEASE, since=AT + timedelta(minutes=2)) == []


class TestEvaluator:
    def test_a_silent_store_fires_and_clears_when_it_beats_again(self, tmp_path: Path) -> None:
        rule = StoreOfflineRule(name="offline", kind="store_offline", minutes=1)
        services = bootstrap(
            TillflowConfig(
                hub=HubSettings(data_dir=tmp_path, store_offline_seconds=30),
                stores=demo_stores(2),
                alerts=AlertSettings(rules=[rule]),
            )
        )
        try:
            beat = StoreHeartbeat(
                agent_version="1", sent_at=AT, buffer_depth=0, delivered_total=0, conflicts=0
            )
            services.store_health.record_heartbeat("S001", beat, AT)
            evaluator = AlertEvaluator(services)

            evaluator.evaluate_once(AT + timedelta(seconds=89))  # offline 59 s: not yet
            assert services.alerts.list_alerts(state=None) == []
            evaluator.evaluate_once(AT + timedelta(seconds=90))
            [fired] = services.alerts.list_alerts(state=AlertState.FIRING)
            assert (fired.rule, fired.subject) == ("offline", "S001")  # S002 never beat: not offline

            services.store_health.record_heartbeat("S001", beat, AT + timedelta(seconds=100))
            evaluator.evaluate_once(AT + timedelta(seconds=101))
            assert services.alerts.list_alerts(state=AlertState.FIRING) == []
            [cleared] = services.alerts.list_alerts(state=AlertState.RESOLVED)
            assert cleared.id == fired.id and cleared.resolved_at == AT + timedelta(seconds=101)
        finally:
            services.close()

    def test_a_dead_letter_fires_and_clears_once_purged(self, tmp_path: Path) -> None:
        rule = DeadLettersRule(name="dlq", kind="dead_letters", above=0)
        services = bootstrap(
            TillflowConfig(hub=HubSettings(data_dir=tmp_path), alerts=AlertSettings(rules=[rule]))
        )
        try:
            log = services.event_log
            log.append_events([cloud_event(1)])
            [event] = log.fetch_batch("inventory", limit=1)
            log.dead_letter("inventory", event, reason="PoisonEventError: no SKU")
            evaluator = AlertEvaluator(services)

            evaluator.evaluate_once()
            [fired] = services.alerts.list_alerts()
            assert (fired.subject, fired.value, fired.state) == ("inventory", 1.0, AlertState.FIRING)

            log.purge_dead_letters(DeadLetterSelection(group="inventory"), actor="ana", why="test")
            evaluator.evaluate_once()
            [cleared] = services.alerts.list_alerts()
            assert cleared.state is AlertState.RESOLVED
        finally:
            services.close()

    def test_the_alerts_of_a_rule_removed_from_the_config_are_resolved(self, tmp_path: Path) -> None:
        services = bootstrap(
            TillflowConfig(hub=HubSettings(data_dir=tmp_path), alerts=AlertSettings(rules=[]))
        )
        try:
            services.alerts.open_alert(firing(rule="gone"), at=AT, notify_until=None)

            AlertEvaluator(services).evaluate_once(AT + timedelta(seconds=1))

            [cleared] = services.alerts.list_alerts()
            assert cleared.state is AlertState.RESOLVED
        finally:
            services.close()
