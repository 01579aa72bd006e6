"""The `aggregated` posting policy: a store-day's journals merged, split under the ERP's
lines limit, each line traced back to its transactions."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import line as item
from tests.builders import post_void, sale
from tests.unit.test_model_properties import transactions
from tests.unit.test_posting_journals import costs_for, loyalty_settings, paid_with_points
from tillflow.errors import FlowError, PoisonEventError
from tillflow.flows.aggregation import (
    StoreDayPosting,
    aggregate_store_day,
    aggregate_transactions,
    merged_journal_id,
)
from tillflow.flows.posting import LoyaltyAccounting, PostingAccounts, journal_for, void_journal
from tillflow.model import Journal, JournalLine, Transaction
from tillflow.sim.pos import CATALOG, PosTrafficGenerator, demo_stores

DAY = date(2026, 11, 29)
ACCOUNTS = PostingAccounts()
R01 = {"register": "R01"}


def store_day(seed: int, count: int = 120) -> tuple[list[Transaction], list[Journal]]:
    """One store's day of demo traffic and its journals under the `line` policy (none for a
    transaction that moves no money)."""
    txs = PosTrafficGenerator(demo_stores(1), business_day=DAY, seed=seed).transactions(count)
    return txs, line_policy(txs, ACCOUNTS, None, {tx.transaction_id: tx for tx in txs})


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


def line_policy(
    txs: Sequence[Transaction],
    accounts: PostingAccounts,
    costs: Mapping[str, Decimal] | None,
    originals: Mapping[str, Transaction],
) -> list[Journal]:
    """The journals the `line` policy posts for `txs`: `journal_for`, and a post-void's
    `void_journal` of its original's journal (nothing when the original posted nothing)."""
    journals = []
    for tx in txs:
        if tx.voided is None:
            journal = journal_for(tx, accounts, costs=costs)
        else:
            original = journal_for(originals[tx.voided.transaction_id], accounts, costs=costs)
            journal = None if original is None else void_journal(tx, original, accounts)
        if journal is not None:
            journals.append(journal)
    return journals


def both_ways(
    txs: Sequence[Transaction],
    *,
    accounts: PostingAccounts = ACCOUNTS,
    costs: Mapping[str, Decimal] | None = None,
    originals: Mapping[str, Transaction] | None = None,
    **day: Any,
) -> tuple[StoreDayPosting, StoreDayPosting, list[Journal]]:
    """The store-day merged from the line policy's journals, and by the fast path; the journals."""
    originals = originals if originals is not None else {tx.transaction_id: tx for tx in txs}
    journals = line_policy(txs, accounts, costs, originals)
    merged = aggregate_store_day(journals, **day)
    fast = aggregate_transactions(txs, accounts=accounts, costs=costs, originals=originals, **day)
    return merged, fast, journals


def same_to_the_digit(one: StoreDayPosting, other: StoreDayPosting) -> None:
    assert one == other
    assert [j.model_dump_json() for j in one.journals] == [j.model_dump_json() for j in other.journals]
    assert one.merge_log == other.merge_log


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
        posted = [tx for j in journals for tx in j.source_transactions]
        assert sorted(merged) == sorted(posted)  # each exactly once
        assert {tx.transaction_id for tx in txs if tx.totals.grand_total or tx.totals.tax} <= set(posted)

    @settings(max_examples=10, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1))
    def test_aggregating_again_gives_the_same_journals(self, seed: int) -> None:
        _, journals = store_day(seed, count=60)
        first = aggregate_store_day(journals, store_id="S001", business_day=DAY, max_lines=20)
        again = aggregate_store_day(list(reversed(journals)), store_id="S001", business_day=DAY, max_lines=20)
        assert first == again  # same ids, same lines: posting it again is a repeat


