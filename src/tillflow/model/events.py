"""CloudEvents 1.0 envelopes and the event types of tillflow.

`source` + `id` is the dedupe key. Extensions: `partitionkey` (the store), `sequence`
(zero-padded, per register) and `traceparent` (W3C). `data` stays encoded JSON bytes: it is
validated once at the gateway and never parsed by the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tillflow.model.transaction import Transaction

TRANSACTION_COMPLETED = "retail.transaction.completed.v1"
INVENTORY_ADJUSTED = "retail.inventory.adjusted.v1"
INVENTORY_COUNTED = "retail.inventory.counted.v1"
LOYALTY_POINTS_ACCRUED = "loyalty.points.accrued.v1"
ERP_JOURNAL_POSTED = "erp.journal.posted.v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudEvent:
    """A CloudEvents 1.0 envelope; built by tillflow itself, so it is a plain dataclass."""

    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    specversion: str = "1.0"
    datacontenttype: str = "application/json"
    partitionkey: str | None = None
    sequence: str | None = None
    traceparent: str | None = None
    data: bytes = b"{}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggedEvent:
    """An event as read back from the log, with the position the log gave it, which delivery
    to this consumer group this is (1 for the first), whether it comes back after a nak or
    a dead-letter replay (`redelivered`), and whether it is an operator's replay of a dead
    letter (`replayed`: it may arrive beside a delivery of the same seq)."""

    seq: int
    event: CloudEvent
    attempt: int = 1
    redelivered: bool = False
    replayed: bool = False


def register_source(store_id: str, register_id: str) -> str:
    """The CloudEvents `source` of everything a register emits."""
    return f"/stores/{store_id}/registers/{register_id}"


def transaction_completed(tx: Transaction, data: bytes, *, traceparent: str | None) -> CloudEvent:
    """The event that says a till completed `tx`; `data` is its canonical JSON."""
    return CloudEvent(
        id=tx.transaction_id,
        source=register_source(tx.store_id, tx.register_id),
        type=TRANSACTION_COMPLETED,
        time=tx.ended_at,
        subject=tx.transaction_id,
        partitionkey=tx.store_id,
        sequence=f"{tx.sequence:010d}",
        traceparent=traceparent,
        data=data,
    )
