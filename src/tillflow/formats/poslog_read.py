"""One ARTS POSLog `<Transaction>` (2.x or 6.0) as one parser record.

Elements are matched by local name in the ARTS namespace (or in none). Elements of any other
namespace are vendor extensions, ignored unless read on purpose:

- NCR ACS (``acs:``): ``weightItem`` on a weighed line, ``OperatorSequence`` and ``Itemizers
  TaxN`` on a sale line, the reward fields of a ``LoyaltyReward``, ``TaxID`` on a tax,
  ``TenderDescription`` on a tender, ``LoyaltyMembership`` for the customer;
- ROQQIO (``fu:``): ``PaymentTypeDescription`` and ``PaymentTypeExternalId`` on a tender;
- tillflow's own (`TF_NS`, written by `export`): tender reference and points, card scheme.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

from lxml import etree
from pydantic import ValidationError

from tillflow.formats.poslog_fields import (
    ONE,
    ZERO,
    Element,
    Money,
    Parts,
    attributes,
    date_of,
    datetime_of,
    decimal_of,
    flag,
    ident,
    line_no_of,
    parts_of,
    quantity_of,
    sequence_of,
    text_of,
    vendor_attr,
    vendor_attrs,
)
from tillflow.formats.poslog_totals import Body, Line, Reward, Row, TaxPart, effective_rate, settle
from tillflow.formats.records import (
    ImportContext,
    Imported,
    Parsed,
    Quarantined,
    Recorded,
    RecordError,
    SourceRef,
    quarantine,
)
from tillflow.formats.safety import CARD_NUMBER_REASON, first_card_number_field, looks_like_card_number
from tillflow.formats.xmlsafe import local_name
from tillflow.model import MINOR_UNITS, LineAction, TenderKind, Transaction

if TYPE_CHECKING:
    from tillflow.formats.settings import PoslogSettings

_PRICE = Decimal("0.000001")
_HUNDRED = Decimal(100)
_SHOWN = re.compile(r"[A-Za-z0-9_.\-]{1,12}")  # short enough never to be a card number
_DIGIT_RUN = re.compile(r"[0-9][0-9 -]{11,}[0-9]")  # where a card number could be
_KEBAB = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_UOM = {
    "EA": "EA", "EACH": "EA", "PCE": "EA", "PCS": "EA", "PC": "EA", "ST": "EA", "C62": "EA", "H87": "EA",
    "UNIT": "EA", "KG": "KG", "KGM": "KG", "G": "G", "GRM": "G", "GR": "G", "LB": "LB", "LBR": "LB",
    "L": "L", "LTR": "L", "M": "M", "MTR": "M",
}  # fmt: skip
_CONTROL_KINDS = {"OperatorSignOn": "sign-on", "OperatorSignOff": "sign-off", "NoSale": "no-sale"}
_CANCELLED = frozenset({"canceled", "cancelled", "voided", "aborted"})
_SUSPENDED = frozenset({"suspended", "suspendeddeleted"})
_POST_VOID_LINK = frozenset({"postvoid", "postvoided", "void", "voided"})
_POST_VOID_STATUS = frozenset({"postvoid", "postvoided"})
_ITEM_TYPES = {"stock": "stock", "service": "service"}
_TOTALS = ("TransactionGrandAmount", "TransactionTaxAmount", "TransactionNetAmount")


class TransactionReader:
    """Maps the `<Transaction>` elements of one input to records.

    Where ARTS leaves room, the NCR and ROQQIO samples decided:

    - A LineItem with VoidFlag="true" is left out. NCR logs a line void as a negated copy of
      the line (negative quantity and amount) and leaves the original unflagged, so such a copy
      also cancels the latest earlier line of the same item, quantity and amount.
    - A Sale with a negative quantity or amount is a returned line (ROQQIO returns, NCR negative
      items such as a bottle refund), as is any Return; canonical line amounts are positive.
    - ExtendedAmount is what was charged. When quantity x unit price does not give it (NCR's
      RegularSalesUnitPrice is often the price of a pricing quantity, "4 for 5.00", or the
      shelf price under a label price) the unit price is ExtendedAmount / quantity.
    - NCR loyalty rewards: only RewardCategory Monetary reduces a price, and only the summarized
      entry counts (the detailed entries break the same amount down). Item-level rewards reduce
      the line they name by operator sequence, others the basket; reason "loyalty". Points,
      messages and custom offers are left out.
    - A tax is inclusive when it says so (TaxIncludedInPriceFlag), else when its TaxType is one of
      `inclusive_tax_types`, else when a line says so; otherwise exclusive (US sales tax).
    - Change is the tender's TenderChange (ARTS 6) or a separate change line (NCR: a negative
      tender whose TenderChange equals it; ROQQIO: a TenderChange line item) added to the latest
      tender of its kind; a non-zero Rounding is a tender of kind rounding.
    - A weighed NCR line (acs:weightItem) says no unit: `weight_uom`, by default pounds in USD
      and kilograms otherwise.
    """

    def __init__(self, context: ImportContext, settings: PoslogSettings, name: str) -> None:
        self._context = context
        self._settings = settings
        self._name = name
        self._item_fields = frozenset(settings.item_fields)
        self._tender_fields = tuple(settings.vendor_tender_fields)
        self._tender_field_set = frozenset(settings.vendor_tender_fields)
        self._inclusive_types = frozenset(t.casefold() for t in settings.inclusive_tax_types)

    def read(self, index: int, tx: Element) -> Parsed:
        head = parts_of(tx)
        source = SourceRef(self._name, index, _locator(head))
        hit = _card_field(tx, self._item_fields)
        if hit is not None:
            return Quarantined(source, hit, CARD_NUMBER_REASON)
        try:
            return self._record(source, tx, head)
        except (RecordError, ValidationError) as exc:
            return quarantine(source, exc)

    def _record(self, source: SourceRef, tx: Element, head: Parts) -> Parsed:
        control = head.get("ControlTransaction")
        if control is not None:
            return _control(source, control)
        if flag(tx.get("TrainingModeFlag")) or flag(head.text("TrainingModeFlag")):
            return Recorded(source, "training", "a training-mode transaction: nothing to post")
        if flag(tx.get("CancelFlag")) or flag(head.text("CancelFlag")):
            return Recorded(source, "cancelled", "cancelled before completion: nothing to post")
        retail = head.get("RetailTransaction")
        if retail is None:
            other = next((n for n in head.names() if n.endswith("Transaction") and n != "Transaction"), None)
            if other is not None:
                return Recorded(source, _kebab(other.removesuffix("Transaction")), f"a {other}: not posted")
            raise RecordError("Transaction", "holds no RetailTransaction or ControlTransaction")
        status = (retail.get("TransactionStatus") or "").casefold()
        if status in _CANCELLED:
            return Recorded(source, "cancelled", "cancelled before completion: nothing to post")
        if status in _SUSPENDED:
            return Recorded(source, "suspended", "suspended: posted once resumed and completed")
        return self._retail(source, head, retail, status)

    def _retail(self, source: SourceRef, head: Parts, retail: Element, status: str) -> Parsed:
        context = self._context
        rt = head.of(retail)
        store_id = self._store(head)
        ended = head.text("EndDateTime") or head.text("ReceiptDateTime") or rt.text("ReceiptDateTime")
        if not ended:
            raise RecordError("EndDateTime", "missing: the transaction has no end time")
        ended_at = context.local_time(store_id, datetime_of(ended, "EndDateTime"))
        begun = head.text("BeginDateTime")
        operator = head.text("OperatorID")
        currency = self._currency(store_id, head, rt)
        row: Row = {
            "store_id": store_id,
            "register_id": ident(head.text("WorkstationID"), "WorkstationID", "register id"),
            "business_day": date_of(head.get("BusinessDayDate"), "BusinessDayDate")
            or ended_at.astimezone(context.timezone(store_id)).date(),
            "sequence": sequence_of(head.text("SequenceNumber"), "SequenceNumber"),
            "currency": currency,
            "started_at": context.local_time(store_id, datetime_of(begun, "BeginDateTime"))
            if begun
            else None,
            "ended_at": ended_at,
            "operator_id": ident(operator, "OperatorID", "operator id") if operator else None,
        }
        money = Money(currency)
        totals: dict[str, Decimal] = {}
        for total in rt.all("Total"):
            kind = total.get("TotalType") or ""
            if kind in _TOTALS and kind not in totals:
                totals[kind] = money(total, f"Total[{kind}]")
        voided = self._post_void(rt, status)
        body = self._body(store_id, rt, money)
        if voided is None and not body.lines:
            if totals.get("TransactionGrandAmount", ZERO) == 0 and not body.tenders:
                return Recorded(source, "empty", "no item lines and nothing paid: nothing to post")
            raise RecordError("RetailTransaction", "has no item lines (all voided?) yet money changed hands")
        row["customer"] = body.customer or _customer(rt)
        code = ident(context.resolved(store_id).tax_code(self._settings.summary_tax_code), "Tax", "tax code")
        settle(row, body, totals, voided, code)
        return Imported(source, Transaction.model_validate(row))

    # --- identity ---

    def _store(self, head: Parts) -> str:
        raw, where = head.text("RetailStoreID"), "RetailStoreID"
        if not raw and (unit := head.get("BusinessUnit")) is not None:
            raw, where = _unit_id(unit), "BusinessUnit.UnitID"
        if not raw:
            raise RecordError("RetailStoreID", "missing: neither RetailStoreID nor BusinessUnit/UnitID")
        return ident(self._context.store_id(raw), where, "store id")

    def _currency(self, store_id: str, head: Parts, rt: Parts) -> str:
        sent = head.text("CurrencyCode")
        if not sent:
            codes = (t.get("CurrencyCode") or t.get("Currency") for t in rt.all("Total"))
            sent = next((c for c in codes if c and c != "XXX"), "")
        currency = self._context.currency(store_id, sent or None)
        if currency not in MINOR_UNITS:
            raise RecordError("CurrencyCode", f"unknown currency {currency[:8]!r}")
        return currency

    def _post_void(self, rt: Parts, status: str) -> Row | None:
        """The transaction a post-void cancels, else None."""
        link = rt.get("TransactionLink")
        linked = link is not None and (link.get("ReasonCode") or "").casefold() in _POST_VOID_LINK
        if not linked and status not in _POST_VOID_STATUS:
            return None
        ref = self._link(link, "TransactionLink") if link is not None else None
        if ref is None:
            raise RecordError("TransactionLink", "a post-void that does not name the transaction it voids")
        return ref

    def _link(self, link: Element, where: str) -> Row | None:
        """A TransactionLink (2.x or 6.0) as a TransactionRef row; None when it says too little."""
        parts = parts_of(link)
        store = parts.text("RetailStoreID")
        if not store and (unit := parts.get("BusinessUnit")) is not None:
            store = _unit_id(unit)
        register, sequence = parts.text("WorkstationID"), parts.text("SequenceNumber")
        day = date_of(parts.get("BusinessDayDate"), f"{where}.BusinessDayDate")
        if not (store and register and sequence and day):
            return None
        return {
            "store_id": ident(self._context.store_id(store), f"{where}.RetailStoreID", "store id"),
            "register_id": ident(register, f"{where}.WorkstationID", "register id"),
            "business_day": day,
            "sequence": sequence_of(sequence, f"{where}.SequenceNumber"),
        }

    # --- line items ---

    def _body(self, store_id: str, rt: Parts, money: Money) -> Body:
        body = Body()
        tax_code = self._context.resolved(store_id).tax_code
        weighed = self._settings.weight_uom or ("LB" if money.currency == "USD" else "KG")
        for position, item in enumerate(rt.all("LineItem"), 1):
            parts = rt.of(item)
            where = f"LineItem[{position}]"
            void = flag(item.get("VoidFlag"))
            name, element = "Sale", parts.get("Sale")
            if element is None:
                name, element = "Return", parts.get("Return")
            if element is not None:
                line_no = parts.text("SequenceNumber") or str(position)
                line = self._line(store_id, item, name, parts.of(element), line_no, money, weighed, where)
                if not void:
                    body.lines.append(line)
                elif line.signed_quantity < 0 or line.signed_amount < 0:
                    _cancel(body.lines, line, where)
            elif void:
                continue
            elif (el := parts.get("Tender")) is not None:
                self._tender(store_id, el, money, f"{where}.Tender", body.tenders)
            elif (el := parts.get("TenderChange")) is not None:
                self._change(store_id, el, money, f"{where}.TenderChange", body.tenders)
            elif (el := parts.get("Tax")) is not None:
                body.taxes.append(self._tax(el, money, f"{where}.Tax", tax_code))
            elif (el := parts.get("LoyaltyReward")) is not None:
                reward = _reward(el, money, f"{where}.LoyaltyReward")
                if reward is not None:
                    body.rewards.append(reward)
            elif (el := parts.get("Discount")) is not None or (
                el := parts.get("RetailPriceModifier")
            ) is not None:
                body.modifiers.append(_modifier(el, money, f"{where}.{local_name(el.tag)}", "discount"))
            elif (el := parts.vendor("LoyaltyMembership")) is not None and body.customer is None:
                membership = parts_of(el)
                member = membership.vendor_text("MembershipID") or membership.vendor_text("LoyaltyID")
                if member:
                    body.customer = {"member_id": ident(member, f"{where}.MembershipID", "member id")}
        return body

    def _line(
        self,
        store_id: str,
        item: Element,
        name: str,
        parts: Parts,
        line_no: str,
        money: Money,
        weighed: str,
        where: str,
    ) -> Line:
        """A Sale or Return (`name`) element, its children in `parts`, as a line."""
        el = parts.element
        where = f"{where}.{name}"
        sku = parts.text("ItemID")
        if not sku and (identity := parts.get("POSIdentity")) is not None:
            sku = parts_of(identity).text("POSItemID")
        if not sku:
            raise RecordError(f"{where}.ItemID", "missing: the line names no item")
        qty_el = parts.get("Quantity")
        quantity = quantity_of(qty_el, f"{where}.Quantity") if qty_el is not None else ONE
        extended = money.child(parts, "ExtendedAmount", where)
        if extended is None:
            raise RecordError(f"{where}.ExtendedAmount", "missing: the line has no amount")
        returned = name == "Return" or quantity < 0 or extended < 0
        signed_quantity, signed_amount = quantity, extended
        quantity, extended = abs(quantity), abs(extended)
        if quantity == 0:
            raise RecordError(f"{where}.Quantity", "quantity is zero")
        price_el = parts.get("ActualSalesUnitPrice")
        if price_el is None:
            price_el = parts.get("RegularSalesUnitPrice")
        price = money.price(price_el, f"{where}.{local_name(price_el.tag)}") if price_el is not None else None
        if price is None or abs(quantity * price - extended) >= money.quantum:
            price = _unit_price(extended, quantity, money.quantum)
        item_type = _ITEM_TYPES.get((el.get("ItemType") or "stock").casefold(), "non_stock")
        resolved = self._context.resolved(store_id)
        taxes, tax_codes = self._line_taxes(parts, money, where, resolved.tax_code)
        row: Row = {
            "line_no": line_no_of(line_no, f"{where}.SequenceNumber"),
            "action": LineAction.RETURN if returned else LineAction.SALE,
            "sku": ident(sku, f"{where}.ItemID", "item id"),
            "description": _description(parts),
            "quantity": quantity,
            "uom": _uom(qty_el, item, weighed, where),
            "unit_price": price,
            "extended_amount": extended,
            "department": _department(parts, resolved.department, where),
            "item_type": item_type,
            "tax_codes": tax_codes,
            "modifiers": _line_modifiers(parts, money, where),
        }
        if returned:
            row["restock"] = _restock(parts, item_type)
            link = parts.get("TransactionLink")
            if link is not None:
                row["original"] = self._original(link, f"{where}.TransactionLink")
        included = parts.text("TaxIncludedInPriceFlag")
        inclusive = flag(included) if included else None
        return Line(
            row, sku, signed_quantity, signed_amount, parts.vendor_text("OperatorSequence"), inclusive, taxes
        )

    def _original(self, link: Element, where: str) -> Row | None:
        ref = self._link(link, where)
        line = parts_of(link).text("LineItemSequenceNumber")
        if ref is None or not line:
            return None
        return {"transaction": ref, "line_no": line_no_of(line, f"{where}.LineItemSequenceNumber")}

    def _line_taxes(
        self, parts: Parts, money: Money, where: str, tax_code: Callable[[str], str]
    ) -> tuple[list[TaxPart], list[str]]:
        """A line's tax codes (its Tax elements, NCR's Itemizers TaxN) and the taxes with amounts."""
        taxes: list[TaxPart] = []
        codes: list[str] = []
        for i, tax in enumerate(parts.all("Tax"), 1):
            at = f"{where}.Tax[{i}]"
            tp = parts_of(tax)
            code = ident(tax_code(_tax_code(tp, tax, self._settings.summary_tax_code)), at, "tax code")
            if code not in codes:
                codes.append(code)
            amount = money.child(tp, "Amount", at)
            if amount is not None:
                taxable = money.child(tp, "TaxableAmount", at) or ZERO
                taxes.append((code, taxable, amount, _percent(tp, at)))
        itemizers = parts.vendor("Itemizers")
        if itemizers is not None:
            for key, value in attributes(itemizers):
                if key.startswith("Tax") and key[3:].isdecimal() and flag(value):
                    code = ident(tax_code(key[3:]), f"{where}.Itemizers", "tax code")
                    if code not in codes:
                        codes.append(code)
        return taxes, codes

    # --- tax and tender ---

    def _tax(self, el: Element, money: Money, where: str, tax_code: Callable[[str], str]) -> Row:
        parts = parts_of(el)
        amount = money.child(parts, "Amount", where)
        if amount is None:
            raise RecordError(f"{where}.Amount", "missing: a tax without an amount")
        taxable = money.child(parts, "TaxableAmount", where)
        if taxable is None:
            raise RecordError(f"{where}.TaxableAmount", "missing: a tax without a taxable amount")
        said = el.get("TaxIncludedInPriceFlag") or parts.text("TaxIncludedInPriceFlag")
        inclusive: bool | None = flag(said) if said else None
        if inclusive is None and (el.get("TaxType") or "").casefold() in self._inclusive_types:
            inclusive = True
        rate = _percent(parts, where)
        code = tax_code(_tax_code(parts, el, self._settings.summary_tax_code))
        return {
            "code": ident(code, where, "tax code"),
            "rate": rate if rate is not None else effective_rate(amount, taxable),
            "taxable_amount": taxable,
            "amount": amount,
            "inclusive": inclusive,  # None: as the lines say (see settle)
        }

    def _tender(self, store_id: str, el: Element, money: Money, where: str, tenders: list[Row]) -> None:
        parts = parts_of(el)
        kind = self._context.tender_kind(store_id, self._tender_codes(el, parts), where)
        amount = money.child(parts, "Amount", where)
        if amount is None:
            raise RecordError(f"{where}.Amount", "missing: a tender without an amount")
        if (el.get("TypeCode") or "").casefold() == "refund":
            amount = -abs(amount)
        change = ZERO
        if (change_el := parts.get("TenderChange")) is not None:
            given = money.child(parts_of(change_el), "Amount", f"{where}.TenderChange")
            if given is None:
                raise RecordError(f"{where}.TenderChange.Amount", "missing: change without an amount")
            if given >= 0:
                change = given
            elif amount == given:  # NCR: a change line, its amount the (negative) change itself
                _add_change(tenders, kind, -given)
                _rounding(parts, money, where, tenders)
                return
            else:
                change, amount = -given, amount - given
        row: Row = {"kind": kind, "amount": amount, "change": change}
        if kind is TenderKind.CARD:
            row["card"] = _card(parts)
        if reference := parts.tf_text("Reference"):
            row["reference"] = reference[:64]
        if points := parts.tf_text("Points"):
            row["points"] = sequence_of(points, f"{where}.Points")
        tenders.append(row)
        _rounding(parts, money, where, tenders)

    def _change(self, store_id: str, el: Element, money: Money, where: str, tenders: list[Row]) -> None:
        """A change line item (ROQQIO: a TenderChange holding a TenderChange with the amount)."""
        parts = parts_of(el)
        inner_el = parts.get("TenderChange")
        source, inner = (inner_el, parts_of(inner_el)) if inner_el is not None else (el, parts)
        kind = self._context.tender_kind(store_id, self._tender_codes(source, inner), where)
        amount = money.child(inner, "Amount", where)
        if amount is None:
            raise RecordError(f"{where}.Amount", "missing: change without an amount")
        _add_change(tenders, kind, abs(amount))
        _rounding(parts, money, where, tenders)

    def _tender_codes(self, el: Element, parts: Parts) -> list[str | None]:
        """The codes naming a tender, most specific first: TenderID, the vendor's, TenderType."""
        fields = self._tender_fields
        vendor = [*vendor_attrs(el, self._tender_field_set), *parts.vendor_texts(fields)]
        return [parts.text("TenderID") or None, *vendor, el.get("TenderType")]


