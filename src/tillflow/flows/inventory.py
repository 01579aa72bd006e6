"""Inventory flow: every completed transaction becomes stock movements, exactly once.

Sales take stock out, returns bring it back (unless the returned goods are damaged), a
post-void reverses what the voided transaction moved, and non-stock and service items never
move stock. A void that arrives before the transaction it cancels is remembered, so the late
original then moves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Final

from pydantic import AwareDatetime, BaseModel, ConfigDict

from tillflow.model import (
    InventoryMovement,
    ItemType,
    LineAction,
    LoggedEvent,
    MovementReason,
    Transaction,
    TransactionRef,
    UnitOfMeasure,
)
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.model.transaction import transaction_id
from tillflow.ports import InventoryLedger, InventoryPlan

FLOW: Final = "inventory"


class _Projection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class StockLine(_Projection):
    """What stock needs of a line of a transaction."""

    line_no: int
    action: LineAction = LineAction.SALE
    sku: str
    quantity: Decimal
    uom: UnitOfMeasure = UnitOfMeasure.EACH
    item_type: ItemType = ItemType.STOCK
    restock: bool = True


class StockView(_Projection):
    """What stock needs of a transaction the gateway validated: decoding only these fields
    (and not the money, taxes and tenders) is most of the flow's speed."""

    store_id: str
    register_id: str
    business_day: date
    sequence: int
    ended_at: AwareDatetime
    lines: tuple[StockLine, ...] = ()
    voided: TransactionRef | None = None

    @property
    def transaction_id(self) -> str:
        return transaction_id(self.store_id, self.register_id, self.business_day, self.sequence)


def movements_for(tx: Transaction | StockView) -> list[InventoryMovement]:
    """The stock movements of a sale, return or exchange (none for a post-void)."""
    out = []
    for line in tx.lines:
        if line.item_type is not ItemType.STOCK:
            continue
        if line.action is LineAction.SALE:
            quantity, reason = -line.quantity, MovementReason.SALE
        elif line.restock:
            quantity, reason = line.quantity, MovementReason.RETURN
        else:
            continue  # damaged goods do not go back on the shelf
        out.append(  # built from a validated transaction: nothing left to check
            InventoryMovement.model_construct(
                store_id=tx.store_id,
                sku=line.sku,
                quantity=quantity,
                uom=line.uom,
                reason=reason,
                transaction_id=tx.transaction_id,
                line_no=line.line_no,
                occurred_at=tx.ended_at,
            )
        )
    return out


def reversal_of(
    movements: Iterable[InventoryMovement], void: Transaction | StockView
) -> list[InventoryMovement]:
    """The movements that undo `movements`, caused by the post-void `void`."""
    return [
        m.model_copy(
            update={"quantity": -m.quantity, "reason": MovementReason.VOID, "occurred_at": void.ended_at}
        )
        for m in movements
    ]


def event_key(event: LoggedEvent) -> str:
    """The dedupe key of an event: CloudEvents source + id."""
    return f"{event.event.source} {event.event.id}"


def decode_transactions(events: Sequence[LoggedEvent]) -> list[tuple[LoggedEvent, StockView]]:
    """The transaction-completed events of a batch with what stock needs of their transactions
    (which the gateway validated in full)."""
    return [
        (e, StockView.model_validate_json(e.event.data))
        for e in events
        if e.event.type == TRANSACTION_COMPLETED
    ]


def plan_inventory(events: Sequence[LoggedEvent], *, ledger: InventoryLedger) -> InventoryPlan:
    """Work out what a batch of events does to stock; events already applied are left out."""
    done = ledger.find_processed(FLOW, [event_key(e) for e in events])
    events = [e for e in events if event_key(e) not in done]
    decoded = decode_transactions(events)
    void_targets = [tx.voided.transaction_id for _, tx in decoded if tx.voided is not None]
    earlier = ledger.find_movements(void_targets) if void_targets else {}
    voided = ledger.find_voided([tx.transaction_id for _, tx in decoded] + void_targets)

    moved: dict[str, list[InventoryMovement]] = dict(earlier)
    movements: list[InventoryMovement] = []
    voids: list[tuple[str, str]] = []
    hops: list[tuple[str, str, str | None]] = []
    for _, tx in decoded:
        tx_id = tx.transaction_id
        if tx.voided is not None:
            target = tx.voided.transaction_id
            if target in voided:  # a second post-void of the same sale changes nothing
                hops.append((tx_id, "inventory.applied", f"no movement: {target} was already voided"))
                continue
            reversal = reversal_of(moved.pop(target, ()), tx)
            movements.extend(reversal)
            voids.append((target, tx_id))
            voided.add(target)
            hops.append((tx_id, "inventory.applied", f"{len(reversal)} movements reversed for {target}"))
        elif tx_id in voided:
            hops.append((tx_id, "inventory.applied", "no movement: already post-voided"))
        else:
            own = movements_for(tx)
            moved[tx_id] = own
            movements.extend(own)
            hops.append((tx_id, "inventory.applied", f"{len(own)} movements"))
    return InventoryPlan(
        event_keys=tuple(event_key(e) for e in events),
        movements=tuple(movements),
        voids=tuple(voids),
        hops=tuple(hops),
    )


def apply_inventory(events: Sequence[LoggedEvent], *, ledger: InventoryLedger) -> int:
    """Handler of the inventory consumer group: plan the batch and record it once."""
    return ledger.record_movements(plan_inventory(events, ledger=ledger), flow=FLOW)
