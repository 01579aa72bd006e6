"""The ERP over HTTP: `ErpSystem` against an ERP's REST API (the reference ERP's API shape).

Answers become the port's records and errors as every HTTP connector translates them
(`tillflow.connectors.http`); a lookup of something never posted is None. Every write carries
the caller's idempotency key, so a retry never posts twice. Money travels as JSON strings,
never floats; datetimes as ISO 8601 with their offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import httpx

from tillflow.connectors.http import HttpConnector, aware, replayed, segment
from tillflow.errors import DownstreamRejectedError
from tillflow.model import InventoryMovement, Journal, JournalLine
from tillflow.ports import PostingReceipt, TrialBalanceLine

__all__ = ["HttpErp"]


class HttpErp(HttpConnector):
    """`ErpSystem` over HTTP. Use as a context manager, or `close()` it when done."""

    SYSTEM = "erp"
    TIMEOUT = 10.0
    CONNECT_TIMEOUT = 3.0

    def post_journal(self, journal: Journal, *, idempotency_key: str) -> PostingReceipt:
        answer = self.send("POST", "/api/journals", json=_journal(journal), idempotency_key=idempotency_key)
        return self._receipt(answer, journal.journal_id)

    def post_journals(
        self, journals: Sequence[Journal], *, idempotency_keys: Sequence[str]
    ) -> list[PostingReceipt | DownstreamRejectedError]:
        """`POST /api/journals/batch`, `max_batch` journals a request. An item answered 4xx is
        its rejection; an item answered 429 or 5xx fails the call (the batch is retried, and
        what was posted answers as a repeat)."""
        if len(journals) != len(idempotency_keys):
            raise ValueError("one idempotency key per journal")
        out: list[PostingReceipt | DownstreamRejectedError] = []
        for start in range(0, len(journals), self.max_batch):
            chunk = journals[start : start + self.max_batch]
            keys = idempotency_keys[start : start + self.max_batch]
            items = [{"idempotency_key": k, "journal": _journal(j)} for j, k in zip(chunk, keys, strict=True)]
            answer = self.send("POST", "/api/journals/batch", json={"journals": items})
            names = [f"journal {j.journal_id}" for j in chunk]
            out += self.batch_results(answer, names, _receipt)
        return out

    def posting_status(self, external_id: str) -> PostingReceipt | None:
        answer = self.send("GET", f"/api/journals/{segment(external_id)}")
        if answer.status_code == 404:
            return None
        return self._receipt(answer, external_id)

    def post_movements(
        self,
        store_id: str,
        business_day: date,
        movements: Sequence[InventoryMovement],
        *,
        batch_id: str,
        idempotency_key: str,
    ) -> PostingReceipt:
        body = {
            "batch_id": batch_id,
            "store_id": store_id,
            "business_day": business_day.isoformat(),
            "movements": [_movement(m) for m in movements],
        }
        answer = self.send("POST", "/api/inventory-movements", json=body, idempotency_key=idempotency_key)
        return self._receipt(answer, batch_id)

    def trial_balance(self, store_id: str, business_day: date) -> list[TrialBalanceLine]:
        params = {"store_id": store_id, "business_day": business_day.isoformat()}
        answer = self.send("GET", "/api/trial-balance", params=params)
        return self.read(
            answer,
            lambda data: [
                TrialBalanceLine(
                    account=str(line["account"]),
                    currency=str(line["currency"]),
                    debit=Decimal(str(line["debit"])),
                    credit=Decimal(str(line["credit"])),
                )
                for line in data["lines"]
            ],
        )

    def _receipt(self, answer: httpx.Response, external_id: str) -> PostingReceipt:
        return self.read(answer, lambda data: _receipt({"external_id": external_id} | data, replayed(answer)))


# --- translation ----------------------------------------------------------------------------


def _amount(value: Decimal) -> str:
    """A Decimal as a plain JSON string (never an exponent, never a float)."""
    return format(value, "f")


def _receipt(body: dict[str, Any], repeated: bool) -> PostingReceipt:
    return PostingReceipt(
        external_id=str(body["external_id"]),
        document_number=str(body["document_number"]),
        posted_at=aware(str(body["posted_at"])),
        repeated=repeated,
    )


def _journal(journal: Journal) -> dict[str, Any]:
    return {
        "external_id": journal.journal_id,
        "store_id": journal.store_id,
        "business_day": journal.business_day.isoformat(),
        "lines": [_journal_line(line) for line in journal.lines],
        "source_transactions": list(journal.source_transactions),
    }


def _journal_line(line: JournalLine) -> dict[str, Any]:
    out: dict[str, Any] = {"account": line.account, "currency": line.currency}
    if line.debit:
        out["debit"] = _amount(line.debit)
    if line.credit:
        out["credit"] = _amount(line.credit)
    out["description"] = line.description
    out["dimensions"] = dict(line.dimensions)
    return out


def _movement(move: InventoryMovement) -> dict[str, Any]:
    return {
        "store_id": move.store_id,
        "sku": move.sku,
        "quantity": _amount(move.quantity),
        "uom": move.uom.value,
        "reason": move.reason.value,
        "transaction_id": move.transaction_id,
        "line_no": move.line_no,
        "occurred_at": move.occurred_at.isoformat(),
    }