# --- pure helpers of the mapping --------------------------------------------------------------


def _locator(head: Parts) -> str:
    store = head.text("RetailStoreID")
    if not store and (unit := head.get("BusinessUnit")) is not None:
        store = _unit_id(unit)
    register, sequence = head.text("WorkstationID"), head.text("SequenceNumber")
    return f"store {_shown(store)} register {_shown(register)} sequence {_shown(sequence)}"


def _shown(text: str) -> str:
    return text if _SHOWN.fullmatch(text) else "?"


def _kebab(name: str) -> str:
    return _KEBAB.sub("-", name).lower()


def _unit_id(unit: Element) -> str:
    return parts_of(unit).text("UnitID") or text_of(unit)


def _byte_classes() -> bytes:
    """A translation table putting each byte in its class for `_CARD_START`: "a" a digit a card
    number may start with (2-6, the first digit of every payment network), "b" another digit,
    "s" a separator (space or dash), "x" anything else."""
    table = bytearray(b"x" * 256)
    for digit in b"0123456789":
        table[digit] = ord("a") if digit in b"23456" else ord("b")
    table[ord(" ")] = table[ord("-")] = ord("s")
    return bytes(table)


_CLASSES = _byte_classes()
# where a card number could start in the classes: a network's first digit after a non-digit, then
# 12 more digits with single separators (anchored on the rarer "a" for a fast search)
_CARD_START = re.compile(rb"a(?<=[xs]a)(?:s?[ab]){12}")


