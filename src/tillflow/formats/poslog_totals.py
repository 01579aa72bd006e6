"""What the line items of one POSLog RetailTransaction add up to, checked against its totals.

The canonical model checks its own invariants too; these checks come first so that a refused
transaction says, in POSLog terms and with the figures, which sums disagree: lines - price
modifiers (loyalty rewards included) + exclusive tax against TransactionGrandAmount, tenders -
change against the same, and the tax lines against TransactionTaxAmount.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tillflow.formats.records import RecordError
from tillflow.model import LineAction, TransactionKind

ZERO = Decimal(0)
_RATE = Decimal("0.0001")
Row = dict[str, Any]
TaxPart = tuple[str, Decimal, Decimal, Decimal | None]  # code, taxable amount, amount, rate


@dataclass(slots=True)
class Line:
    """A line as read, with what the totals need and the canonical row."""

    row: Row
    sku: str
    signed_quantity: Decimal  # as sent: NCR voids and ROQQIO returns carry negative quantities
    signed_amount: Decimal
    operator_sequence: str  # NCR acs:OperatorSequence, which item-level rewards refer to
    inclusive: bool | None  # Sale/TaxIncludedInPriceFlag, when the line says
    taxes: list[TaxPart] = field(default_factory=list)  # line-level Tax elements with amounts


@dataclass(slots=True)
class Reward:
    """A monetary loyalty reward: a price modifier for one line (by operator sequence) or the basket."""

    modifier: Row
    item_level: bool
    reference: str


@dataclass(slots=True)
class Body:
    """The line items of one RetailTransaction, read but not yet added up."""

    lines: list[Line] = field(default_factory=list)
    modifiers: list[Row] = field(default_factory=list)  # basket-level
    rewards: list[Reward] = field(default_factory=list)
    taxes: list[Row] = field(default_factory=list)  # transaction-level Tax line items
    tenders: list[Row] = field(default_factory=list)
    customer: Row | None = None


def settle(
    row: Row,
    body: Body,
    totals: dict[str, Decimal],
    voided: Row | None,
    summary_code: str,
) -> None:
    """Complete `row` (a canonical Transaction on its way to validation) with kind, lines,
    modifiers, taxes, tenders and totals; a RecordError with the figures when they disagree."""
    _apply_rewards(body)
    if voided is not None:
        kind, lines, basket = TransactionKind.VOID, [], []
    else:
        kind = _kind(body.lines)
        lines, basket = [line.row for line in body.lines], body.modifiers
    taxes = _taxes(body)
    tendered = sum((t["amount"] for t in body.tenders), ZERO)
    change = sum((t.get("change", ZERO) for t in body.tenders), ZERO)
    line_sum, modifier_sum = _line_sums(lines, basket, kind)
    subtotal = line_sum - modifier_sum
    sent_tax = totals.get("TransactionTaxAmount")
    if not taxes and sent_tax:
        taxes = [_summary_tax(summary_code, sent_tax, subtotal, totals)]
    exclusive = sum((t["amount"] for t in taxes if not t["inclusive"]), ZERO)
    grand = totals.get("TransactionGrandAmount")
    if kind is TransactionKind.VOID:
        grand = tendered - change if grand is None else grand
        subtotal = grand - exclusive  # a post-void mirrors the sale it cancels
    elif grand is None:
        grand = subtotal + exclusive
    elif subtotal + exclusive != grand:
        raise RecordError(
            "Total[TransactionGrandAmount]",
            f"lines {line_sum} - modifiers {modifier_sum} + exclusive tax {exclusive}"
            f" = {subtotal + exclusive}, but the grand total is {grand}",
            {
                "lines": str(line_sum),
                "modifiers": str(modifier_sum),
                "exclusive_tax": str(exclusive),
                "computed": str(subtotal + exclusive),
                "grand_total": str(grand),
            },
        )
    if tendered - change != grand:
        raise RecordError(
            "Tender",
            f"tenders {tendered} - change {change} = {tendered - change}, but the grand total is {grand}",
            {"tenders": str(tendered), "change": str(change), "grand_total": str(grand)},
        )
    tax = sum((t["amount"] for t in taxes), ZERO)
    if sent_tax is not None and sent_tax != tax:
        raise RecordError(
            "Total[TransactionTaxAmount]",
            f"the tax lines add up to {tax}, but the tax total is {sent_tax}",
            {"tax_lines": str(tax), "tax_total": str(sent_tax)},
        )
    row.update(
        kind=kind,
        lines=lines,
        modifiers=basket,
        taxes=taxes,
        tenders=body.tenders,
        totals={"subtotal": subtotal, "tax": tax, "grand_total": grand},
        voided=voided,
    )


def _apply_rewards(body: Body) -> None:
    """Item-level rewards reduce the line they name, when it can take them; the rest, the basket."""
    by_sequence = {line.operator_sequence: line.row for line in body.lines if line.operator_sequence}
    for reward in body.rewards:
        line = by_sequence.get(reward.reference) if reward.item_level else None
        if line is not None:
            taken = sum((m["amount"] for m in line["modifiers"]), ZERO)
            if taken + reward.modifier["amount"] <= line["extended_amount"]:
                line["modifiers"].append(reward.modifier)
                continue
        body.modifiers.append(reward.modifier)


def _kind(lines: list[Line]) -> TransactionKind:
    actions = {line.row["action"] for line in lines}
    if actions == {LineAction.RETURN}:
        return TransactionKind.RETURN
    return TransactionKind.EXCHANGE if LineAction.RETURN in actions else TransactionKind.SALE


def _line_sums(lines: list[Row], basket: list[Row], kind: TransactionKind) -> tuple[Decimal, Decimal]:
    """Signed sums of the lines' extended amounts and of every price modifier."""
    line_sum = modifier_sum = ZERO
    for line in lines:
        sign = 1 if line["action"] is LineAction.SALE else -1
        line_sum += sign * line["extended_amount"]
        for modifier in line["modifiers"]:
            modifier_sum += sign * modifier["amount"]
    basket_sign = -1 if kind is TransactionKind.RETURN else 1
    for modifier in basket:
        modifier_sum += basket_sign * modifier["amount"]
    return line_sum, modifier_sum


