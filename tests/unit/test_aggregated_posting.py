"""The `aggregated` posting policy: a store-day's journals merged, split under the ERP's
lines limit, each line traced back to its transactions."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tillflow.errors import PoisonEventError
from tillflow.flows.aggregation import aggregate_store_day, merged_journal_id
from tillflow.flows.posting import PostingAccounts, journal_for, void_journal
from tillflow.model import Journal, JournalLine, Transaction
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

DAY = date(2026, 11, 29)
ACCOUNTS = PostingAccounts()
R01 = {"register": "R01"}


def store_day(seed: int, count: int = 120) -> tuple[list[Transaction], list[Journal]]:
    """One store's day of demo traffic and its journals under the `line` policy."""
    txs = PosTrafficGenerator(demo_stores(1), business_day=DAY, seed=seed).transactions(count)
    journals: dict[str, Journal] = {}
    for tx in txs:
        if tx.voided is not None:
            journal = void_journal(tx, journals[tx.voided.transaction_id], ACCOUNTS)
        else:
            found = journal_for(tx, ACCOUNTS)
            assert found is not None
            journal = found
        journals[tx.transaction_id] = journal
    return txs, list(journals.values())


def net_by_account(journals: list[Journal]) -> dict[tuple[str, str], Decimal]:
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for journal in journals:
        for line in journal.lines:
            totals[(line.account, line.currency)] += line.debit - line.credit
    return {key: amount for key, amount in totals.items() if amount}


def cash_sale(tx_id: str, amount: str, account: str = "4000") -> Journal:
    return Journal(
        journal_id=tx_id.replace(":", "."),
        store_id="S001",
        business_day=DAY,
        lines=(
            JournalLine(
                account="1000", debit=Decimal(amount), currency="EUR", dimensions={"register": "R01"}
            ),
            JournalLine(
                account=account, credit=Decimal(amount), currency="EUR", dimensions={"register": "R01"}
            ),
        ),
        source_transactions=(tx_id,),
    )


class TestMerging:
    def test_a_day_of_sales_becomes_one_journal_of_net_lines(self) -> None:
        sales = [cash_sale("S001:R01:2026-11-29:1", "10.00"), cash_sale("S001:R01:2026-11-29:2", "5.50")]

        posting = aggregate_store_day(sales, store_id="S001", business_day=DAY, max_lines=500)

        [journal] = posting.journals
        assert journal.journal_id == "day.S001.2026-11-29.1"
        assert [(line.account, line.debit, line.credit) for line in journal.lines] == [
            ("1000", Decimal("15.50"), Decimal(0)),
            ("4000", Decimal(0), Decimal("15.50")),
        ]
        assert journal.source_transactions == ("S001:R01:2026-11-29:1", "S001:R01:2026-11-29:2")
        assert all(line.dimensions == {} for line in journal.lines)  # the register is aggregated away

    def test_the_merge_log_names_the_transactions_behind_each_line(self) -> None:
        sales = [
            cash_sale("S001:R01:2026-11-29:1", "10.00", account="4000"),
            cash_sale("S001:R01:2026-11-29:2", "5.50", account="4010"),
        ]

        posting = aggregate_store_day(sales, store_id="S001", business_day=DAY, max_lines=500)

        assert [(m.line_no, m.account, m.transaction_ids) for m in posting.merge_log] == [
            (1, "1000", ("S001:R01:2026-11-29:1", "S001:R01:2026-11-29:2")),
            (2, "4000", ("S001:R01:2026-11-29:1",)),
            (3, "4010", ("S001:R01:2026-11-29:2",)),
        ]

    def test_a_sale_and_its_void_leave_nothing_to_post(self) -> None:
        sale = cash_sale("S001:R01:2026-11-29:1", "10.00")
        void = sale.model_copy(
            update={
                "journal_id": "void.1",
                "lines": tuple(
                    line.model_copy(update={"debit": line.credit, "credit": line.debit})
                    for line in sale.lines
                ),
                "source_transactions": ("S001:R01:2026-11-29:2",),
            }
        )
        posting = aggregate_store_day([sale, void], store_id="S001", business_day=DAY, max_lines=500)
        assert posting.journals == () and posting.merge_log == ()

    def test_per_register_posting_keeps_the_register_and_names_it_in_the_id(self) -> None:
        sales = [cash_sale("S001:R01:2026-11-29:1", "10.00")]
        posting = aggregate_store_day(sales, store_id="S001", business_day=DAY, max_lines=500, register="R01")
        [journal] = posting.journals
        assert journal.journal_id == "day.S001.2026-11-29.R01.1"
        assert all(line.dimensions == {"register": "R01"} for line in journal.lines)

    def test_an_adjustment_has_an_id_of_its_own(self) -> None:
        assert merged_journal_id("S001", DAY, 1, adjustment=2) == "adj.S001.2026-11-29.2.1"