def _card_field(tx: Element, item_fields: frozenset[str]) -> str | None:
    """Where in `tx` a payment card number sits (an element path), else None.

    The serialized transaction holds every text, attribute value and comment, each delimited by
    markup, so every run of 13 or more digits (with single spaces or dashes) of any value is a
    run of it: checking those runs rules out almost every transaction in one pass of C code. Only
    one with a candidate is walked element by element, where GTINs in item fields are no cards.

    Before that, most transactions are ruled out by a coarser test of the same runs on the UTF-8
    serialization, one byte translation and one regular-expression search: no card number can
    hide without 13 digits (with single separators) after a non-digit, the first of them 2-6."""
    if _CARD_START.search(etree.tostring(tx, encoding="utf-8").translate(_CLASSES)) is None:
        return None
    serialized = etree.tostring(tx, encoding="unicode")
    if not any(_may_be_card(run.group()) for run in _DIGIT_RUN.finditer(serialized)):
        return None
    last: list[Element] = [tx]

    def values() -> Iterator[tuple[str, str]]:
        for el in tx.iter():
            tag = el.tag
            name = local_name(tag) if type(tag) is str else "comment()"
            if el.text:
                last[0] = el
                yield name, el.text
            if type(tag) is str:
                for key, value in attributes(el):
                    last[0] = el
                    yield f"{name}@{local_name(key)}", value
            if el.tail and el is not tx:
                last[0] = el
                yield "tail()", el.tail

    hit = first_card_number_field(values(), item_fields)
    if hit is None:
        return None
    attribute = hit[hit.index("@") :] if "@" in hit else ""
    return _path(tx, last[0]) + attribute


