"""Promotion compliance: a till's discounts against the promotions running at its store and moment.

The story's store is in Paris; the builders' transactions end on 2026-11-29 at 10:00 local time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import DAY, STORE, line, post_void, returned
from tillflow.flows.compliance import (
    Deviation,
    DeviationKind,
    StoreDay,
    alerting,
    check_compliance,
    summarise,
)
from tillflow.model import Product, Store, Transaction, TransactionKind, round_to_minor
from tillflow.model.masterdata import Price, Promotion

UNAUTHORISED = DeviationKind.UNAUTHORISED_DISCOUNT
NOT_APPLIED = DeviationKind.PROMOTION_NOT_APPLIED
ZERO = Decimal(0)

PARIS = Store(store_id=STORE, brand="city", region="fr-idf", timezone="Europe/Paris")
PRODUCTS = {
    "MILK": Product(sku="MILK", department="DAIRY"),
    "PASTA": Product(sku="PASTA", department="GROCERY"),
    "WINE": Product(sku="WINE", department="DRINKS"),
    "BREAD": Product(sku="BREAD", department="BAKERY"),
}
THIS_WEEK = {"starts": datetime(2026, 11, 28), "ends": datetime(2026, 12, 1)}


def promo(promotion_id: str, kind: str, **fields: Any) -> Promotion:
    return Promotion.model_validate({"promotion_id": promotion_id, "kind": kind, **THIS_WEEK, **fields})


DAIRY_10 = promo("DAIRY10", "percent_off", percent="10", departments=["DAIRY"])
PASTA_20C = promo("PASTA20C", "amount_off", amount="0.20", currency="EUR", skus=["PASTA"])
WINE_3FOR2 = promo("WINE3FOR2", "multi_buy", buy=3, pay=2, skus=["WINE"])
MEMBERS_5 = promo("MEMBERS5", "percent_off", percent="5", departments=["DRINKS"], member_only=True)
RUNNING = [DAIRY_10, PASTA_20C, WINE_3FOR2, MEMBERS_5]

LAST_MONTH = promo(
    "OLD50",
    "percent_off",
    percent="50",
    skus=["PASTA"],
    starts=datetime(2026, 10, 1),
    ends=datetime(2026, 11, 1),
)
LYON_ONLY = promo("LYON15", "percent_off", percent="15", skus=["BREAD"], stores=["L01"])
ALL_PROMOTIONS = [*RUNNING, LAST_MONTH, LYON_ONLY]


def mod(amount: str, promotion_id: str | None = None) -> dict[str, Any]:
    return {"amount": amount, "promotion_id": promotion_id}


def sold(
    line_no: int, sku: str, quantity: str, unit_price: str, *modifiers: dict[str, Any]
) -> dict[str, Any]:
    return {**line(line_no, sku, quantity=quantity, unit_price=unit_price), "modifiers": list(modifiers)}


def sale(
    *rows: dict[str, Any],
    basket: tuple[dict[str, Any], ...] = (),
    member: str | None = None,
    sequence: int = 60,
    ended_at: datetime | None = None,
) -> Transaction:
    """A consistent EUR sale paid in cash; by default it ends at 10:00 Paris time."""
    total = sum(
        (
            Decimal(r["extended_amount"]) - sum((Decimal(m["amount"]) for m in r["modifiers"]), ZERO)
            for r in rows
        ),
        ZERO,
    ) - sum((Decimal(m["amount"]) for m in basket), ZERO)
    return Transaction.model_validate(
        {
            "store_id": STORE,
            "register_id": "R01",
            "business_day": DAY,
            "sequence": sequence,
            "kind": TransactionKind.SALE,
            "currency": "EUR",
            "ended_at": ended_at or datetime(2026, 11, 29, 9, 0, tzinfo=UTC),
            "customer": {"member_id": member} if member else None,
            "lines": list(rows),
            "modifiers": list(basket),
            "tenders": [{"kind": "cash", "amount": total}],
            "totals": {"subtotal": total, "tax": 0, "grand_total": total},
        }
    )


def check(tx: Transaction, promotions: list[Promotion] | None = None) -> list[Deviation]:
    return check_compliance(tx, PARIS, ALL_PROMOTIONS if promotions is None else promotions, PRODUCTS)


def brief(found: list[Deviation]) -> list[tuple[DeviationKind, int | None, str | None, str, str]]:
    return [(d.kind, d.line_no, d.promotion_id, str(d.expected), str(d.actual)) for d in found]


def clean_basket(**overrides: Any) -> Transaction:
    """A member's basket with every running promotion applied exactly."""
    return sale(
        sold(1, "MILK", "2", "1.25", mod("0.25", "DAIRY10")),
        sold(2, "PASTA", "3", "0.99", mod("0.60", "PASTA20C")),
        sold(3, "WINE", "4", "5.00", mod("5.00", "WINE3FOR2"), mod("1.00", "MEMBERS5")),
        sold(4, "BREAD", "1", "2.10"),
        member="M-1",
        **overrides,
    )


