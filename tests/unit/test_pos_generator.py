"""The POS traffic generator: a seeded stream of valid, realistic canonical transactions.

Most stories read one stream of 5,000 transactions over the five demo stores (one per region);
the mix is random, so proportions are checked with tolerances of about three standard deviations.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from tillflow.model import (
    ItemType,
    LineAction,
    LineItem,
    Store,
    TenderKind,
    Transaction,
    TransactionKind,
    UnitOfMeasure,
    minor_unit,
    round_to_minor,
)
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

DAY = date(2026, 11, 29)
N = 5_000
REGIONS = {
    "eu": ("EUR", "Europe/Paris"),
    "uk": ("GBP", "Europe/London"),
    "us": ("USD", "America/Chicago"),
    "jp": ("JPY", "Asia/Tokyo"),
    "se": ("SEK", "Europe/Stockholm"),
}


@pytest.fixture(scope="module")
def stores() -> list[Store]:
    return demo_stores(5)


@pytest.fixture(scope="module")
def traffic(stores: list[Store]) -> list[Transaction]:
    return PosTrafficGenerator(stores, business_day=DAY, seed=7).transactions(N)


@pytest.fixture(scope="module")
def by_id(traffic: list[Transaction]) -> dict[str, tuple[int, Transaction]]:
    """Every transaction by id, with its position in the stream."""
    return {tx.transaction_id: (i, tx) for i, tx in enumerate(traffic)}


def of_kind(traffic: list[Transaction], kind: TransactionKind) -> list[Transaction]:
    return [tx for tx in traffic if tx.kind is kind]


def share(items: list[Transaction] | list[LineItem], test: Callable[..., bool]) -> float:
    return sum(1 for item in items if test(item)) / len(items)


def lines_of(txs: list[Transaction]) -> list[LineItem]:
    return [line for tx in txs for line in tx.lines]


def sold_line(by_id: dict[str, tuple[int, Transaction]], line: LineItem) -> tuple[int, Transaction, LineItem]:
    """Where a returned line was sold: position in the stream, transaction and line."""
    assert line.original is not None
    position, sale = by_id[line.original.transaction.transaction_id]
    return position, sale, next(sold for sold in sale.lines if sold.line_no == line.original.line_no)


class TestDemoStores:
    def test_ids_run_from_s001_and_regions_go_round_robin(self) -> None:
        stores = demo_stores(12)
        assert [s.store_id for s in stores] == [f"S{i:03d}" for i in range(1, 13)]
        assert [s.region for s in stores] == ["eu", "uk", "us", "jp", "se"] * 2 + ["eu", "uk"]

    def test_each_region_has_its_currency_and_timezone(self, stores: list[Store]) -> None:
        for store in stores:
            assert (store.currency, store.timezone) == REGIONS[store.region]
            ZoneInfo(store.timezone)

    def test_every_store_is_a_demo_store_with_two_registers(self, stores: list[Store]) -> None:
        assert {(s.brand, s.registers) for s in stores} == {("demo", ("R01", "R02"))}


class TestValidity:
    def test_every_transaction_constructs_so_keeps_the_model_invariants(
        self, traffic: list[Transaction]
    ) -> None:
        assert len(traffic) == N
        assert all(isinstance(tx, Transaction) for tx in traffic)

    def test_json_round_trip_is_lossless(self, traffic: list[Transaction]) -> None:
        for tx in traffic:
            assert Transaction.model_validate_json(tx.model_dump_json()) == tx

    def test_yen_amounts_are_whole(self, traffic: list[Transaction]) -> None:
        yen = [tx for tx in traffic if tx.currency == "JPY"]
        assert yen
        for tx in yen:
            amounts = [tx.totals.grand_total, tx.totals.tax, *(t.amount for t in tx.tenders)]
            amounts += [a for line in tx.lines for a in (line.unit_price, line.extended_amount)]
            assert all(a == a.to_integral_value() for a in amounts)

    def test_ended_at_is_on_the_business_day_in_the_store_timezone(
        self, traffic: list[Transaction], stores: list[Store]
    ) -> None:
        zones = {s.store_id: ZoneInfo(s.timezone) for s in stores}
        for tx in traffic:
            assert tx.ended_at.tzinfo is not None
            assert tx.ended_at.astimezone(zones[tx.store_id]).date() == DAY
            assert tx.started_at is not None and tx.started_at < tx.ended_at

    def test_ended_at_increases_per_register(self, traffic: list[Transaction]) -> None:
        last: dict[tuple[str, str], datetime] = {}
        for tx in traffic:
            key = (tx.store_id, tx.register_id)
            if key in last:
                assert tx.ended_at > last[key]
            last[key] = tx.ended_at

    def test_returns_and_voids_come_after_what_they_refer_to(
        self, traffic: list[Transaction], by_id: dict[str, tuple[int, Transaction]]
    ) -> None:
        for tx in traffic:
            refs = [line.original.transaction for line in tx.lines if line.original is not None]
            refs += [tx.voided] if tx.voided is not None else []
            assert all(by_id[ref.transaction_id][1].ended_at < tx.ended_at for ref in refs)


class TestSequences:
    def test_each_register_counts_1_2_3_without_gaps(self, traffic: list[Transaction]) -> None:
        sequences: dict[tuple[str, str], list[int]] = defaultdict(list)
        for tx in traffic:
            sequences[(tx.store_id, tx.register_id)].append(tx.sequence)
        assert len(sequences) == 10
        for seen in sequences.values():
            assert seen == list(range(1, len(seen) + 1))

    def test_round_robin_over_stores_then_their_registers(self, traffic: list[Transaction]) -> None:
        tills = [(tx.store_id, tx.register_id) for tx in traffic[:10]]
        assert tills == [(f"S00{i}", r) for r in ("R01", "R02") for i in range(1, 6)]

    def test_transaction_ids_are_unique(self, traffic: list[Transaction]) -> None:
        assert len({tx.transaction_id for tx in traffic}) == N


class TestTrafficMix:
    def test_about_five_percent_are_returns(self, traffic: list[Transaction]) -> None:
        assert 0.035 <= share(traffic, lambda tx: tx.kind is TransactionKind.RETURN) <= 0.065

    def test_about_one_percent_are_post_voids(self, traffic: list[Transaction]) -> None:
        assert 0.004 <= share(traffic, lambda tx: tx.kind is TransactionKind.VOID) <= 0.018

    def test_about_one_percent_are_exchanges(self, traffic: list[Transaction]) -> None:
        assert 0.004 <= share(traffic, lambda tx: tx.kind is TransactionKind.EXCHANGE) <= 0.018

    def test_the_rest_are_sales(self, traffic: list[Transaction]) -> None:
        assert 0.90 <= share(traffic, lambda tx: tx.kind is TransactionKind.SALE) <= 0.95

    def test_baskets_hold_one_to_eight_lines_about_four_on_average(self, traffic: list[Transaction]) -> None:
        sizes = [len(tx.lines) for tx in of_kind(traffic, TransactionKind.SALE)]
        assert min(sizes) == 1 and max(sizes) == 8
        assert 3.5 <= sum(sizes) / len(sizes) <= 5

    def test_about_fifteen_percent_of_lines_are_weighed_to_the_gram(self, traffic: list[Transaction]) -> None:
        lines = lines_of(of_kind(traffic, TransactionKind.SALE))
        assert 0.12 <= share(lines, lambda line: line.uom is UnitOfMeasure.KILOGRAM) <= 0.18
        for tx in traffic:
            for line in tx.lines:
                if line.uom is UnitOfMeasure.KILOGRAM:
                    assert line.quantity.as_tuple().exponent == -3
                    assert line.extended_amount == round_to_minor(
                        line.quantity * line.unit_price, tx.currency
                    )

    def test_about_a_fifth_of_lines_carry_a_promotion_no_bigger_than_the_line(
        self, traffic: list[Transaction]
    ) -> None:
        lines = lines_of(of_kind(traffic, TransactionKind.SALE))
        assert 0.16 <= share(lines, lambda line: bool(line.modifiers)) <= 0.24
        for line in lines:
            for modifier in line.modifiers:
                assert modifier.promotion_id is not None and modifier.promotion_id.startswith("PROMO-")
                assert 0 < modifier.amount <= line.extended_amount

    def test_bags_are_non_stock_and_gift_wrap_a_service(self, traffic: list[Transaction]) -> None:
        kinds = Counter(line.item_type for line in lines_of(traffic))
        assert kinds[ItemType.NON_STOCK] > 100 and kinds[ItemType.SERVICE] > 10
        assert kinds[ItemType.STOCK] > 10 * (kinds[ItemType.NON_STOCK] + kinds[ItemType.SERVICE])

    def test_lines_are_spread_over_departments(self, traffic: list[Transaction]) -> None:
        departments = {line.department for line in lines_of(traffic)}
        assert {"GROCERY", "PRODUCE", "BAKERY", "HOUSEHOLD", "APPAREL"} <= departments

    def test_about_forty_percent_of_transactions_have_a_member(self, traffic: list[Transaction]) -> None:
        assert 0.36 <= share(traffic, lambda tx: tx.customer is not None) <= 0.44
        assert all(tx.customer.member_id.startswith("M") for tx in traffic if tx.customer is not None)

    def test_about_fifteen_percent_of_sales_split_the_tender(self, traffic: list[Transaction]) -> None:
        sales = of_kind(traffic, TransactionKind.SALE)
        assert 0.12 <= share(sales, lambda tx: len(tx.tenders) > 1) <= 0.18
        pairs = Counter(tuple(t.kind for t in tx.tenders) for tx in sales if len(tx.tenders) > 1)
        assert pairs[(TenderKind.GIFT_CARD, TenderKind.CARD)] > 0
        assert pairs[(TenderKind.CASH, TenderKind.CARD)] > 0

    def test_cash_is_rounded_up_and_change_given(self, traffic: list[Transaction]) -> None:
        cash = [
            t
            for tx in of_kind(traffic, TransactionKind.SALE)
            for t in tx.tenders
            if t.kind is TenderKind.CASH
        ]
        with_change = [t for t in cash if t.change > 0]
        assert len(with_change) > len(cash) / 2
        assert all(t.change < t.amount and t.amount == t.amount.to_integral_value() for t in with_change)

    def test_card_tenders_carry_last4_and_an_auth_code(self, traffic: list[Transaction]) -> None:
        cards = [t for tx in traffic for t in tx.tenders if t.kind is TenderKind.CARD]
        assert len(cards) > N / 2
        assert all(t.card is not None and len(t.card.last4) == 4 and t.card.auth_code for t in cards)

    def test_without_a_reservation_nobody_pays_with_points(self, traffic: list[Transaction]) -> None:
        assert not [t for tx in traffic for t in tx.tenders if t.kind is TenderKind.LOYALTY_POINTS]

    def test_members_pay_with_the_points_they_held_at_checkout(self, stores: list[Store]) -> None:
        asked: list[tuple[str, str, int]] = []

        def reserve(store_id: str, member_id: str, points: int) -> str | None:
            asked.append((store_id, member_id, points))
            return None if len(asked) % 3 == 0 else f"H-{len(asked)}"  # every third refused

        gen = PosTrafficGenerator(
            stores, business_day=DAY, seed=7, members=["M0001", "M0002"], reserve=reserve
        )
        traffic = gen.transactions(N)

        paid = [(tx, t) for tx in traffic for t in tx.tenders if t.kind is TenderKind.LOYALTY_POINTS]
        assert len(paid) == len(asked) - len(asked) // 3 > 0
        assert {tx.customer.member_id for tx in traffic if tx.customer is not None} == {"M0001", "M0002"}
        for tx, tender in paid:
            assert tx.customer is not None and tender.reference is not None
            n = int(tender.reference.removeprefix("H-"))
            assert asked[n - 1] == (tx.store_id, tx.customer.member_id, tender.points)
            assert tender.points == int(tender.amount / minor_unit(tx.currency)) > 0

    def test_every_currency_of_the_demo_stores_appears(
        self, traffic: list[Transaction], stores: list[Store]
    ) -> None:
        assert (
            {tx.currency for tx in traffic}
            == {s.currency for s in stores}
            == {"EUR", "GBP", "USD", "JPY", "SEK"}
        )


class TestTaxes:
    def test_each_line_tax_code_has_its_tax_line(self, traffic: list[Transaction]) -> None:
        for tx in traffic:
            if tx.kind is not TransactionKind.VOID:
                assert {code for line in tx.lines for code in line.tax_codes} == {t.code for t in tx.taxes}

    def test_inclusive_tax_is_gross_times_rate_over_one_plus_rate(self, traffic: list[Transaction]) -> None:
        taxes = [(tx, t) for tx in traffic if tx.currency != "USD" for t in tx.taxes]
        assert {t.code for _, t in taxes} >= {"V20", "V07", "S20", "Z00", "J10", "M25", "M12"}
        for tx, tax in taxes:
            gross = tax.taxable_amount + tax.amount
            assert tax.inclusive
            assert tax.amount == round_to_minor(gross * tax.rate / (1 + tax.rate), tx.currency)

    def test_us_sales_tax_is_added_on_top(self, traffic: list[Transaction]) -> None:
        us = [tx for tx in traffic if tx.currency == "USD" and tx.kind is not TransactionKind.VOID]
        assert us
        for tx in us:
            for tax in tx.taxes:
                assert not tax.inclusive
                assert tax.amount == round_to_minor(tax.taxable_amount * tax.rate, "USD")
            assert tx.totals.grand_total == tx.totals.subtotal + tx.totals.tax
        assert any(tax.rate == Decimal("0.0825") and tax.amount > 0 for tx in us for tax in tx.taxes)


class TestReturns:
    def test_returned_lines_point_at_an_earlier_sale_of_the_same_store(
        self, traffic: list[Transaction], by_id: dict[str, tuple[int, Transaction]]
    ) -> None:
        for position, tx in enumerate(traffic):
            for line in tx.lines:
                if line.action is LineAction.RETURN:
                    sold_at, sale, sold = sold_line(by_id, line)
                    assert sold_at < position and sale.kind is TransactionKind.SALE
                    assert sale.store_id == tx.store_id and sale.currency == tx.currency
                    assert (line.sku, line.unit_price, line.quantity) == (
                        sold.sku,
                        sold.unit_price,
                        sold.quantity,
                    )
                    assert line.net_amount == -sold.net_amount

    def test_a_sold_line_comes_back_at_most_once(self, traffic: list[Transaction]) -> None:
        refs = [
            (line.original.transaction.transaction_id, line.original.line_no)
            for tx in traffic
            for line in tx.lines
            if line.original is not None
        ]
        assert refs and len(refs) == len(set(refs))

    def test_returns_are_refunded_with_a_negative_tender(self, traffic: list[Transaction]) -> None:
        for tx in of_kind(traffic, TransactionKind.RETURN):
            assert all(line.action is LineAction.RETURN for line in tx.lines)
            assert tx.totals.grand_total < 0
            assert len(tx.tenders) == 1 and tx.tenders[0].amount == tx.totals.grand_total

    def test_about_a_fifth_of_returned_lines_are_damaged(self, traffic: list[Transaction]) -> None:
        returned = [line for line in lines_of(traffic) if line.action is LineAction.RETURN]
        assert 0.12 <= share(returned, lambda line: not line.restock) <= 0.28

    def test_an_exchange_returns_one_line_and_sells_another(self, traffic: list[Transaction]) -> None:
        exchanges = of_kind(traffic, TransactionKind.EXCHANGE)
        assert exchanges
        for tx in exchanges:
            assert [line.action for line in tx.lines] == [LineAction.RETURN, LineAction.SALE]


class TestPostVoids:
    def test_a_void_cancels_an_earlier_sale_of_the_same_register(
        self, traffic: list[Transaction], by_id: dict[str, tuple[int, Transaction]]
    ) -> None:
        for position, tx in enumerate(traffic):
            if tx.kind is TransactionKind.VOID:
                assert tx.voided is not None
                voided_at, voided = by_id[tx.voided.transaction_id]
                assert voided_at < position and voided.kind is TransactionKind.SALE
                assert (voided.store_id, voided.register_id) == (tx.store_id, tx.register_id)

    def test_nothing_is_voided_twice(self, traffic: list[Transaction]) -> None:
        voided = [tx.voided.transaction_id for tx in traffic if tx.voided is not None]
        assert voided and len(voided) == len(set(voided))

    def test_nothing_returned_is_ever_voided(self, traffic: list[Transaction]) -> None:
        voided = {tx.voided.transaction_id for tx in traffic if tx.voided is not None}
        returned = {
            line.original.transaction.transaction_id for tx in traffic for line in tx.lines if line.original
        }
        assert not voided & returned

    def test_a_void_mirrors_the_totals_taxes_and_tender_of_the_sale(
        self, traffic: list[Transaction], by_id: dict[str, tuple[int, Transaction]]
    ) -> None:
        for tx in of_kind(traffic, TransactionKind.VOID):
            assert tx.voided is not None and not tx.lines
            _, sale = by_id[tx.voided.transaction_id]
            assert tx.totals.model_dump() == {k: -v for k, v in sale.totals.model_dump().items()}
            assert [(t.code, -t.amount, -t.taxable_amount) for t in tx.taxes] == [
                (t.code, t.amount, t.taxable_amount) for t in sale.taxes
            ]
            assert [t.amount for t in tx.tenders] == [-sale.totals.grand_total]


class TestDeterminism:
    def test_the_same_seed_gives_the_same_traffic(self, stores: list[Store]) -> None:
        first = PosTrafficGenerator(stores, business_day=DAY, seed=3).transactions(400)
        again = PosTrafficGenerator(stores, business_day=DAY, seed=3)
        assert [again.next_transaction() for _ in range(400)] == first

    def test_another_seed_gives_other_traffic(self, stores: list[Store]) -> None:
        one = PosTrafficGenerator(stores, business_day=DAY, seed=3).transactions(50)
        other = PosTrafficGenerator(stores, business_day=DAY, seed=4).transactions(50)
        assert one != other


class TestCatalog:
    def test_everything_sold_is_in_the_catalog(self, stores: list[Store], traffic: list[Transaction]) -> None:
        catalog = {p.sku: p for p in PosTrafficGenerator(stores, business_day=DAY).catalog()}
        for line in lines_of(traffic):
            product = catalog[line.sku]
            assert (line.department, line.item_type, line.uom) == (
                product.department,
                product.item_type,
                product.uom,
            )

    def test_the_catalog_has_weighed_non_stock_and_service_products(self, stores: list[Store]) -> None:
        catalog = PosTrafficGenerator(stores, business_day=DAY).catalog()
        assert {p.uom for p in catalog} == {UnitOfMeasure.EACH, UnitOfMeasure.KILOGRAM}
        assert {p.item_type for p in catalog} == set(ItemType)


class TestBusyTills:
    def test_a_swamped_register_stays_on_its_business_day(self) -> None:
        store = demo_stores(4)[3]  # Tokyo: the business day is far from UTC's
        traffic = PosTrafficGenerator([store], business_day=DAY, seed=1).transactions(2_000)
        ends = [tx.ended_at for tx in traffic if tx.register_id == "R01"]
        assert all(a < b for a, b in pairwise(ends))
        assert ends[-1].hour >= 21  # past closing time the till keeps going in microseconds
        assert {end.astimezone(ZoneInfo(store.timezone)).date() for end in ends} == {DAY}


class TestBadInput:
    def test_no_stores_is_refused(self) -> None:
        with pytest.raises(ValueError, match="no stores"):
            PosTrafficGenerator([], business_day=DAY)

    def test_a_store_without_registers_is_refused(self) -> None:
        store = demo_stores(1)[0].model_copy(update={"registers": ()})
        with pytest.raises(ValueError, match="no registers"):
            PosTrafficGenerator([store], business_day=DAY)

    def test_a_region_without_a_tax_regime_is_refused(self) -> None:
        with pytest.raises(ValueError, match="no tax regime"):
            PosTrafficGenerator([Store(store_id="X1", region="mars", registers=("R01",))], business_day=DAY)


class TestFixedBaskets:
    def test_a_fixed_basket_size_gives_every_sale_that_many_lines(self) -> None:
        traffic = PosTrafficGenerator(demo_stores(3), business_day=DAY, seed=5, basket_size=4).transactions(
            500
        )
        sales = [tx for tx in traffic if tx.kind.value == "sale"]
        assert len(sales) > 400
        assert {len(tx.lines) for tx in sales} == {4}