def _may_be_card(run: str) -> bool:
    """Whether `looks_like_card_number` could find a card in a run of digits, spaces and dashes:
    an unbroken run of digits is one candidate, which starts like a card (2-6) and has at most 19
    digits (NCR's 14-digit GTINs start with 0)."""
    if run.isdigit() and (len(run) > 19 or run[0] not in "23456"):
        return False
    return looks_like_card_number(run)


def _path(tx: Element, el: Element) -> str:
    steps: list[str] = []
    node: Element | None = el
    while node is not None and node is not tx:
        parent = node.getparent()
        tag = node.tag
        name = local_name(tag) if type(tag) is str else "comment()"
        if parent is not None and type(tag) is str:
            same = [c for c in parent if c.tag == tag]
            if len(same) > 1:
                name = f"{name}[{same.index(node) + 1}]"
        steps.append(name)
        node = parent
    return ".".join(["Transaction", *reversed(steps)])


def _control(source: SourceRef, control: Element) -> Recorded:
    parts = parts_of(control)
    reason = parts.text("ReasonCode")
    name = next((n for n in parts.names() if n not in ("ReasonCode", "SequenceNumber")), "")
    kind = _CONTROL_KINDS.get(name) or (_kebab(name) if name else "control")
    return Recorded(source, kind, (name or "ControlTransaction") + (f": {reason[:80]}" if reason else ""))


