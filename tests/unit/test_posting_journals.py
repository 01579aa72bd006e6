"""The journals of the posting flow: what a transaction posts where, with hand-built transactions.

Every story builds one consistent transaction (`build`) and reads its journal as a list of
(account, side, amount) entries. The properties at the end run the demo's POS traffic and
arbitrary consistent transactions through `journal_for`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.builders import post_void, sale
from tests.unit.test_model_properties import transactions
from tillflow.errors import PoisonEventError
from tillflow.flows.posting import (
    DEFAULT_REVENUE,
    LoyaltyAccounting,
    PostingAccounts,
    journal_for,
    journal_id_for,
    line_revenues,
    void_journal,
)
from tillflow.model import (
    ItemType,
    Journal,
    LineAction,
    TenderKind,
    Transaction,
    TransactionKind,
    round_to_minor,
)
from tillflow.model.transaction import TRUSTED_CONTEXT
from tillflow.sim.erp.settings import DEFAULT_ACCOUNTS
from tillflow.sim.pos import CATALOG, PosTrafficGenerator, demo_stores

D = Decimal
ZERO = D(0)
DAY = date(2026, 11, 29)
ACCOUNTS = PostingAccounts()
CASH, CARD, GIFT_CARD, LOYALTY, TAX, ROUNDING = "1000", "1100", "2300", "2400", "2200", "6900"
COGS, INVENTORY, DEFERRED = "5000", "1400", "4300"
GROCERY, HOUSEHOLD, APPAREL, OTHER, RETURNS = "4000", "4040", "4050", "4090", "4100"


# --- builders ---------------------------------------------------------------------------------------


def item(
    line_no: int,
    amount: str,
    department: str | None = "GROCERY",
    *,
    tax: str = "V20",
    action: str = "sale",
    off: str | None = None,
) -> dict[str, Any]:
    """A line of one unit at `amount`, in `department`, taxed under `tax`; `off` is a line promotion."""
    return {
        "line_no": line_no,
        "action": action,
        "sku": f"SKU-{line_no}",
        "quantity": "1",
        "unit_price": amount,
        "extended_amount": amount,
        "department": department,
        "tax_codes": [tax],
        "modifiers": [{"amount": off}] if off else [],
    }


def tax(code: str, rate: str, taxable: str, amount: str, *, inclusive: bool) -> dict[str, Any]:
    return {"code": code, "rate": rate, "taxable_amount": taxable, "amount": amount, "inclusive": inclusive}


def tender(kind: str, amount: str, change: str = "0") -> dict[str, Any]:
    card = {"last4": "4242", "auth_code": "A1B2C3"} if kind == "card" else None
    return {"kind": kind, "amount": amount, "change": change, "card": card}


def build(
    *lines: dict[str, Any],
    kind: str = "sale",
    currency: str = "EUR",
    basket_off: str | None = None,
    taxes: tuple[dict[str, Any], ...] = (),
    tenders: list[dict[str, Any]] | None = None,
    context: dict[str, bool] | None = None,
    **fields: Any,
) -> Transaction:
    """A consistent transaction: totals follow from the lines, `basket_off` and `taxes`; paid in
    cash to the cent unless `tenders` are given."""
    net = ZERO
    for line in lines:
        amount = D(line["extended_amount"]) - sum((D(m["amount"]) for m in line["modifiers"]), ZERO)
        net += -amount if line["action"] == "return" else amount
    off = D(basket_off or 0)
    subtotal = net + off if kind == "return" else net - off
    tax_total = sum((D(t["amount"]) for t in taxes), ZERO)
    grand = subtotal + sum((D(t["amount"]) for t in taxes if not t["inclusive"]), ZERO)
    payload = {
        "store_id": "S001",
        "register_id": "R01",
        "business_day": DAY,
        "sequence": 42,
        "kind": kind,
        "currency": currency,
        "ended_at": datetime(2026, 11, 29, 17, 42, tzinfo=UTC),
        "lines": list(lines),
        "modifiers": [{"amount": basket_off, "reason": "coupon"}] if basket_off else [],
        "taxes": list(taxes),
        "tenders": tenders if tenders is not None else [tender("cash", str(grand))],
        "totals": {"subtotal": subtotal, "tax": tax_total, "grand_total": grand},
        **fields,
    }
    return Transaction.model_validate(payload, context=context)


def posted(tx: Transaction, accounts: PostingAccounts = ACCOUNTS) -> Journal:
    journal = journal_for(tx, accounts)
    assert journal is not None
    return journal


def entries(journal: Journal) -> list[tuple[str, str, Decimal]]:
    """The journal as (account, "debit" or "credit", amount), in its order."""
    return [
        (line.account, "debit", line.debit) if line.debit else (line.account, "credit", line.credit)
        for line in journal.lines
    ]


def balance(journal: Journal) -> dict[str, Decimal]:
    """Debits less credits per currency, summed here rather than trusted to the model."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in journal.lines:
        totals[line.currency] += line.debit - line.credit
    return dict(totals)