class TestSplitting:
    def test_a_day_over_the_lines_limit_is_split_by_whole_transactions(self) -> None:
        sales = [
            cash_sale(f"S001:R01:2026-11-29:{n}", "1.00", account=f"40{n:02d}") for n in range(1, 6)
        ]  # five revenue accounts + cash: six lines merged

        posting = aggregate_store_day(sales, store_id="S001", business_day=DAY, max_lines=3)

        assert [j.journal_id for j in posting.journals] == [
            "day.S001.2026-11-29.1",
            "day.S001.2026-11-29.2",
            "day.S001.2026-11-29.3",
        ]
        assert all(len(j.lines) <= 3 for j in posting.journals)
        parts = [set(j.source_transactions) for j in posting.journals]
        assert sum(len(p) for p in parts) == 5 and set().union(*parts) == {
            s.source_transactions[0] for s in sales
        }

    def test_a_single_journal_over_the_limit_is_refused(self) -> None:
        sale = cash_sale("S001:R01:2026-11-29:1", "10.00")
        split_tender = sale.model_copy(
            update={
                "lines": (
                    JournalLine(account="1000", debit=Decimal("4.00"), currency="EUR"),
                    JournalLine(account="1100", debit=Decimal("6.00"), currency="EUR"),
                    JournalLine(account="4000", credit=Decimal("10.00"), currency="EUR"),
                )
            }
        )
        with pytest.raises(PoisonEventError, match="alone needs 3 lines; the ERP takes 2"):
            aggregate_store_day([split_tender], store_id="S001", business_day=DAY, max_lines=2)


class TestProperties:
    @settings(max_examples=25, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), max_lines=st.integers(20, 60))
    def test_line_and_aggregated_post_the_same_totals_per_account(self, seed: int, max_lines: int) -> None:
        txs, journals = store_day(seed)

        posting = aggregate_store_day(journals, store_id="S001", business_day=DAY, max_lines=max_lines)

        assert net_by_account(list(posting.journals)) == net_by_account(journals)
        for journal in posting.journals:
            assert len(journal.lines) <= max_lines
            totals: dict[str, Decimal] = defaultdict(Decimal)
            for line in journal.lines:
                totals[line.currency] += line.debit - line.credit
            assert all(v == 0 for v in totals.values())
        merged = [tx for j in posting.journals for tx in j.source_transactions]
        assert sorted(merged) == sorted(tx.transaction_id for tx in txs)  # each exactly once

    @settings(max_examples=10, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1))
    def test_aggregating_again_gives_the_same_journals(self, seed: int) -> None:
        _, journals = store_day(seed, count=60)
        first = aggregate_store_day(journals, store_id="S001", business_day=DAY, max_lines=20)
        again = aggregate_store_day(list(reversed(journals)), store_id="S001", business_day=DAY, max_lines=20)
        assert first == again  # same ids, same lines: posting it again is a repeat
