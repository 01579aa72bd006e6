"""Shopify orders and refunds (REST Admin API JSON) → canonical transactions of a web store.

Inputs: ``{"order": {...}}``, ``{"orders": [...]}``, ``{"refund": {...}}``, ``{"refunds": [...]}``,
payment transactions (``{"transaction": ...}``, ``{"transactions": [...]}``, a bare list,
``{"tender_transactions": [...]}``), or NDJSON of any of these or of bare order/refund objects.
The first record decides whether the input is Shopify transactions at all: customers, inventory,
locations, price rules, gift cards and payout balance transactions raise `FormatError`; a later
record that is none of ours is quarantined.

Which orders post — by ``financial_status``, because posting follows money: ``paid``,
``partially_refunded`` and ``refunded`` post as a sale (refunds post separately, as returns, so a
refunded order nets to zero and re-reading it changes nothing); ``pending``, ``authorized``,
``partially_paid`` are `Recorded` "unpaid" (an authorization may still be voided: the order posts
when captured, the identity is the same); ``voided``/``expired`` are `Recorded` ("cancelled" when
``cancelled_at`` is set). A cancelled order that was paid still posts: its refunds reverse it.
Test orders are `Recorded` "test". Payment transactions are `Recorded` "payment": their tender
posts with the order or refund they belong to.

Sale identity: store = ``location_id`` (POS orders) through policy.store_aliases (unaliased: the
id as sent), else the settings' store (the online store); register = the settings' register;
business day = local date of ``processed_at`` (else ``created_at``); sequence = ``order_number``
(the merchant's number, unique per shop).

Sale content: ``line_items`` in order (line_no 1..n): sku, else ``variant-<id>``, else
``product-<id>``, else the settings' custom sku; gift cards are non-stock; a line's
``discount_allocations`` (or legacy ``total_discount``) are its modifiers; ``total_discounts`` not
allocated to lines is one basket modifier. Shipping lines with a price become non-stock lines,
a tip a service line. Taxes are the order's ``tax_lines`` (code from policy.tax_codes by title,
else the title as an identifier), inclusive when ``taxes_included``. Tenders: the order's
``transactions`` when embedded (successful sale, capture, uncaptured authorization), else one
tender of ``total_price`` by ``payment_gateway_names``/``gateway`` through the policy's tender map
(several gateways of different kinds cannot be split: quarantined). The customer is only its id.
Checked: line items against ``total_line_items_price``, tax lines against ``total_tax``, lines −
discounts + tax against ``total_price``, tenders against ``total_price``.

Refund → return: store, currency and tax inclusion those of its order when the order was read,
else a refund transaction's location (else the settings' store), the transactions' currency and
the settings' ``taxes_included_default``; register = the settings' refund register; business day
= local date of ``processed_at`` (else ``created_at``); sequence = the refund id's last 10 digits
(Shopify ids grow by far less than 10^10 a day, so one day's refunds never share them). The
refunds of an order that is `Recorded` (never posted) are `Recorded` too.
Lines from ``refund_line_items``: price × quantity, ``subtotal`` gives the discount, ``total_tax``
the tax (split over the line's tax lines in proportion; without it only a whole line's tax is
known), ``restock_type`` the restock flag (``no_restock`` → False; without one, the refund's legacy
``restock``). A line links to the sale (`LineRef`) when the order was read earlier in the same
input (an order document carries its ``refunds``; a bulk export lists orders first) — also when
the sale itself was quarantined, since its identity does not depend on what was wrong with it.
``order_adjustments``: ``shipping_refund`` (negative: paid back) → a returned shipping line with
its tax; ``refund_discrepancy`` negative → a returned adjustment line, positive (less paid back) →
a basket modifier. Tenders: successful ``refund`` transactions, negative. Checked: lines −
discounts + tax + adjustments against the refund transactions. A refund calculation
(``suggested_refund``) is `Recorded`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from functools import partial
from typing import Any, BinaryIO, Final

from tillflow.formats.commerce import (
    ZERO,
    BadLine,
    JsonObject,
    KnownOrder,
    OrderMemory,
    Positions,
    aware_time,
    canonical_totals,
    currency_code,
    fraction,
    guarded,
    ident_or_none,
    local_moment,
    money,
    obj,
    objects,
    plain,
    read_documents,
    refuse_card_numbers,
    safe_id,
    sniff_json,
    tax_code,
    text,
    top_key,
    validated,
    whole,
)
from tillflow.formats.commerce import allocate as allocate_amounts
from tillflow.formats.records import (
    FormatError,
    ImportContext,
    Imported,
    Parsed,
    Quarantined,
    Recorded,
    RecordError,
    SourceRef,
)
from tillflow.formats.settings import ShopifySettings
from tillflow.model import (
    Customer,
    ItemType,
    LineAction,
    LineItem,
    LineRef,
    PriceModifier,
    TaxLine,
    Tender,
    Transaction,
    TransactionKind,
    TransactionRef,
    minor_unit,
)

NAME: Final = "shopify"
_MARKERS: Final = (
    b'"financial_status"',
    b'"refund_line_items"',
    b'"order_number"',
    b'"payment_gateway_names"',
    b'"taxes_included"',
    b'"gateway"',
    b'"tender_transactions"',
)
_POSTED: Final = frozenset({"paid", "partially_refunded", "refunded"})
_UNPAID: Final = frozenset({"pending", "authorized", "partially_paid", "unpaid"})
_VOIDED: Final = frozenset({"voided", "expired"})
_RESTOCK: Final = {"no_restock": False, "cancel": True, "return": True, "legacy_restock": True}
_WRAPPERS: Final = {
    "order": "order",
    "orders": "order",
    "refund": "refund",
    "refunds": "refund",
    "transaction": "payment",
    "transactions": "payment",
    "tender_transactions": "tender",
}
NOT_OURS: Final = "not a Shopify order, refund or payment transaction"


def sniff(head: bytes) -> bool:
    """True when `head` is JSON naming a Shopify order, refund or payment field."""
    return sniff_json(head, _MARKERS)


def parse(
    stream: BinaryIO,
    context: ImportContext,
    *,
    name: str,
    settings: ShopifySettings | Mapping[str, Any] | None = None,
) -> Iterator[Parsed]:
    """The canonical transactions of a Shopify input, record by record, in input order."""
    cfg = (
        ShopifySettings.model_validate(settings or {})
        if not isinstance(settings, ShopifySettings)
        else settings
    )
    positions, memory, accepted = Positions(name), OrderMemory(), False
    for line_no, document in read_documents(stream, name=name):
        at = f"line {line_no}: " if line_no else ""
        if isinstance(document, BadLine):
            yield Quarantined(positions.next(f"line {line_no}"), "$", document.reason)
            accepted = True  # the input is NDJSON of records: what follows is judged record by record
            continue
        for kind, item in _entries(document):
            if kind == "other" or not isinstance(item, dict):
                if not accepted:
                    raise FormatError(f"{name}: {NOT_OURS}{top_key(document)}")
                yield Quarantined(positions.next(f"{at}record"), "$", NOT_OURS)
                continue
            accepted = True
            if kind == "order":
                yield from _order_records(item, context, cfg, memory, positions, at)
            elif kind == "refund":
                source = positions.next(f"{at}{_refund_locator(item)}")
                yield guarded(source, partial(_refund, item, source, context, cfg, memory))
            else:
                source = positions.next(f"{at}transaction {safe_id(item.get('id'))}")
                yield guarded(source, partial(_payment, item, source, kind))


def _entries(document: object) -> list[tuple[str, object]]:
    if isinstance(document, list):
        return [(_shape(item), item) for item in document]
    if isinstance(document, dict) and _shape(document) not in ("order", "refund"):
        for key, kind in _WRAPPERS.items():
            if key in document:
                value = document[key]
                items = value if isinstance(value, list) else [value]
                return [(_wrapped(kind, item), item) for item in items]
    return [(_shape(document), document)]


def _wrapped(kind: str, item: object) -> str:
    if not isinstance(item, dict):
        return "other"
    if kind == "payment":  # a payout's balance transactions share the key, not the shape
        return "payment" if "kind" in item else "other"
    return kind


def _shape(item: object) -> str:
    if not isinstance(item, dict):
        return "other"
    if "refund_line_items" in item:
        return "refund"
    if "line_items" in item:
        return "order"
    if "order_id" in item and "kind" in item:
        return "payment"
    if "order_id" in item and "payment_method" in item:
        return "tender"
    return "other"


def _payment(item: JsonObject, source: SourceRef, kind: str) -> Parsed:
    refuse_card_numbers(item, "")
    what = "tender transaction" if kind == "tender" else f"{safe_id(item.get('kind'))} transaction"
    return Recorded(
        source, "payment", f"{what} of order {safe_id(item.get('order_id'))}: posted with its order or refund"
    )


# --------------------------------------------------------------------------- orders


def _order_records(
    order: JsonObject,
    context: ImportContext,
    cfg: ShopifySettings,
    memory: OrderMemory,
    positions: Positions,
    at: str,
) -> Iterator[Parsed]:
    number = order.get("name") if isinstance(order.get("name"), str) else None
    locator = f"{at}order {safe_id(order.get('id'))}" + (f" ({safe_id(number)})" if number else "")
    source = positions.next(locator)
    head = {k: v for k, v in order.items() if k != "refunds"}
    result = guarded(source, lambda: _order(head, source, context, cfg, memory))
    yield result
    refunds = order.get("refunds")
    if refunds is None:
        return
    if not isinstance(refunds, list):
        yield Quarantined(positions.next(f"{locator}: refunds"), "refunds", "not a list")
        return
    for i, refund in enumerate(refunds):
        if not isinstance(refund, dict):
            yield Quarantined(positions.next(f"{locator}: refunds[{i}]"), f"refunds[{i}]", "not an object")
            continue
        sub = positions.next(f"{at}{_refund_locator(refund, order.get('id'))}")
        if isinstance(result, Recorded):
            yield Recorded(sub, result.kind, "a refund of an order that was never posted")
        else:
            yield guarded(sub, partial(_refund, refund, sub, context, cfg, memory, order.get("id")))


def _refund_locator(refund: JsonObject, order_id: object = None) -> str:
    return f"refund {safe_id(refund.get('id'))} of order {safe_id(refund.get('order_id', order_id))}"


def _order(
    order: JsonObject, source: SourceRef, context: ImportContext, cfg: ShopifySettings, memory: OrderMemory
) -> Parsed:
    refuse_card_numbers(order, "")
    status = text(order, "financial_status", "")
    if order.get("test") is True:
        return Recorded(source, "test", "a test order: never posted")
    if status in _UNPAID:
        return Recorded(source, "unpaid", f"financial_status {status}: posted once paid")
    if status in _VOIDED:
        kind = "cancelled" if order.get("cancelled_at") else "voided"
        return Recorded(source, kind, f"financial_status {status}: no money moved")
    if status not in _POSTED:
        raise RecordError("financial_status", "missing" if status is None else "not a known financial status")

    location = text(order, "location_id", "")
    store_id = context.store_id(location) if location else cfg.store_id
    currency = currency_code(context.currency(store_id, text(order, "currency", "")), "currency")
    ended = aware_time(order, _when(order), "", context, store_id)
    sequence = whole(order, "order_number", "")
    assert sequence is not None
    if not 0 <= sequence < 10**10:
        raise RecordError("order_number", "not a till sequence (0 to 10 digits)")
    ref = TransactionRef(
        store_id=store_id,
        register_id=cfg.register_id,
        business_day=local_moment(context, store_id, ended).date(),
        sequence=sequence,
    )
    inclusive = order.get("taxes_included") is True
    if "line_items" not in order:
        raise RecordError("line_items", "missing: an order without lines cannot be posted")
    items = objects(order, "line_items", "")
    line_nos = {text(item, "id", path) or f"#{n}": n for n, (path, item) in enumerate(items, 1)}
    order_id = text(order, "id", "")
    if order_id:
        memory.remember(order_id, KnownOrder(ref, currency, line_nos, inclusive))

    mapper = _OrderMapper(order, context, cfg, store_id, currency)
    lines = [mapper.item(n, path, item) for n, (path, item) in enumerate(items, 1)]
    lines_total = sum((line.extended_amount for line in lines), ZERO)
    stated = order.get("total_line_items_price")
    if stated is not None and money(stated, "total_line_items_price", currency) != lines_total:
        raise RecordError(
            "total_line_items_price",
            "the line items do not add up to total_line_items_price",
            {
                "line_items": plain(lines_total, currency),
                "total_line_items_price": plain(money(stated, "", currency), currency),
            },
        )
    lines += mapper.extras(len(lines))
    basket = mapper.basket(lines[: len(items)])
    taxes = mapper.taxes(lines, inclusive)
    total = money(order.get("total_price"), "total_price", currency)
    totals = canonical_totals(lines, basket, taxes, sign=1)
    _check_sale(order, currency, lines, basket, taxes, totals.grand_total, total)
    tenders, tender_field = mapper.tenders(total)
    tendered = sum((t.amount for t in tenders), ZERO)
    if tendered != total:
        raise RecordError(
            tender_field,
            "the payments do not add up to total_price",
            {"tenders": plain(tendered, currency), "total_price": plain(total, currency)},
        )
    member = text(obj(order, "customer", ""), "id", "customer")
    customer = validated(Customer, "customer", {"member_id": member, "program": cfg.customer_program})
    return Imported(
        source,
        Transaction(
            store_id=ref.store_id,
            register_id=ref.register_id,
            business_day=ref.business_day,
            sequence=ref.sequence,
            kind=TransactionKind.SALE,
            currency=currency,
            started_at=aware_time(order, "created_at", "", context, store_id),
            ended_at=ended,
            operator_id=text(order, "user_id", ""),
            customer=customer if member else None,
            lines=tuple(lines),
            modifiers=tuple(basket),
            taxes=tuple(taxes),
            tenders=tuple(tenders),
            totals=totals,
        ),
    )


def _check_sale(
    order: JsonObject,
    currency: str,
    lines: list[LineItem],
    basket: list[PriceModifier],
    taxes: list[TaxLine],
    grand_total: Decimal,
    total: Decimal,
) -> None:
    tax = sum((t.amount for t in taxes), ZERO)
    if order.get("total_tax") is not None and money(order["total_tax"], "total_tax", currency) != tax:
        raise RecordError(
            "total_tax",
            "the tax lines do not add up to total_tax",
            {
                "tax_lines": plain(tax, currency),
                "total_tax": plain(money(order["total_tax"], "", currency), currency),
            },
        )
    if grand_total != total:
        discounts = sum((m.amount for line in lines for m in line.modifiers), ZERO) + sum(
            (m.amount for m in basket), ZERO
        )
        raise RecordError(
            "total_price",
            "lines - discounts + tax do not add up to total_price",
            {
                "lines": plain(sum((line.extended_amount for line in lines), ZERO), currency),
                "discounts": plain(discounts, currency),
                "tax": plain(sum((t.amount for t in taxes if not t.inclusive), ZERO), currency),
                "grand_total": plain(grand_total, currency),
                "total_price": plain(total, currency),
            },
        )


class _OrderMapper:
    """The parts of one order's sale; each method raises RecordError naming the input's field."""

    def __init__(
        self, order: JsonObject, context: ImportContext, cfg: ShopifySettings, store_id: str, currency: str
    ) -> None:
        self.order, self.context, self.cfg = order, context, cfg
        self.store_id, self.currency = store_id, currency
        self.applications = [a for _, a in objects(order, "discount_applications", "")]

    def amount(self, value: object, field_: str) -> Decimal:
        amount = money(value, field_, self.currency)
        if amount < 0:
            raise RecordError(field_, "negative")
        return amount

    def code(self, tax: JsonObject, where: str) -> str:
        return tax_code(self.context, self.store_id, text(tax, "title", where) or "tax")

    def item(self, no: int, path: str, item: JsonObject) -> LineItem:
        qty = whole(item, "quantity", path)
        assert qty is not None
        price = self.amount(item.get("price"), f"{path}.price")
        modifiers = self.allocations(item, path)
        legacy = item.get("total_discount")
        if not modifiers and legacy is not None and self.amount(legacy, f"{path}.total_discount") > 0:
            modifiers = [PriceModifier(amount=self.amount(legacy, ""), reason="discount")]
        return validated(
            LineItem,
            path,
            {
                "line_no": no,
                "sku": _sku(item, path, self.cfg),
                "description": (text(item, "name", path) or text(item, "title", path) or "")[:200],
                "quantity": Decimal(qty),
                "unit_price": price,
                "extended_amount": price * qty,
                "item_type": ItemType.NON_STOCK if item.get("gift_card") is True else ItemType.STOCK,
                "tax_codes": self.tax_codes(item, path),
                "modifiers": modifiers,
            },
        )

    def tax_codes(self, item: JsonObject, path: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.code(tax, tp) for tp, tax in objects(item, "tax_lines", path)))

    def allocations(self, item: JsonObject, path: str) -> list[PriceModifier]:
        found: list[PriceModifier] = []
        for ap, alloc in objects(item, "discount_allocations", path):
            amount = self.amount(alloc.get("amount"), f"{ap}.amount")
            app = self.application(alloc.get("discount_application_index"))
            label = text(app, "title", "") or text(app, "code", "") or text(app, "description", "")
            if amount:
                code = ident_or_none(text(app, "code", ""))
                found.append(
                    PriceModifier(amount=amount, reason=(label or "discount")[:64], promotion_id=code)
                )
        return found

    def application(self, index: object) -> JsonObject:
        """The discount application a line's allocation points at (empty when it points nowhere)."""
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(self.applications):
            return self.applications[index]
        return {}

    def extras(self, after: int) -> list[LineItem]:
        """Shipping lines that cost something, then the tip: non-stock lines after the items."""
        extra: list[LineItem] = []
        for sp, ship in objects(self.order, "shipping_lines", ""):
            price = self.amount(ship.get("price"), f"{sp}.price")
            modifiers = self.allocations(ship, sp)
            if price or modifiers:
                no = after + len(extra) + 1
                extra.append(self.charge(no, sp, self.cfg.shipping_sku, ship, price, modifiers))
        tip = self.order.get("total_tip_received")
        if tip is not None and self.amount(tip, "total_tip_received"):
            price, no = self.amount(tip, "total_tip_received"), after + len(extra) + 1
            extra.append(self.charge(no, "total_tip_received", self.cfg.tip_sku, {}, price, []))
        return extra

    def charge(
        self, no: int, where: str, sku: str, source: JsonObject, price: Decimal, mods: list[PriceModifier]
    ) -> LineItem:
        return validated(
            LineItem,
            where,
            {
                "line_no": no,
                "sku": sku,
                "description": (text(source, "title", where) or sku)[:200],
                "quantity": Decimal(1),
                "unit_price": price,
                "extended_amount": price,
                "item_type": ItemType.SERVICE if sku == self.cfg.tip_sku else ItemType.NON_STOCK,
                "tax_codes": self.tax_codes(source, where),
                "modifiers": mods,
            },
        )

    def basket(self, items: list[LineItem]) -> list[PriceModifier]:
        """The order's discounts not allocated to its line items: one basket modifier."""
        stated = self.order.get("total_discounts")
        if stated is None:
            return []
        total = self.amount(stated, "total_discounts")
        allocated = sum((m.amount for line in items for m in line.modifiers), ZERO)
        if total < allocated:
            raise RecordError(
                "total_discounts",
                "less than the discounts allocated to the line items",
                {
                    "line_discounts": plain(allocated, self.currency),
                    "total_discounts": plain(total, self.currency),
                },
            )
        return [PriceModifier(amount=total - allocated, reason="order discount")] if total > allocated else []

    def taxes(self, lines: list[LineItem], inclusive: bool) -> list[TaxLine]:
        found: list[TaxLine] = []
        for tp, tax in objects(self.order, "tax_lines", ""):
            code = self.code(tax, tp)
            carrying = [line for line in lines if code in line.tax_codes] or lines
            found.append(
                validated(
                    TaxLine,
                    tp,
                    {
                        "code": code,
                        "rate": fraction(tax.get("rate"), f"{tp}.rate"),
                        "taxable_amount": sum((line.net_amount for line in carrying), ZERO),
                        "amount": money(tax.get("price"), f"{tp}.price", self.currency),
                        "inclusive": inclusive,
                    },
                )
            )
        return found

    def tenders(self, total: Decimal) -> tuple[list[Tender], str]:
        """The sale's tenders and the field they came from."""
        embedded = objects(self.order, "transactions", "")
        if embedded:
            return self.embedded(embedded), "transactions"
        names = self.order.get("payment_gateway_names")
        gateways = [n for n in names if isinstance(n, str) and n] if isinstance(names, list) else []
        where = "payment_gateway_names" if gateways else "gateway"
        gateways = gateways or [g for g in [text(self.order, "gateway", "")] if g]
        if not total:
            return [], where
        if not gateways:
            raise RecordError("payment_gateway_names", "missing: how the order was paid is unknown")
        kinds = {self.context.tender_kind(self.store_id, [g], where) for g in gateways}
        if len(kinds) > 1:
            raise RecordError(where, "several kinds of payment and no transactions to say how much of each")
        return [Tender(kind=kinds.pop(), amount=total)], where

    def embedded(self, transactions: list[tuple[str, JsonObject]]) -> list[Tender]:
        captured = {text(tx, "parent_id", tp) for tp, tx in transactions if tx.get("kind") == "capture"}
        tenders: list[Tender] = []
        for tp, tx in transactions:
            kind = text(tx, "kind", tp)
            if text(tx, "status", tp) not in (None, "success"):
                continue
            uncaptured = kind == "authorization" and text(tx, "id", tp) not in captured
            if kind in ("sale", "capture") or uncaptured:
                gateway = text(tx, "gateway", tp)
                tenders.append(
                    Tender(
                        kind=self.context.tender_kind(self.store_id, [gateway], f"{tp}.gateway"),
                        amount=money(tx.get("amount"), f"{tp}.amount", self.currency),
                    )
                )
        return tenders


