"""Square orders, payments and refunds (Connect v2 API JSON) → canonical transactions.

Inputs: ``{"order": {...}}``, ``{"orders": [...]}`` (SearchOrders), ``{"payment": ...}``,
``{"payments": [...]}``, ``{"refund": ...}``, ``{"refunds": [...]}``, or NDJSON of any of these or
of bare objects. The ``errors`` a response carries beside its object are ignored (the object is
what was stored). API requests (they carry an ``idempotency_key``), loyalty, inventory, gift-card
and cash-drawer documents raise `FormatError`; the first record decides, a later record that is
none of ours is quarantined.

Money: a Money object's ``amount`` is an integer count of the currency's minor units (1599 USD =
15.99); every Money of a record must be in the record's currency.

Which records post: a ``COMPLETED`` order, or an ``OPEN`` one that is paid (it has tenders:
paid, awaiting fulfilment), is a sale; an ``OPEN`` order without tenders is `Recorded` "unpaid",
``DRAFT`` "draft", ``CANCELED`` "cancelled". A payment is `Recorded` "payment": its tender posts
with its order. A ``COMPLETED`` payment refund is a return; ``PENDING`` is `Recorded` "pending",
``REJECTED``/``FAILED`` "failed". Square records every refund twice — as the PaymentRefund and
as a *return order* (an order with ``returns``) — so a return order is `Recorded` "return-order"
and the money posts once, from the refund.

Identity: store = ``location_id`` through policy.store_aliases (unaliased: the id as sent; no
location: the settings' store); register = the
settings' register; business day = local date of ``created_at`` (an order keeps its creation
time while it moves from OPEN to COMPLETED, so a re-sent order keeps its identity); sequence =
`commerce.derived_sequence` of that time and the Square id (Square ids are opaque strings; the
collision risk is described there). The Square id itself is in the record's `SourceRef`
locator, and the sequence can be recomputed from it.

Sale content: ``line_items`` in order; sku = ``catalog_object_id`` (the variation), else the
settings' custom sku; unit price = base price + modifiers (per unit), extended =
``gross_sales_money``; gift cards and custom amounts are non-stock; ``applied_discounts`` are the
line's modifiers; ``total_discount_money`` not applied to lines is one basket modifier; service charges
and the tip are service lines. Taxes are the order's ``taxes`` (amount = the lines' applied
taxes; ADDITIVE exclusive, INCLUSIVE inclusive; code from policy.tax_codes by name, else the name
as an identifier). Tenders: ``tenders`` except voided or failed card tenders, kind by ``type``
through the policy's tender map; cash carries the buyer's money and the change; a cash rounding
adjustment becomes a rounding tender. Checked: each line's ``total_money``, ``total_tax_money``,
lines − discounts + tax + charges + tip against ``total_money``, tenders against ``total_money``.
Card details are not kept (an order tender carries no authorization code).

A payment refund carries only money (Square says which items only in the return order): it is a
return of one non-stock line (the settings' refund sku, not restocked, no tax split) with a
negative tender by ``destination_type``. Nothing in it names a line of the original sale, so it
carries no `LineRef`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, BinaryIO, Final

from tillflow.formats.commerce import (
    ZERO,
    BadLine,
    JsonObject,
    Positions,
    aware_time,
    canonical_totals,
    currency_code,
    derived_sequence,
    fraction,
    guarded,
    ident_or_none,
    local_moment,
    minor_money,
    obj,
    objects,
    plain,
    quantity_of,
    read_documents,
    refuse_card_numbers,
    safe_id,
    sniff_json,
    tax_code,
    text,
    top_key,
    validated,
)
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
from tillflow.formats.settings import SquareSettings
from tillflow.model import (
    Customer,
    ItemType,
    LineAction,
    LineItem,
    PriceModifier,
    TaxLine,
    Tender,
    TenderKind,
    Totals,
    Transaction,
    TransactionKind,
    round_to_minor,
)

NAME: Final = "square"
_MARKERS: Final = (
    b'"base_price_money"',
    b'"amount_money"',
    b'"total_money"',
    b'"applied_money"',
    b'"approved_money"',
    b'"catalog_object_id"',
    b'"order_entries"',
)
_WRAPPERS: Final = {
    "order": "order",
    "orders": "order",
    "payment": "payment",
    "payments": "payment",
    "refund": "refund",
    "refunds": "refund",
}
_NON_STOCK: Final = frozenset({"GIFT_CARD", "CUSTOM_AMOUNT"})
_UNCOUNTED_CARD: Final = frozenset({"VOIDED", "FAILED"})
NOT_OURS: Final = "not a Square order, payment or refund"


def sniff(head: bytes) -> bool:
    """True when `head` is JSON with Square Money fields."""
    return sniff_json(head, _MARKERS)


def parse(
    stream: BinaryIO,
    context: ImportContext,
    *,
    name: str,
    settings: SquareSettings | Mapping[str, Any] | None = None,
) -> Iterator[Parsed]:
    """The canonical transactions of a Square input, record by record, in input order."""
    cfg = settings if isinstance(settings, SquareSettings) else SquareSettings.model_validate(settings or {})
    positions, accepted = Positions(name), False
    for line_no, document in read_documents(stream, name=name):
        at = f"line {line_no}: " if line_no else ""
        if isinstance(document, BadLine):
            yield Quarantined(positions.next(f"line {line_no}"), "$", document.reason)
            accepted = True  # the input is NDJSON of records: what follows is judged record by record
            continue
        for kind, item in _entries(document):
            if not isinstance(item, dict) or kind in ("other", "request"):
                why = "an API request, not a record" if kind == "request" else NOT_OURS
                if not accepted:
                    raise FormatError(f"{name}: {why}{top_key(document)}")
                yield Quarantined(positions.next(f"{at}record"), "$", why)
                continue
            accepted = True
            source = positions.next(f"{at}{kind} {safe_id(item.get('id'))}")
            build = {"order": _order, "payment": _payment, "refund": _refund}[kind]
            yield guarded(source, partial(build, item, source, context, cfg))


def _entries(document: object) -> list[tuple[str, object]]:
    if isinstance(document, list):
        return [(_shape(item), item) for item in document]
    if isinstance(document, dict):
        if "idempotency_key" in document:
            return [("request", document)]
        for key, kind in _WRAPPERS.items():
            if key in document:
                value = document[key]
                items = value if isinstance(value, list) else [value]
                return [(kind if isinstance(item, dict) else "other", item) for item in items]
    return [(_shape(document), document)]


def _shape(item: object) -> str:
    if not isinstance(item, dict):
        return "other"
    if "line_items" in item or ("state" in item and "location_id" in item):
        return "order"
    if "amount_money" in item and "payment_id" in item:
        return "refund"
    if "amount_money" in item and ("source_type" in item or "card_details" in item):
        return "payment"
    return "other"


def _payment(item: JsonObject, source: SourceRef, context: ImportContext, cfg: SquareSettings) -> Parsed:
    refuse_card_numbers(item, "")
    order_id = text(item, "order_id", "")
    if order_id is None:
        return Recorded(source, "payment", "a payment without an order: nothing itemized to post")
    return Recorded(
        source, "payment", f"a payment of order {safe_id(order_id)}: its tender posts with the order"
    )


# --------------------------------------------------------------------------- orders


def _order(order: JsonObject, source: SourceRef, context: ImportContext, cfg: SquareSettings) -> Parsed:
    refuse_card_numbers(order, "")
    order_id = text(order, "id", "", required=True)
    assert order_id is not None
    if objects(order, "returns", ""):
        return Recorded(
            source, "return-order", "Square's record of a refund: the money posts from the refund"
        )
    state = text(order, "state", "")
    if state == "DRAFT":
        return Recorded(source, "draft", "a draft order: never posted")
    if state == "CANCELED":
        return Recorded(source, "cancelled", "a cancelled order: no money moved")
    if state not in ("OPEN", "COMPLETED"):
        raise RecordError(
            "state", "missing: paid or not is unknown" if state is None else "not a Square order state"
        )
    mapper = _OrderMapper(order, context, cfg)
    tendered = mapper.tendered()
    if state == "OPEN" and not tendered:
        return Recorded(source, "unpaid", "an open order without payment: posted once paid")
    lines = mapper.lines()
    basket = mapper.basket(lines)
    lines += mapper.charges(len(lines))
    taxes = mapper.taxes()
    totals = canonical_totals(lines, basket, taxes, sign=1)
    rounding = mapper.check_total(lines, basket, totals)
    tenders = mapper.tenders(tendered, rounding)
    created = mapper.created
    ended = max([created, *(at for _, _, _, _, at in tendered if at is not None)])
    local = local_moment(context, mapper.store_id, created)
    member = text(order, "customer_id", "")
    return Imported(
        source,
        Transaction(
            store_id=mapper.store_id,
            register_id=cfg.register_id,
            business_day=local.date(),
            sequence=derived_sequence(local, order_id),
            kind=TransactionKind.SALE,
            currency=mapper.currency,
            started_at=created,
            ended_at=ended,
            customer=validated(
                Customer, "customer_id", {"member_id": member, "program": cfg.customer_program}
            )
            if member
            else None,
            lines=tuple(lines),
            modifiers=tuple(basket),
            taxes=tuple(taxes),
            tenders=tuple(tenders),
            totals=totals,
        ),
    )


Paid = tuple[str, str | None, Decimal, Decimal, datetime | None]  # path, type, amount, change, when


class _OrderMapper:
    """The parts of one order's sale; each method raises RecordError naming the input's field.
    Taxes are gathered per tax uid while lines and charges are read."""

    def __init__(self, order: JsonObject, context: ImportContext, cfg: SquareSettings) -> None:
        self.order, self.context, self.cfg = order, context, cfg
        total = obj(order, "total_money", "", required=True)
        self.currency = currency_code(total.get("currency"), "total_money.currency")
        location = text(order, "location_id", "")
        self.store_id = context.store_id(location) if location else cfg.store_id
        self.created = aware_time(order, "created_at", "", context, self.store_id)
        self.total = self.money(order, "total_money", "", required=True)
        self.tax_defs = {_uid(t, tp): (tp, t) for tp, t in objects(order, "taxes", "")}
        self.discount_defs = {text(d, "uid", dp) or "": d for dp, d in objects(order, "discounts", "")}
        self.applied: dict[str, list[Decimal]] = {}  # tax uid -> [taxable, amount]

    def money(self, parent: JsonObject, key: str, where: str, *, required: bool = False) -> Decimal:
        amount = minor_money(parent, key, where, self.currency)
        if amount is None:
            if required:
                raise RecordError(f"{where}.{key}" if where else key, "missing")
            return ZERO
        return amount

    def numbers(self, **amounts: Decimal) -> dict[str, str]:
        return {key: plain(value, self.currency) for key, value in amounts.items()}

    # lines

    def lines(self) -> list[LineItem]:
        return [
            self.item(n, path, li) for n, (path, li) in enumerate(objects(self.order, "line_items", ""), 1)
        ]

    def item(self, no: int, path: str, li: JsonObject) -> LineItem:
        qty = quantity_of(li.get("quantity"), f"{path}.quantity")
        unit = self.money(li, "base_price_money", path, required=True)
        for mp, mod in objects(li, "modifiers", path):
            unit += self.money(mod, "base_price_money", mp) * quantity_of(
                mod.get("quantity", "1"), f"{mp}.quantity"
            )
        gross = minor_money(li, "gross_sales_money", path, self.currency)
        extended = gross if gross is not None else round_to_minor(unit * qty, self.currency)
        modifiers = [self.discount(dp, d) for dp, d in objects(li, "applied_discounts", path)]
        net = extended - sum((m.amount for m in modifiers), ZERO)
        codes, additive = self.line_taxes(li, path, net)
        stated = minor_money(li, "total_money", path, self.currency)
        charges = self.money(li, "total_service_charge_money", path)
        expected = net + additive + charges
        if stated is not None and stated != expected:
            raise RecordError(
                f"{path}.total_money",
                "gross sales - discounts + tax + service charges do not add up to the line's total_money",
                self.numbers(
                    gross_sales=extended,
                    discounts=extended - net,
                    tax=additive,
                    service_charges=charges,
                    computed=expected,
                    total_money=stated,
                ),
            )
        item_type = text(li, "item_type", path)
        name, variation = text(li, "name", path) or "", text(li, "variation_name", path)
        return validated(
            LineItem,
            path,
            {
                "line_no": no,
                "sku": text(li, "catalog_object_id", path) or self.cfg.custom_sku,
                "description": (f"{name} - {variation}" if variation else name)[:200],
                "quantity": qty,
                "unit_price": unit,
                "extended_amount": extended,
                "item_type": ItemType.NON_STOCK if item_type in _NON_STOCK else ItemType.STOCK,
                "tax_codes": codes,
                "modifiers": modifiers,
            },
        )

    def discount(self, where: str, applied: JsonObject) -> PriceModifier:
        amount = self.money(applied, "applied_money", where, required=True)
        if amount < 0:
            raise RecordError(f"{where}.applied_money.amount", "negative")
        found = self.discount_defs.get(text(applied, "discount_uid", where) or "") or {}
        name = text(found, "name", "") or "discount"
        promotion = ident_or_none(text(found, "catalog_object_id", "") or text(found, "uid", ""))
        return PriceModifier(amount=amount, reason=name[:64], promotion_id=promotion)

    def line_taxes(self, source: JsonObject, where: str, net: Decimal) -> tuple[list[str], Decimal]:
        """The tax codes a line (or charge) carries and its additive tax; gathers per tax uid."""
        codes: list[str] = []
        additive = ZERO
        for ap, applied in objects(source, "applied_taxes", where):
            uid = text(applied, "tax_uid", ap) or ""
            if uid not in self.tax_defs:
                raise RecordError(f"{ap}.tax_uid", "names no tax of the order")
            amount = self.money(applied, "applied_money", ap, required=True)
            tp, tax = self.tax_defs[uid]
            entry = self.applied.setdefault(uid, [ZERO, ZERO])
            entry[0] += net
            entry[1] += amount
            codes.append(self.code(tax, tp))
            additive += amount if self.inclusive(tax, tp) is False else ZERO
        return list(dict.fromkeys(codes)), additive

    def code(self, tax: JsonObject, where: str) -> str:
        return tax_code(self.context, self.store_id, text(tax, "name", where) or "tax")

    @staticmethod
    def inclusive(tax: JsonObject, where: str) -> bool:
        kind = text(tax, "type", where)
        if kind not in ("ADDITIVE", "INCLUSIVE"):
            raise RecordError(f"{where}.type", "neither ADDITIVE nor INCLUSIVE")
        return kind == "INCLUSIVE"

    def basket(self, lines: list[LineItem]) -> list[PriceModifier]:
        """The order's discount not applied to its lines: one basket modifier."""
        total = self.money(self.order, "total_discount_money", "")
        applied = sum((m.amount for line in lines for m in line.modifiers), ZERO)
        if total < applied:
            raise RecordError(
                "total_discount_money",
                "less than the discounts applied to the lines",
                self.numbers(line_discounts=applied, total_discount_money=total),
            )
        return [PriceModifier(amount=total - applied, reason="order discount")] if total > applied else []

    def charges(self, after: int) -> list[LineItem]:
        """Service charges, then the tip: service lines after the items."""
        found: list[LineItem] = []
        for sp, charge in objects(self.order, "service_charges", ""):
            amount = minor_money(charge, "applied_money", sp, self.currency)
            amount = amount if amount is not None else self.money(charge, "amount_money", sp, required=True)
            codes, _ = self.line_taxes(charge, sp, amount)
            label = text(charge, "name", sp) or "service charge"
            found.append(
                self.service(after + len(found) + 1, sp, self.cfg.service_charge_sku, label, amount, codes)
            )
        tip = self.money(self.order, "total_tip_money", "")
        if tip:
            found.append(
                self.service(after + len(found) + 1, "total_tip_money", self.cfg.tip_sku, "tip", tip, [])
            )
        return found

    def service(
        self, no: int, where: str, sku: str, label: str, amount: Decimal, codes: list[str]
    ) -> LineItem:
        return validated(
            LineItem,
            where,
            {
                "line_no": no,
                "sku": sku,
                "description": label[:200],
                "quantity": Decimal(1),
                "unit_price": amount,
                "extended_amount": amount,
                "item_type": ItemType.SERVICE,
                "tax_codes": codes,
            },
        )

    def taxes(self) -> list[TaxLine]:
        found: list[TaxLine] = []
        for uid, (tp, tax) in self.tax_defs.items():
            taxable, amount = self.applied.get(uid, [ZERO, ZERO])
            stated = minor_money(tax, "applied_money", tp, self.currency)
            if stated is not None and stated != amount:
                raise RecordError(
                    f"{tp}.applied_money",
                    "the lines' applied taxes do not add up to the tax's applied_money",
                    self.numbers(applied_taxes=amount, applied_money=stated),
                )
            rate = fraction(tax.get("percentage"), f"{tp}.percentage", percent=True)
            found.append(
                validated(
                    TaxLine,
                    tp,
                    {
                        "code": self.code(tax, tp),
                        "rate": rate,
                        "taxable_amount": taxable,
                        "amount": amount,
                        "inclusive": self.inclusive(tax, tp),
                    },
                )
            )
        total_tax = self.money(self.order, "total_tax_money", "")
        tax_sum = sum((t.amount for t in found), ZERO)
        if tax_sum != total_tax:
            raise RecordError(
                "total_tax_money",
                "the taxes do not add up to total_tax_money",
                self.numbers(taxes=tax_sum, total_tax_money=total_tax),
            )
        return found

    # tenders

    def tendered(self) -> list[Paid]:
        """The tenders that count (not voided or failed card payments), read but not yet mapped."""
        paid: list[Paid] = []
        for tp, tender in objects(self.order, "tenders", ""):
            if text(obj(tender, "card_details", tp), "status", f"{tp}.card_details") in _UNCOUNTED_CARD:
                continue
            amount = self.money(tender, "amount_money", tp, required=True)
            change = ZERO
            cash = obj(tender, "cash_details", tp)
            given = minor_money(cash, "buyer_tendered_money", f"{tp}.cash_details", self.currency)
            if given is not None:
                change = self.money(cash, "change_back_money", f"{tp}.cash_details")
                if given - change != amount:
                    raise RecordError(
                        f"{tp}.cash_details",
                        "money given - change does not equal the tender's amount",
                        self.numbers(buyer_tendered=given, change_back=change, amount=amount),
                    )
                amount = given
            when = (
                aware_time(tender, "created_at", tp, self.context, self.store_id)
                if tender.get("created_at")
                else None
            )
            paid.append((tp, text(tender, "type", tp), amount, change, when))
        return paid

    def check_total(self, lines: list[LineItem], basket: list[PriceModifier], totals: Totals) -> Decimal:
        """The cash rounding, once the sale's parts are known to add up to ``total_money``."""
        rounding = self.money(
            obj(self.order, "rounding_adjustment", ""), "amount_money", "rounding_adjustment"
        )
        if totals.grand_total + rounding != self.total:
            discounts = sum((m.amount for line in lines for m in line.modifiers), ZERO)
            raise RecordError(
                "total_money",
                "lines - discounts + tax + charges + tip do not add up to total_money",
                self.numbers(
                    lines=sum((line.extended_amount for line in lines), ZERO),
                    discounts=discounts + sum((m.amount for m in basket), ZERO),
                    tax=totals.grand_total - totals.subtotal,
                    rounding=rounding,
                    grand_total=totals.grand_total,
                    total_money=self.total,
                ),
            )
        return rounding

    def tenders(self, paid: list[Paid], rounding: Decimal) -> list[Tender]:
        tendered = sum((amount - change for _, _, amount, change, _ in paid), ZERO)
        if tendered != self.total:
            raise RecordError(
                "tenders",
                "the tenders do not add up to total_money",
                self.numbers(tenders=tendered, total_money=self.total),
            )
        tenders = [
            Tender(
                kind=self.context.tender_kind(self.store_id, [kind], f"{tp}.type"),
                amount=amount,
                change=change,
            )
            for tp, kind, amount, change, _ in paid
        ]
        if rounding:
            tenders.append(Tender(kind=TenderKind.ROUNDING, amount=-rounding))
        return tenders


