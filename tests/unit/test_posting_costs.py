"""Cost of goods sold in the posting flow: where a sku's unit cost is known, a stock line moves
its cost from inventory to cost of sales, and a restocked return moves it back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tests.builders import completed, customer_return, exchange, incoming, line, post_void, returned, sale
from tillflow.flows.aggregation import aggregate_store_day
from tillflow.flows.posting import PostingAccounts, journal_for, post_transactions, void_journal
from tillflow.model import ItemType, Journal, Transaction, UnitOfMeasure
from tillflow.ports import PostingReceipt, StoredTransaction
from tillflow.sim.erp.settings import DEFAULT_ACCOUNTS

D = Decimal
ACCOUNTS = PostingAccounts()
COGS, INVENTORY, CASH, OTHER = "5000", "1400", "1000", "4090"
AT = datetime(2026, 11, 29, 18, tzinfo=UTC)
COSTS = {"GRO-0001": D("1.1234"), "APP-0001": D("6.50"), "NSM-0001": D("0.05"), "SVC-0001": D("1.00")}


def posted(tx: Transaction, costs: dict[str, Decimal] | None = COSTS) -> Journal:
    journal = journal_for(tx, ACCOUNTS, costs=costs)
    assert journal is not None
    return journal


def cost_entries(journal: Journal) -> list[tuple[str, str, Decimal]]:
    """The journal's cost lines as (account, "debit" or "credit", amount), in its order."""
    return [
        (line.account, "debit", line.debit) if line.debit else (line.account, "credit", line.credit)
        for line in journal.lines
        if line.description == "cogs"
    ]


def balanced(journal: Journal) -> bool:
    return sum((line.debit - line.credit for line in journal.lines), D(0)) == 0


def in_department(row: dict[str, Any], department: str) -> dict[str, Any]:
    return {**row, "department": department}


class TestSales:
    def test_a_sale_moves_quantity_times_unit_cost_from_inventory_to_cost_of_sales(self) -> None:
        tx = sale(1, line(1, "GRO-0001", quantity="3"))  # 3 x 1.1234 = 3.3702

        journal = posted(tx)

        assert cost_entries(journal) == [(COGS, "debit", D("3.37")), (INVENTORY, "credit", D("3.37"))]
        assert [(line.account, line.credit) for line in journal.lines[:1]] == [(OTHER, D("7.50"))]
        assert balanced(journal)
        assert all(line.dimensions == {"store": "S001", "register": "R01"} for line in journal.lines[2:])

    def test_the_cost_of_each_line_is_rounded_half_up_to_minor_units(self) -> None:
        weighed = line(1, "PRO-0001", quantity="1.250", unit_price="1.99", uom=UnitOfMeasure.KILOGRAM)
        costs = {"PRO-0001": D("0.45"), "BAK-0002": D("0.125")}  # 1.25 kg x 0.45 = 0.5625

        assert cost_entries(posted(sale(1, weighed), costs))[0] == (COGS, "debit", D("0.56"))
        # half a cent rounds up, line by line: 0.13 + 0.13, where the sum would make 0.25
        croissants = sale(1, line(1, "BAK-0002", unit_price="1.10"), line(2, "BAK-0002", unit_price="1.10"))
        assert cost_entries(posted(croissants, costs))[0] == (COGS, "debit", D("0.26"))

    def test_the_cost_lines_carry_the_department(self) -> None:
        tx = sale(1, in_department(line(1, "APP-0001"), "APPAREL"))

        journal = posted(tx)

        assert cost_entries(journal) == [(COGS, "debit", D("6.50")), (INVENTORY, "credit", D("6.50"))]
        assert {line.dimensions["department"] for line in journal.lines if line.description == "cogs"} == {
            "APPAREL"
        }

    def test_lines_of_one_department_make_one_cost_line_each_side(self) -> None:
        tx = sale(1, line(1, "GRO-0001"), line(2, "GRO-0001", quantity="2"))

        assert cost_entries(posted(tx)) == [(COGS, "debit", D("3.37")), (INVENTORY, "credit", D("3.37"))]

    def test_non_stock_items_and_services_post_no_cost(self) -> None:
        tx = sale(
            1,
            line(1, "NSM-0001", unit_price="0.20", item_type=ItemType.NON_STOCK),
            line(2, "SVC-0001", item_type=ItemType.SERVICE),
        )

        assert cost_entries(posted(tx)) == []

    def test_a_sku_without_a_known_cost_posts_no_cost(self) -> None:
        tx = sale(1, line(1, "GRO-0001"), line(2, "GRO-0099"))

        assert cost_entries(posted(tx)) == [(COGS, "debit", D("1.12")), (INVENTORY, "credit", D("1.12"))]

    def test_without_costs_the_journal_is_the_journal_of_revenue_tax_and_tenders(self) -> None:
        tx = sale(1, line(1, "GRO-0001", quantity="3"))

        assert posted(tx, None) == posted(tx, {}) == journal_for(tx, ACCOUNTS)
        assert cost_entries(posted(tx, None)) == []

    def test_the_cost_accounts_are_in_the_reference_chart(self) -> None:
        assert DEFAULT_ACCOUNTS[ACCOUNTS.cogs] == "Cost of goods sold"
        assert DEFAULT_ACCOUNTS[ACCOUNTS.inventory] == "Inventory"


