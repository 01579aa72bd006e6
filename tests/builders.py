"""Builders of valid canonical values: transactions, their events and incoming records.

Every transaction is a consistent EUR one (no tax, paid exactly in cash), so a test only states
what its story is about: which lines, sold or returned, voided or not.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tillflow.model import (
    CloudEvent,
    ItemType,
    LineAction,
    LoggedEvent,
    Transaction,
    TransactionKind,
    UnitOfMeasure,
    round_to_minor,
)
from tillflow.model.events import transaction_completed
from tillflow.ports import IncomingTransaction

STORE = "S001"
REGISTER = "R01"
DAY = date(2026, 11, 29)
OPENING = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def line(
    line_no: int = 1,
    sku: str = "GRO-0001",
    *,
    quantity: str = "1",
    unit_price: str = "2.50",
    uom: UnitOfMeasure = UnitOfMeasure.EACH,
    item_type: ItemType = ItemType.STOCK,
) -> dict[str, Any]:
    """A sold line; its extended amount is quantity × unit price rounded to the cent."""
    extended = round_to_minor(Decimal(quantity) * Decimal(unit_price), "EUR")
    return {
        "line_no": line_no,
        "sku": sku,
        "quantity": quantity,
        "unit_price": unit_price,
        "extended_amount": str(extended),
        "uom": uom,
        "item_type": item_type,
    }


def weighed(line_no: int, sku: str, kilos: str, *, price_per_kg: str = "1.99") -> dict[str, Any]:
    """A line of loose goods sold by the kilogram."""
    return line(line_no, sku, quantity=kilos, unit_price=price_per_kg, uom=UnitOfMeasure.KILOGRAM)


def returned(line_no: int = 1, sku: str = "GRO-0001", *, restock: bool = True, **kw: Any) -> dict[str, Any]:
    """A returned line; `restock=False` means the goods are damaged and stay off the shelf."""
    return {**line(line_no, sku, **kw), "action": LineAction.RETURN, "restock": restock}


def _signed(row: dict[str, Any]) -> Decimal:
    amount = Decimal(row["extended_amount"])
    return -amount if row.get("action") is LineAction.RETURN else amount


def _transaction(kind: TransactionKind, sequence: int, register: str, **fields: Any) -> Transaction:
    return Transaction.model_validate(
        {
            "store_id": STORE,
            "register_id": register,
            "business_day": DAY,
            "sequence": sequence,
            "kind": kind,
            "currency": "EUR",
            "ended_at": OPENING + timedelta(minutes=sequence),
            **fields,
        }
    )


def _closed(
    kind: TransactionKind, sequence: int, rows: tuple[dict[str, Any], ...], register: str
) -> Transaction:
    total = sum((_signed(r) for r in rows), Decimal(0))
    return _transaction(
        kind,
        sequence,
        register,
        lines=list(rows),
        tenders=[{"kind": "cash", "amount": total}],
        totals={"subtotal": total, "tax": 0, "grand_total": total},
    )


def sale(sequence: int, *rows: dict[str, Any], register: str = REGISTER) -> Transaction:
    """A sale of `rows` (one pack of pasta when none are given)."""
    return _closed(TransactionKind.SALE, sequence, rows or (line(),), register)


def customer_return(sequence: int, *rows: dict[str, Any], register: str = REGISTER) -> Transaction:
    """A return of `rows`, which must be `returned(...)` lines."""
    return _closed(TransactionKind.RETURN, sequence, rows or (returned(),), register)


def exchange(sequence: int, *rows: dict[str, Any], register: str = REGISTER) -> Transaction:
    """An exchange: some lines come back (`returned(...)`), others go out (`line(...)`)."""
    return _closed(TransactionKind.EXCHANGE, sequence, rows, register)


def post_void(sequence: int, original: Transaction) -> Transaction:
    """A post-void that cancels `original`: no lines, its amounts the negated original's."""
    total = -original.totals.grand_total
    return _transaction(
        TransactionKind.VOID,
        sequence,
        original.register_id,
        voided=original.ref,
        tenders=[{"kind": "cash", "amount": total}],
        totals={"subtotal": -original.totals.subtotal, "tax": 0, "grand_total": total},
    )


def canonical_bytes(tx: Transaction) -> bytes:
    return tx.model_dump_json().encode()


def incoming(tx: Transaction, *, traceparent: str | None = TRACEPARENT) -> IncomingTransaction:
    """`tx` as the gateway hands it to the store: canonical bytes and their SHA-256."""
    data = canonical_bytes(tx)
    return IncomingTransaction(tx, data, hashlib.sha256(data).hexdigest(), traceparent)


def completed(tx: Transaction, seq: int) -> LoggedEvent:
    """The transaction-completed event of `tx` as the log would hand it out at `seq`."""
    return LoggedEvent(seq=seq, event=transaction_completed(tx, canonical_bytes(tx), traceparent=None))


def cloud_event(
    n: int, *, source: str = f"/stores/{STORE}/registers/{REGISTER}", **fields: Any
) -> CloudEvent:
    """The `n`th event of a register: id ``evt-<n>``, its own payload."""
    return CloudEvent(
        **{
            "id": f"evt-{n}",
            "source": source,
            "type": "retail.transaction.completed.v1",
            "time": OPENING + timedelta(seconds=n),
            "data": f'{{"n":{n}}}'.encode(),
            **fields,
        }
    )
