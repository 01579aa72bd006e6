"""Canonical transactions as ARTS POSLog 6.0, in the shape `tillflow.formats.poslog` reads back.

What ARTS has an element for is written in the ARTS namespace: lines as Sale or Return (with a
TransactionLink to the original sale and a Disposition), price modifiers as RetailPriceModifier,
basket modifiers as Discount line items, taxes as Tax line items with TaxIncludedInPriceFlag,
tenders with TenderChange, Authorization and a masked card number, post-voids as a
RetailTransaction with TransactionStatus and TransactionLink "PostVoid". The rest (tender
reference and points, card scheme) goes into tillflow's extension namespace. Amounts carry the
transaction's sign convention of POSLog: a refund is a Tender with TypeCode "Refund".
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from lxml import etree

from tillflow.formats.poslog_fields import ARTS_NS, TF_NS
from tillflow.model import (
    ItemType,
    LineAction,
    LineItem,
    PriceModifier,
    TaxLine,
    Tender,
    TenderKind,
    Transaction,
    TransactionKind,
    TransactionRef,
)

_A = "{" + ARTS_NS + "}"
_T = "{" + TF_NS + "}"
_HUNDRED = Decimal(100)
_TENDER_TYPES = {
    TenderKind.CASH: "Cash",
    TenderKind.CARD: "CreditDebit",
    TenderKind.GIFT_CARD: "GiftCard",
    TenderKind.STORE_CREDIT: "StoreCredit",
    TenderKind.VOUCHER: "Voucher",
    TenderKind.LOYALTY_POINTS: "LoyaltyRedemption",
    TenderKind.ROUNDING: "Rounding",
}
_ITEM_TYPES = {ItemType.STOCK: "Stock", ItemType.NON_STOCK: "NonStock", ItemType.SERVICE: "Service"}

Element = etree._Element


def export(transactions: Iterable[Transaction]) -> bytes:
    """One POSLog 6.0 document (UTF-8) holding `transactions` in order."""
    nsmap: Any = {None: ARTS_NS, "tf": TF_NS}  # None: the default namespace
    root = etree.Element(_A + "POSLog", nsmap=nsmap, MajorVersion="6", MinorVersion="0", FixVersion="0")
    for tx in transactions:
        try:
            root.append(_transaction(tx))
        except ValueError as exc:  # lxml refuses text that XML 1.0 cannot hold (control characters)
            raise ValueError(f"transaction {tx.transaction_id} cannot be written as XML: {exc}") from None
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _num(value: Decimal) -> str:
    return f"{value:f}"


def _sub(parent: Element, tag: str, text: str | None = None, **attrib: str) -> Element:
    el = etree.SubElement(parent, _A + tag, attrib)
    if text is not None:
        el.text = text
    return el


def _transaction(tx: Transaction) -> Element:
    el = etree.Element(_A + "Transaction")
    _sub(_sub(el, "BusinessUnit"), "UnitID", tx.store_id)
    _sub(el, "WorkstationID", tx.register_id)
    _sub(el, "SequenceNumber", str(tx.sequence))
    _sub(el, "BusinessDayDate", tx.business_day.isoformat())
    if tx.started_at is not None:
        _sub(el, "BeginDateTime", tx.started_at.isoformat())
    _sub(el, "EndDateTime", tx.ended_at.isoformat())
    if tx.operator_id is not None:
        _sub(el, "OperatorID", tx.operator_id)
    _sub(el, "CurrencyCode", tx.currency)
    retail = _sub(el, "RetailTransaction")
    if tx.kind is TransactionKind.VOID and tx.voided is not None:
        retail.set("TransactionStatus", "PostVoid")
        _link(retail, tx.voided, "PostVoid")
    number = 0
    for line in tx.lines:
        number = max(number, line.line_no)
        _line(retail, line)
    for modifier in tx.modifiers:
        number += 1
        discount = _sub(_item(retail, number), "Discount")
        _modifier_fields(discount, modifier)
    for tax in tx.taxes:
        number += 1
        _tax(_item(retail, number), tax)
    for tender in tx.tenders:
        number += 1
        _tender(_item(retail, number), tender)
    _sub(retail, "Total", _num(tx.totals.grand_total), TotalType="TransactionGrandAmount")
    _sub(retail, "Total", _num(tx.totals.tax), TotalType="TransactionTaxAmount")
    if tx.customer is not None:
        account = _sub(retail, "LoyaltyAccount")
        _sub(account, "CustomerID", tx.customer.member_id)
        _sub(account, "LoyaltyProgramID", tx.customer.program)
    return el


def _item(retail: Element, number: int) -> Element:
    item = _sub(retail, "LineItem")
    _sub(item, "SequenceNumber", str(number))
    return item


def _link(parent: Element, ref: TransactionRef, reason: str) -> Element:
    link = _sub(parent, "TransactionLink", ReasonCode=reason)
    _sub(_sub(link, "BusinessUnit"), "UnitID", ref.store_id)
    _sub(link, "WorkstationID", ref.register_id)
    _sub(link, "SequenceNumber", str(ref.sequence))
    _sub(link, "BusinessDayDate", ref.business_day.isoformat())
    return link


def _line(retail: Element, line: LineItem) -> None:
    returned = line.action is LineAction.RETURN
    el = _sub(
        _item(retail, line.line_no), "Return" if returned else "Sale", ItemType=_ITEM_TYPES[line.item_type]
    )
    _sub(el, "ItemID", line.sku)
    if line.department is not None:
        _sub(el, "MerchandiseHierarchy", line.department, Level="Department")
    if line.description:
        _sub(el, "Description", line.description)
    _sub(el, "ActualSalesUnitPrice", _num(line.unit_price))
    _sub(el, "ExtendedAmount", _num(line.extended_amount))
    _sub(el, "Quantity", _num(line.quantity), UnitOfMeasureCode=line.uom.value)
    for i, modifier in enumerate(line.modifiers, 1):
        rpm = _sub(el, "RetailPriceModifier")
        _sub(rpm, "SequenceNumber", str(i))
        _modifier_fields(rpm, modifier)
    for code in line.tax_codes:
        _sub(_sub(el, "Tax"), "TaxRuleID", code)
    if returned:
        if line.original is not None:
            link = _link(el, line.original.transaction, "Return")
            _sub(link, "LineItemSequenceNumber", str(line.original.line_no))
        _sub(el, "Disposition", "ReturnToStock" if line.restock else "DoNotReturnToStock")


def _modifier_fields(el: Element, modifier: PriceModifier) -> None:
    _sub(el, "Amount", _num(modifier.amount), Action="Subtract")
    if modifier.promotion_id is not None:
        _sub(el, "PromotionID", modifier.promotion_id)
    if modifier.reason:
        _sub(el, "ReasonCode", modifier.reason)


def _tax(item: Element, tax: TaxLine) -> None:
    el = _sub(item, "Tax", TaxType="VAT" if tax.inclusive else "Sales")
    _sub(el, "TaxableAmount", _num(tax.taxable_amount))
    _sub(el, "Amount", _num(tax.amount))
    _sub(el, "Percent", _num(tax.rate * _HUNDRED))
    _sub(el, "TaxRuleID", tax.code)
    _sub(el, "TaxIncludedInPriceFlag", "true" if tax.inclusive else "false")


def _tender(item: Element, tender: Tender) -> None:
    refund = tender.amount < 0
    el = _sub(item, "Tender", TenderType=_TENDER_TYPES[tender.kind], TypeCode="Refund" if refund else "Sale")
    _sub(el, "Amount", _num(abs(tender.amount)))
    if tender.change:
        _sub(_sub(el, "TenderChange"), "Amount", _num(tender.change))
    if tender.card is not None:
        _sub(_sub(el, "Authorization"), "AuthorizationCode", tender.card.auth_code)
        card = _sub(el, "CreditDebit")
        _sub(card, "PrimaryAccountNumber", "*" * 12 + tender.card.last4)
        if tender.card.scheme is not None:
            etree.SubElement(card, _T + "Scheme").text = tender.card.scheme
    if tender.reference is not None:
        etree.SubElement(el, _T + "Reference").text = tender.reference
    if tender.points is not None:
        etree.SubElement(el, _T + "Points").text = str(tender.points)
