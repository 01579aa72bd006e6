"""The IFRS 15 journals of the points issued, from the hub's points ledger (SQLite and
PostgreSQL) to the reference ERP (its own process): each store-day's net points deferred to the
contract liability once, later moves in the next journal, the ERP away or refusing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.integration.test_sim_erp import ErpProcess
from tests.integration.test_sim_erp import start as start_erp
from tillflow.connectors.erp_http import HttpErp
from tillflow.errors import DownstreamUnavailableError
from tillflow.flows.liability import PointsJournalPoster
from tillflow.flows.posting import LoyaltyAccounting, PostingAccounts
from tillflow.ports import JournalState, PointsEntry
from tillflow.storage.loyalty import SQLLoyaltyBook

DAY = date(2026, 11, 29)
ACCOUNTS = PostingAccounts(
    loyalty=LoyaltyAccounting(
        point_value=Decimal("0.01"), breakage=Decimal("0.2"), point_values={"JPY": Decimal(1)}
    )
)
CURRENCIES = {"S001": "EUR", "S002": "JPY", "S003": "CHF"}  # no point value in CHF


def move(key: str, points: int, store: str = "S001", kind: str = "accrual", day: date = DAY) -> PointsEntry:
    return PointsEntry(
        entry_key=key,
        program="default",
        member_id="M0001",
        kind=kind,
        points=points,
        transaction_id=f"{store}:R01:{day}:{key}",
        store_id=store,
        business_day=day,
    )


@pytest.fixture
def erp(tmp_path: Path) -> Iterator[ErpProcess]:
    process = start_erp(tmp_path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def book(engine: Engine) -> SQLLoyaltyBook:
    return SQLLoyaltyBook(engine)


def poster(book: SQLLoyaltyBook, erp: HttpErp) -> PointsJournalPoster:
    return PointsJournalPoster(
        book=book,
        erp=erp,
        loyalty=ACCOUNTS.loyalty,  # type: ignore[arg-type]
        accounts=ACCOUNTS,
        currency_of=CURRENCIES.__getitem__,
        clock=lambda: datetime.now(UTC),
        every=0.0,
    )


def balances(erp: HttpErp, store: str) -> dict[str, tuple[Decimal, Decimal]]:
    return {line.account: (line.debit, line.credit) for line in erp.trial_balance(store, DAY)}


class TestPointsJournals:
    def test_a_store_days_net_points_are_deferred_once_and_later_moves_go_into_the_next(
        self, book: SQLLoyaltyBook, erp: ErpProcess
    ) -> None:
        at = datetime.now(UTC)
        book.record_entries(
            [move("a1", 1000), move("a2", 250), move("r1", -100, kind="reversal"), move("j1", 1001, "S002")],
            at=at,
        )
        book.record_entries([move("x", -500, kind="redemption"), move("c1", 70, "S003")], at=at)
        with HttpErp(erp.url) as adapter:
            flow = poster(book, adapter)

            first = flow.post_due()
            again = flow.post_due()  # nothing new: nothing posted twice
            book.record_entries([move("a3", 400)], at=at)
            later = flow.post_due()

            journals = {j.journal_id: j for j in book.find_points_journals()}
            assert (first, again, later) == (2, 0, 1)
            assert {k: (j.points, j.state) for k, j in journals.items()} == {
                "pts.S001.2026-11-29.1": (1150, JournalState.POSTED),
                "pts.S001.2026-11-29.2": (400, JournalState.POSTED),
                "pts.S002.2026-11-29.1": (1001, JournalState.POSTED),
            }
            # (1,150 + 400) x 0.01 x 0.8 = 12.40 EUR; 1,001 x 1 x 0.8 = 800.8 -> 801 JPY
            assert balances(adapter, "S001") == {"4300": (Decimal("12.40"), 0), "2400": (0, Decimal("12.40"))}
            assert balances(adapter, "S002") == {"4300": (Decimal("801"), 0), "2400": (0, Decimal("801"))}
            assert [e.entry_key for e in book.unjournaled_entries(("accrual", "reversal"))] == ["c1"]

    def test_the_erp_away_leaves_the_recorded_journal_pending_until_it_is_back(
        self, book: SQLLoyaltyBook, erp: ErpProcess
    ) -> None:
        book.record_entries([move("a1", 300)], at=datetime.now(UTC))
        until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        erp.http.put("/admin/faults", json={"outage_until": until})
        with HttpErp(erp.url) as adapter:
            flow = poster(book, adapter)

            with pytest.raises(DownstreamUnavailableError):
                flow.post_due()
            during = [(j.journal_id, j.state) for j in book.find_points_journals()]
            erp.http.delete("/admin/faults")
            flow.post_due()

            assert during == [("pts.S001.2026-11-29.1", JournalState.PENDING)]
            assert [(j.journal_id, j.state) for j in book.find_points_journals()] == [
                ("pts.S001.2026-11-29.1", JournalState.POSTED)
            ]
            assert balances(adapter, "S001") == {"4300": (Decimal("2.40"), 0), "2400": (0, Decimal("2.40"))}

    def test_a_refused_journal_is_kept_failed_with_the_erps_reason(
        self, book: SQLLoyaltyBook, erp: ErpProcess
    ) -> None:
        closed = date(2026, 9, 30)
        erp.http.put("/admin/periods/2026-09", json={"status": "closed"})
        book.record_entries([move("a1", 300, day=closed)], at=datetime.now(UTC))
        with HttpErp(erp.url) as adapter:
            assert poster(book, adapter).post_due() == 0

        [journal] = book.find_points_journals()
        assert journal.state is JournalState.FAILED and journal.reason is not None
        assert "2026-09" in journal.reason