def _cancel(kept: list[Line], void: Line, where: str) -> None:
    """An NCR line void: drop the latest kept line it negates."""
    for i in range(len(kept) - 1, -1, -1):
        line = kept[i]
        if (
            line.sku == void.sku
            and line.signed_quantity == -void.signed_quantity
            and line.signed_amount == -void.signed_amount
        ):
            del kept[i]
            return
    raise RecordError(f"{where}.VoidFlag", "voids a line that is not in the transaction")


def _unit_price(extended: Decimal, quantity: Decimal, quantum: Decimal) -> Decimal:
    """ExtendedAmount / quantity, to six decimals (written without needless zeros)."""
    price = (extended / quantity).quantize(_PRICE)
    exact = price.quantize(quantum)
    return exact if exact == price else price.normalize()


def _uom(qty_el: Element | None, item: Element, weighed: str, where: str) -> str:
    sent = qty_el.get("UnitOfMeasureCode") if qty_el is not None else None
    if not sent:
        return weighed if flag(vendor_attr(item, "weightItem")) else "EA"
    code = _UOM.get(sent.strip().upper())
    if code is None:
        raise RecordError(f"{where}.Quantity", f"unit of measure {sent[:12]!r} is not supported")
    return code


def _description(parts: Parts) -> str:
    text = parts.text("Description")
    if not text and (item := parts.get("ItemID")) is not None:
        text = (item.get("Name") or "").strip()
    return text[:200]


