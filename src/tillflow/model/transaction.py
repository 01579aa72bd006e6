"""The canonical retail transaction: what a till rang up, in one shape for every POS.

Amounts are positive on each line; a line's `action` (sale or return) gives its sign in the
totals. Tax, tender and total amounts are signed: a refund is a negative tender and a
return's grand total is negative. Invariants checked on construction, to the currency's
minor unit:

- lines - price modifiers + exclusive tax = grand total (not for a post-void, which carries
  no lines: its amounts mirror the transaction it voids)
- tenders - change given = grand total
- every amount is in the currency's minor units
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, Field, StringConstraints, ValidationInfo, model_validator

from tillflow.model.base import Canonical, CurrencyCode, Ident, SequenceNo
from tillflow.model.money import Dec, is_in_minor_units, minor_unit

ZERO = Decimal(0)
# Validation context key for data the gateway has already validated (read back from the log):
# the structure is still parsed and typed, the invariants are not checked a second time.
TRUSTED = "tillflow.trusted"
TRUSTED_CONTEXT = {TRUSTED: True}
QUANTITY_QUANTUM = Decimal("0.001")  # weighed goods to the gram / millilitre


class TransactionKind(StrEnum):
    SALE = "sale"
    RETURN = "return"
    VOID = "void"  # post-void of an earlier, completed transaction
    EXCHANGE = "exchange"


class LineAction(StrEnum):
    SALE = "sale"
    RETURN = "return"


class ItemType(StrEnum):
    STOCK = "stock"
    NON_STOCK = "non_stock"
    SERVICE = "service"


class UnitOfMeasure(StrEnum):
    EACH = "EA"
    KILOGRAM = "KG"
    GRAM = "G"
    POUND = "LB"
    LITRE = "L"
    METRE = "M"


class TenderKind(StrEnum):
    CASH = "cash"
    CARD = "card"
    GIFT_CARD = "gift_card"
    STORE_CREDIT = "store_credit"
    VOUCHER = "voucher"
    LOYALTY_POINTS = "loyalty_points"
    ROUNDING = "rounding"


class TransactionRef(Canonical):
    """The identity of another transaction, fixed at its till."""

    store_id: Ident
    register_id: Ident
    business_day: date
    sequence: SequenceNo

    @property
    def transaction_id(self) -> str:
        return transaction_id(self.store_id, self.register_id, self.business_day, self.sequence)


def transaction_id(store_id: str, register_id: str, business_day: date, sequence: int) -> str:
    """The transaction id (also the correlation id): store:register:day:sequence."""
    return f"{store_id}:{register_id}:{business_day.isoformat()}:{sequence:08d}"


class LineRef(Canonical):
    """The original transaction and line a returned line refers to."""

    transaction: TransactionRef
    line_no: int = Field(ge=1)


class PriceModifier(Canonical):
    """A reduction of a line's or the basket's price; `amount` is positive."""

    amount: Dec = Field(ge=0)
    reason: Annotated[str, StringConstraints(max_length=64)] = "promotion"
    promotion_id: Ident | None = None


class TaxLine(Canonical):
    code: Ident
    rate: Dec = Field(ge=0, le=1)
    taxable_amount: Dec
    amount: Dec
    inclusive: bool


class CardDetails(Canonical):
    """Only what PCI DSS allows us to keep: never the full card number."""

    last4: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]
    auth_code: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,12}$")]
    scheme: Annotated[str, StringConstraints(max_length=24)] | None = None


class Tender(Canonical):
    kind: TenderKind
    amount: Dec
    change: Dec = Field(default=ZERO, ge=0)
    card: CardDetails | None = None
    # gift card / voucher / store credit number (masked by the till), or the loyalty hold id
    reference: Annotated[str, StringConstraints(max_length=64)] | None = None
    points: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _card_details_only_on_cards(self) -> Self:
        if self.card is not None and self.kind is not TenderKind.CARD:
            raise ValueError("card details belong to card tenders only")
        return self


class LineItem(Canonical):
    line_no: int = Field(ge=1)
    action: LineAction = LineAction.SALE
    sku: Ident
    description: Annotated[str, StringConstraints(max_length=200)] = ""
    quantity: Dec = Field(gt=0)  # weighed items carry decimals (1.235 KG)
    uom: UnitOfMeasure = UnitOfMeasure.EACH
    unit_price: Dec = Field(ge=0)
    extended_amount: Dec = Field(ge=0)
    department: Ident | None = None
    item_type: ItemType = ItemType.STOCK
    tax_codes: tuple[Ident, ...] = ()
    modifiers: tuple[PriceModifier, ...] = ()
    original: LineRef | None = None  # for a returned line: where it was sold
    restock: bool = True  # a returned line that goes back on the shelf

    @property
    def sign(self) -> int:
        return 1 if self.action is LineAction.SALE else -1

    @property
    def net_amount(self) -> Decimal:
        """Extended amount less this line's modifiers, signed by the line's action."""
        net = self.extended_amount
        for modifier in self.modifiers:
            net -= modifier.amount
        return net if self.action is LineAction.SALE else -net


class Customer(Canonical):
    """A customer or loyalty member reference; never more personal data than an id."""

    member_id: Ident
    program: Ident = "default"


class Totals(Canonical):
    """`subtotal` = lines - modifiers; `tax` = all tax lines; `grand_total` = what was paid."""

    subtotal: Dec
    tax: Dec
    grand_total: Dec


class Transaction(Canonical):
    store_id: Ident
    register_id: Ident
    business_day: date
    sequence: SequenceNo
    kind: TransactionKind
    currency: CurrencyCode
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime
    operator_id: Ident | None = None
    customer: Customer | None = None
    lines: tuple[LineItem, ...] = ()
    modifiers: tuple[PriceModifier, ...] = ()  # basket-level reductions
    taxes: tuple[TaxLine, ...] = ()
    tenders: tuple[Tender, ...] = ()
    totals: Totals
    voided: TransactionRef | None = None  # for kind=void: the transaction it cancels

    @property  # not cached: cheap, and a cached_property takes a class-wide lock on Python 3.11
    def transaction_id(self) -> str:
        return transaction_id(self.store_id, self.register_id, self.business_day, self.sequence)

    @property
    def ref(self) -> TransactionRef:
        return TransactionRef(
            store_id=self.store_id,
            register_id=self.register_id,
            business_day=self.business_day,
            sequence=self.sequence,
        )

    @model_validator(mode="after")
    def _check_invariants(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get(TRUSTED):
            return self  # re-read from the event log: the gateway checked it already
        currency = self.currency
        self._check_shape()
        self._check_minor_units(currency)
        totals = self.totals
        if self.kind is not TransactionKind.VOID:
            subtotal = sum((line.net_amount for line in self.lines), ZERO)
            basket_sign = -1 if self.kind is TransactionKind.RETURN else 1
            subtotal -= basket_sign * sum((m.amount for m in self.modifiers), ZERO)
            if subtotal != totals.subtotal:
                raise ValueError(f"totals.subtotal {totals.subtotal} != lines - modifiers {subtotal}")
            exclusive_tax = sum((t.amount for t in self.taxes if not t.inclusive), ZERO)
            if subtotal + exclusive_tax != totals.grand_total:
                raise ValueError(
                    f"totals.grand_total {totals.grand_total} != lines - modifiers"
                    f" + exclusive tax {subtotal + exclusive_tax}"
                )
        tax = sum((t.amount for t in self.taxes), ZERO)
        if tax != totals.tax:
            raise ValueError(f"totals.tax {totals.tax} != sum of tax lines {tax}")
        tendered = sum((t.amount - t.change for t in self.tenders), ZERO)
        if tendered != totals.grand_total:
            raise ValueError(f"tenders - change {tendered} != totals.grand_total {totals.grand_total}")
        return self

    def _check_shape(self) -> None:
        kind = self.kind
        if kind is TransactionKind.VOID:
            if self.voided is None:
                raise ValueError("a void names the transaction it voids in `voided`")
            if self.lines:
                raise ValueError("a post-void carries no lines; it reverses `voided`")
            if self.voided.store_id != self.store_id:
                raise ValueError("a void may only void a transaction of its own store")
        elif self.voided is not None:
            raise ValueError("`voided` is only for kind=void")
        elif not self.lines:
            raise ValueError(f"a {kind.value} has at least one line")
        actions = {line.action for line in self.lines}
        if kind is TransactionKind.SALE and LineAction.RETURN in actions:
            raise ValueError("a sale has no returned lines; use kind=exchange")
        if kind is TransactionKind.RETURN and LineAction.SALE in actions:
            raise ValueError("a return has only returned lines; use kind=exchange")
        seen: set[int] = set()
        for line in self.lines:
            if line.line_no in seen:
                raise ValueError(f"line_no {line.line_no} appears twice")
            seen.add(line.line_no)

    def _check_minor_units(self, currency: str) -> None:
        quantum = minor_unit(currency)
        for i, line in enumerate(self.lines):
            if abs(line.quantity * line.unit_price - line.extended_amount) >= quantum:
                raise ValueError(
                    f"lines[{i}].extended_amount {line.extended_amount} != quantity"
                    f" {line.quantity} x unit_price {line.unit_price}"
                )
            if line.quantity != line.quantity.quantize(QUANTITY_QUANTUM):
                raise ValueError(f"lines[{i}].quantity {line.quantity} has more than 3 decimals")
            if line.modifiers and sum((m.amount for m in line.modifiers), ZERO) > line.extended_amount:
                raise ValueError(f"lines[{i}].modifiers take more than the line's extended amount")
        # fast path without names; the named search runs only on a miss
        for _, amount in self._amounts(named=False):
            if amount == amount.quantize(quantum):
                continue
            for where, value in self._amounts(named=True):
                if not is_in_minor_units(value, currency):
                    raise ValueError(f"{where} {value} has digits below the {currency} minor unit")

    def _amounts(self, *, named: bool) -> Iterator[tuple[str, Decimal]]:
        """Every money amount of the transaction (with its field path when `named`)."""
        totals = self.totals
        yield "totals.subtotal", totals.subtotal
        yield "totals.tax", totals.tax
        yield "totals.grand_total", totals.grand_total
        for i, line in enumerate(self.lines):
            yield (f"lines[{i}].extended_amount" if named else ""), line.extended_amount
            for j, m in enumerate(line.modifiers):
                yield (f"lines[{i}].modifiers[{j}].amount" if named else ""), m.amount
        for j, m in enumerate(self.modifiers):
            yield (f"modifiers[{j}].amount" if named else ""), m.amount
        for i, tax in enumerate(self.taxes):
            yield (f"taxes[{i}].amount" if named else ""), tax.amount
            yield (f"taxes[{i}].taxable_amount" if named else ""), tax.taxable_amount
        for i, tender in enumerate(self.tenders):
            yield (f"tenders[{i}].amount" if named else ""), tender.amount
            yield (f"tenders[{i}].change" if named else ""), tender.change