class TestACleanTill:
    def test_a_basket_with_every_running_promotion_applied_finds_nothing(self) -> None:
        assert check(clean_basket()) == []

    def test_a_multi_buy_below_its_quantity_is_not_owed(self) -> None:
        assert check(sale(sold(1, "WINE", "2", "5.00"))) == []

    def test_a_promotion_can_be_applied_at_basket_level(self) -> None:
        tx = sale(
            sold(1, "WINE", "3", "5.00"),
            sold(2, "WINE", "6", "4.00"),
            basket=(mod("13.00", "WINE3FOR2"),),  # 5.00 + 2 × 4.00
        )

        assert check(tx) == []

    def test_a_rounding_difference_of_one_cent_is_tolerated(self) -> None:
        high = sale(sold(1, "MILK", "1", "1.25", mod("0.13", "DAIRY10")))  # 10% is 0.125 → 0.13
        low = sale(sold(1, "MILK", "1", "1.25", mod("0.12", "DAIRY10")))

        assert check(high) == [] and check(low) == []

    def test_an_amount_off_never_takes_more_than_the_line(self) -> None:
        tx = sale(sold(1, "PASTA", "2", "0.15", mod("0.30", "PASTA20C")))

        assert check(tx) == []

    def test_returns_and_voids_are_not_checked(self) -> None:
        discounted = sale(sold(1, "BREAD", "1", "2.10", mod("0.50")))
        refund = Transaction.model_validate(
            {
                **discounted.model_dump(exclude={"lines", "tenders", "totals"}),
                "kind": TransactionKind.RETURN,
                "sequence": 61,
                "lines": [{**returned(1, "BREAD", unit_price="2.10"), "modifiers": [mod("0.50")]}],
                "tenders": [{"kind": "cash", "amount": "-1.60"}],
                "totals": {"subtotal": "-1.60", "tax": 0, "grand_total": "-1.60"},
            }
        )

        assert check(discounted) != []
        assert check(refund) == []
        assert check(post_void(62, discounted)) == []