class TestFromTransactions:
    """`aggregate_transactions`: the same merged journals, without a journal per transaction."""

    DAY_ARGS: ClassVar[dict[str, Any]] = {"store_id": "S001", "business_day": DAY, "max_lines": 500}

    def test_a_day_of_sales_and_returns_merges_as_their_journals_would(self) -> None:
        txs = PosTrafficGenerator(demo_stores(1), business_day=DAY, seed=3).transactions(200)

        merged, fast, _ = both_ways(txs, **self.DAY_ARGS)

        same_to_the_digit(fast, merged)
        assert len(fast.journals) == 1 and len(fast.merge_log) == len(fast.journals[0].lines)

    def test_a_post_void_of_a_sale_of_an_earlier_day_reverses_it_in_this_one(self) -> None:
        original = sale(1, item(1, "GRO-0001", quantity="3"))
        void = post_void(2, original)

        fast = aggregate_transactions(
            [void], accounts=ACCOUNTS, originals={original.transaction_id: original}, **self.DAY_ARGS
        )

        [journal] = fast.journals
        assert journal.source_transactions == (void.transaction_id,)
        assert [(line.account, line.debit, line.credit) for line in journal.lines] == [
            ("4090", Decimal("7.50"), Decimal(0)),
            ("1000", Decimal(0), Decimal("7.50")),
        ]

    def test_a_sale_and_its_void_in_one_day_post_nothing(self) -> None:
        original = sale(1)
        txs = [post_void(2, original), original]

        merged, fast, _ = both_ways(txs, costs={"GRO-0001": Decimal("1.10")}, **self.DAY_ARGS)

        assert fast == merged == StoreDayPosting((), ())

    def test_a_post_void_whose_sale_has_not_arrived_is_retried(self) -> None:
        original = sale(1)

        with pytest.raises(FlowError, match=r"the voided transaction .* has not arrived") as raised:
            aggregate_transactions([post_void(2, original)], accounts=ACCOUNTS, **self.DAY_ARGS)

        assert not isinstance(raised.value, PoisonEventError)  # retried, not dead-lettered

    def test_an_original_filed_under_another_id_is_refused_as_void_journal_refuses_it(self) -> None:
        first, second = sale(1), sale(2)
        void = post_void(3, first)
        second_journal = journal_for(second, ACCOUNTS)
        assert second_journal is not None

        with pytest.raises(ValueError, match="is not the journal of") as refused:
            void_journal(void, second_journal, ACCOUNTS)
        with pytest.raises(ValueError, match=re.escape(str(refused.value))):
            aggregate_transactions(
                [void], accounts=ACCOUNTS, originals={first.transaction_id: second}, **self.DAY_ARGS
            )

    def test_transactions_that_move_no_money_are_left_out(self) -> None:
        nothing, something = sale(1, item(1, unit_price="0.00")), sale(2)

        fast = aggregate_transactions([nothing, something], accounts=ACCOUNTS, **self.DAY_ARGS)

        assert fast.journals[0].source_transactions == (something.transaction_id,)
        assert fast.merge_log[0].transaction_ids == (something.transaction_id,)

    def test_a_journal_over_the_lines_limit_is_refused_as_it_would_be(self) -> None:
        tx = sale(1, *(item(n, f"GRO-000{n}") for n in range(1, 4)))
        costs = {"GRO-0001": Decimal(1)}  # revenue, cash, cost of sales, inventory: four lines
        journal = journal_for(tx, ACCOUNTS, costs=costs)
        assert journal is not None

        with pytest.raises(PoisonEventError) as merged:
            aggregate_store_day([journal], store_id="S001", business_day=DAY, max_lines=3)
        with pytest.raises(PoisonEventError, match=re.escape(str(merged.value))):
            aggregate_transactions(
                [tx], accounts=ACCOUNTS, costs=costs, store_id="S001", business_day=DAY, max_lines=3
            )

    @settings(max_examples=30, deadline=None)
    @given(
        seed=st.integers(0, 2**32 - 1),
        stores=st.integers(1, 3),
        earlier=st.integers(0, 60),
        count=st.integers(0, 150),
        max_lines=st.integers(12, 80),
        per_register=st.booleans(),
        adjustment=st.integers(0, 2),
        loyalty=loyalty_settings,
        data=st.data(),
    )
    def test_the_demo_traffic_merges_as_its_journals_would(
        self,
        seed: int,
        stores: int,
        earlier: int,
        count: int,
        max_lines: int,
        per_register: bool,
        adjustment: int,
        loyalty: LoyaltyAccounting | None,
        data: st.DataObject,
    ) -> None:
        traffic = PosTrafficGenerator(demo_stores(stores), business_day=DAY, seed=seed).transactions(
            earlier + count
        )
        txs = traffic[earlier:]  # the sales voided may be of the batch, or of an earlier one
        costs = data.draw(st.none() | costs_for([product.sku for product in CATALOG]))
        accounts = PostingAccounts(loyalty=loyalty)
        day: dict[str, Any] = {
            "store_id": "S001",
            "business_day": DAY,
            "max_lines": max_lines,
            "register": "R01" if per_register else None,
            "adjustment": adjustment,
        }
        originals = {tx.transaction_id: tx for tx in traffic}
        try:
            journals = line_policy(txs, accounts, costs, originals)
            merged = aggregate_store_day(journals, **day)
        except PoisonEventError as refused:  # a journal alone over the limit: refused alike
            with pytest.raises(PoisonEventError, match=re.escape(str(refused))):
                aggregate_transactions(txs, accounts=accounts, costs=costs, originals=originals, **day)
            return

        fast = aggregate_transactions(txs, accounts=accounts, costs=costs, originals=originals, **day)

        same_to_the_digit(fast, merged)
        assert net_by_account(list(fast.journals)) == net_by_account(journals)
        assert all(len(j.lines) <= max_lines for j in fast.journals)

    @settings(max_examples=60, deadline=None)
    @given(
        txs=st.lists(transactions(), max_size=12),
        max_lines=st.integers(4, 30),
        loyalty=loyalty_settings,
        points=st.booleans(),
        data=st.data(),
    )
    def test_any_consistent_transactions_merge_as_their_journals_would(
        self,
        txs: list[Transaction],
        max_lines: int,
        loyalty: LoyaltyAccounting | None,
        points: bool,
        data: st.DataObject,
    ) -> None:
        txs = [paid_with_points(tx) for tx in txs] if points else txs
        costs = data.draw(costs_for([line.sku for tx in txs for line in tx.lines]))
        accounts = PostingAccounts(loyalty=loyalty)
        day: dict[str, Any] = {"store_id": "S001", "business_day": DAY, "max_lines": max_lines}
        try:
            merged, fast, journals = both_ways(txs, accounts=accounts, costs=costs, **day)
        except PoisonEventError as refused:
            with pytest.raises(PoisonEventError, match=re.escape(str(refused))):
                aggregate_transactions(txs, accounts=accounts, costs=costs, **day)
            return

        same_to_the_digit(fast, merged)
        assert net_by_account(list(fast.journals)) == net_by_account(journals)
        for journal in fast.journals:  # several currencies: each balances on its own
            totals: dict[str, Decimal] = defaultdict(Decimal)
            for journal_line in journal.lines:
                totals[journal_line.currency] += journal_line.debit - journal_line.credit
            assert not any(totals.values())
