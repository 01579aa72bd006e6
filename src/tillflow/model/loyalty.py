"""Loyalty effects of transactions: points accrued and points redeemed."""

from __future__ import annotations

from pydantic import Field

from tillflow.model.base import Canonical, CurrencyCode, Ident
from tillflow.model.money import Dec


class LoyaltyAccrual(Canonical):
    """Points earned (or, negative, reversed) by one transaction."""

    member_id: Ident
    program: Ident = "default"
    transaction_id: str
    points: int
    basis_amount: Dec
    currency: CurrencyCode


class LoyaltyRedemption(Canonical):
    """Points spent as a tender; `hold_id` is the reservation made during checkout."""

    member_id: Ident
    program: Ident = "default"
    transaction_id: str
    hold_id: str
    points: int = Field(gt=0)
    value: Dec
    currency: CurrencyCode