class TestUnauthorisedDiscounts:
    def test_more_than_the_promotion_gives_is_found_with_its_line_and_amounts(self) -> None:
        tx = sale(sold(1, "MILK", "2", "1.25", mod("0.80", "DAIRY10")), sold(2, "BREAD", "1", "2.10"))

        (found,) = check(tx)

        assert (found.kind, found.line_no, found.promotion_id) == (UNAUTHORISED, 1, "DAIRY10")
        assert (found.expected, found.actual) == (Decimal("0.25"), Decimal("0.80"))
        assert found.transaction_id == tx.transaction_id and found.store_id == STORE
        assert "gives 0.25" in found.detail

    def test_a_discount_naming_no_promotion_is_found(self) -> None:
        tx = sale(sold(1, "BREAD", "1", "2.10", mod("0.50")))

        assert brief(check(tx)) == [(UNAUTHORISED, 1, None, "0", "0.50")]

    def test_an_unknown_a_finished_and_another_stores_promotion_are_found(self) -> None:
        tx = sale(
            sold(1, "PASTA", "1", "0.99", mod("0.40", "OLD50")),
            sold(2, "BREAD", "1", "2.10", mod("0.31", "LYON15")),
            sold(3, "BREAD", "1", "2.10", mod("0.10", "NOSUCH")),
        )

        found = check(tx)

        assert brief(found) == [
            (UNAUTHORISED, 1, "OLD50", "0", "0.40"),
            (UNAUTHORISED, 2, "LYON15", "0", "0.31"),
            (UNAUTHORISED, 3, "NOSUCH", "0", "0.10"),
            (NOT_APPLIED, 1, "PASTA20C", "0.20", "0"),  # the finished promotion took the place of this one
        ]
        assert "2026-11-29 10:00 local time" in found[0].detail
        assert "does not run at store S001" in found[1].detail
        assert "unknown promotion" in found[2].detail

    def test_a_promotion_on_a_line_it_does_not_target_is_found(self) -> None:
        tx = sale(sold(1, "BREAD", "1", "2.10", mod("0.21", "DAIRY10")))

        (found,) = check(tx)

        assert (found.kind, found.line_no, found.promotion_id) == (UNAUTHORISED, 1, "DAIRY10")
        assert "department BAKERY" in found.detail

    def test_a_member_only_promotion_without_a_member_is_found_and_not_owed(self) -> None:
        tx = sale(sold(1, "WINE", "1", "5.00", mod("0.25", "MEMBERS5")))

        assert brief(check(tx)) == [(UNAUTHORISED, 1, "MEMBERS5", "0", "0.25")]
        assert check(sale(sold(1, "WINE", "1", "5.00"))) == []

    def test_two_cents_too_much_is_beyond_the_tolerance(self) -> None:
        tx = sale(sold(1, "MILK", "1", "1.25", mod("0.15", "DAIRY10")))

        assert brief(check(tx)) == [(UNAUTHORISED, 1, "DAIRY10", "0.13", "0.15")]

    def test_a_basket_discount_beyond_the_promotion_or_naming_none_is_found(self) -> None:
        too_much = sale(sold(1, "WINE", "3", "5.00"), basket=(mod("7.00", "WINE3FOR2"),))
        anonymous = sale(sold(1, "BREAD", "1", "2.10"), basket=(mod("1.00"),))
        no_target = sale(sold(1, "BREAD", "1", "2.10"), basket=(mod("0.20", "PASTA20C"),))

        assert brief(check(too_much)) == [(UNAUTHORISED, None, "WINE3FOR2", "5.00", "7.00")]
        assert brief(check(anonymous)) == [(UNAUTHORISED, None, None, "0", "1.00")]
        assert brief(check(no_target)) == [(UNAUTHORISED, None, "PASTA20C", "0", "0.20")]

    def test_the_moment_is_the_stores_local_time(self) -> None:
        # 2026-11-30 23:30 UTC is 2026-12-01 00:30 in Paris: the week's promotions have ended
        late = sale(
            sold(1, "MILK", "1", "2.00", mod("0.20", "DAIRY10")),
            ended_at=datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
        )
        just_in_time = sale(
            sold(1, "MILK", "1", "2.00", mod("0.20", "DAIRY10")),
            ended_at=datetime(2026, 11, 30, 22, 59, tzinfo=UTC),
        )

        assert brief(check(late)) == [(UNAUTHORISED, 1, "DAIRY10", "0", "0.20")]
        assert check(just_in_time) == []