def _department(parts: Parts, resolve: Callable[[str | None], str | None], where: str) -> str | None:
    chosen = parts.get("MerchandiseHierarchy")  # the department level when there are several
    if chosen is not None and chosen.get("Level") != "Department":
        levels = parts.all("MerchandiseHierarchy")
        chosen = next((el for el in levels if el.get("Level") == "Department"), levels[0])
    hint = text_of(chosen) if chosen is not None else ""
    department = resolve(hint) if hint else None
    return ident(department, f"{where}.MerchandiseHierarchy", "department") if department else None


def _restock(parts: Parts, item_type: str) -> bool:
    disposition = parts.text("Disposition")
    if disposition:
        return disposition.casefold() == "returntostock"
    return item_type == "stock"


def _modifier(el: Element, money: Money, where: str, default_reason: str) -> Row:
    parts = parts_of(el)
    amount_el = parts.get("Amount")
    if amount_el is None:
        raise RecordError(f"{where}.Amount", "missing: a price modifier without an amount")
    if (amount_el.get("Action") or "Subtract").casefold() not in ("subtract", "discount"):
        raise RecordError(f"{where}.Amount", "a price modifier that adds to the price is not supported")
    promotion = parts.text("PromotionID")
    reason = parts.text("ReasonCode") or ("promotion" if promotion else default_reason)
    row: Row = {"amount": abs(money(amount_el, f"{where}.Amount")), "reason": reason[:64]}
    if promotion:
        row["promotion_id"] = ident(promotion, f"{where}.PromotionID", "promotion id")
    return row


