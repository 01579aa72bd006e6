"""Double-entry journals as they go to the ERP; each balances per currency on construction."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Self

from pydantic import Field, model_validator

from tillflow.model.base import Canonical, CurrencyCode, Ident
from tillflow.model.money import Dec, check_minor_units


class JournalLine(Canonical):
    account: Ident
    debit: Dec = Field(default=Decimal(0), ge=0)
    credit: Dec = Field(default=Decimal(0), ge=0)
    currency: CurrencyCode
    description: str = ""
    dimensions: dict[str, str] = Field(default_factory=dict)  # store, department, tax code...

    @model_validator(mode="after")
    def _one_side(self) -> Self:
        if self.debit and self.credit:
            raise ValueError("a journal line is a debit or a credit, not both")
        if not self.debit and not self.credit:
            raise ValueError("a journal line moves an amount: debit or credit, not zero")
        check_minor_units(self.currency, debit=self.debit, credit=self.credit)
        return self


class Journal(Canonical):
    journal_id: Ident
    store_id: Ident
    business_day: date
    lines: tuple[JournalLine, ...] = Field(min_length=2)
    source_transactions: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _balanced_per_currency(self) -> Self:
        balance: dict[str, Decimal] = defaultdict(Decimal)
        for line in self.lines:
            balance[line.currency] += line.debit - line.credit
        unbalanced = {c: b for c, b in balance.items() if b}
        if unbalanced:
            raise ValueError(f"journal does not balance: debit - credit = {unbalanced}")
        return self