def tender_side(journal: Journal) -> Decimal:
    return sum((line.debit - line.credit for line in journal.lines if "tender" in line.dimensions), ZERO)


# --- stories ----------------------------------------------------------------------------------------


class TestSales:
    def test_a_cash_sale_with_sales_tax_credits_revenue_and_tax_and_debits_the_till(self) -> None:
        tx = build(
            item(1, "10.00"),
            currency="USD",
            taxes=(tax("TX", "0.0825", "10.00", "0.83", inclusive=False),),
        )

        journal = posted(tx)

        assert entries(journal) == [
            (GROCERY, "credit", D("10.00")),
            (TAX, "credit", D("0.83")),
            (CASH, "debit", D("10.83")),
        ]
        revenue, tax_line, cash = journal.lines
        assert revenue.dimensions == {"store": "S001", "register": "R01", "department": "GROCERY"}
        assert tax_line.dimensions == {"store": "S001", "register": "R01", "tax_code": "TX"}
        assert cash.dimensions == {"store": "S001", "register": "R01", "tender": "cash"}
        assert all(line.currency == "USD" for line in journal.lines)

    def test_a_card_sale_with_vat_in_the_price_and_a_basket_coupon_posts_revenue_net_of_both(self) -> None:
        tx = build(  # 18.00 less a 1.80 coupon = 16.20, of which VAT 20 % = 2.70
            item(1, "12.00", "APPAREL"),
            item(2, "6.00", "HOUSEHOLD"),
            basket_off="1.80",
            taxes=(tax("V20", "0.20", "13.50", "2.70", inclusive=True),),
            tenders=[tender("card", "16.20")],
        )

        assert entries(posted(tx)) == [
            (APPAREL, "credit", D("9.00")),  # 12.00 - 1.20 coupon share - 1.80 VAT
            (HOUSEHOLD, "credit", D("4.50")),  # 6.00 - 0.60 coupon share - 0.90 VAT
            (TAX, "credit", D("2.70")),
            (CARD, "debit", D("16.20")),
        ]

    def test_the_last_line_takes_the_remainder_of_a_basket_coupon(self) -> None:
        tx = build(item(1, "1.00"), item(2, "1.00"), item(3, "1.00"), basket_off="0.10", taxes=())

        assert line_revenues(tx) == [D("0.97"), D("0.97"), D("0.96")]

    def test_inclusive_tax_comes_off_only_the_lines_that_carry_its_code(self) -> None:
        tx = build(
            item(1, "10.70", "GROCERY", tax="V07"),
            item(2, "12.00", "APPAREL", tax="V20"),
            taxes=(
                tax("V07", "0.07", "10.00", "0.70", inclusive=True),
                tax("V20", "0.20", "10.00", "2.00", inclusive=True),
            ),
        )

        assert line_revenues(tx) == [D("10.00"), D("10.00")]
        assert entries(posted(tx))[2:4] == [(TAX, "credit", D("0.70")), (TAX, "credit", D("2.00"))]

    def test_line_promotions_are_taken_off_the_revenue(self) -> None:
        tx = build(item(1, "10.00", off="2.50"))

        assert entries(posted(tx)) == [(GROCERY, "credit", D("7.50")), (CASH, "debit", D("7.50"))]

    def test_lines_of_one_department_make_one_revenue_line(self) -> None:
        tx = build(item(1, "2.00"), item(2, "3.00"), item(3, "4.00", "APPAREL"))

        assert entries(posted(tx)) == [
            (GROCERY, "credit", D("5.00")),
            (APPAREL, "credit", D("4.00")),
            (CASH, "debit", D("9.00")),
        ]

    def test_a_line_without_a_known_department_goes_to_the_default_revenue_account(self) -> None:
        tx = build(item(1, "2.00", None), item(2, "3.00", "GARDEN"))

        journal = posted(tx)

        assert entries(journal)[:2] == [(OTHER, "credit", D("2.00")), (OTHER, "credit", D("3.00"))]
        assert "department" not in journal.lines[0].dimensions
        assert journal.lines[1].dimensions["department"] == "GARDEN"