class TestPromotionsNotApplied:
    def test_a_skipped_multi_buy_is_found(self) -> None:
        tx = sale(sold(1, "WINE", "7", "5.00"), sold(2, "BREAD", "1", "2.10"))

        (found,) = check(tx)

        assert (found.kind, found.line_no, found.promotion_id) == (NOT_APPLIED, 1, "WINE3FOR2")
        assert (found.expected, found.actual) == (Decimal("10.00"), ZERO)

    def test_a_promotion_applied_short_is_found(self) -> None:
        tx = sale(sold(1, "WINE", "6", "5.00", mod("5.00", "WINE3FOR2")))

        assert brief(check(tx)) == [(NOT_APPLIED, 1, "WINE3FOR2", "10.00", "5.00")]

    def test_a_members_missing_discount_is_found(self) -> None:
        tx = sale(sold(1, "WINE", "1", "5.00"), member="M-1")

        assert brief(check(tx)) == [(NOT_APPLIED, 1, "MEMBERS5", "0.25", "0")]

    def test_a_department_promotion_is_owed_by_the_product_masters_department(self) -> None:
        tx = sale(sold(1, "MILK", "1", "3.00"))

        assert brief(check(tx)) == [(NOT_APPLIED, 1, "DAIRY10", "0.30", "0")]

    def test_a_basket_level_promotion_short_of_its_lines_is_found_on_the_basket(self) -> None:
        tx = sale(
            sold(1, "WINE", "3", "5.00"), sold(2, "WINE", "3", "4.00"), basket=(mod("5.00", "WINE3FOR2"),)
        )

        assert brief(check(tx)) == [(NOT_APPLIED, None, "WINE3FOR2", "9.00", "5.00")]


def listed(sku: str, price: str, frm: datetime, **scope: Any) -> Price:
    return Price(sku=sku, price=Decimal(price), currency="EUR", effective_from=frm, **scope)


SHELF_PRICES = {
    "MILK": [
        listed("MILK", "1.25", datetime(2026, 11, 1)),
        listed("MILK", "1.35", datetime(2026, 11, 29, 10, 30)),  # a rise later that morning
    ],
    "BREAD": [
        listed("BREAD", "2.30", datetime(2026, 11, 1)),
        listed("BREAD", "2.10", datetime(2026, 11, 1), region="fr-idf"),  # the region's own
    ],
    "WINE": [listed("WINE", "5.00", datetime(2026, 11, 1), store_id="L01")],  # another store's
}


class TestShelfPrices:
    """A line's unit price against the price list at the store and moment (10:00 Paris time)."""

    def judge(self, tx: Transaction) -> list[Deviation]:
        return check_compliance(tx, PARIS, ALL_PROMOTIONS, PRODUCTS, SHELF_PRICES)

    def test_a_till_charging_the_listed_prices_is_clean(self) -> None:
        assert self.judge(clean_basket()) == []

    def test_a_till_running_yesterdays_price_is_found_with_both_prices(self) -> None:
        late = clean_basket(ended_at=datetime(2026, 11, 29, 9, 45, tzinfo=UTC))  # 10:45 in Paris

        [found] = self.judge(late)

        assert brief([found]) == [(DeviationKind.WRONG_PRICE, 1, None, "1.35", "1.25")]
        assert "2026-11-29 10:30" in found.detail

    def test_the_narrowest_scope_wins_and_another_stores_price_is_not_judged(self) -> None:
        tx = sale(sold(1, "BREAD", "1", "2.30"), sold(2, "WINE", "1", "4.00"))

        assert brief(self.judge(tx)) == [(DeviationKind.WRONG_PRICE, 1, None, "2.10", "2.30")]

    def test_a_price_in_another_currency_or_no_price_is_not_judged(self) -> None:
        prices = {
            "MILK": [
                Price(sku="MILK", price=Decimal(200), currency="JPY", effective_from=datetime(2026, 1, 1))
            ]
        }
        tx = sale(
            sold(1, "MILK", "2", "1.25", mod("0.25", "DAIRY10")),
            sold(2, "PASTA", "1", "0.99", mod("0.20", "PASTA20C")),
        )

        assert check_compliance(tx, PARIS, ALL_PROMOTIONS, PRODUCTS, prices) == []