class TestReturns:
    def test_a_restocked_return_moves_the_cost_back_to_inventory(self) -> None:
        tx = customer_return(2, returned(1, "GRO-0001", quantity="3", restock=True))

        journal = posted(tx)

        assert cost_entries(journal) == [(COGS, "credit", D("3.37")), (INVENTORY, "debit", D("3.37"))]
        assert balanced(journal)

    def test_a_return_that_is_not_restocked_leaves_the_cost_in_cost_of_sales(self) -> None:
        tx = customer_return(2, returned(1, "GRO-0001", quantity="3", restock=False))

        assert cost_entries(posted(tx)) == []

    def test_an_exchange_posts_the_cost_of_what_went_out_and_takes_back_what_came_back(self) -> None:
        tx = exchange(
            3,
            returned(1, "APP-0001", unit_price="12.99", restock=True),
            line(2, "GRO-0001", quantity="3"),
            returned(3, "GRO-0001", restock=False),  # damaged: no cost back
        )

        assert cost_entries(posted(tx)) == [
            (COGS, "credit", D("6.50")),
            (INVENTORY, "debit", D("6.50")),
            (COGS, "debit", D("3.37")),
            (INVENTORY, "credit", D("3.37")),
        ]


class TestPostVoids:
    def test_a_post_void_reverses_the_cost_of_what_it_voids(self) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="3"), line(2, "APP-0001", unit_price="12.99"))
        void = post_void(2, original)

        reversal = void_journal(void, posted(original), ACCOUNTS)

        assert cost_entries(reversal) == [(COGS, "credit", D("9.87")), (INVENTORY, "debit", D("9.87"))]
        assert balanced(reversal)

    def test_a_sale_and_its_void_leave_no_cost_in_the_day(self) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="3"))
        journals = [posted(original), void_journal(post_void(2, original), posted(original), ACCOUNTS)]

        day = aggregate_store_day(journals, store_id="S001", business_day=original.business_day, max_lines=50)

        assert day.journals == ()


class RecordingErp:
    """Takes every journal; keeps what it was given."""

    def __init__(self) -> None:
        self.journals: list[Journal] = []

    def post_journals(
        self, journals: Sequence[Journal], *, idempotency_keys: Sequence[str]
    ) -> list[PostingReceipt]:
        self.journals += journals
        return [PostingReceipt(key, f"doc-{key}", AT) for key in idempotency_keys]


class FakeStore:
    """Holds the transactions a post-void may look up."""

    def __init__(self, *txs: Transaction) -> None:
        self.data = {tx.transaction_id: incoming(tx).data for tx in txs}

    def get_transaction(self, transaction_id: str) -> StoredTransaction | None:
        data = self.data.get(transaction_id)
        return None if data is None else StoredTransaction(transaction_id, "S001", data, AT, AT, 1, None)


class TestTheFlow:
    def test_the_posting_flow_posts_the_cost_of_a_sale_and_reverses_it_on_a_void(self) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="3"))
        void = post_void(2, original)
        erp = RecordingErp()

        posted_count = post_transactions(
            [completed(original, 1), completed(void, 2)],
            erp=erp,
            transactions=FakeStore(original),
            accounts=ACCOUNTS,
            costs=COSTS,
        )

        assert posted_count == 2
        sold, voided = erp.journals
        assert cost_entries(sold) == [(COGS, "debit", D("3.37")), (INVENTORY, "credit", D("3.37"))]
        assert cost_entries(voided) == [(COGS, "credit", D("3.37")), (INVENTORY, "debit", D("3.37"))]