class TestReturnsAndExchanges:
    def test_a_return_debits_revenue_and_tax_and_credits_the_till(self) -> None:
        tx = build(
            item(1, "10.00", action="return"),
            kind="return",
            currency="USD",
            taxes=(tax("TX", "0.0825", "-10.00", "-0.83", inclusive=False),),
        )

        assert entries(posted(tx)) == [
            (GROCERY, "debit", D("10.00")),
            (TAX, "debit", D("0.83")),
            (CASH, "credit", D("10.83")),
        ]

    def test_a_returns_account_takes_the_returned_lines_when_configured(self) -> None:
        tx = build(item(1, "10.00", action="return"), kind="return")

        journal = posted(tx, PostingAccounts(returns=RETURNS))

        assert entries(journal) == [(RETURNS, "debit", D("10.00")), (CASH, "credit", D("10.00"))]
        assert journal.lines[0].dimensions["department"] == "GROCERY"

    def test_a_basket_coupon_on_a_return_makes_the_refund_smaller(self) -> None:
        tx = build(
            item(1, "6.00", action="return"),
            item(2, "4.00", action="return"),
            kind="return",
            basket_off="1.00",
        )

        assert line_revenues(tx) == [D("-5.40"), D("-3.60")]
        assert entries(posted(tx))[-1] == (CASH, "credit", D("9.00"))

    def test_an_exchange_debits_what_came_back_and_credits_what_went_out(self) -> None:
        tx = build(  # back 12.99, out 39.95: the customer pays 26.96, VAT 20 % in it 4.49
            item(1, "12.99", "APPAREL", action="return"),
            item(2, "39.95", "APPAREL"),
            kind="exchange",
            taxes=(tax("V20", "0.20", "22.47", "4.49", inclusive=True),),
            tenders=[tender("card", "26.96")],
        )

        assert entries(posted(tx)) == [
            (APPAREL, "debit", D("10.82")),  # 12.99 - 2.17 VAT
            (APPAREL, "credit", D("33.29")),  # 39.95 - 6.66 VAT (the remainder of 4.49)
            (TAX, "credit", D("4.49")),
            (CARD, "debit", D("26.96")),
        ]