def _sku(item: JsonObject, path: str, cfg: ShopifySettings) -> str:
    sku = (text(item, "sku", path) or "").strip()
    if sku:
        return sku
    variant, product = text(item, "variant_id", path), text(item, "product_id", path)
    return f"variant-{variant}" if variant else f"product-{product}" if product else cfg.custom_sku


# --------------------------------------------------------------------------- refunds


def _refund(
    refund: JsonObject,
    source: SourceRef,
    context: ImportContext,
    cfg: ShopifySettings,
    memory: OrderMemory,
    parent_id: object = None,
) -> Parsed:
    refuse_card_numbers(refund, "")
    transactions = objects(refund, "transactions", "")
    if any(tx.get("kind") == "suggested_refund" for _, tx in transactions):
        return Recorded(source, "suggested-refund", "a refund calculation, not a refund made")
    refund_id = whole(refund, "id", "")
    assert refund_id is not None
    if refund_id <= 0:
        raise RecordError("id", "not a Shopify id")
    order_id = text(refund, "order_id", "") or (str(parent_id) if parent_id is not None else None)
    known = memory.get(order_id)
    store_id = known.ref.store_id if known else _refund_store(transactions, context, cfg)
    sent_currency = next((c for _, tx in transactions if (c := text(tx, "currency", "")) is not None), None)
    currency = known.currency if known else context.currency(store_id, sent_currency)
    currency = currency_code(currency, "transactions[0].currency")
    ended = aware_time(refund, _when(refund), "", context, store_id)
    mapper = _RefundMapper(refund, context, cfg, store_id, currency, known)
    returned = objects(refund, "refund_line_items", "")
    lines = [mapper.line(n, path, rli) for n, (path, rli) in enumerate(returned, 1)]
    lines += mapper.adjustments(len(lines))
    taxes = mapper.tax_lines()
    basket = mapper.basket
    totals = canonical_totals(lines, basket, taxes, sign=-1)
    paid_back = [
        (tp, tx, -money(tx.get("amount"), f"{tp}.amount", currency))
        for tp, tx in transactions
        if tx.get("kind") == "refund" and text(tx, "status", tp) in (None, "success")
    ]
    tendered = sum((amount for _, _, amount in paid_back), ZERO)
    if tendered != totals.grand_total:
        raise RecordError(
            "transactions",
            "the refund transactions do not add up to the refunded lines, tax and adjustments",
            {
                "lines": plain(sum((line.extended_amount for line in lines), ZERO), currency),
                "discounts": plain(sum((m.amount for line in lines for m in line.modifiers), ZERO), currency),
                "tax": plain(-totals.tax, currency),
                "adjustments": plain(sum((m.amount for m in basket), ZERO), currency),
                "refund_total": plain(-totals.grand_total, currency),
                "transactions": plain(-tendered, currency),
            },
        )
    tenders = [
        Tender(kind=context.tender_kind(store_id, [text(tx, "gateway", tp)], f"{tp}.gateway"), amount=amount)
        for tp, tx, amount in paid_back
    ]
    return Imported(
        source,
        Transaction(
            store_id=store_id,
            register_id=cfg.refund_register_id,
            business_day=local_moment(context, store_id, ended).date(),
            sequence=refund_id % 10**10,
            kind=TransactionKind.RETURN,
            currency=currency,
            ended_at=ended,
            operator_id=text(refund, "user_id", ""),
            lines=tuple(lines),
            modifiers=tuple(basket),
            taxes=tuple(taxes),
            tenders=tuple(tenders),
            totals=totals,
        ),
    )


