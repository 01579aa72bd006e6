"""POS traffic: a seeded stream of realistic, valid canonical transactions.

Demo stores in five tax regimes (`demo_stores`) ring up about 93% sales, 5% returns of earlier
sales of the store, 1% post-voids of recent sales of the register and 1% exchanges. Every amount
is worked out to the currency's minor unit, and each `Transaction` is validated by the model as
it is built. Everything follows from the seed.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from tillflow.flows.compliance import discount
from tillflow.flows.z_report import z_reports
from tillflow.model import (
    ItemType,
    LineAction,
    LineItem,
    Product,
    Store,
    TenderKind,
    Transaction,
    TransactionKind,
    UnitOfMeasure,
    minor_unit,
    round_to_minor,
)
from tillflow.model.masterdata import Price, Promotion

__all__ = ["CATALOG", "REGIMES", "PosTrafficGenerator", "Regime", "TillMaster", "demo_stores", "z_reports"]

D = Decimal
# holds a member's points at checkout: (store_id, member_id, points) -> the hold id, or None if refused
Reserve = Callable[[str, str, int], str | None]
ZERO, ONE = D(0), D(1)
Row = dict[str, Any]  # a record on its way to pydantic: validated once, as a whole transaction


class TillMaster(Protocol):
    """What a store's tills know of its master data (kept from the hub's deltas): the shelf
    price of a SKU and the promotions running, at an instant."""

    def price(self, sku: str, at: datetime) -> Decimal | None:
        """The SKU's shelf price at `at` in the store's currency, None when the tills have none."""
        ...

    def promotions(self, at: datetime) -> Sequence[Promotion]:
        """The promotions running at the store at `at`."""
        ...


@dataclass(slots=True)
class _Offers:
    """The master data a till rings up one basket with."""

    known: TillMaster
    running: Sequence[Promotion]
    member: bool


class Regime(NamedTuple):
    currency: str
    timezone: str
    city: str
    inclusive: bool  # VAT in the shelf price, or sales tax added at the till (US)
    standard: tuple[str, Decimal]  # tax code and rate of general merchandise
    reduced: tuple[str, Decimal]  # ... and of food
    price_level: Decimal  # shelf prices relative to EUR
    note: Decimal  # the smallest banknote a customer pays cash with


REGIMES: dict[str, Regime] = {
    "eu": Regime("EUR", "Europe/Paris", "Paris", True, ("V20", D("0.20")), ("V07", D("0.07")), ONE, D(5)),
    "uk": Regime("GBP", "Europe/London", "London", True, ("S20", D("0.20")), ("Z00", ZERO), D("0.86"), D(5)),
    "us": Regime(
        "USD", "America/Chicago", "Austin", False, ("TX", D("0.0825")), ("EXEMPT", ZERO), D("1.08"), ONE
    ),
    "jp": Regime("JPY", "Asia/Tokyo", "Tokyo", True, ("J10", D("0.10")), ("J08", D("0.08")), D(160), D(1000)),
    "se": Regime(
        "SEK", "Europe/Stockholm", "Stockholm", True, ("M25", D("0.25")), ("M12", D("0.12")), D("11.5"), D(20)
    ),
}

FOOD = frozenset({"GROCERY", "PRODUCE", "BAKERY", "DELI"})  # the reduced tax class
# sku, description, department, EUR price (per KG when weighed), item type, unit of measure
_S, _N, _V = ItemType.STOCK, ItemType.NON_STOCK, ItemType.SERVICE
_EA, _KG = UnitOfMeasure.EACH, UnitOfMeasure.KILOGRAM
_ITEMS: tuple[tuple[str, str, str, str, ItemType, UnitOfMeasure], ...] = (
    ("GRO-0001", "Pasta 500 g", "GROCERY", "1.29", _S, _EA),
    ("GRO-0002", "Olive oil 750 ml", "GROCERY", "6.99", _S, _EA),
    ("GRO-0003", "Coffee beans 1 kg", "GROCERY", "12.49", _S, _EA),
    ("GRO-0004", "Chopped tomatoes 400 g", "GROCERY", "0.89", _S, _EA),
    ("GRO-0005", "Breakfast cereal", "GROCERY", "3.49", _S, _EA),
    ("GRO-0006", "Orange juice 1 l", "GROCERY", "2.19", _S, _EA),
    ("BAK-0001", "Sourdough loaf", "BAKERY", "3.80", _S, _EA),
    ("BAK-0002", "Croissant", "BAKERY", "1.10", _S, _EA),
    ("BAK-0003", "Baguette", "BAKERY", "1.35", _S, _EA),
    ("HOU-0001", "Dish soap", "HOUSEHOLD", "2.29", _S, _EA),
    ("HOU-0002", "Paper towels 4 pack", "HOUSEHOLD", "4.99", _S, _EA),
    ("HOU-0003", "Laundry detergent", "HOUSEHOLD", "11.99", _S, _EA),
    ("HOU-0004", "LED bulb", "HOUSEHOLD", "5.49", _S, _EA),
    ("APP-0001", "T-shirt", "APPAREL", "12.99", _S, _EA),
    ("APP-0002", "Socks 3 pack", "APPAREL", "8.99", _S, _EA),
    ("APP-0003", "Rain jacket", "APPAREL", "59.90", _S, _EA),
    ("APP-0004", "Jeans", "APPAREL", "39.95", _S, _EA),
    ("PRO-0001", "Bananas", "PRODUCE", "1.99", _S, _KG),
    ("PRO-0002", "Apples", "PRODUCE", "2.79", _S, _KG),
    ("PRO-0003", "Vine tomatoes", "PRODUCE", "3.49", _S, _KG),
    ("PRO-0004", "Potatoes", "PRODUCE", "1.29", _S, _KG),
    ("DEL-0001", "Cheddar", "DELI", "14.90", _S, _KG),
    ("NSM-0001", "Carrier bag", "SUNDRY", "0.20", _N, _EA),
    ("SVC-0001", "Gift wrap", "SERVICES", "2.50", _V, _EA),
)
_EUR_PRICE = {sku: D(price) for sku, _, _, price, _, _ in _ITEMS}
# Product.tax_code holds a tax class here: the code itself differs by regime (V07, Z00, EXEMPT...)
CATALOG: tuple[Product, ...] = tuple(
    Product(
        sku=s,
        description=t,
        department=d,
        item_type=k,
        uom=u,
        tax_code="reduced" if d in FOOD else "standard",
    )
    for s, t, d, _, k, u in _ITEMS
)
_EACH = tuple(p for p in CATALOG if p.item_type is _S and p.uom is _EA)
_WEIGHED = tuple(p for p in CATALOG if p.uom is _KG)
_BAG, _WRAP = CATALOG[-2], CATALOG[-1]
_BY_DEPT = {d: tuple(p for p in _EACH if p.department == d) for d in {p.department or "" for p in _EACH}}

_SIZES = tuple(n for n, w in zip(range(1, 9), (12, 16, 18, 17, 14, 10, 7, 6), strict=True) for _ in range(w))
_QTYS = (ONE,) * 17 + (D(2),) * 2 + (D(3),)
_PROMOS: tuple[tuple[str, Decimal | None], ...] = (
    ("PROMO-10OFF", D("0.10")),
    ("PROMO-20OFF", D("0.20")),
    ("PROMO-25OFF", D("0.25")),
    ("PROMO-SAVE50", None),
)  # None: a fixed reduction, worth EUR 0.50 in the local currency
_SHARES = (D("0.25"), D("0.4"), D("0.5"), D("0.6"), D("0.75"))
_SCHEMES = ("visa", "mastercard", "amex", "maestro")
_NOTES = (ONE, D(2), D(4), D(10))
_POOL, _RECENT = 256, 16  # returnable sales kept per store; voidable sales kept per register


def demo_stores(n: int) -> list[Store]:
    """`n` demo stores, S001 onwards, spread round-robin over the regions eu, uk, us, jp and se."""
    regions = list(REGIMES)
    stores = []
    for i in range(n):
        region = regions[i % len(regions)]
        regime = REGIMES[region]
        stores.append(
            Store(
                store_id=f"S{i + 1:03d}",
                name=f"Demo {regime.city} {i // len(regions) + 1}",
                brand="demo",
                region=region,
                currency=regime.currency,
                timezone=regime.timezone,
                registers=("R01", "R02"),
            )
        )
    return stores


def _local_price(eur: Decimal, regime: Regime) -> Decimal:
    """A shelf price in the regime's currency, ending in 9 like real ones (EUR 1.29, JPY 209)."""
    q = minor_unit(regime.currency)
    step = q * 10
    price = (eur * regime.price_level / step).quantize(ONE, ROUND_HALF_UP) * step
    return price - q if price > step * 10 else max(price, step)