class TestTenders:
    def test_change_comes_off_the_cash_tendered(self) -> None:
        tx = build(item(1, "12.50"), tenders=[tender("cash", "20.00", change="7.50")])

        assert entries(posted(tx))[-1] == (CASH, "debit", D("12.50"))

    def test_each_tender_clears_to_its_own_account_net_of_its_change(self) -> None:
        tx = build(item(1, "12.50"), tenders=[tender("card", "10.00"), tender("cash", "5.00", change="2.50")])

        assert entries(posted(tx))[1:] == [(CARD, "debit", D("10.00")), (CASH, "debit", D("2.50"))]

    def test_a_gift_card_tender_reduces_the_gift_card_liability(self) -> None:
        tx = build(item(1, "30.00"), tenders=[tender("gift_card", "25.00"), tender("card", "5.00")])

        assert entries(posted(tx))[1:] == [(GIFT_CARD, "debit", D("25.00")), (CARD, "debit", D("5.00"))]
        assert GIFT_CARD in DEFAULT_ACCOUNTS and "liability" in DEFAULT_ACCOUNTS[GIFT_CARD]

    def test_a_refund_to_a_gift_card_credits_the_liability(self) -> None:
        tx = build(item(1, "30.00", action="return"), kind="return", tenders=[tender("gift_card", "-30.00")])

        assert entries(posted(tx)) == [(GROCERY, "debit", D("30.00")), (GIFT_CARD, "credit", D("30.00"))]

    def test_loyalty_points_reduce_the_loyalty_liability(self) -> None:
        tx = build(item(1, "8.00"), tenders=[tender("loyalty_points", "3.00"), tender("card", "5.00")])

        assert entries(posted(tx))[1] == (LOYALTY, "debit", D("3.00"))

    def test_a_cash_rounding_tender_goes_to_the_rounding_account(self) -> None:
        tx = build(  # 99.97 paid with a 100 note, the shop keeps the 0.03 of Swedish cash rounding
            item(1, "99.97"),
            currency="SEK",
            tenders=[tender("cash", "100.00"), tender("rounding", "-0.03")],
        )

        assert entries(posted(tx)) == [
            (GROCERY, "credit", D("99.97")),
            (CASH, "debit", D("100.00")),
            (ROUNDING, "credit", D("0.03")),
        ]


class TestBalance:
    def test_a_difference_within_a_few_minor_units_goes_to_rounding(self) -> None:
        # read back from the event log: the invariants are not checked a second time
        tx = build(item(1, "10.00"), tenders=[tender("cash", "10.02")], context=TRUSTED_CONTEXT)

        journal = posted(tx)

        assert entries(journal)[-1] == (ROUNDING, "credit", D("0.02"))
        assert journal.lines[-1].description == "rounding"
        assert balance(journal) == {"EUR": 0}

    def test_a_larger_difference_is_a_poison_event_that_names_the_figures(self) -> None:
        tx = build(item(1, "10.00"), tenders=[tender("cash", "11.00")], context=TRUSTED_CONTEXT)

        with pytest.raises(
            PoisonEventError, match=r"debits 11\.00 EUR, credits 10\.00 EUR, difference 1\.00"
        ):
            journal_for(tx, ACCOUNTS)

    def test_a_transaction_that_moves_no_money_posts_nothing(self) -> None:
        tx = build(item(1, "0.00"), tenders=[])

        assert journal_for(tx, ACCOUNTS) is None

    def test_zero_amounts_are_left_out(self) -> None:
        tx = build(
            item(1, "5.00"), item(2, "0.00", "APPAREL"), tenders=[tender("cash", "5.00"), tender("card", "0")]
        )

        assert entries(posted(tx)) == [(GROCERY, "credit", D("5.00")), (CASH, "debit", D("5.00"))]


class TestIdentity:
    def test_the_journal_is_named_after_its_transaction_and_dated_on_its_day(self) -> None:
        tx = build(item(1, "5.00"))

        journal = posted(tx)

        assert journal.journal_id == "tx.S001.R01.2026-11-29.00000042"
        assert journal.source_transactions == ("S001:R01:2026-11-29:00000042",)
        assert (journal.store_id, journal.business_day) == ("S001", DAY)

    def test_the_same_transaction_gives_the_same_journal(self) -> None:
        tx = build(item(1, "5.00"), item(2, "7.00", "APPAREL"))

        assert posted(tx) == posted(Transaction.model_validate_json(tx.model_dump_json()))

    def test_an_id_that_would_be_ambiguous_is_a_digest(self) -> None:
        dot_in_store = journal_id_for("S.1:R:2026-11-29:00000042")
        dot_in_register = journal_id_for("S:1.R:2026-11-29:00000042")

        assert dot_in_store.startswith("tx.sha256.") and dot_in_register.startswith("tx.sha256.")
        assert dot_in_store != dot_in_register

    def test_an_id_that_would_be_too_long_is_a_stable_digest(self) -> None:
        tx_id = f"{'S' * 40}:{'R' * 30}:2026-11-29:00000042"

        journal_id = journal_id_for(tx_id)

        assert journal_id.startswith("tx.sha256.") and len(journal_id) <= 64
        assert journal_id == journal_id_for(tx_id)


