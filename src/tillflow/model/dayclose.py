"""The end of a store's business day: the Z report of each register."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import Field

from tillflow.model.base import Canonical, CurrencyCode, Ident
from tillflow.model.money import Dec
from tillflow.model.transaction import TenderKind


class RegisterClose(Canonical):
    register_id: Ident
    transaction_count: int = Field(ge=0)
    last_sequence: int = Field(ge=0)
    totals_by_tender: dict[TenderKind, Dec] = Field(default_factory=dict)


class DayClose(Canonical):
    store_id: Ident
    business_day: date
    currency: CurrencyCode
    closed_at: datetime
    registers: tuple[RegisterClose, ...] = Field(min_length=1)
