"""The documents the reference ERP accepts, and the checks its general ledger makes on them.

The request models only fix the shape (a malformed request is a 400). The ledger rules are
checked here, all at once, so that a refusal (422) names every reason: an unbalanced currency
with its difference, an unknown account, a closed period, too many lines, amounts below the
minor unit. Those checks are the ERP's own: they must not trust that the sender validated.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tillflow.model import MINOR_UNITS, MovementReason, UnitOfMeasure
from tillflow.model.base import Ident
from tillflow.model.money import Dec

__all__ = [
    "Finding",
    "JournalIn",
    "JournalLineIn",
    "MovementBatchIn",
    "MovementIn",
    "content_hash",
    "fiscal_period",
    "journal_findings",
    "movement_findings",
    "to_minor",
]

_ZERO = Decimal(0)


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JournalLineIn(_Shape):
    account: str = Field(min_length=1, max_length=64)
    debit: Dec = _ZERO
    credit: Dec = _ZERO
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    description: str = Field(default="", max_length=500)
    dimensions: dict[str, str] = Field(default_factory=dict)


class JournalIn(_Shape):
    external_id: Ident  # the sender's journal id: the ERP's second idempotency key
    store_id: Ident
    business_day: date
    lines: list[JournalLineIn]
    source_transactions: list[str] = Field(default_factory=list)


class MovementIn(_Shape):
    """A canonical `InventoryMovement` as it is dumped: `store_id` and `occurred_at` may come along."""

    store_id: Ident | None = None  # when given, the batch's store
    sku: Ident
    quantity: Dec  # signed: negative leaves the store
    uom: UnitOfMeasure = UnitOfMeasure.EACH
    reason: MovementReason
    transaction_id: str = Field(min_length=1, max_length=200)
    line_no: int = Field(ge=0)
    occurred_at: AwareDatetime | None = None


class MovementBatchIn(_Shape):
    batch_id: Ident
    store_id: Ident
    business_day: date
    movements: list[MovementIn]


@dataclass(frozen=True)
class Finding:
    """One reason to refuse a document: `code` is stable (counted in the state), `field` the path."""

    code: str
    field: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "reason": self.reason}


def fiscal_period(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def to_minor(amount: Decimal, currency: str) -> int:
    """`amount` in minor units; only for amounts already checked to be whole minor units."""
    return int(amount.scaleb(MINOR_UNITS[currency]))


def _plain(amount: Decimal) -> str:
    """One spelling per value ("10.0" and "10.00" are the same amount)."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text


def content_hash(document: JournalIn | MovementBatchIn) -> str:
    """What a document says, independent of how amounts are spelled: a repeat with another key
    must be recognised as the same document, a changed one as a conflict."""
    data: dict[str, Any] = document.model_dump(mode="json")
    if isinstance(document, JournalIn):
        data["lines"] = [
            {**line, "debit": _plain(src.debit), "credit": _plain(src.credit)}
            for line, src in zip(data["lines"], document.lines, strict=True)
        ]
    else:
        data["movements"] = [
            {**move, "quantity": _plain(src.quantity)}
            for move, src in zip(data["movements"], document.movements, strict=True)
        ]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _count_findings(count: int, limit: int, what: str, path: str) -> list[Finding]:
    if count == 0:
        return [Finding(f"no_{path}", path, f"the document has no {what}")]
    if count > limit:
        return [Finding(f"too_many_{path}", path, f"{count} {what} exceed the limit of {limit} per document")]
    return []


def journal_findings(
    journal: JournalIn, *, accounts: dict[str, str], closed: set[str], max_lines: int
) -> list[Finding]:
    """Every reason the general ledger refuses `journal`; empty when it may be posted."""
    found = _count_findings(len(journal.lines), max_lines, "lines", "lines")
    period = fiscal_period(journal.business_day)
    if period in closed:
        found.append(
            Finding("closed_period", "business_day", f"fiscal period {period} is closed for posting")
        )
    debits: dict[str, Decimal] = defaultdict(Decimal)
    credits: dict[str, Decimal] = defaultdict(Decimal)
    amounts_ok = True
    for n, line in enumerate(journal.lines):
        at = f"lines.{n}"
        if line.account not in accounts:
            found.append(
                Finding("unknown_account", f"{at}.account", f"account {line.account} is not in the chart")
            )
        if line.currency not in MINOR_UNITS:
            found.append(
                Finding("unknown_currency", f"{at}.currency", f"currency {line.currency} is not supported")
            )
            amounts_ok = False
            continue
        line_findings = _line_amount_findings(line, at)
        found += line_findings
        if line_findings:
            amounts_ok = False
            continue
        debits[line.currency] += line.debit
        credits[line.currency] += line.credit
    if amounts_ok:
        for currency in sorted(debits):
            difference = debits[currency] - credits[currency]
            if difference:
                found.append(
                    Finding(
                        "unbalanced",
                        "lines",
                        f"{currency} does not balance: debits {debits[currency]}, credits "
                        f"{credits[currency]}, difference {difference}",
                    )
                )
    return found


def _line_amount_findings(line: JournalLineIn, at: str) -> list[Finding]:
    if line.debit < 0 or line.credit < 0:
        return [Finding("negative_amount", at, "debit and credit are never negative")]
    if line.debit and line.credit:
        return [Finding("debit_and_credit", at, "a line is a debit or a credit, not both")]
    if not line.debit and not line.credit:
        return [Finding("zero_line", at, "a line moves an amount: debit or credit, not zero")]
    amount, side = (line.debit, "debit") if line.debit else (line.credit, "credit")
    places = MINOR_UNITS[line.currency]
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        return [
            Finding(
                "not_minor_units",
                f"{at}.{side}",
                f"{side} {amount} has digits below the {line.currency} minor unit ({places} decimals)",
            )
        ]
    return []


def movement_findings(batch: MovementBatchIn, *, closed: set[str], max_lines: int) -> list[Finding]:
    """Every reason the stock ledger refuses `batch`; empty when it may be posted."""
    found = _count_findings(len(batch.movements), max_lines, "movements", "movements")
    period = fiscal_period(batch.business_day)
    if period in closed:
        found.append(
            Finding("closed_period", "business_day", f"fiscal period {period} is closed for posting")
        )
    for n, move in enumerate(batch.movements):
        if not move.quantity:
            found.append(Finding("zero_quantity", f"movements.{n}.quantity", "a movement moves stock"))
        if move.store_id is not None and move.store_id != batch.store_id:
            found.append(
                Finding(
                    "store_mismatch",
                    f"movements.{n}.store_id",
                    f"movement of store {move.store_id} in a batch of store {batch.store_id}",
                )
            )
    return found
