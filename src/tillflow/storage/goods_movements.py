"""Which goods movements went to the ERP in which batch, in the state store.

A batch is recorded with the movements it carries (their `batch_id`) before it is posted, in
one commit that also takes them off the store-day's count of unbatched movements; it is then
settled posted, failed or empty. A movement is in one batch at most.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Engine, and_, or_, select

from tillflow.errors import StorageError
from tillflow.model import InventoryMovement
from tillflow.ports import BatchState, GoodsBatch
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.inventory import movement_of
from tillflow.storage.sql import from_us, insert_rows, to_us
from tillflow.storage.tables import day_closes, goods_batches, inventory_movements, stock_days

MILLI = Decimal(1000)
CHUNK = 2000


class SQLGoodsMovementLog:
    """The GoodsMovementLog port on a SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def list_due_days(self, *, now: datetime) -> list[tuple[str, date]]:
        s, d = stock_days, day_closes
        query = (
            select(s.c.store_id, s.c.business_day)
            .join(d, and_(d.c.store_id == s.c.store_id, d.c.business_day == s.c.business_day))
            .where(s.c.unbatched > 0, or_(d.c.state == "posted", d.c.deadline_us <= to_us(now)))
            .order_by(s.c.business_day, s.c.store_id)
        )
        with read_tx(self.engine) as conn:
            return [(r.store_id, date.fromisoformat(r.business_day)) for r in conn.execute(query)]

    def find_unbatched(self, store_id: str, business_day: date) -> list[tuple[int, InventoryMovement]]:
        m = inventory_movements
        query = (
            select(m)
            .where(
                m.c.store_id == store_id,
                m.c.business_day == business_day.isoformat(),
                m.c.batch_id.is_(None),
                m.c.excluded.is_(None),
            )
            .order_by(m.c.id)
        )
        with read_tx(self.engine) as conn:
            return [(int(r.id), movement_of(r)) for r in conn.execute(query)]

    def record_batches(self, batches: Sequence[tuple[GoodsBatch, Sequence[int]]], *, at: datetime) -> None:
        if not batches:
            return
        at_us = to_us(at)
        m = inventory_movements
        with write_tx(self.engine) as conn:
            insert_rows(
                conn,
                goods_batches.insert(),
                [
                    {
                        "batch_id": b.batch_id,
                        "store_id": b.store_id,
                        "business_day": b.business_day.isoformat(),
                        "number": b.number,
                        "lines": b.lines,
                        "movements": len(ids),
                        "state": b.state.value,
                        "document_number": b.document_number,
                        "reason": b.reason,
                        "recorded_us": at_us,
                        "settled_us": None if b.state is BatchState.PENDING else at_us,
                    }
                    for b, ids in batches
                ],
            )
            for b, ids in batches:
                taken = 0
                for start in range(0, len(ids), CHUNK):
                    result = conn.execute(
                        m.update()
                        .where(m.c.id.in_(list(ids[start : start + CHUNK])), m.c.batch_id.is_(None))
                        .values(batch_id=b.batch_id)
                    )
                    taken += result.rowcount
                if taken != len(ids):  # another worker batched some of them: record nothing
                    raise StorageError(
                        f"batch {b.batch_id}: {len(ids) - taken} movements are already batched"
                    )
                conn.execute(
                    stock_days.update()
                    .where(
                        stock_days.c.store_id == b.store_id,
                        stock_days.c.business_day == b.business_day.isoformat(),
                    )
                    .values(unbatched=stock_days.c.unbatched - len(ids))
                )

    def read_batch(self, batch_id: str) -> list[InventoryMovement]:
        m = inventory_movements
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(m).where(m.c.batch_id == batch_id).order_by(m.c.id))
            return [movement_of(r) for r in rows]

    def settle_batch(
        self,
        batch_id: str,
        *,
        state: BatchState,
        document_number: str | None,
        reason: str | None,
        at: datetime,
    ) -> None:
        with write_tx(self.engine) as conn:
            conn.execute(
                goods_batches.update()
                .where(goods_batches.c.batch_id == batch_id)
                .values(
                    state=state.value, document_number=document_number, reason=reason, settled_us=to_us(at)
                )
            )

    def find_batches(
        self,
        *,
        business_day: date | None = None,
        store_id: str | None = None,
        state: BatchState | None = None,
    ) -> list[GoodsBatch]:
        g = goods_batches
        query = select(g).order_by(g.c.store_id, g.c.business_day, g.c.number)
        if business_day is not None:
            query = query.where(g.c.business_day == business_day.isoformat())
        if store_id is not None:
            query = query.where(g.c.store_id == store_id)
        if state is not None:
            query = query.where(g.c.state == state.value)
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
        return [
            GoodsBatch(
                batch_id=r.batch_id,
                store_id=r.store_id,
                business_day=date.fromisoformat(r.business_day),
                number=r.number,
                lines=r.lines,
                movements=r.movements,
                state=BatchState(r.state),
                document_number=r.document_number,
                reason=r.reason,
                recorded_at=from_us(r.recorded_us),
                settled_at=None if r.settled_us is None else from_us(r.settled_us),
            )
            for r in rows
        ]

    def retry_batch(self, batch_id: str) -> bool:
        with write_tx(self.engine) as conn:
            result = conn.execute(
                goods_batches.update()
                .where(goods_batches.c.batch_id == batch_id, goods_batches.c.state == BatchState.FAILED.value)
                .values(state=BatchState.PENDING.value, settled_us=None)
            )
            return bool(result.rowcount)
