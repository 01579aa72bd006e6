"""SQLTransactionStore on SQLite and PostgreSQL: accepting a transaction logs its event in the
same commit; a retry changes nothing; a different record under a known identity is refused and
recorded, the original kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, func, select

from tests.builders import TRACEPARENT, canonical_bytes, incoming, line, sale
from tillflow.bus.sql import SQLEventLog
from tillflow.model import CloudEvent, LoggedEvent
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.ports import Verdict
from tillflow.storage import transactions as transactions_module
from tillflow.storage.outbox import append_in
from tillflow.storage.tables import transactions
from tillflow.storage.transactions import SQLTransactionStore

RECEIVED = datetime(2026, 11, 29, 18, 0, 0, 250_000, tzinfo=UTC)


@pytest.fixture
def store(engine: Engine) -> SQLTransactionStore:
    return SQLTransactionStore(engine)


@pytest.fixture
def log(engine: Engine) -> SQLEventLog:
    return SQLEventLog(engine)


def logged(log: SQLEventLog) -> list[LoggedEvent]:
    return log.fetch_batch("test", limit=1000)


def stored_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(transactions)).scalar_one())


class TestAccepting:
    def test_new_transactions_are_accepted_and_stored_as_sent(self, store: SQLTransactionStore) -> None:
        a, b = sale(1), sale(2, line(1, "BAK-0001", unit_price="3.80"))

        verdicts = store.record_batch([incoming(a), incoming(b)], received_at=RECEIVED)

        assert verdicts == [Verdict.ACCEPTED, Verdict.ACCEPTED]
        for tx in (a, b):
            stored = store.get_transaction(tx.transaction_id)
            assert stored is not None
            assert stored.data == canonical_bytes(tx)
            assert stored.store_id == tx.store_id
            assert stored.traceparent == TRACEPARENT
            assert stored.received_at == RECEIVED
            assert stored.logged_at >= RECEIVED
            assert stored.conflicts == 0

    def test_each_accepted_transaction_has_exactly_one_completed_event(
        self, store: SQLTransactionStore, log: SQLEventLog
    ) -> None:
        batch = [sale(1), sale(2), sale(3)]

        store.record_batch([incoming(tx) for tx in batch], received_at=RECEIVED)

        events = logged(log)
        assert [e.event.type for e in events] == [TRANSACTION_COMPLETED] * 3
        for tx in batch:
            [event] = [e for e in events if e.event.id == tx.transaction_id]
            stored = store.get_transaction(tx.transaction_id)
            assert stored is not None
            assert event.event.data == stored.data
            assert event.seq == stored.event_seq
            assert event.event.traceparent == TRACEPARENT
            assert event.event.partitionkey == tx.store_id

    def test_an_empty_batch_is_answered_with_no_verdicts(
        self, store: SQLTransactionStore, log: SQLEventLog
    ) -> None:
        assert store.record_batch([], received_at=RECEIVED) == []
        assert log.read_head() == 0


class TestRepeats:
    def test_a_retry_with_the_same_content_is_a_duplicate_and_changes_nothing(
        self, store: SQLTransactionStore, log: SQLEventLog
    ) -> None:
        tx = sale(1)
        store.record_batch([incoming(tx)], received_at=RECEIVED)
        before = store.get_transaction(tx.transaction_id)
        head = log.read_head()

        verdicts = store.record_batch([incoming(tx)], received_at=RECEIVED + timedelta(minutes=5))

        assert verdicts == [Verdict.DUPLICATE]
        assert store.get_transaction(tx.transaction_id) == before
        assert log.read_head() == head
        assert len(logged(log)) == 1

    def test_a_retry_is_a_duplicate_even_when_its_traceparent_differs(
        self, store: SQLTransactionStore
    ) -> None:
        tx = sale(1)
        store.record_batch([incoming(tx)], received_at=RECEIVED)

        verdicts = store.record_batch([incoming(tx, traceparent=None)], received_at=RECEIVED)

        assert verdicts == [Verdict.DUPLICATE]
        stored = store.get_transaction(tx.transaction_id)
        assert stored is not None and stored.traceparent == TRACEPARENT

    def test_other_content_under_a_known_identity_is_a_conflict_and_the_original_stays(
        self, store: SQLTransactionStore, log: SQLEventLog
    ) -> None:
        original = sale(1)
        rewritten = sale(1, line(1, "APP-0001", unit_price="12.99"))
        assert original.transaction_id == rewritten.transaction_id
        store.record_batch([incoming(original)], received_at=RECEIVED)

        verdicts = store.record_batch([incoming(rewritten)], received_at=RECEIVED)

        assert verdicts == [Verdict.CONFLICT]
        stored = store.get_transaction(original.transaction_id)
        assert stored is not None
        assert stored.data == canonical_bytes(original)
        assert stored.conflicts == 1
        assert [e.event.data for e in logged(log)] == [canonical_bytes(original)]

    def test_every_conflicting_attempt_is_counted(self, store: SQLTransactionStore) -> None:
        original = sale(1)
        store.record_batch([incoming(original)], received_at=RECEIVED)

        store.record_batch([incoming(sale(1, line(1, "GRO-0002")))], received_at=RECEIVED)
        store.record_batch([incoming(sale(1, line(1, "GRO-0003")))], received_at=RECEIVED)

        stored = store.get_transaction(original.transaction_id)
        assert stored is not None and stored.conflicts == 2

    def test_repeats_inside_one_batch_are_judged_against_the_first(
        self, store: SQLTransactionStore, log: SQLEventLog
    ) -> None:
        tx = sale(1)
        rewritten = sale(1, line(1, "GRO-0002"))

        verdicts = store.record_batch(
            [incoming(tx), incoming(tx), incoming(rewritten), incoming(sale(2))], received_at=RECEIVED
        )

        assert verdicts == [Verdict.ACCEPTED, Verdict.DUPLICATE, Verdict.CONFLICT, Verdict.ACCEPTED]
        stored = store.get_transaction(tx.transaction_id)
        assert stored is not None
        assert stored.data == canonical_bytes(tx)
        assert stored.conflicts == 1
        assert [e.event.id for e in logged(log)] == [tx.transaction_id, sale(2).transaction_id]

    def test_a_mixed_batch_stores_only_the_new_ones(self, store: SQLTransactionStore, engine: Engine) -> None:
        known = sale(1)
        store.record_batch([incoming(known)], received_at=RECEIVED)

        verdicts = store.record_batch(
            [incoming(sale(2)), incoming(known), incoming(sale(1, line(1, "GRO-0002")))], received_at=RECEIVED
        )

        assert verdicts == [Verdict.ACCEPTED, Verdict.DUPLICATE, Verdict.CONFLICT]
        assert stored_rows(engine) == 2


class TestReading:
    def test_an_unknown_transaction_is_none(self, store: SQLTransactionStore) -> None:
        store.record_batch([incoming(sale(1))], received_at=RECEIVED)

        assert store.get_transaction(sale(99).transaction_id) is None

    def test_the_trace_starts_with_received_then_logged(self, store: SQLTransactionStore) -> None:
        tx = sale(1)
        store.record_batch([incoming(tx)], received_at=RECEIVED)

        stored = store.get_transaction(tx.transaction_id)

        assert stored is not None
        assert [h.hop for h in stored.hops[:2]] == ["received", "logged"]
        received, logged_hop = stored.hops[:2]
        assert received.at == RECEIVED
        assert logged_hop.at == stored.logged_at >= received.at
        assert f"seq {stored.event_seq}" in (logged_hop.detail or "")


class TestAtomicity:
    def test_a_failed_event_append_leaves_no_transaction_behind(
        self, store: SQLTransactionStore, log: SQLEventLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def append_then_fail(
            conn: Connection, batch: Sequence[CloudEvent], *, logged_us: int
        ) -> list[int | None]:
            append_in(conn, batch, logged_us=logged_us)  # the events reach the table...
            raise RuntimeError("event log unavailable")  # ...and then the append fails

        monkeypatch.setattr(transactions_module, "append_in", append_then_fail)

        with pytest.raises(RuntimeError, match="event log unavailable"):
            store.record_batch([incoming(sale(1)), incoming(sale(2))], received_at=RECEIVED)

        assert stored_rows(engine) == 0
        assert store.get_transaction(sale(1).transaction_id) is None
        assert log.read_head() == 0

    def test_after_a_failed_append_the_same_batch_is_accepted(
        self, store: SQLTransactionStore, log: SQLEventLog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fail(conn: Connection, batch: Sequence[CloudEvent], *, logged_us: int) -> list[int | None]:
            raise RuntimeError("event log unavailable")

        batch = [incoming(sale(1)), incoming(sale(2))]
        with monkeypatch.context() as patch:
            patch.setattr(transactions_module, "append_in", fail)
            with pytest.raises(RuntimeError):
                store.record_batch(batch, received_at=RECEIVED)

        assert store.record_batch(batch, received_at=RECEIVED) == [Verdict.ACCEPTED, Verdict.ACCEPTED]
        assert len(logged(log)) == 2
