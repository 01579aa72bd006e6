"""What the operations console looks up, on SQLite and PostgreSQL: transactions by id prefix or
trace id, newest first; a store's conflicts; and the re-sends operators ask a store for, pending
until the hub has the transactions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine

from tests.builders import incoming, line, sale
from tillflow.bus.sql import SQLEventLog
from tillflow.model import Transaction
from tillflow.storage.operations import SQLOperationsBook
from tillflow.storage.transactions import SQLTransactionStore

AT = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)
TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"


Filled = tuple[SQLTransactionStore, SQLOperationsBook]


def parent(trace_id: str) -> str:
    return f"00-{trace_id}-00f067aa0ba902b7-01"


def of_store(tx: Transaction, store_id: str) -> Transaction:
    return tx.model_copy(update={"store_id": store_id})


@pytest.fixture
def filled(engine: Engine) -> Filled:
    """S001 sales 1-3 (1 and 2 in trace A, received a minute apart), S002's sale 1 in trace B,
    and S001 R02's sale 1 of the day before."""
    store = SQLTransactionStore(engine)
    store.record_batch([incoming(sale(1), traceparent=parent(TRACE_A))], received_at=AT)
    store.record_batch(
        [incoming(sale(2), traceparent=parent(TRACE_A)), incoming(sale(3), traceparent=None)],
        received_at=AT + timedelta(minutes=1),
    )
    store.record_batch(
        [incoming(of_store(sale(1), "S002"), traceparent=parent(TRACE_B))],
        received_at=AT + timedelta(minutes=2),
    )
    before = sale(1, register="R02").model_copy(update={"business_day": date(2026, 11, 28)})
    store.record_batch([incoming(before, traceparent=None)], received_at=AT + timedelta(minutes=3))
    return store, SQLOperationsBook(engine)


class TestFindingTransactions:
    def test_by_exact_id(self, filled: Filled) -> None:
        _, book = filled
        [found] = book.find_transactions(id_prefix=sale(2).transaction_id)
        assert found.transaction_id == sale(2).transaction_id
        assert (found.store_id, found.business_day) == ("S001", date(2026, 11, 29))
        assert found.received_at == AT + timedelta(minutes=1)
        assert found.traceparent == parent(TRACE_A) and found.event_seq is not None

    def test_by_prefix_newest_first_and_within_a_store_and_day(self, filled: Filled) -> None:
        _, book = filled
        ids = [m.transaction_id for m in book.find_transactions(id_prefix="S001:")]
        # received together: by id, the later first
        assert ids == [
            "S001:R02:2026-11-28:00000001",
            "S001:R01:2026-11-29:00000003",
            "S001:R01:2026-11-29:00000002",
            "S001:R01:2026-11-29:00000001",
        ]
        day = [m.transaction_id for m in book.find_transactions(id_prefix="S001:R01:2026-11-29")]
        assert len(day) == 3 and day[-1] == "S001:R01:2026-11-29:00000001"
        assert book.find_transactions(id_prefix="S00", business_day=date(2026, 11, 28), limit=5) == [
            m for m in book.find_transactions(id_prefix="S001:R02") if m.business_day == date(2026, 11, 28)
        ]
        assert [m.store_id for m in book.find_transactions(id_prefix="S00", store_id="S002")] == ["S002"]

    def test_a_prefix_is_exact_about_case(self, filled: Filled) -> None:
        _, book = filled
        assert book.find_transactions(id_prefix="s001:") == []
        assert book.find_transactions(id_prefix="S001:R01:2026-11-29:000000019") == []

    def test_by_trace_id(self, filled: Filled) -> None:
        _, book = filled
        found = book.find_transactions(trace_id=TRACE_A)
        assert [m.transaction_id for m in found] == [sale(2).transaction_id, sale(1).transaction_id]
        [other] = book.find_transactions(trace_id=TRACE_B.upper())
        assert other.store_id == "S002"
        assert book.find_transactions(trace_id="f" * 32) == []

    def test_nothing_asked_finds_nothing(self, filled: Filled) -> None:
        assert filled[1].find_transactions() == []


class TestConflicts:
    def test_a_stores_conflicts_newest_first(self, filled: Filled) -> None:
        store, book = filled
        other = line(1, "BAK-0001", unit_price="3.80")
        store.record_batch([incoming(sale(1, other))], received_at=AT + timedelta(hours=1))
        store.record_batch([incoming(sale(2, other))], received_at=AT + timedelta(hours=2))
        store.record_batch([incoming(of_store(sale(1, other), "S002"))], received_at=AT + timedelta(hours=3))

        count, newest = book.list_conflicts("S001", limit=1)

        assert count == 2
        assert [(c.transaction_id, c.received_at) for c in newest] == [
            (sale(2).transaction_id, AT + timedelta(hours=2))
        ]
        assert book.list_conflicts("S002")[0] == 1
        assert book.list_conflicts("S003") == (0, [])


class TestResendRequests:
    def test_pending_until_the_hub_has_them_and_audited(self, engine: Engine, filled: Filled) -> None:
        store, book = filled
        wanted = [sale(7).transaction_id, sale(8).transaction_id]
        book.request_resend("S001", wanted, actor="admin key k1", why="gap in the Z report", at=AT)
        again = [sale(8).transaction_id, sale(1).transaction_id]
        book.request_resend("S001", again, actor="a", why="b", at=AT)
        book.request_resend("S002", ["S002:R01:2026-11-29:00000009"], actor="a", why="b", at=AT)

        # sale 1 is already at the hub: nothing to ask for
        assert book.list_resend_requests("S001", since=AT) == wanted
        store.record_batch([incoming(sale(7))], received_at=AT + timedelta(hours=1))
        assert book.list_resend_requests("S001", since=AT) == [sale(8).transaction_id]
        assert book.list_resend_requests("S001", since=AT + timedelta(seconds=1)) == []  # lapsed
        assert book.list_resend_requests("S003", since=AT) == []

        audit = SQLEventLog(engine).list_audit()
        first = audit[-1]
        assert (first.action, first.group, first.count, first.actor, first.why) == (
            "request-resend",
            "S001",
            2,
            "admin key k1",
            "gap in the Z report",
        )