def _line_modifiers(parts: Parts, money: Money, where: str) -> list[Row]:
    modifiers = [
        _modifier(el, money, f"{where}.RetailPriceModifier[{i}]", "discount")
        for i, el in enumerate(parts.all("RetailPriceModifier"), 1)
    ]
    discount_el = parts.get("ExtendedDiscountAmount")
    if not modifiers and discount_el is not None and text_of(discount_el).strip("0.+-"):
        discount = money(discount_el, f"{where}.ExtendedDiscountAmount")
        modifiers.append({"amount": abs(discount), "reason": "discount"})
    return modifiers


def _reward(el: Element, money: Money, where: str) -> Reward | None:
    """A monetary NCR loyalty reward as a price modifier; None for anything else."""
    if not flag(vendor_attr(el, "summarizedActivity")):
        return None
    parts = parts_of(el)
    if parts.vendor_text("RewardCategory").casefold() != "monetary":
        return None
    amount_el = parts.vendor("ExtendedRewardAmount")
    if amount_el is None:
        raise RecordError(f"{where}.ExtendedRewardAmount", "missing: a monetary reward without an amount")
    amount = money(amount_el, f"{where}.ExtendedRewardAmount")
    if amount > 0:
        raise RecordError(f"{where}.ExtendedRewardAmount", f"a monetary reward of +{amount} raises the price")
    if amount == 0:
        return None
    modifier: Row = {"amount": -amount, "reason": "loyalty"}
    if promotion := parts.text("PromotionID"):
        modifier["promotion_id"] = ident(promotion, f"{where}.PromotionID", "promotion id")
    level = parts.vendor_text("RewardLevel").casefold()
    return Reward(modifier, level == "item", parts.vendor_text("OperatorSequenceReference"))


