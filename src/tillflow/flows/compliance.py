"""Promotion compliance: did the till discount what the promotion calendar allowed, no more, no less?

A completed transaction's price modifiers are compared with the promotions running at its store
at the moment it ended (`ended_at`, judged in the store's wall-clock time as in
`tillflow.flows.masterdata`). Pure: the caller passes the store, the promotions (one record per
`promotion_id`: the current version; a later duplicate replaces an earlier one) and the product
master.

**What a promotion gives on a sold line** (amounts in the transaction's currency):

- ``percent_off``: the line's extended amount × percent / 100, rounded half up to the minor unit;
- ``amount_off``: amount × quantity, rounded to the minor unit, at most the extended amount; a
  promotion whose amount is in another currency than the transaction's gives nothing there;
- ``multi_buy``: floor(quantity / buy) × (buy − pay) × unit price, at most the extended amount.

A line *qualifies* for a promotion running at the store when the promotion names its SKU or its
department (the product master's department; the line's own when the SKU is not in the master),
and, for a member-only promotion, the transaction has a customer. Promotions stack: the model
has no exclusivity, so each qualifying promotion is expected on its own, computed on the
extended amount. Rounding tolerance: one minor unit per line.

**Deviations** (`DeviationKind`):

- ``unauthorised_discount``: a line modifier that no promotion allows, grouped per line and
  `promotion_id`: none named, an unknown promotion, one not for this store or not running at that
  moment, one that does not target the line, a member-only one without a member, or more than the
  promotion gives on that line (expected = what it gives, actual = what the till took).
  A basket-level modifier is judged the same way against the whole transaction: it must name a
  promotion running at the store that targets at least one sold line, and may give at most what
  that promotion gives on the sold lines beyond what their own modifiers already took.
- ``promotion_not_applied``: a line qualified for a promotion that gives it something, and the
  modifiers naming that promotion took less than that (expected = what it gives, actual = what
  was taken). When the till put the promotion at basket level, this is judged for the whole
  transaction instead (line_no None).

- ``wrong_price``: a sold line whose unit price is not the one the price lists give that SKU at
  the store at that moment (`tillflow.flows.masterdata.price_at`: the narrowest scope wins), such
  as a till still running yesterday's price (expected = the list's price, actual = the till's).
  A SKU without a price effective there and then, or whose price is in another currency than the
  transaction's, is not judged.

Not checked: returns and post-voids (they reverse what a sale did), the returned lines of an
exchange.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Final, NamedTuple

from tillflow.flows.masterdata import applies_to, is_active, local_time, price_at
from tillflow.model import (
    LineAction,
    LoggedEvent,
    Product,
    Store,
    Transaction,
    TransactionKind,
    minor_unit,
    round_to_minor,
)
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.model.masterdata import Price, Promotion, PromotionKind
from tillflow.model.transaction import TRUSTED_CONTEXT, LineItem, PriceModifier
from tillflow.ports import ComplianceLog, Deviation, DeviationKind, ProductCatalog, PromotionCalendar

__all__ = [
    "FLOW",
    "Deviation",
    "DeviationKind",
    "StoreDay",
    "alerting",
    "check_compliance",
    "check_transactions",
    "discount",
    "promotion_gives",
    "summarise",
]

ZERO = Decimal(0)


class StoreDay(NamedTuple):
    store_id: str
    business_day: date


def promotion_gives(promotion: Promotion, line: LineItem, currency: str) -> Decimal:
    """What `promotion` takes off `line` by its own rule (whether it targets the line aside)."""
    return discount(promotion, line.extended_amount, line.quantity, line.unit_price, currency)


def discount(
    promotion: Promotion, extended: Decimal, quantity: Decimal, unit_price: Decimal, currency: str
) -> Decimal:
    """What `promotion` takes off a line of `quantity` at `unit_price`, `extended` in all (the
    rules of the module docstring): what a till applying the calendar takes off."""
    if promotion.kind is PromotionKind.PERCENT_OFF:
        assert promotion.percent is not None  # the model requires it
        return round_to_minor(extended * promotion.percent / 100, currency)
    if promotion.kind is PromotionKind.AMOUNT_OFF:
        assert promotion.amount is not None
        if promotion.currency != currency:
            return ZERO
        return min(round_to_minor(promotion.amount * quantity, currency), extended)
    assert promotion.buy is not None and promotion.pay is not None
    bundles = int(quantity // promotion.buy)
    return min(round_to_minor(bundles * (promotion.buy - promotion.pay) * unit_price, currency), extended)


def _department(line: LineItem, products: Mapping[str, Product]) -> str | None:
    product = products.get(line.sku)
    if product is not None and product.department is not None:
        return product.department
    return line.department


class _Judge:
    """The promotions of one transaction at its store and moment, and why a modifier is refused."""

    def __init__(self, tx: Transaction, store: Store, promotions: Sequence[Promotion]) -> None:
        self.tx = tx
        self.store = store
        self.local: datetime = local_time(store, tx.ended_at)
        self.by_id = {p.promotion_id: p for p in promotions}
        self.member = tx.customer is not None

    def refusal(self, promotion_id: str | None) -> str | None:
        """Why a modifier naming `promotion_id` is refused on any line, or None."""
        if promotion_id is None:
            return "no promotion named"
        promotion = self.by_id.get(promotion_id)
        if promotion is None:
            return f"unknown promotion {promotion_id}"
        if not applies_to(promotion, self.store):
            return f"promotion {promotion_id} does not run at store {self.store.store_id}"
        if not is_active(promotion, self.local):
            window = f"{promotion.starts:%Y-%m-%d %H:%M}–{promotion.ends:%Y-%m-%d %H:%M}"
            return f"promotion {promotion_id} runs {window}, not at {self.local:%Y-%m-%d %H:%M} local time"
        if promotion.member_only and not self.member:
            return f"promotion {promotion_id} is for members, the transaction has no customer"
        if promotion.kind is PromotionKind.AMOUNT_OFF and promotion.currency != self.tx.currency:
            return (
                f"promotion {promotion_id} is in {promotion.currency}, the transaction in {self.tx.currency}"
            )
        return None

    def running(self) -> list[Promotion]:
        """The promotions a modifier may name: none of them is refused."""
        return [p for p in self.by_id.values() if self.refusal(p.promotion_id) is None]


def _sums(modifiers: Iterable[PriceModifier]) -> dict[str | None, Decimal]:
    sums: dict[str | None, Decimal] = defaultdict(lambda: ZERO)
    for modifier in modifiers:
        sums[modifier.promotion_id] += modifier.amount
    return sums


def check_compliance(
    tx: Transaction,
    store: Store,
    promotions: Sequence[Promotion],
    products: Mapping[str, Product],
    prices: Mapping[str, Sequence[Price]] | None = None,
) -> list[Deviation]:
    """The deviations of `tx` from the promotions running at `store` when it ended and, with
    `prices` (each SKU's prices, in version order), from its price lists (module docstring)."""
    if tx.kind in (TransactionKind.RETURN, TransactionKind.VOID):
        return []
    currency = tx.currency
    quantum = minor_unit(currency)
    judge = _Judge(tx, store, promotions)
    running = judge.running()
    found: list[Deviation] = []

    def deviation(
        kind: DeviationKind, line_no: int | None, pid: str | None, exp: Decimal, act: Decimal, why: str
    ) -> None:
        found.append(
            Deviation(
                tx.transaction_id, line_no, kind, pid, exp, act, why, tx.store_id, tx.business_day, currency
            )
        )

    # expected[pid][line_no]: what each running promotion gives on each sold line it targets
    expected: dict[str, dict[int, Decimal]] = defaultdict(dict)
    taken: dict[str, dict[int, Decimal]] = defaultdict(dict)  # by line modifiers, capped at expected
    sold = [line for line in tx.lines if line.action is LineAction.SALE]
    for line in sold:
        listed = price_at(prices.get(line.sku, ()), store, tx.ended_at) if prices else None
        if listed is not None and listed.currency == currency and listed.price != line.unit_price:
            why = (
                f"{line.sku} is {listed.price} {currency} from {listed.effective_from:%Y-%m-%d %H:%M}"
                f" local time, the till charged {line.unit_price}"
            )
            deviation(DeviationKind.WRONG_PRICE, line.line_no, None, listed.price, line.unit_price, why)
        department = _department(line, products)
        targeting = {
            p.promotion_id: p
            for p in running
            if line.sku in p.skus or (department is not None and department in p.departments)
        }
        for promotion in targeting.values():
            expected[promotion.promotion_id][line.line_no] = promotion_gives(promotion, line, currency)
        for pid, amount in _sums(line.modifiers).items():
            if amount == ZERO:
                continue
            refused = judge.refusal(pid)
            if refused is None and pid not in targeting:
                refused = f"promotion {pid} targets neither SKU {line.sku} nor department {department}"
            if refused is not None:
                deviation(DeviationKind.UNAUTHORISED_DISCOUNT, line.line_no, pid, ZERO, amount, refused)
                continue
            assert pid is not None  # a modifier naming no promotion is refused above
            gives = expected[pid][line.line_no]
            taken[pid][line.line_no] = min(amount, gives)
            if amount > gives + quantum:
                why = f"promotion {pid} gives {gives} on line {line.line_no}, the till took {amount}"
                deviation(DeviationKind.UNAUTHORISED_DISCOUNT, line.line_no, pid, gives, amount, why)

    at_basket = _sums(tx.modifiers)
    for pid, amount in at_basket.items():
        if amount == ZERO:
            continue
        refused = judge.refusal(pid)
        if refused is None and pid not in expected:
            refused = f"promotion {pid} targets no sold line of the transaction"
        if refused is not None:
            deviation(DeviationKind.UNAUTHORISED_DISCOUNT, None, pid, ZERO, amount, refused)
            continue
        assert pid is not None
        remaining = sum((gives - taken[pid].get(n, ZERO) for n, gives in expected[pid].items()), ZERO)
        if amount > remaining + quantum * len(expected[pid]):
            why = f"promotion {pid} has {remaining} left to give on the basket, the till took {amount}"
            deviation(DeviationKind.UNAUTHORISED_DISCOUNT, None, pid, remaining, amount, why)

    for owed_id, lines in expected.items():
        if owed_id in at_basket:
            owed = sum(lines.values(), ZERO)
            got = sum(taken[owed_id].values(), ZERO) + at_basket[owed_id]
            if owed > ZERO and got < owed - quantum * len(lines):
                why = f"promotion {owed_id} gives {owed} on the transaction, the till took {got}"
                deviation(DeviationKind.PROMOTION_NOT_APPLIED, None, owed_id, owed, got, why)
            continue
        for line_no, gives in lines.items():
            got = taken[owed_id].get(line_no, ZERO)
            if gives > ZERO and got < gives - quantum:
                why = f"promotion {owed_id} gives {gives} on line {line_no}, the till took {got}"
                deviation(DeviationKind.PROMOTION_NOT_APPLIED, line_no, owed_id, gives, got, why)
    return found


def summarise(deviations: Iterable[Deviation]) -> dict[StoreDay, dict[str, int]]:
    """Per store and business day, how many deviations of each kind (every kind, zero too)."""
    counts: dict[StoreDay, dict[str, int]] = {}
    for found in deviations:
        day = StoreDay(found.store_id, found.business_day)
        if day not in counts:
            counts[day] = {kind.value: 0 for kind in DeviationKind}
        counts[day][found.kind.value] += 1
    return dict(sorted(counts.items()))


def alerting(counts: Mapping[StoreDay, Mapping[str, int]], threshold: int) -> list[StoreDay]:
    """The store-days whose deviations (of every kind together) reach `threshold`: each one
    raises an alert."""
    return [day for day, by_kind in counts.items() if sum(by_kind.values()) >= threshold]


FLOW: Final = "compliance"
JUDGED_KINDS = frozenset({TransactionKind.SALE, TransactionKind.EXCHANGE})


def check_transactions(
    events: Sequence[LoggedEvent],
    *,
    stores: Mapping[str, Store],
    calendar: PromotionCalendar,
    catalog: ProductCatalog,
    log: ComplianceLog,
    clock: Callable[[], datetime],
) -> int:
    """Handler of the compliance consumer group: judge the batch's sales and exchanges against
    the promotion calendar and the price lists, and record what departs from them (replacing
    what an earlier delivery recorded for the same transactions). A retailer that has loaded no
    promotion calendar is not judged: without one, every discount would look unauthorised.
    Returns how many deviations were found."""
    promotions = calendar.list_promotions()
    if not promotions:  # asked first: then the batch is not even decoded
        return 0
    txs = [
        Transaction.model_validate_json(e.event.data, context=TRUSTED_CONTEXT)
        for e in events
        if e.event.type == TRANSACTION_COMPLETED
    ]
    judged = [tx for tx in txs if tx.kind in JUDGED_KINDS and tx.store_id in stores]
    if not judged:
        return 0
    skus = sorted({line.sku for tx in judged for line in tx.lines})
    products, prices = catalog.find_products(skus), calendar.find_price_lists(skus)
    found = [
        d for tx in judged for d in check_compliance(tx, stores[tx.store_id], promotions, products, prices)
    ]
    log.record_deviations([tx.transaction_id for tx in judged], found, at=clock())
    return len(found)