@dataclass(slots=True)
class _Sale:
    tx: Transaction
    open_lines: list[LineItem]  # stock lines not returned yet
    voided: bool = False
    returned: bool = False


@dataclass(slots=True)
class _Till:
    register_id: str
    operator_id: str
    sequence: int = 0
    recent: list[_Sale] = field(default_factory=list)


@dataclass(slots=True)
class _Shop:
    store: Store
    regime: Regime
    prices: dict[str, Decimal]
    codes: dict[str, str]  # sku -> tax code
    rates: dict[str, tuple[Decimal, Decimal]]  # tax code -> rate, 1 + rate
    fixed_off: Decimal
    tills: list[_Till]
    clock: datetime  # one clock per store: a return always comes after its sale
    closing: datetime  # 21:00: an overloaded store trades on, faster and faster, ...
    late: datetime  # 23:59
    last: datetime  # ... but never past the end of its business day
    sales: list[_Sale] = field(default_factory=list)
    ring: int = 0
    turn: int = 0


def _open(store: Store, number: int, day: date) -> _Shop:
    regime = REGIMES.get(store.region)
    if regime is None or regime.currency != store.currency:
        raise ValueError(f"store {store.store_id}: no tax regime for {store.region}/{store.currency}")
    if not store.registers:
        raise ValueError(f"store {store.store_id} has no registers")
    tz = ZoneInfo(store.timezone)
    opening, closing, late = (
        datetime.combine(day, time(h, m), tzinfo=tz) for h, m in ((7, 0), (21, 0), (23, 59))
    )
    return _Shop(
        store,
        regime,
        prices={p.sku: _local_price(_EUR_PRICE[p.sku], regime) for p in CATALOG},
        codes={p.sku: (regime.reduced if p.tax_code == "reduced" else regime.standard)[0] for p in CATALOG},
        rates={code: (rate, 1 + rate) for code, rate in (regime.standard, regime.reduced)},
        fixed_off=_local_price(D("0.50"), regime),
        tills=[_Till(r, f"E{number:03d}{i:02d}") for i, r in enumerate(store.registers, 1)],
        clock=opening,
        closing=closing,
        late=late,
        last=datetime.combine(day, time.max, tzinfo=tz),
    )