def _customer(rt: Parts) -> Row | None:
    account = rt.get("LoyaltyAccount")
    if account is not None:
        parts = parts_of(account)
        member = parts.text("CustomerID") or parts.text("LoyaltyAccountID")
        if member:
            row: Row = {"member_id": ident(member, "LoyaltyAccount.CustomerID", "member id")}
            if program := parts.text("LoyaltyProgramID"):
                row["program"] = ident(program, "LoyaltyAccount.LoyaltyProgramID", "loyalty program")
            return row
    customer = rt.get("Customer")
    member = parts_of(customer).text("CustomerID") if customer is not None else ""
    return {"member_id": ident(member, "Customer.CustomerID", "member id")} if member else None


def _tax_code(parts: Parts, el: Element, fallback: str) -> str:
    code = parts.text("TaxRuleID") or parts.text("TaxGroupID") or (vendor_attr(el, "TaxID") or "").strip()
    return code or (el.get("TaxType") or "").strip() or fallback


def _percent(parts: Parts, where: str) -> Decimal | None:
    el = parts.get("Percent")
    return None if el is None else abs(decimal_of(text_of(el), f"{where}.Percent")) / _HUNDRED


def _card(parts: Parts) -> Row | None:
    """Card details when the tender carries a masked card number and an authorization code."""
    auth_el, card_el = parts.get("Authorization"), parts.get("CreditDebit")
    auth = parts_of(auth_el).text("AuthorizationCode") if auth_el is not None else ""
    if card_el is None or not auth:
        return None
    card = parts_of(card_el)
    last4 = card.text("PrimaryAccountNumber")[-4:]
    if len(last4) < 4 or not (last4.isascii() and last4.isdigit()):
        return None
    row: Row = {"last4": last4, "auth_code": auth}
    if scheme := card.tf_text("Scheme"):
        row["scheme"] = scheme
    return row


def _rounding(parts: Parts, money: Money, where: str, tenders: list[Row]) -> None:
    if rounding := money.child(parts, "Rounding", where):
        tenders.append({"kind": TenderKind.ROUNDING, "amount": rounding})


def _add_change(tenders: list[Row], kind: TenderKind, change: Decimal) -> None:
    """Change given: on the latest tender of its kind that has none yet, else on its own."""
    for row in reversed(tenders):
        if row["kind"] is kind and row.get("change") == 0 and row["amount"] > 0:
            row["change"] = change
            return
    tenders.append({"kind": kind, "amount": ZERO, "change": change})
