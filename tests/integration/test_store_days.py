"""The StoreDays port on SQLite and PostgreSQL: day closes kept, replaced and refused, merged
journals recorded with their transactions and settled, refused ones retried."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tillflow.errors import StorageError
from tillflow.model import DayClose, RegisterClose
from tillflow.ports import CloseState, DayJournal, JournalState, Verdict
from tillflow.storage.store_days import SQLStoreDays

DAY = date(2026, 11, 29)
AT = datetime(2026, 11, 29, 22, tzinfo=UTC)
GRACE = timedelta(minutes=15)


def z(count: int = 3) -> DayClose:
    register = RegisterClose(
        register_id="R01",
        transaction_count=count,
        last_sequence=count,
        totals_by_tender={"cash": Decimal("9.95")},
    )
    return DayClose(store_id="S001", business_day=DAY, currency="EUR", closed_at=AT, registers=(register,))


def journal(journal_id: str, *tx: str, adjustment: int = 0) -> DayJournal:
    return DayJournal(
        journal_id=journal_id,
        store_id="S001",
        business_day=DAY,
        register_id=None,
        adjustment=adjustment,
        transaction_ids=tx,
    )


class TestDayCloses:
    def test_kept_repeated_replaced_then_refused_once_posted(self, engine: Engine) -> None:
        days = SQLStoreDays(engine)
        assert days.record_day_close(z(), received_at=AT, grace=GRACE) is Verdict.ACCEPTED
        assert days.record_day_close(z(), received_at=AT, grace=GRACE) is Verdict.DUPLICATE
        assert days.record_day_close(z(4), received_at=AT, grace=GRACE) is Verdict.ACCEPTED  # corrected
        record = days.find_day_close("S001", DAY)
        assert record is not None
        assert (record.close, record.state, record.deadline) == (z(4), CloseState.WAITING, AT + GRACE)

        days.settle_day_close(
            "S001", DAY, state=CloseState.POSTED, gap=["S001:R01:2026-11-29:00000004"], at=AT
        )
        assert days.record_day_close(z(5), received_at=AT, grace=GRACE) is Verdict.CONFLICT
        assert days.record_day_close(z(4), received_at=AT, grace=GRACE) is Verdict.DUPLICATE
        record = days.find_day_close("S001", DAY)
        assert record is not None and record.gap == ("S001:R01:2026-11-29:00000004",)
        assert days.list_day_closes(state=CloseState.WAITING) == []
        assert [r.close.store_id for r in days.list_day_closes(business_day=DAY)] == ["S001"]


class TestDayJournals:
    def test_recorded_settled_and_retried(self, engine: Engine) -> None:
        days = SQLStoreDays(engine)
        days.record_day_close(z(), received_at=AT, grace=GRACE)
        days.record_journals(
            [journal("day.S001.2026-11-29.1", "t1", "t2"), journal("day.S001.2026-11-29.2", "t3")], at=AT
        )
        assert days.find_memberships(["t1", "t3", "t9"]) == {
            "t1": "day.S001.2026-11-29.1",
            "t3": "day.S001.2026-11-29.2",
        }
        days.settle_journal(
            "day.S001.2026-11-29.1", state=JournalState.POSTED, document_number="JE-1", reason=None, at=AT
        )
        days.settle_journal(
            "day.S001.2026-11-29.2",
            state=JournalState.FAILED,
            document_number=None,
            reason="period closed",
            at=AT,
        )
        days.settle_day_close("S001", DAY, state=CloseState.FAILED, reason="period closed", at=AT)
        found = days.find_journals("S001", DAY)
        assert [(j.journal_id, j.transaction_ids, j.state, j.document_number, j.reason) for j in found] == [
            ("day.S001.2026-11-29.1", ("t1", "t2"), JournalState.POSTED, "JE-1", None),
            ("day.S001.2026-11-29.2", ("t3",), JournalState.FAILED, None, "period closed"),
        ]

        assert days.retry_failed("S001", DAY) == 1
        assert [j.state for j in days.find_journals("S001", DAY)] == [
            JournalState.POSTED,
            JournalState.PENDING,
        ]
        record = days.find_day_close("S001", DAY)
        assert record is not None and record.state is CloseState.WAITING

    def test_a_transaction_goes_into_one_journal_at_most(self, engine: Engine) -> None:
        days = SQLStoreDays(engine)
        days.record_journals([journal("day.S001.2026-11-29.1", "t1")], at=AT)
        with pytest.raises(StorageError):
            days.record_journals([journal("adj.S001.2026-11-29.1.1", "t1", adjustment=1)], at=AT)
        assert [j.journal_id for j in days.find_journals("S001", DAY)] == ["day.S001.2026-11-29.1"]
