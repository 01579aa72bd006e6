"""Goods movements to the ERP per store-day: what moved a store's stock on a business day,
netted per (sku, uom, reason), posted once the store's day close is in and its grace has
passed (or its day is posted).

Each batch (`gm.<store>.<day>.<n>`) is recorded with the movements it carries before it is
posted, then settled posted (the ERP's document number), failed (its reason; not posted again
until an operator asks) or empty (its movements net to nothing). A crash between the two posts
the recorded batch again under the same id and idempotency key, which the ERP answers as a
repeat. Movements of the day that arrive later go into the next batch; a day with more lines
than the ERP takes per document is split over several batches. Movements that did not move
the position (covered by a count, a unit with no conversion) are not posted: the ERP's stock
follows the hub's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from tillflow.errors import DownstreamRejectedError
from tillflow.model import InventoryMovement, MovementReason, UnitOfMeasure
from tillflow.ports import BatchState, ErpSystem, GoodsBatch, GoodsMovementLog

LineKey = tuple[str, UnitOfMeasure, MovementReason]


def batch_id(store_id: str, business_day: date, number: int) -> str:
    return f"gm.{store_id}.{business_day.isoformat()}.{number}"


def aggregate_movements(
    movements: Sequence[InventoryMovement], *, store_id: str, batch: str
) -> list[InventoryMovement]:
    """The net quantity per (sku, uom, reason) as one movement each (those netting to zero left
    out), named after the batch: `transaction_id` the batch id, `line_no` the line."""
    net: dict[LineKey, Decimal] = defaultdict(Decimal)
    last: dict[LineKey, datetime] = {}
    for m in movements:
        key = (m.sku, m.uom, m.reason)
        net[key] += m.quantity
        last[key] = max(last.get(key, m.occurred_at), m.occurred_at)
    lines = [key for key in sorted(net) if net[key]]
    return [
        InventoryMovement(
            store_id=store_id,
            sku=sku,
            quantity=net[(sku, uom, reason)],
            uom=uom,
            reason=reason,
            transaction_id=batch,
            line_no=n,
            occurred_at=last[(sku, uom, reason)],
        )
        for n, (sku, uom, reason) in enumerate(lines, 1)
    ]


def split_lines(
    movements: Sequence[tuple[int, InventoryMovement]], max_lines: int
) -> list[list[tuple[int, InventoryMovement]]]:
    """The movements in groups whose aggregate has at most `max_lines` lines (a line's
    movements stay together)."""
    by_line: dict[LineKey, list[tuple[int, InventoryMovement]]] = defaultdict(list)
    for item in movements:
        m = item[1]
        by_line[(m.sku, m.uom, m.reason)].append(item)
    keys = sorted(by_line)
    return [
        [item for key in keys[start : start + max_lines] for item in by_line[key]]
        for start in range(0, len(keys), max_lines)
    ] or [list(movements)]


@dataclass
class GoodsMovementPoster:
    """The inventory consumer's tick: post every due store-day's goods movements."""

    erp: ErpSystem
    log: GoodsMovementLog
    max_lines: int = 500
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def post_due(self) -> int:
        """Post the batches recorded but never answered, then batch and post each due
        store-day's new movements; returns how many batches were posted. Raises when the ERP is
        away (the recorded batches are posted on a later tick)."""
        posted = 0
        for batch in self.log.find_batches(state=BatchState.PENDING):
            posted += self._post(batch, self.log.read_batch(batch.batch_id))
        for store_id, business_day in self.log.list_due_days(now=self.clock()):
            posted += self.post_store_day(store_id, business_day)
        return posted

    def post_store_day(self, store_id: str, business_day: date) -> int:
        """Record the store-day's unbatched movements as its next batches, then post them."""
        fresh = self.log.find_unbatched(store_id, business_day)
        if not fresh:
            return 0
        known = self.log.find_batches(store_id=store_id, business_day=business_day)
        number = max((b.number for b in known), default=0)
        planned: list[tuple[GoodsBatch, list[InventoryMovement], list[int]]] = []
        for group in split_lines(fresh, self.max_lines):
            number += 1
            name = batch_id(store_id, business_day, number)
            moves = [m for _, m in group]
            lines = aggregate_movements(moves, store_id=store_id, batch=name)
            state = BatchState.PENDING if lines else BatchState.EMPTY
            reason = None if lines else "the movements net to nothing"
            record = GoodsBatch(
                name, store_id, business_day, number, len(lines), len(group), state, None, reason
            )
            planned.append((record, moves, [i for i, _ in group]))
        self.log.record_batches([(b, ids) for b, _, ids in planned], at=self.clock())
        return sum(self._post(b, moves) for b, moves, _ in planned if b.state is BatchState.PENDING)

    def _post(self, batch: GoodsBatch, movements: Sequence[InventoryMovement]) -> int:
        lines = aggregate_movements(movements, store_id=batch.store_id, batch=batch.batch_id)
        if not lines:
            self.log.settle_batch(
                batch.batch_id,
                state=BatchState.EMPTY,
                document_number=None,
                reason="the movements net to nothing",
                at=self.clock(),
            )
            return 0
        try:
            receipt = self.erp.post_movements(
                batch.store_id,
                batch.business_day,
                lines,
                batch_id=batch.batch_id,
                idempotency_key=batch.batch_id,
            )
        except DownstreamRejectedError as exc:  # refused for good: kept with its reason
            self.log.settle_batch(
                batch.batch_id,
                state=BatchState.FAILED,
                document_number=None,
                reason=exc.reason,
                at=self.clock(),
            )
            return 0
        self.log.settle_batch(
            batch.batch_id,
            state=BatchState.POSTED,
            document_number=receipt.document_number,
            reason=None,
            at=self.clock(),
        )
        return 1
