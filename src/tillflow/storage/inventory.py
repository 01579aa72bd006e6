"""Stock positions and movements in the state store (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine, select

from tillflow.errors import PoisonEventError
from tillflow.model import InventoryMovement, MovementReason, UnitOfMeasure
from tillflow.ports import InventoryPlan
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import from_us, insert_for, insert_rows, to_us
from tillflow.storage.tables import (
    inventory_movements,
    inventory_positions,
    inventory_voids,
    processed_events,
    trace_hops,
)

MILLI = Decimal(1000)


def to_milli(quantity: Decimal) -> int:
    milli = quantity * MILLI
    if milli != milli.to_integral_value():
        raise PoisonEventError(f"quantity {quantity} has more than 3 decimals; stock is kept in thousandths")
    return int(milli)


class SQLInventoryLedger:
    """The InventoryLedger port on a SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find_processed(self, flow: str, event_keys: Sequence[str]) -> set[str]:
        if not event_keys:
            return set()
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(processed_events.c.event_key).where(
                    processed_events.c.flow == flow, processed_events.c.event_key.in_(set(event_keys))
                )
            )
            return {r.event_key for r in rows}

    def find_movements(self, transaction_ids: Sequence[str]) -> dict[str, list[InventoryMovement]]:
        out: dict[str, list[InventoryMovement]] = defaultdict(list)
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(inventory_movements)
                .where(
                    inventory_movements.c.transaction_id.in_(set(transaction_ids)),
                    inventory_movements.c.reason != MovementReason.VOID.value,
                )
                .order_by(inventory_movements.c.id)
            )
            for r in rows:
                out[r.transaction_id].append(
                    InventoryMovement(
                        store_id=r.store_id,
                        sku=r.sku,
                        quantity=Decimal(r.quantity_milli) / MILLI,
                        uom=UnitOfMeasure(r.uom),
                        reason=MovementReason(r.reason),
                        transaction_id=r.transaction_id,
                        line_no=r.line_no,
                        occurred_at=from_us(r.occurred_us),
                    )
                )
        return dict(out)

    def find_voided(self, transaction_ids: Sequence[str]) -> set[str]:
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(inventory_voids.c.transaction_id).where(
                    inventory_voids.c.transaction_id.in_(set(transaction_ids))
                )
            )
            return {r.transaction_id for r in rows}

    def record_movements(self, plan: InventoryPlan, *, flow: str) -> int:
        now_us = to_us(datetime.now(UTC))
        deltas: dict[tuple[str, str], int] = defaultdict(int)
        uoms: dict[tuple[str, str], str] = {}
        rows = []
        for m in plan.movements:
            milli = to_milli(m.quantity)
            deltas[(m.store_id, m.sku)] += milli
            uoms[(m.store_id, m.sku)] = m.uom.value
            rows.append(
                {
                    "store_id": m.store_id,
                    "sku": m.sku,
                    "quantity_milli": milli,
                    "uom": m.uom.value,
                    "reason": m.reason.value,
                    "transaction_id": m.transaction_id,
                    "line_no": m.line_no,
                    "occurred_us": to_us(m.occurred_at),
                }
            )
        with write_tx(self.engine) as conn:
            insert_rows(
                conn,
                processed_events.insert(),
                [{"flow": flow, "event_key": k, "processed_us": now_us} for k in plan.event_keys],
            )
            if rows:
                insert_rows(conn, inventory_movements.insert(), rows)
                upsert = insert_for(conn, inventory_positions)
                insert_rows(
                    conn,
                    upsert.on_conflict_do_update(
                        index_elements=[inventory_positions.c.store_id, inventory_positions.c.sku],
                        set_={
                            "quantity_milli": inventory_positions.c.quantity_milli
                            + upsert.excluded.quantity_milli,
                            "updated_us": upsert.excluded.updated_us,
                        },
                    ),
                    [
                        {
                            "store_id": store,
                            "sku": sku,
                            "quantity_milli": delta,
                            "uom": uoms[(store, sku)],
                            "updated_us": now_us,
                        }
                        for (store, sku), delta in sorted(deltas.items())
                    ],
                )
            insert_rows(
                conn,
                insert_for(conn, inventory_voids).on_conflict_do_nothing(),
                [{"transaction_id": t, "void_transaction_id": v, "voided_us": now_us} for t, v in plan.voids],
            )
            insert_rows(
                conn,
                trace_hops.insert(),
                [{"transaction_id": t, "hop": h, "at_us": now_us, "detail": d} for t, h, d in plan.hops],
            )
        return len(rows)

    def read_position(self, store_id: str, sku: str) -> Decimal | None:
        with read_tx(self.engine) as conn:
            milli = conn.execute(
                select(inventory_positions.c.quantity_milli).where(
                    inventory_positions.c.store_id == store_id, inventory_positions.c.sku == sku
                )
            ).scalar_one_or_none()
        return None if milli is None else Decimal(milli) / MILLI
