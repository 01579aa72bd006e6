"""Stock movements: every change of a store's position in one SKU, traceable to its cause."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime

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
