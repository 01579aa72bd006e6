"""Stores, registers and products: the master data the transactions refer to."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

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


class Product(Canonical):
    sku: Ident
    description: Annotated[str, StringConstraints(max_length=200)] = ""
    department: Ident | None = None
    item_type: ItemType = ItemType.STOCK
    uom: UnitOfMeasure = UnitOfMeasure.EACH
    gtins: tuple[Annotated[str, StringConstraints(pattern=r"^[0-9]{8,14}$")], ...] = ()
    tax_code: Ident | None = None
    cost: Dec | None = Field(default=None, ge=0)
    cost_currency: CurrencyCode | None = None
