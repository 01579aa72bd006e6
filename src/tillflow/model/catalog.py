"""Stores, registers and products: the master data the transactions refer to."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from tillflow.model.base import Canonical, CurrencyCode, Ident
from tillflow.model.money import Dec
from tillflow.model.transaction import ItemType, UnitOfMeasure


class Channel(StrEnum):
    STORE = "store"
    ECOMMERCE = "ecommerce"


class Register(Canonical):
    store_id: Ident
    register_id: Ident


class Store(Canonical):
    store_id: Ident
    name: str = ""
    brand: Ident = "default"
    region: Ident = "default"
    currency: CurrencyCode = "EUR"
    timezone: str = "UTC"
    channel: Channel = Channel.STORE
    registers: tuple[Ident, ...] = ()


# One unit of each mass unit in kilograms: these convert among themselves without configuration.
MASS_IN_KG: dict[UnitOfMeasure, Decimal] = {
    UnitOfMeasure.KILOGRAM: Decimal(1),
    UnitOfMeasure.GRAM: Decimal("0.001"),
    UnitOfMeasure.POUND: Decimal("0.45359237"),
}

Factor = Annotated[Dec, Field(gt=0)]


class Product(Canonical):
    """A SKU of the product master. `uom` is the unit its stock is kept in; `conversions` says,
    for each other unit it is sold in, how many stock units one sold unit is (stocked in KG,
    sold by the G: ``{"G": "0.001"}``; stocked EA, sold by the KG at a nominal 0.5 kg each:
    ``{"KG": "2"}``). KG, G and LB convert among themselves without an entry."""

    sku: Ident
    description: Annotated[str, StringConstraints(max_length=200)] = ""
    department: Ident | None = None
    item_type: ItemType = ItemType.STOCK
    uom: UnitOfMeasure = UnitOfMeasure.EACH
    gtins: tuple[Annotated[str, StringConstraints(pattern=r"^[0-9]{8,14}$")], ...] = ()
    tax_code: Ident | None = None
    cost: Dec | None = Field(default=None, ge=0)
    cost_currency: CurrencyCode | None = None
    conversions: dict[UnitOfMeasure, Factor] = Field(default_factory=dict)

    @field_validator("gtins", mode="before")
    @classmethod
    def _unique_gtins(cls, value: object) -> object:
        if isinstance(value, list | tuple) and len(set(value)) != len(value):
            raise ValueError("a GTIN is listed twice")
        return value

    @model_validator(mode="after")
    def _no_conversion_to_itself(self) -> Product:
        if self.uom in self.conversions:
            raise ValueError(f"conversions: {self.uom.value} is the stock unit itself, it needs no factor")
        return self

    def stock_quantity(self, quantity: Decimal, uom: UnitOfMeasure) -> Decimal | None:
        """`quantity` of `uom` in the stock unit (unrounded), or None when no conversion is
        known from that unit."""
        if uom is self.uom:
            return quantity
        factor = self.conversions.get(uom)
        if factor is not None:
            return quantity * factor
        if uom in MASS_IN_KG and self.uom in MASS_IN_KG:
            return quantity * MASS_IN_KG[uom] / MASS_IN_KG[self.uom]
        return None
