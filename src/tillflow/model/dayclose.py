"""The end of a store's business day: the Z report of each register."""

from __future__ import annotations

from datetime import date
from typing import Self

from pydantic import AwareDatetime, Field, model_validator

from tillflow.model.base import Canonical, CurrencyCode, Ident, SequenceNo
from tillflow.model.money import Dec, check_minor_units
from tillflow.model.transaction import TenderKind


class RegisterClose(Canonical):
    register_id: Ident
    transaction_count: int = Field(ge=0)
    last_sequence: SequenceNo
    totals_by_tender: dict[TenderKind, Dec] = Field(default_factory=dict)

    def expected_sequences(self) -> range:
        """The sequences this register's Z report accounts for: `transaction_count` of them
        ending at `last_sequence` (fewer when the count is more than the sequences allow)."""
        return range(max(self.last_sequence - self.transaction_count + 1, 0), self.last_sequence + 1)


class DayClose(Canonical):
    store_id: Ident
    business_day: date
    currency: CurrencyCode
    closed_at: AwareDatetime
    registers: tuple[RegisterClose, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _in_minor_units(self) -> Self:
        for i, register in enumerate(self.registers):
            check_minor_units(
                self.currency,
                **{
                    f"registers[{i}].totals_by_tender.{k.value}": v
                    for k, v in register.totals_by_tender.items()
                },
            )
        return self
