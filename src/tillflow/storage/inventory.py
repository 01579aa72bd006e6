"""Stock positions and movements in the state store (SQLite or PostgreSQL), with the latest
count per store and SKU, stock alerts, and the stock counts' way into the event log (the
outbox the transactions use)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, func, or_, select

from tillflow.errors import PoisonEventError
from tillflow.model import CloudEvent, InventoryMovement, MovementReason, UnitOfMeasure
from tillflow.ports import AlertKind, InventoryPlan, StockAlert, StockState, Verdict
from tillflow.storage.db import lock_for_append, read_tx, write_tx
from tillflow.storage.outbox import APPEND_LOCK, append_in
from tillflow.storage.sql import from_us, insert_for, insert_rows, rows_by_pairs, to_us
from tillflow.storage.tables import (
    events,
    inventory_alerts,
    inventory_movements,
    inventory_positions,
    inventory_voids,
    processed_events,
    stock_counts,
    stock_days,
    trace_hops,
)

CHUNK = 2000  # keys per IN (...) list

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
                    # a line in a unit with no conversion never moved the position: nothing to undo
                    or_(
                        inventory_movements.c.excluded.is_(None),
                        inventory_movements.c.excluded.not_like("no conversion%"),
                    ),
                )
                .order_by(inventory_movements.c.id)
            )
            for r in rows:
                out[r.transaction_id].append(movement_of(r))
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
        unbatched: dict[tuple[str, str], int] = defaultdict(int)
        excluded = dict(plan.excluded)
        days = plan.business_days
        iso: dict[date, str] = {}  # each day and time converted once
        micros: dict[datetime, int] = {}
        rows = []
        for i, m in enumerate(plan.movements):
            milli = to_milli(m.quantity)
            day = days[i] if i < len(days) else None
            day_text = None if day is None else iso.get(day) or iso.setdefault(day, day.isoformat())
            at = m.occurred_at
            at_us = micros.get(at)
            if at_us is None:
                at_us = micros[at] = to_us(at)
            uom = m.uom.value
            why = excluded.get(i)
            if why is None:
                key = (m.store_id, m.sku)
                deltas[key] += milli
                uoms[key] = uom
                if day_text is not None:
                    unbatched[(m.store_id, day_text)] += 1
            rows.append(
                {
                    "store_id": m.store_id,
                    "sku": m.sku,
                    "quantity_milli": milli,
                    "uom": uom,
                    "reason": m.reason.value,
                    "transaction_id": m.transaction_id,
                    "line_no": m.line_no,
                    "occurred_us": at_us,
                    "business_day": day_text,
                    "excluded": why,
                    "batch_id": None,
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
                self._move_positions(conn, deltas, uoms, now_us)
                self._count_unbatched(conn, unbatched)
            self._record_counts(conn, plan, now_us)
            self._record_alerts(conn, plan, now_us)
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

    @staticmethod
    def _move_positions(
        conn: Connection, deltas: dict[tuple[str, str], int], uoms: dict[tuple[str, str], str], now_us: int
    ) -> None:
        upsert = insert_for(conn, inventory_positions)
        insert_rows(
            conn,
            upsert.on_conflict_do_update(
                index_elements=[inventory_positions.c.store_id, inventory_positions.c.sku],
                set_={
                    "quantity_milli": inventory_positions.c.quantity_milli + upsert.excluded.quantity_milli,
                    "uom": upsert.excluded.uom,
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

    @staticmethod
    def _count_unbatched(conn: Connection, unbatched: dict[tuple[str, str], int]) -> None:
        upsert = insert_for(conn, stock_days)
        insert_rows(
            conn,
            upsert.on_conflict_do_update(
                index_elements=[stock_days.c.store_id, stock_days.c.business_day],
                set_={"unbatched": stock_days.c.unbatched + upsert.excluded.unbatched},
            ),
            [{"store_id": s, "business_day": d, "unbatched": n} for (s, d), n in sorted(unbatched.items())],
        )

    @staticmethod
    def _record_counts(conn: Connection, plan: InventoryPlan, now_us: int) -> None:
        upsert = insert_for(conn, stock_counts)
        insert_rows(
            conn,
            upsert.on_conflict_do_update(
                index_elements=[stock_counts.c.store_id, stock_counts.c.sku],
                set_={
                    "count_id": upsert.excluded.count_id,
                    "counted_us": upsert.excluded.counted_us,
                    "quantity_milli": upsert.excluded.quantity_milli,
                    "applied_us": upsert.excluded.applied_us,
                },
            ),
            [
                {
                    "store_id": c.store_id,
                    "sku": c.sku,
                    "count_id": c.count_id,
                    "counted_us": to_us(c.counted_at),
                    "quantity_milli": to_milli(c.quantity),
                    "applied_us": now_us,
                }
                for c in plan.counts
            ],
        )

    @staticmethod
    def _record_alerts(conn: Connection, plan: InventoryPlan, now_us: int) -> None:
        for c in plan.cleared:  # those open before the batch first: the batch may raise them anew
            conn.execute(
                inventory_alerts.update()
                .where(
                    inventory_alerts.c.store_id == c.store_id,
                    inventory_alerts.c.sku == c.sku,
                    inventory_alerts.c.alert_key == c.key,
                    inventory_alerts.c.cleared_us.is_(None),
                )
                .values(cleared_us=to_us(c.at), cleared_by=c.cleared_by)
            )
        insert_rows(
            conn,
            inventory_alerts.insert(),
            [
                {
                    "kind": a.kind.value,
                    "alert_key": a.key,
                    "store_id": a.store_id,
                    "sku": a.sku,
                    "quantity_milli": to_milli(a.quantity),
                    "uom": a.uom,
                    "transaction_id": a.transaction_id,
                    "detail": a.detail,
                    "at_us": to_us(a.at),
                    "raised_us": now_us,
                    "cleared_us": None if a.cleared_at is None else to_us(a.cleared_at),
                    "cleared_by": a.cleared_by,
                }
                for a in plan.alerts
            ],
        )

    # --- the StockBook port --------------------------------------------------------------------

    def find_stock(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], StockState]:
        wanted = sorted(set(keys))
        quantity: dict[tuple[str, str], Decimal] = {}
        counted: dict[tuple[str, str], tuple[str, datetime]] = {}
        alerts: dict[tuple[str, str], set[str]] = defaultdict(set)
        pair = ("store_id", "sku")
        with read_tx(self.engine) as conn:
            for store, sku, milli in rows_by_pairs(
                conn, "SELECT store_id, sku, quantity_milli FROM inventory_positions", pair, wanted
            ):
                quantity[(store, sku)] = Decimal(milli) / MILLI
            for store, sku, count_id, counted_us in rows_by_pairs(
                conn, "SELECT store_id, sku, count_id, counted_us FROM stock_counts", pair, wanted
            ):
                counted[(store, sku)] = (count_id, from_us(counted_us))
            for store, sku, key in rows_by_pairs(
                conn,
                "SELECT store_id, sku, alert_key FROM inventory_alerts",
                pair,
                wanted,
                where="cleared_us IS NULL",
            ):
                alerts[(store, sku)].add(key)
        out: dict[tuple[str, str], StockState] = {}
        for key in set(quantity) | set(counted) | set(alerts):
            count_id, counted_at = counted.get(key, (None, None))
            out[key] = StockState(
                quantity=quantity.get(key, Decimal(0)),
                count_id=count_id,
                counted_at=counted_at,
                open_alerts=frozenset(alerts.get(key, ())),
            )
        return out

    def sum_moved_after(self, store_id: str, skus: Sequence[str], after: datetime) -> dict[str, Decimal]:
        m = inventory_movements
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(m.c.sku, func.sum(m.c.quantity_milli).label("milli"))
                .where(
                    m.c.store_id == store_id,
                    m.c.sku.in_(set(skus)),
                    m.c.occurred_us > to_us(after),
                    m.c.excluded.is_(None),
                )
                .group_by(m.c.sku)
            )
            return {r.sku: Decimal(int(r.milli)) / MILLI for r in rows if r.milli}

    def list_alerts(
        self, *, store_id: str | None = None, include_cleared: bool = False, limit: int = 1000
    ) -> list[StockAlert]:
        a = inventory_alerts
        query = select(a).order_by(a.c.id.desc()).limit(limit)
        if store_id is not None:
            query = query.where(a.c.store_id == store_id)
        if not include_cleared:
            query = query.where(a.c.cleared_us.is_(None))
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
        return [
            StockAlert(
                kind=AlertKind(r.kind),
                store_id=r.store_id,
                sku=r.sku,
                quantity=Decimal(r.quantity_milli) / MILLI,
                uom=r.uom,
                transaction_id=r.transaction_id,
                at=from_us(r.at_us),
                detail=r.detail,
                cleared_at=None if r.cleared_us is None else from_us(r.cleared_us),
                cleared_by=r.cleared_by,
                id=r.id,
            )
            for r in rows
        ]

    def record_count(self, event: CloudEvent, *, received_at: datetime) -> Verdict:
        with write_tx(self.engine) as conn:
            lock_for_append(conn, APPEND_LOCK)  # judge and append as one: two posts of one count
            known = conn.execute(
                select(events.c.data).where(
                    and_(events.c.source == event.source, events.c.event_id == event.id)
                )
            ).scalar_one_or_none()
            if known is not None:
                return Verdict.DUPLICATE if bytes(known) == event.data else Verdict.CONFLICT
            logged_us = max(to_us(received_at), to_us(datetime.now(UTC)))
            [seq] = append_in(conn, [event], logged_us=logged_us)
            return Verdict.ACCEPTED if seq is not None else Verdict.DUPLICATE

    def read_position(self, store_id: str, sku: str) -> Decimal | None:
        with read_tx(self.engine) as conn:
            milli = conn.execute(
                select(inventory_positions.c.quantity_milli).where(
                    inventory_positions.c.store_id == store_id, inventory_positions.c.sku == sku
                )
            ).scalar_one_or_none()
        return None if milli is None else Decimal(milli) / MILLI


def movement_of(r: Row[Any]) -> InventoryMovement:
    """A movement as read back from its `inventory_movements` row."""
    return InventoryMovement(
        store_id=r.store_id,
        sku=r.sku,
        quantity=Decimal(r.quantity_milli) / MILLI,
        uom=UnitOfMeasure(r.uom),
        reason=MovementReason(r.reason),
        transaction_id=r.transaction_id,
        line_no=r.line_no,
        occurred_at=from_us(r.occurred_us),
    )