def _taxes(body: Body) -> list[Row]:
    """Transaction-level tax lines; else the line-level ones, added up by code."""
    if body.taxes:
        by_lines = any(line.inclusive for line in body.lines)
        for tax in body.taxes:
            if tax["inclusive"] is None:
                tax["inclusive"] = by_lines
        return body.taxes
    summed: dict[tuple[str, bool], Row] = {}
    for line in body.lines:
        inclusive = bool(line.inclusive)
        for code, taxable, amount, rate in line.taxes:
            found = summed.get((code, inclusive))
            if found is None:
                summed[(code, inclusive)] = {
                    "code": code,
                    "rate": rate,
                    "taxable_amount": taxable,
                    "amount": amount,
                    "inclusive": inclusive,
                }
            else:
                found["taxable_amount"] += taxable
                found["amount"] += amount
                found["rate"] = found["rate"] if found["rate"] is not None else rate
    for tax in summed.values():
        if tax["rate"] is None:
            tax["rate"] = effective_rate(tax["amount"], tax["taxable_amount"])
    return list(summed.values())


def _summary_tax(code: str, tax: Decimal, subtotal: Decimal, totals: dict[str, Decimal]) -> Row:
    """One tax line from TransactionTaxAmount (ROQQIO sends no tax line items): exclusive when lines
    + tax make the grand total, else inclusive (the lines alone should make it)."""
    grand = totals.get("TransactionGrandAmount", subtotal)
    inclusive = subtotal + tax != grand  # when neither adds up, the grand total check says so
    taxable = totals.get("TransactionNetAmount")
    if taxable is None:
        taxable = subtotal - tax if inclusive else subtotal
    return {
        "code": code,
        "rate": effective_rate(tax, taxable),
        "taxable_amount": taxable,
        "amount": tax,
        "inclusive": inclusive,
    }


def effective_rate(amount: Decimal, taxable: Decimal) -> Decimal:
    """The rate a tax amount stands for, to a hundredth of a percent (0 without a base)."""
    return abs(amount / taxable).quantize(_RATE) if taxable else ZERO