def _when(record: JsonObject) -> str:
    """The field of a record's time: when it was processed, else when it was created."""
    return "processed_at" if record.get("processed_at") else "created_at"


def _refund_store(
    transactions: list[tuple[str, JsonObject]], context: ImportContext, cfg: ShopifySettings
) -> str:
    for tp, tx in transactions:
        location = text(tx, "location_id", tp)
        if location:
            return context.store_id(location)
    return cfg.store_id


class _RefundMapper:
    """The parts of one refund's return; tax is gathered per (code, rate) as lines are read."""

    def __init__(
        self,
        refund: JsonObject,
        context: ImportContext,
        cfg: ShopifySettings,
        store_id: str,
        currency: str,
        known: KnownOrder | None,
    ) -> None:
        self.refund, self.context, self.cfg = refund, context, cfg
        self.store_id, self.currency, self.known = store_id, currency, known
        self.inclusive = known.taxes_included if known else cfg.taxes_included_default
        self.tax: dict[tuple[str, Decimal], list[Decimal]] = {}  # (code, rate) -> [taxable, amount]
        self.basket: list[PriceModifier] = []

    def amount(self, value: object, field_: str) -> Decimal:
        return money(value, field_, self.currency)

    def add_tax(self, code: str, rate: Decimal, taxable: Decimal, amount: Decimal) -> None:
        entry = self.tax.setdefault((code, rate), [ZERO, ZERO])
        entry[0] += taxable
        entry[1] += amount

    def line(self, no: int, path: str, rli: JsonObject) -> LineItem:
        qty = whole(rli, "quantity", path)
        assert qty is not None
        item = obj(rli, "line_item", path, required=True)
        lp = f"{path}.line_item"
        price = self.amount(item.get("price"), f"{lp}.price")
        extended = price * qty
        subtotal = rli.get("subtotal")
        discount = extended - self.amount(subtotal, f"{path}.subtotal") if subtotal is not None else ZERO
        if discount < 0:
            raise RecordError(
                f"{path}.subtotal",
                "more than the line's price x quantity",
                {
                    "price_x_quantity": plain(extended, self.currency),
                    "subtotal": plain(extended - discount, self.currency),
                },
            )
        self.line_tax(path, rli, item, qty, extended - discount)
        return validated(
            LineItem,
            path,
            {
                "line_no": no,
                "action": LineAction.RETURN,
                "sku": _sku(item, lp, self.cfg),
                "description": (text(item, "name", lp) or text(item, "title", lp) or "")[:200],
                "quantity": Decimal(qty),
                "unit_price": price,
                "extended_amount": extended,
                "item_type": ItemType.NON_STOCK if item.get("gift_card") is True else ItemType.STOCK,
                "modifiers": [PriceModifier(amount=discount, reason="discount")] if discount else [],
                "original": self.original(path, rli, item),
                "restock": self.restock(path, rli),
            },
        )

    def line_tax(self, path: str, rli: JsonObject, item: JsonObject, qty: int, net: Decimal) -> None:
        lp = f"{path}.line_item"
        lines = [
            (
                tax_code(self.context, self.store_id, text(t, "title", tp) or "tax"),
                fraction(t.get("rate"), f"{tp}.rate"),
                self.amount(t.get("price"), f"{tp}.price"),
            )
            for tp, t in objects(item, "tax_lines", lp)
        ]
        stated = rli.get("total_tax")
        if stated is None:
            if qty != whole(item, "quantity", lp, required=False) and lines:
                raise RecordError(f"{path}.total_tax", "missing: the tax of a part of a line is unknown")
            parts = [amount for _, _, amount in lines]
        else:
            total_tax = self.amount(stated, f"{path}.total_tax")
            if total_tax and not lines:
                raise RecordError(f"{path}.total_tax", "tax refunded, but the line names no tax")
            parts = allocate_amounts(total_tax, [a for _, _, a in lines], minor_unit(self.currency))
        for (code, rate, _), part in zip(lines, parts, strict=True):
            self.add_tax(code, rate, net, part)

    def original(self, path: str, rli: JsonObject, item: JsonObject) -> LineRef | None:
        if self.known is None:
            return None
        line_id = text(rli, "line_item_id", path) or text(item, "id", f"{path}.line_item")
        line_no = self.known.line_nos.get(line_id or "")
        if line_no is None:
            raise RecordError(f"{path}.line_item_id", "not a line of the order it refunds")
        return LineRef(transaction=self.known.ref, line_no=line_no)

    def restock(self, path: str, rli: JsonObject) -> bool:
        kind = text(rli, "restock_type", path)
        if kind is None:
            return self.refund.get("restock") is True
        if kind not in _RESTOCK:
            raise RecordError(f"{path}.restock_type", "not a Shopify restock type")
        return _RESTOCK[kind]

    def adjustments(self, after: int) -> list[LineItem]:
        extra: list[LineItem] = []
        for ap, adj in objects(self.refund, "order_adjustments", ""):
            kind = text(adj, "kind", ap)
            amount = self.amount(adj.get("amount"), f"{ap}.amount")
            tax = self.amount(adj.get("tax_amount") or "0", f"{ap}.tax_amount")
            if kind == "refund_discrepancy" and amount > 0:  # less paid back than calculated
                self.basket.append(PriceModifier(amount=amount, reason="refund discrepancy"))
                continue
            if kind not in ("shipping_refund", "refund_discrepancy"):
                raise RecordError(f"{ap}.kind", "not a Shopify order adjustment kind")
            if amount > 0:
                raise RecordError(f"{ap}.amount", "positive: a shipping refund is paid back, so negative")
            if amount == 0:
                continue
            sku = self.cfg.shipping_sku if kind == "shipping_refund" else self.cfg.adjustment_sku
            if tax:
                rate = min(abs(tax / amount), Decimal(1)).quantize(Decimal("0.0001"))
                self.add_tax(tax_code(self.context, self.store_id, "shipping tax"), rate, -amount, -tax)
            extra.append(
                validated(
                    LineItem,
                    ap,
                    {
                        "line_no": after + len(extra) + 1,
                        "action": LineAction.RETURN,
                        "sku": sku,
                        "description": (text(adj, "reason", ap) or kind)[:200],
                        "quantity": Decimal(1),
                        "unit_price": -amount,
                        "extended_amount": -amount,
                        "item_type": ItemType.NON_STOCK,
                        "restock": False,
                    },
                )
            )
        return extra

    def tax_lines(self) -> list[TaxLine]:
        """Returned tax: signed like the return's totals (negative)."""
        return [
            TaxLine(code=code, rate=rate, taxable_amount=-taxable, amount=-amount, inclusive=self.inclusive)
            for (code, rate), (taxable, amount) in self.tax.items()
        ]
