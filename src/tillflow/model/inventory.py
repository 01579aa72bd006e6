"""Stock movements: every change of a store's position in one SKU, traceable to its cause."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, field_validator

from tillflow.model.base import Canonical, Ident
from tillflow.model.money import Dec
from tillflow.model.transaction import UnitOfMeasure


class MovementReason(StrEnum):
    SALE = "sale"
    RETURN = "return"
    VOID = "void"  # reversal of a voided transaction's movements
    COUNT = "count"
    ADJUSTMENT = "adjustment"


class InventoryMovement(Canonical):
    """`quantity` is signed: negative leaves the store's stock, positive comes back."""

    store_id: Ident
    sku: Ident
    quantity: Dec
    uom: UnitOfMeasure = UnitOfMeasure.EACH
    reason: MovementReason
    transaction_id: str
    line_no: int
    occurred_at: AwareDatetime


def _in_thousandths(value: Decimal) -> Decimal:
    if value != value.quantize(Decimal("0.001")):
        raise ValueError("stock is kept in thousandths: at most 3 decimals")
    return value


MAX_COUNT_LINES = 100_000
Counted = Annotated[Dec, Field(ge=0), AfterValidator(_in_thousandths)]


class CountLine(Canonical):
    """How much of one SKU a count found (lines of the same SKU, say shelf and backroom, add up)."""

    sku: Ident
    quantity: Counted
    uom: UnitOfMeasure = UnitOfMeasure.EACH


class StockCount(Canonical):
    """A store's stock count (`retail.inventory.counted.v1`): what was on hand at `counted_at`.
    It sets the positions of the SKUs it names; `business_day` is the store's day it is booked on
    (the gateway fills it from `counted_at` in the store's time zone when not given)."""

    store_id: Ident
    count_id: Ident
    counted_at: AwareDatetime
    business_day: date | None = None
    lines: tuple[CountLine, ...]

    @field_validator("lines")
    @classmethod
    def _some_lines(cls, lines: tuple[CountLine, ...]) -> tuple[CountLine, ...]:
        if not lines:
            raise ValueError("a count has at least one line")
        if len(lines) > MAX_COUNT_LINES:
            raise ValueError(f"a count has at most {MAX_COUNT_LINES} lines")
        return lines

    @property
    def reference(self) -> str:
        """What the count's movements name as their cause (in place of a transaction id)."""
        return count_reference(self.store_id, self.count_id)


def count_reference(store_id: str, count_id: str) -> str:
    return f"count/{store_id}/{count_id}"
