"""Loyalty effects of transactions: points accrued and points redeemed."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from tillflow.model.base import Canonical, CurrencyCode, Ident
from tillflow.model.money import Dec, check_minor_units


class LoyaltyAccrual(Canonical):
    """Points earned (or, negative, reversed) by one transaction."""

    member_id: Ident
    program: Ident = "default"
    transaction_id: str
    points: int
    basis_amount: Dec
    currency: CurrencyCode

    @model_validator(mode="after")
    def _in_minor_units(self) -> Self:
        check_minor_units(self.currency, basis_amount=self.basis_amount)
        return self


class LoyaltyRedemption(Canonical):
    """Points spent as a tender; `hold_id` is the reservation made during checkout."""

    member_id: Ident
    program: Ident = "default"
    transaction_id: str
    hold_id: str
    points: int = Field(gt=0)
    value: Dec
    currency: CurrencyCode

    @model_validator(mode="after")
    def _in_minor_units(self) -> Self:
        check_minor_units(self.currency, value=self.value)
        return self


class ReserveRedemption(Canonical):
    """A till's request to hold a member's points during checkout (`POST /v1/loyalty/redemptions`);
    the transaction that completes the checkout names the hold in its loyalty tender."""

    store_id: Ident
    member_id: Ident
    program: Ident = "default"
    points: int = Field(gt=0)
    ttl_seconds: int | None = Field(default=None, ge=1)  # the hub's default when not given