def _uid(item: JsonObject, where: str) -> str:
    uid = text(item, "uid", where, required=True)
    assert uid is not None
    return uid


# --------------------------------------------------------------------------- refunds


def _refund(refund: JsonObject, source: SourceRef, context: ImportContext, cfg: SquareSettings) -> Parsed:
    refuse_card_numbers(refund, "")
    refund_id = text(refund, "id", "", required=True)
    assert refund_id is not None
    status = text(refund, "status", "")
    if status == "PENDING":
        return Recorded(source, "pending", "a pending refund: posted once COMPLETED")
    if status in ("REJECTED", "FAILED"):
        return Recorded(source, "failed", f"a {status.lower()} refund: no money moved")
    if status != "COMPLETED":
        raise RecordError("status", "missing" if status is None else "not a Square refund status")
    currency = currency_code(
        obj(refund, "amount_money", "", required=True).get("currency"), "amount_money.currency"
    )
    amount = minor_money(refund, "amount_money", "", currency)
    if amount is None or amount <= 0:
        raise RecordError("amount_money.amount", "not a positive amount")
    location = text(refund, "location_id", "")
    store_id = context.store_id(location) if location else cfg.store_id
    created = aware_time(refund, "created_at", "", context, store_id)
    local = local_moment(context, store_id, created)
    destination = text(refund, "destination_type", "")
    if destination is None:
        raise RecordError("destination_type", "missing: how the money went back is unknown")
    line = validated(
        LineItem,
        "amount_money",
        {
            "line_no": 1,
            "action": LineAction.RETURN,
            "sku": cfg.refund_sku,
            "description": "refund",
            "quantity": Decimal(1),
            "unit_price": amount,
            "extended_amount": amount,
            "item_type": ItemType.NON_STOCK,
            "restock": False,
        },
    )
    return Imported(
        source,
        Transaction(
            store_id=store_id,
            register_id=cfg.register_id,
            business_day=local.date(),
            sequence=derived_sequence(local, refund_id),
            kind=TransactionKind.RETURN,
            currency=currency,
            ended_at=created,
            lines=(line,),
            tenders=(
                Tender(kind=context.tender_kind(store_id, [destination], "destination_type"), amount=-amount),
            ),
            totals=Totals(subtotal=-amount, tax=ZERO, grand_total=-amount),
        ),
    )
