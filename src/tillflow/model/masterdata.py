"""Master data that flows down to the stores: prices and promotions (items are the product
master's `Product`), each change versioned so a store can ask for what changed since the
version it runs.

Effective dates are the store's local wall-clock time (naive datetimes): a promotion "from
Saturday 08:00" starts at 08:00 in Paris and at 08:00 in Tokyo, each in its own time zone,
across daylight-saving changes. `effective_to` / `ends` are exclusive; None is open-ended.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator

from tillflow.model.base import Canonical, CurrencyCode, Ident
from tillflow.model.catalog import Product
from tillflow.model.money import Dec, check_minor_units


def _naive(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        raise ValueError("a local wall-clock time in the store's time zone, without an offset")
    return moment


LocalDateTime = Annotated[datetime, AfterValidator(_naive)]


class Price(Canonical):
    """The shelf price of a SKU: for every store (no `region` nor `store_id`), a region's stores
    or one store; the narrowest scope that is effective wins."""

    sku: Ident
    price: Dec = Field(ge=0)
    currency: CurrencyCode
    region: Ident | None = None
    store_id: Ident | None = None
    effective_from: LocalDateTime
    effective_to: LocalDateTime | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.region is not None and self.store_id is not None:
            raise ValueError("a price is for a region or for a store, not both")
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("effective_to: must be after effective_from")
        check_minor_units(self.currency, price=self.price)
        return self

    @property
    def key(self) -> str:
        """What identifies the price (a change to it replaces it): SKU, scope and start."""
        scope = (
            f"store:{self.store_id}" if self.store_id else f"region:{self.region}" if self.region else "all"
        )
        return f"{self.sku}|{scope}|{self.effective_from.isoformat()}"


class PromotionKind(StrEnum):
    PERCENT_OFF = "percent_off"  # `percent` off each qualifying unit
    AMOUNT_OFF = "amount_off"  # `amount` off each qualifying unit
    MULTI_BUY = "multi_buy"  # `buy` units for the price of `pay`


class Promotion(Canonical):
    """A promotion: what it gives, on which SKUs or departments, for whom, where and when. No
    `stores`, `regions` nor `brands`: every store."""

    promotion_id: Ident
    kind: PromotionKind
    description: Annotated[str, Field(max_length=200)] = ""
    skus: tuple[Ident, ...] = ()
    departments: tuple[Ident, ...] = ()
    percent: Dec | None = Field(default=None, gt=0, le=100)
    amount: Dec | None = Field(default=None, gt=0)
    currency: CurrencyCode | None = None  # of `amount`
    buy: int | None = Field(default=None, ge=2)
    pay: int | None = Field(default=None, ge=1)
    member_only: bool = False
    stores: tuple[Ident, ...] = ()
    regions: tuple[Ident, ...] = ()
    brands: tuple[Ident, ...] = ()
    starts: LocalDateTime
    ends: LocalDateTime

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.skus and not self.departments:
            raise ValueError("skus: a promotion names SKUs or departments")
        if self.ends <= self.starts:
            raise ValueError("ends: must be after starts")
        if self.kind is PromotionKind.PERCENT_OFF and self.percent is None:
            raise ValueError("percent: required for percent_off")
        if self.kind is PromotionKind.AMOUNT_OFF:
            if self.amount is None or self.currency is None:
                raise ValueError("amount: required with its currency for amount_off")
            check_minor_units(self.currency, amount=self.amount)
        if self.kind is PromotionKind.MULTI_BUY and (
            self.buy is None or self.pay is None or self.pay >= self.buy
        ):
            raise ValueError("buy, pay: multi_buy needs buy > pay")
        return self


def key_of(record: Product | Price | Promotion) -> str:
    """The key a record replaces: the SKU, `Price.key` or the promotion id."""
    if isinstance(record, Price):
        return record.key
    if isinstance(record, Promotion):
        return record.promotion_id
    return record.sku


class MasterKind(StrEnum):
    ITEM = "item"
    PRICE = "price"
    PROMOTION = "promotion"


class MasterChange(Canonical):
    """One versioned change of master data: the record as it is from `version` on (None: it
    was withdrawn). Versions are global and increase; a store applies changes in order, and
    applying one it already has changes nothing (the record under `key` is replaced)."""

    version: int = Field(ge=1)
    kind: MasterKind
    key: str
    record: dict[str, object] | None = None