class TestPostVoids:
    def test_a_post_void_posts_nothing_of_its_own(self) -> None:
        original = sale(1)

        assert journal_for(post_void(2, original), ACCOUNTS) is None

    def test_the_void_journal_mirrors_the_original(self) -> None:
        original = build(
            item(1, "10.00"),
            currency="USD",
            taxes=(tax("TX", "0.0825", "10.00", "0.83", inclusive=False),),
            tenders=[tender("cash", "20.00", change="9.17")],
        )
        void = build(
            kind="void",
            currency="USD",
            sequence=43,
            voided=original.ref.model_dump(),
            taxes=(tax("TX", "0.0825", "-10.00", "-0.83", inclusive=False),),
            tenders=[tender("cash", "-10.83")],
            totals={"subtotal": "-10.00", "tax": "-0.83", "grand_total": "-10.83"},
        )
        journal = posted(original)

        reversal = void_journal(void, journal, ACCOUNTS)

        assert entries(reversal) == [
            (GROCERY, "debit", D("10.00")),
            (TAX, "debit", D("0.83")),
            (CASH, "credit", D("10.83")),
        ]
        assert [line.dimensions for line in reversal.lines] == [line.dimensions for line in journal.lines]
        assert reversal.journal_id == "void.S001.R01.2026-11-29.00000043"
        assert reversal.source_transactions == (void.transaction_id,)

    def test_a_split_sale_refunded_to_one_card_credits_that_card(self) -> None:
        original = build(
            item(1, "100.00"),
            tenders=[tender("card", "70.00"), tender("gift_card", "30.00")],
        )
        void = build(
            kind="void",
            sequence=43,
            voided=original.ref.model_dump(),
            tenders=[tender("card", "-100.00")],
            totals={"subtotal": "-100.00", "tax": "0", "grand_total": "-100.00"},
        )

        reversal = void_journal(void, posted(original), ACCOUNTS)

        assert entries(reversal) == [(GROCERY, "debit", D("100.00")), (CARD, "credit", D("100.00"))]

    def test_the_void_journal_is_dated_on_the_day_of_the_void(self) -> None:
        original = sale(1)
        void = post_void(2, original).model_copy(update={"business_day": date(2026, 11, 30)})

        assert void_journal(void, posted(original), ACCOUNTS).business_day == date(2026, 11, 30)

    def test_a_void_journal_needs_the_journal_of_what_it_voids(self) -> None:
        first, second = sale(1), sale(2)

        with pytest.raises(ValueError, match="is not the journal of"):
            void_journal(post_void(3, first), posted(second), ACCOUNTS)
        with pytest.raises(ValueError, match="is not a post-void"):
            void_journal(second, posted(first), ACCOUNTS)