class TestSummary:
    def test_deviations_are_counted_per_store_day_and_kind(self) -> None:
        found = [
            *check(sale(sold(1, "WINE", "3", "5.00"), sequence=1)),
            *check(sale(sold(1, "BREAD", "1", "2.10", mod("0.50")), sequence=2)),
            *check(sale(sold(1, "BREAD", "1", "2.10", mod("0.50")), sequence=3)),
        ]

        assert summarise(found) == {
            StoreDay(STORE, date(2026, 11, 29)): {
                "unauthorised_discount": 2,
                "promotion_not_applied": 1,
                "wrong_price": 0,
            }
        }
        assert summarise([]) == {}

    def test_a_store_day_reaching_the_threshold_raises_an_alert(self) -> None:
        counts = {
            StoreDay("S1", date(2026, 11, 29)): {"unauthorised_discount": 2, "promotion_not_applied": 1},
            StoreDay("S2", date(2026, 11, 29)): {"unauthorised_discount": 0, "promotion_not_applied": 2},
        }

        assert alerting(counts, 3) == [StoreDay("S1", date(2026, 11, 29))]  # every kind counts
        assert alerting(counts, 2) == list(counts)
        assert alerting(counts, 4) == []


# --- property: a till that applies exactly what the running promotions give is always clean ---

BOTH_WAYS = promo("MILK15", "percent_off", percent="15", skus=["MILK"], departments=["DAIRY"])
GENERATED = [*RUNNING, BOTH_WAYS]


def gives(promotion: Promotion, sku: str, quantity: int, unit_price: Decimal, member: bool) -> Decimal:
    """What the brief says a promotion gives, computed here independently of the flow."""
    department = PRODUCTS[sku].department
    if sku not in promotion.skus and department not in promotion.departments:
        return ZERO
    if promotion.member_only and not member:
        return ZERO
    extended = quantity * unit_price
    if promotion.percent is not None:
        return round_to_minor(extended * promotion.percent / 100, "EUR")
    if promotion.amount is not None:
        return min(promotion.amount * quantity, extended)
    assert promotion.buy is not None and promotion.pay is not None
    return (quantity // promotion.buy) * (promotion.buy - promotion.pay) * unit_price


baskets = st.lists(
    st.tuples(
        st.sampled_from(sorted(PRODUCTS)),
        st.integers(1, 7),
        st.integers(100, 999).map(lambda cents: Decimal(cents).scaleb(-2)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(
    baskets,
    st.booleans(),
    st.fixed_dictionaries({p.promotion_id: st.booleans() for p in GENERATED}),
    st.sampled_from(
        [
            datetime(2026, 11, 29, 9, 0, tzinfo=UTC),  # running
            datetime(2026, 11, 27, 22, 59, tzinfo=UTC),  # 23:59 the day before they start
            datetime(2026, 11, 30, 23, 0, tzinfo=UTC),  # 00:00 the day they end
        ]
    ),
)
def test_a_till_applying_exactly_the_running_promotions_is_clean(
    rows: list[tuple[str, int, Decimal]],
    member: bool,
    at_basket: dict[str, bool],
    ended_at: datetime,
) -> None:
    paris = ended_at.astimezone(ZoneInfo("Europe/Paris")).replace(tzinfo=None)
    running = datetime(2026, 11, 28) <= paris < datetime(2026, 12, 1)
    on_lines: list[dict[str, Any]] = []
    basket: dict[str, Decimal] = {}
    for n, (sku, quantity, unit_price) in enumerate(rows, start=1):
        modifiers = []
        for p in GENERATED if running else []:
            amount = gives(p, sku, quantity, unit_price, member)
            if not amount:
                continue
            if at_basket[p.promotion_id]:
                basket[p.promotion_id] = basket.get(p.promotion_id, ZERO) + amount
            else:
                modifiers.append(mod(str(amount), p.promotion_id))
        on_lines.append(sold(n, sku, str(quantity), str(unit_price), *modifiers))
    tx = sale(
        *on_lines,
        basket=tuple(mod(str(amount), pid) for pid, amount in basket.items()),
        member="M-7" if member else None,
        ended_at=ended_at,
    )

    assert check_compliance(tx, PARIS, [*GENERATED, LAST_MONTH, LYON_ONLY], PRODUCTS) == []