class PosTrafficGenerator:
    """Transactions of `stores` on `business_day`, round-robin over stores and their registers."""

    def __init__(
        self,
        stores: Sequence[Store],
        *,
        business_day: date,
        seed: int = 0,
        basket_size: int | None = None,
        members: Sequence[str] = (),
        reserve: Reserve | None = None,
        master: Mapping[str, TillMaster] | None = None,
    ) -> None:
        """`basket_size` fixes the lines of every sale (benchmarks); by default it varies from 1 to 9.
        `members`: the loyalty members who shop (by default M000001..M099999). A member pays part
        of a basket with points only after `reserve(store_id, member_id, points)` held them (the
        hold id, or None when refused: then that part is paid in cash); without `reserve`, never.
        `master`: per store, what its tills know of the master data. They charge its prices (the
        generator's own where it has none) and apply exactly its promotions: each one running on
        every line it targets, a member-only one for members. The tills of other stores take a
        random discount off about a fifth of stock lines, under promotion ids no calendar knows."""
        if basket_size is not None and not 1 <= basket_size <= 9:
            raise ValueError("basket_size is between 1 and 9")
        self._basket_size = basket_size
        if not stores:
            raise ValueError("no stores to generate traffic for")
        self._rng = random.Random(seed)
        self._day = business_day
        self._shops = [_open(store, i, business_day) for i, store in enumerate(stores, 1)]
        self._turn = 0
        self._members = tuple(members)
        self._reserve = reserve
        self._master = dict(master or {})

    def catalog(self) -> list[Product]:
        """The products sold; their `tax_code` is a tax class, "standard" or "reduced"."""
        return list(CATALOG)

    def price_list(
        self, effective_from: datetime, *, skus: Iterable[str] | None = None, factor: Decimal = ONE
    ) -> list[Price]:
        """The generator's own shelf prices as a price list per region of its stores, from the
        wall-clock time `effective_from`: every product, or those of `skus` with their EUR price
        times `factor` (a price change), each ending in 9 as shelf prices do."""
        regions = {shop.store.region: shop for shop in self._shops if shop.store.region is not None}
        chosen = list(_EUR_PRICE) if skus is None else list(skus)
        return [
            Price(
                sku=sku,
                price=shop.prices[sku]
                if factor == ONE
                else _local_price(_EUR_PRICE[sku] * factor, shop.regime),
                currency=shop.regime.currency,
                region=region,
                effective_from=effective_from,
            )
            for region, shop in sorted(regions.items())
            for sku in chosen
        ]

    def clock(self, store_id: str) -> datetime:
        """The instant a store's tills have reached: its next transaction ends later."""
        return next(shop.clock for shop in self._shops if shop.store.store_id == store_id)

    def voidable(self) -> frozenset[str]:
        """The sales a later post-void may still cancel."""
        return frozenset(
            sale.tx.transaction_id for shop in self._shops for till in shop.tills for sale in till.recent
        )

    def transactions(self, n: int) -> list[Transaction]:
        """The next `n` transactions. The cyclic GC pauses meanwhile: it would rescan the growing list
        over and over (nearly doubling the time for 100k), and none of it is cyclic garbage."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return [self.next_transaction() for _ in range(n)]
        finally:
            if was_enabled:
                gc.enable()

    def next_transaction(self) -> Transaction:
        """The next transaction: the next store in turn, at its next register in turn."""
        rng = self._rng
        shop = self._shops[self._turn]
        self._turn = (self._turn + 1) % len(self._shops)
        till = shop.tills[shop.turn]
        shop.turn = (shop.turn + 1) % len(shop.tills)
        till.sequence += 1
        # trading from 07:00, a customer every 15-180 s at each till; after 21:00 every 2-500 ms at
        # the store, after 23:59 every 2-500 µs: however long the stream, the day does not run out
        if shop.clock < shop.closing:
            gap = timedelta(microseconds=(15_000_000 + int(rng.random() * 165_000_000)) // len(shop.tills))
        elif shop.clock < shop.late:
            gap = timedelta(microseconds=2_000 + int(rng.random() * 498_000))
        else:
            gap = timedelta(microseconds=2 + int(rng.random() * 498))
        shop.clock = min(shop.clock + gap, shop.last)
        head: Row = {
            "store_id": shop.store.store_id,
            "register_id": till.register_id,
            "business_day": self._day,
            "sequence": till.sequence,
            "currency": shop.regime.currency,
            "started_at": shop.clock - gap // 2,
            "ended_at": shop.clock,
            "operator_id": till.operator_id,
        }
        r = rng.random()
        tx = None
        if r < 0.05:
            tx = self._return(shop, head)
        elif r < 0.06:
            tx = self._void(till, head)
        elif r < 0.07:
            tx = self._exchange(shop, head)
        return tx or self._sale(shop, till, head)

    def _sale(self, shop: _Shop, till: _Till, head: Row) -> Transaction:
        rng, random = self._rng, self._rng.random  # indexing by random() is twice as fast as choice()
        fixed = self._basket_size
        known = self._master.get(shop.store.store_id)
        offers = member = None
        if known is not None:  # the customer's card is scanned first: the member prices depend on it
            member = self._member() if rng.random() < 0.4 else None
            offers = _Offers(known, known.promotions(shop.clock), member is not None)
        n = fixed or _SIZES[int(random() * len(_SIZES))]
        items = []
        for i in range(1, n + 1):
            products = _WEIGHED if random() < 0.16 else _EACH
            items.append(self._line(shop, i, products[int(random() * len(products))], offers))
        if not fixed:  # a carrier bag, now and then gift wrap
            if n < 8 and rng.random() < 0.25:
                n += 1
                items.append(self._line(shop, n, _BAG, offers))
            if n < 8 and rng.random() < 0.03:
                items.append(self._line(shop, n + 1, _WRAP, offers))
        if known is None:
            member = self._member() if rng.random() < 0.4 else None
        head.update(kind=TransactionKind.SALE, customer={"member_id": member} if member else None)
        tx = self._close(shop, head, items, None, member)
        sale = _Sale(tx, [line for line in tx.lines if line.item_type is _S])
        if len(shop.sales) < _POOL:
            shop.sales.append(sale)
        else:
            shop.sales[shop.ring] = sale
            shop.ring = (shop.ring + 1) % _POOL
        till.recent.append(sale)
        if len(till.recent) > _RECENT:
            del till.recent[0]
        return tx

    def _line(
        self, shop: _Shop, line_no: int, product: Product, offers: _Offers | None = None
    ) -> tuple[Row, Decimal]:
        rng, currency = self._rng, shop.regime.currency
        price = shop.prices[product.sku]
        if offers is not None:
            known = offers.known.price(product.sku, shop.clock)
            price = price if known is None else known
        if product.uom is _KG:
            quantity = D(150 + int(rng.random() * 2351)).scaleb(-3)  # 0.150 to 2.500 KG
            extended = round_to_minor(quantity * price, currency)
        else:
            quantity = _QTYS[int(rng.random() * len(_QTYS))] if product.item_type is _S else ONE
            extended = quantity * price
        modifiers: tuple[Row, ...] = ()
        net = extended
        if offers is not None:
            modifiers = _applied(offers, product, extended, quantity, price, currency)
            net = extended - sum((m["amount"] for m in modifiers), ZERO)
        elif product.item_type is _S and rng.random() < 0.21:
            promotion, share = _PROMOS[int(rng.random() * len(_PROMOS))]
            off = (
                min(shop.fixed_off, extended) if share is None else round_to_minor(extended * share, currency)
            )
            net, modifiers = extended - off, ({"amount": off, "promotion_id": promotion},)
        return {
            "line_no": line_no,
            "sku": product.sku,
            "description": product.description,
            "quantity": quantity,
            "uom": product.uom,
            "unit_price": price,
            "extended_amount": extended,
            "department": product.department,
            "item_type": product.item_type,
            "tax_codes": (shop.codes[product.sku],),
            "modifiers": modifiers,
        }, net

    def _returnable(self, shop: _Shop) -> _Sale | None:
        for _ in range(8):
            sale = shop.sales[self._rng.randrange(len(shop.sales))] if shop.sales else None
            if sale is None or (sale.open_lines and not sale.voided):
                return sale
        return None

    def _returned(self, sale: _Sale, line: LineItem, line_no: int) -> tuple[Row, Decimal]:
        sale.open_lines.remove(line)
        sale.returned = True
        row = line.model_dump()
        row.update(
            line_no=line_no,
            action=LineAction.RETURN,
            restock=self._rng.random() >= 0.2,
            original={"transaction": sale.tx.ref, "line_no": line.line_no},
        )
        return row, -line.net_amount

    def _return(self, shop: _Shop, head: Row) -> Transaction | None:
        sale = self._returnable(shop)
        if sale is None:
            return None
        k = 2 if len(sale.open_lines) > 1 and self._rng.random() < 0.3 else 1
        items = [
            self._returned(sale, line, i) for i, line in enumerate(self._rng.sample(sale.open_lines, k), 1)
        ]
        head.update(kind=TransactionKind.RETURN, customer=sale.tx.customer)
        return self._close(shop, head, items, sale.tx, None)

    def _exchange(self, shop: _Shop, head: Row) -> Transaction | None:
        sale = self._returnable(shop)
        if sale is None:
            return None
        back = self._returned(sale, self._rng.choice(sale.open_lines), 1)
        swap = self._rng.choice(_BY_DEPT.get(back[0]["department"] or "", _EACH))
        head.update(kind=TransactionKind.EXCHANGE, customer=sale.tx.customer)
        member = None if sale.tx.customer is None else sale.tx.customer.member_id
        known = self._master.get(shop.store.store_id)
        offers = None if known is None else _Offers(known, known.promotions(shop.clock), member is not None)
        return self._close(shop, head, [back, self._line(shop, 2, swap, offers)], sale.tx, member)

    def _void(self, till: _Till, head: Row) -> Transaction | None:
        live = [sale for sale in till.recent if not sale.voided and not sale.returned]
        if not live:
            return None
        sale = self._rng.choice(live)
        sale.voided = True
        voided, totals = sale.tx, sale.tx.totals
        head.update(
            kind=TransactionKind.VOID,
            customer=voided.customer,
            voided=voided.ref,
            taxes=[
                t.model_copy(update={"taxable_amount": -t.taxable_amount, "amount": -t.amount})
                for t in voided.taxes
            ],
            tenders=[self._refund(voided, -totals.grand_total)],
            totals={"subtotal": -totals.subtotal, "tax": -totals.tax, "grand_total": -totals.grand_total},
        )
        return Transaction.model_validate(head)

    def _close(
        self,
        shop: _Shop,
        head: Row,
        items: list[tuple[Row, Decimal]],
        original: Transaction | None,
        member: str | None,
    ) -> Transaction:
        """Tax, tender and total `items`, then let the model check the lot."""
        regime = shop.regime
        bases: dict[str, Decimal] = {}
        for row, net in items:
            code = row["tax_codes"][0]
            bases[code] = bases.get(code, ZERO) + net
        subtotal, tax, taxes = sum(bases.values(), ZERO), ZERO, []
        for code, base in bases.items():
            rate, divisor = shop.rates[code]
            if regime.inclusive:
                amount = round_to_minor(base * rate / divisor, regime.currency) + ZERO  # never -0.00
                taxable = base - amount
            else:
                amount, taxable = round_to_minor(base * rate, regime.currency) + ZERO, base
            tax += amount
            taxes.append(
                {
                    "code": code,
                    "rate": rate,
                    "taxable_amount": taxable,
                    "amount": amount,
                    "inclusive": regime.inclusive,
                }
            )
        grand = subtotal if regime.inclusive else subtotal + tax
        if grand > 0:
            tenders = self._pay(shop, grand, member)
        else:
            tenders = [self._refund(original, grand)] if grand < 0 and original is not None else []
        head.update(
            lines=[row for row, _ in items],
            taxes=taxes,
            tenders=tenders,
            totals={"subtotal": subtotal, "tax": tax, "grand_total": grand},
        )
        return Transaction.model_validate(head)

    def _member(self) -> str:
        if self._members:
            return self._members[int(self._rng.random() * len(self._members))]
        return f"M{self._rng.randrange(1, 100_000):06d}"

    def _pay(self, shop: _Shop, grand: Decimal, member: str | None) -> list[Row]:
        rng, currency = self._rng, shop.regime.currency
        q = minor_unit(currency)
        r = rng.random()
        if r < 0.15 and grand >= 2 * q:  # split: loyalty points, a gift card or some cash, the rest on a card
            part = min(max(round_to_minor(grand * rng.choice(_SHARES), currency), q), grand - q)
            first: Row = {"kind": TenderKind.CASH, "amount": part}
            if r < 0.03 and member:  # one point is worth one minor unit, held at checkout first
                points = int(part / q)
                hold = None if self._reserve is None else self._reserve(shop.store.store_id, member, points)
                if hold is not None:
                    first.update(kind=TenderKind.LOYALTY_POINTS, points=points, reference=hold)
            elif r < 0.09:
                first.update(kind=TenderKind.GIFT_CARD, reference=f"GC-****{rng.randrange(10_000):04d}")
            return [first, self._card(grand - part)]
        if r < 0.50:  # cash, the amount rounded up to a note and change given
            note = shop.regime.note * rng.choice(_NOTES)
            paid = (grand / note).to_integral_value(ROUND_CEILING) * note
            return [{"kind": TenderKind.CASH, "amount": paid, "change": paid - grand}]
        return [self._card(grand)]

    def _card(self, amount: Decimal, last4: str | None = None, scheme: str | None = None) -> Row:
        rng = self._rng
        card = {
            "last4": last4 or f"{rng.randrange(10_000):04d}",
            "auth_code": f"{rng.getrandbits(24):06X}",
            "scheme": scheme or rng.choice(_SCHEMES),
        }
        return {"kind": TenderKind.CARD, "amount": amount, "card": card}

    def _refund(self, original: Transaction, amount: Decimal) -> Row:
        """A refund (negative `amount`) to the tender that paid most of `original`."""
        paid = max(original.tenders, key=lambda t: t.amount - t.change)
        if paid.kind is TenderKind.CARD and paid.card is not None:
            return self._card(amount, paid.card.last4, paid.card.scheme)
        if paid.kind in (TenderKind.CASH, TenderKind.GIFT_CARD):
            return {"kind": paid.kind, "amount": amount, "reference": paid.reference}
        return {"kind": TenderKind.STORE_CREDIT, "amount": amount}


def _applied(
    offers: _Offers, product: Product, extended: Decimal, quantity: Decimal, price: Decimal, currency: str
) -> tuple[Row, ...]:
    """The modifiers of a line: what each running promotion that targets it takes off."""
    modifiers = []
    for promotion in offers.running:
        if promotion.member_only and not offers.member:
            continue
        if product.sku in promotion.skus or product.department in promotion.departments:
            off = discount(promotion, extended, quantity, price, currency)
            if off > 0:
                modifiers.append({"amount": off, "promotion_id": promotion.promotion_id})
    return tuple(modifiers)