class TestAccounts:
    def test_the_defaults_are_accounts_of_the_reference_erp(self) -> None:
        defaults = [
            *ACCOUNTS.revenue.values(),
            ACCOUNTS.revenue_default,
            ACCOUNTS.tax_payable_default,
            *ACCOUNTS.tender.values(),
            ACCOUNTS.rounding,
        ]

        assert set(defaults) <= set(DEFAULT_ACCOUNTS)

    def test_every_demo_department_has_its_own_sales_account(self) -> None:
        departments = {product.department for product in CATALOG}

        assert departments == set(DEFAULT_REVENUE)
        for department in departments:
            assert DEFAULT_ACCOUNTS[ACCOUNTS.revenue[department]].lower() == f"sales - {department.lower()}"

    def test_every_tender_kind_has_an_account(self) -> None:
        assert {kind: ACCOUNTS.tender_account(kind) for kind in TenderKind}[TenderKind.ROUNDING] == ROUNDING
        assert set(ACCOUNTS.tender) == set(TenderKind) - {TenderKind.ROUNDING}

    def test_a_configured_tender_map_keeps_the_defaults_of_the_kinds_it_leaves_out(self) -> None:
        accounts = PostingAccounts.model_validate({"tender": {"voucher": "1190"}})

        assert accounts.tender[TenderKind.VOUCHER] == "1190"
        assert accounts.tender[TenderKind.CASH] == CASH

    def test_tax_codes_map_to_their_own_tax_accounts(self) -> None:
        tx = build(
            item(1, "10.00"), currency="USD", taxes=(tax("TX", "0.0825", "10.00", "0.83", inclusive=False),)
        )

        assert entries(posted(tx, PostingAccounts(tax_payable={"TX": "2210"})))[1] == (
            "2210",
            "credit",
            D("0.83"),
        )

    @pytest.mark.parametrize(
        "config", [{"revenu": {}}, {"tender": {"cheque": "1000"}}, {"rounding": "69 00"}], ids=str
    )
    def test_a_bad_account_map_is_refused(self, config: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            PostingAccounts.model_validate(config)


# --- properties -------------------------------------------------------------------------------------

unit_costs = st.integers(0, 10**6).map(lambda n: Decimal(n).scaleb(-4))  # 0 to 100, to 4 decimals
loyalty_settings = st.none() | st.builds(
    LoyaltyAccounting,
    point_value=st.integers(1, 10**4).map(lambda n: Decimal(n).scaleb(-4)),
    breakage=st.integers(0, 99).map(lambda n: Decimal(n).scaleb(-2)),
)


def costs_for(skus: list[str]) -> st.SearchStrategy[dict[str, Decimal]]:
    """Unit costs of some of `skus` (the others have none)."""
    return st.dictionaries(st.sampled_from(skus), unit_costs) if skus else st.just({})


def paid_with_points(tx: Transaction) -> Transaction:
    """`tx` with its gift card tenders paid in loyalty points instead."""
    tenders = tuple(
        t.model_copy(update={"kind": TenderKind.LOYALTY_POINTS}) if t.kind is TenderKind.GIFT_CARD else t
        for t in tx.tenders
    )
    return tx.model_copy(update={"tenders": tenders})


def cost_of(tx: Transaction, costs: dict[str, Decimal]) -> Decimal:
    """The cost of goods sold of `tx`, worked out line by line here."""
    total = ZERO
    for line in tx.lines:
        if line.item_type is ItemType.STOCK and line.sku in costs:
            cost = round_to_minor(line.quantity * costs[line.sku], tx.currency)
            if line.action is LineAction.SALE:
                total += cost
            elif line.restock:
                total -= cost
    return total


def net(journal: Journal, *accounts: str) -> Decimal:
    return sum((line.debit - line.credit for line in journal.lines if line.account in accounts), ZERO)


class TestProperties:
    @settings(max_examples=20, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), stores=st.integers(1, 10))
    def test_every_journal_of_the_demo_traffic_balances_and_its_tenders_make_the_grand_total(
        self, seed: int, stores: int
    ) -> None:
        traffic = PosTrafficGenerator(demo_stores(stores), business_day=DAY, seed=seed).transactions(150)
        journals: dict[str, Journal] = {}
        for tx in traffic:
            journal = journal_for(tx, ACCOUNTS)
            if tx.kind is TransactionKind.VOID:
                assert journal is None and tx.voided is not None
                original = journals.get(tx.voided.transaction_id)
                journal = None if original is None else void_journal(tx, original, ACCOUNTS)
            if journal is None:  # the return of a line given away, say (or its void): no money moves
                assert not tx.totals.grand_total and not tx.totals.tax and not any(line_revenues(tx))
                continue
            journals[tx.transaction_id] = journal

            assert balance(journal) == {tx.currency: 0}
            assert tender_side(journal) == tx.totals.grand_total
            assert all(line.account != ROUNDING for line in journal.lines), "exact: nothing to round"
            assert {line.account for line in journal.lines} <= set(DEFAULT_ACCOUNTS)

    @settings(max_examples=200, deadline=None)
    @given(tx=transactions())
    def test_any_consistent_transaction_posts_exactly(self, tx: Transaction) -> None:
        journal = journal_for(tx, ACCOUNTS)
        if journal is None:
            assert not tx.totals.grand_total and not tx.totals.tax
            assert not any(line_revenues(tx))
            return

        assert balance(journal) == {tx.currency: 0}
        assert tender_side(journal) == tx.totals.grand_total
        assert all(line.description != "rounding" for line in journal.lines)
        inclusive = sum((t.amount for t in tx.taxes if t.inclusive), ZERO)
        assert sum(line_revenues(tx), ZERO) == tx.totals.subtotal - inclusive

    @settings(max_examples=200, deadline=None)
    @given(data=st.data(), tx=transactions(), loyalty=loyalty_settings, points=st.booleans())
    def test_any_consistent_transaction_balances_with_costs_and_loyalty_points(
        self, data: st.DataObject, tx: Transaction, loyalty: LoyaltyAccounting | None, points: bool
    ) -> None:
        tx = paid_with_points(tx) if points else tx
        costs = data.draw(costs_for([line.sku for line in tx.lines]))
        accounts = PostingAccounts(loyalty=loyalty)

        journal = journal_for(tx, accounts, costs=costs)
        plain = journal_for(tx, ACCOUNTS)

        if journal is None:
            assert plain is None and not cost_of(tx, costs)
            return
        assert balance(journal) == {tx.currency: 0}
        assert tender_side(journal) == tx.totals.grand_total
        assert all(line.description != "rounding" for line in journal.lines)
        assert net(journal, COGS) == cost_of(tx, costs) == -net(journal, INVENTORY)
        # each points tender split between the liability and the deferral, to the minor unit
        tendered = [t.amount - t.change for t in tx.tenders if t.kind is TenderKind.LOYALTY_POINTS]
        released = net(journal, LOYALTY)  # the liability's lines are the points tenders'
        if loyalty is not None:
            carried = 1 - loyalty.breakage
            assert released == sum((round_to_minor(a * carried, tx.currency) for a in tendered), ZERO)
            assert net(journal, DEFERRED) == sum(tendered, ZERO) - released
        else:
            assert released == sum(tendered, ZERO) and net(journal, DEFERRED) == 0
        # every other account as in the journal without costs and points treatment (none for
        # goods given away: their cost alone posts)
        without = [plain] if plain is not None else []
        treated = {COGS, INVENTORY, DEFERRED, LOYALTY}
        others = {line.account for j in (journal, *without) for line in j.lines} - treated
        assert {a: net(journal, a) for a in others} == {
            a: sum((net(j, a) for j in without), ZERO) for a in others
        }

    @settings(max_examples=15, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), stores=st.integers(1, 5), data=st.data())
    def test_every_journal_of_the_demo_traffic_balances_with_costs_and_loyalty_points(
        self, seed: int, stores: int, data: st.DataObject
    ) -> None:
        costs = data.draw(costs_for([product.sku for product in CATALOG]))
        accounts = PostingAccounts(loyalty=data.draw(loyalty_settings))
        traffic = PosTrafficGenerator(demo_stores(stores), business_day=DAY, seed=seed).transactions(150)
        journals: dict[str, Journal] = {}
        for tx in traffic:
            if tx.voided is not None:
                original = journals.get(tx.voided.transaction_id)
                found = None if original is None else void_journal(tx, original, accounts)
                assert found is None or net(found, COGS) == -net(journals[tx.voided.transaction_id], COGS)
            else:
                found = journal_for(tx, accounts, costs=costs)
                assert (net(found, COGS) if found else ZERO) == cost_of(tx, costs)
            if found is None:  # no money moves, no goods with a cost
                assert not tx.totals.grand_total and not tx.totals.tax and not any(line_revenues(tx))
                continue
            journal = found
            journals[tx.transaction_id] = journal

            assert balance(journal) == {tx.currency: 0}
            assert tender_side(journal) == tx.totals.grand_total
            assert all(line.account != ROUNDING for line in journal.lines), "exact: nothing to round"
            assert {line.account for line in journal.lines} <= set(DEFAULT_ACCOUNTS)
