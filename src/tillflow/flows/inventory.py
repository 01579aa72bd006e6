"""Inventory flow: every completed transaction becomes stock movements, exactly once.

Sales take stock out, returns bring it back (unless the returned goods are damaged), a
post-void reverses what the voided transaction moved, and non-stock and service items never
move stock. A void that arrives before the transaction it cancels is remembered, so the late
original then moves nothing.

With the product master (`ProductCatalog`): the master's item type wins over the line's, and
quantities are converted to the SKU's stock unit (rounded to thousandths). A line in a unit with
no conversion is recorded in its own unit but leaves the position as it is, and raises a
`no_conversion` alert (a position cannot add grams to eaches); a post-void does not reverse it.
A SKU the master does not know moves as the till sent it.

Stock counts (`retail.inventory.counted.v1`) set absolute positions: a `count` movement of the
counted quantity less the position as it stood at `counted_at` (the position now, less what
moved after `counted_at`). A movement that occurred at or before the latest count of its store
and SKU but arrives after it is recorded, marked covered by the count, and moves nothing: the
count already saw its effect. A count older than the latest applied one sets nothing.

A movement that takes a position below zero raises a `negative_stock` alert; the movement or
count that brings it back to zero or above clears it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from pydantic import AwareDatetime, BaseModel, ConfigDict

from tillflow.errors import PoisonEventError
from tillflow.model import (
    InventoryMovement,
    ItemType,
    LineAction,
    LoggedEvent,
    MovementReason,
    Product,
    StockCount,
    Transaction,
    TransactionRef,
    UnitOfMeasure,
)
from tillflow.model.events import INVENTORY_COUNTED, TRANSACTION_COMPLETED
from tillflow.model.transaction import transaction_id
from tillflow.ports import (
    AlertKind,
    ClearedAlert,
    CountApplied,
    InventoryLedger,
    InventoryPlan,
    ProductCatalog,
    StockAlert,
    StockBook,
    StockState,
    alert_key,
)

FLOW: Final = "inventory"
MILLI: Final = Decimal("0.001")
NEGATIVE: Final = AlertKind.NEGATIVE_STOCK.value


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


def decode_stock_events(events: Sequence[LoggedEvent]) -> list[StockView | StockCount]:
    """The transactions and stock counts of a batch, in log order (other events left out)."""
    out: list[StockView | StockCount] = []
    for e in events:
        if e.event.type == TRANSACTION_COMPLETED:
            out.append(StockView.model_validate_json(e.event.data))
        elif e.event.type == INVENTORY_COUNTED:
            out.append(StockCount.model_validate_json(e.event.data))
    return out


@dataclass
class _Stock:
    """A store's stock of one SKU as the batch goes along."""

    quantity: Decimal
    count_id: str | None
    counted_at: datetime | None
    open_alerts: set[str]
    moved: list[tuple[datetime, Decimal]] = field(default_factory=list)  # in this batch, not excluded

    @classmethod
    def of(cls, state: StockState | None) -> _Stock:
        state = state or StockState()
        return cls(state.quantity, state.count_id, state.counted_at, set(state.open_alerts))


@dataclass
class _Planner:
    """Builds the plan of a batch: movements with their effect on positions and alerts."""

    products: Mapping[str, Product]
    states: Mapping[tuple[str, str], StockState]
    stock: dict[tuple[str, str], _Stock] = field(default_factory=dict)
    movements: list[InventoryMovement] = field(default_factory=list)
    days: list[date | None] = field(default_factory=list)
    excluded: dict[int, str] = field(default_factory=dict)
    alerts: list[StockAlert] = field(default_factory=list)
    open_here: dict[tuple[str, str, str], int] = field(default_factory=dict)  # alert raised in the batch
    cleared: list[ClearedAlert] = field(default_factory=list)
    counts: dict[tuple[str, str], CountApplied] = field(default_factory=dict)
    alerting: bool = True  # False without a stock book: positions unknown, no alert is judged

    def at(self, store_id: str, sku: str) -> _Stock:
        key = (store_id, sku)
        found = self.stock.get(key)
        if found is None:
            found = self.stock[key] = _Stock.of(self.states.get(key))
        return found

    def add(self, m: InventoryMovement, day: date | None, *, excluded: str | None = None) -> bool:
        """Add a movement; returns whether it moved the position."""
        index = len(self.movements)
        self.movements.append(m)
        self.days.append(day)
        st = self.at(m.store_id, m.sku)
        if excluded is None and st.counted_at is not None and m.occurred_at <= st.counted_at:
            excluded = f"covered by count {st.count_id} of {st.counted_at.isoformat()}"
        if excluded is not None:
            self.excluded[index] = excluded
            return False
        st.quantity += m.quantity
        st.moved.append((m.occurred_at, m.quantity))
        if st.quantity < 0 and NEGATIVE not in st.open_alerts:
            self.raise_alert(
                StockAlert(
                    AlertKind.NEGATIVE_STOCK,
                    m.store_id,
                    m.sku,
                    st.quantity,
                    m.uom.value,
                    m.transaction_id,
                    m.occurred_at,
                    f"{m.reason.value} of {m.quantity} left {st.quantity}",
                )
            )
        elif st.quantity >= 0 and NEGATIVE in st.open_alerts:
            self.clear(m.store_id, m.sku, NEGATIVE, m.transaction_id, m.occurred_at)
        return True

    def raise_alert(self, alert: StockAlert) -> None:
        st = self.at(alert.store_id, alert.sku)
        if not self.alerting or alert.key in st.open_alerts:
            return
        st.open_alerts.add(alert.key)
        self.open_here[(alert.store_id, alert.sku, alert.key)] = len(self.alerts)
        self.alerts.append(alert)

    def clear(self, store_id: str, sku: str, key: str, by: str, at: datetime) -> None:
        st = self.at(store_id, sku)
        if key not in st.open_alerts:
            return
        st.open_alerts.discard(key)
        index = self.open_here.pop((store_id, sku, key), None)
        if index is None:
            self.cleared.append(ClearedAlert(store_id, sku, key, by, at))
        else:
            self.alerts[index] = replace(self.alerts[index], cleared_at=at, cleared_by=by)

    def in_stock_unit(
        self, store_id: str, sku: str, quantity: Decimal, uom: UnitOfMeasure, cause: str, at: datetime
    ) -> tuple[Decimal, UnitOfMeasure, str | None]:
        """`quantity` in the SKU's stock unit, or as sent with why it cannot move the position."""
        product = self.products.get(sku)
        if product is None or uom is product.uom:
            return quantity, uom, None
        converted = product.stock_quantity(quantity, uom)
        if converted is None:
            why = f"no conversion from {uom.value} to {product.uom.value} for {sku}"
            alert = StockAlert(AlertKind.NO_CONVERSION, store_id, sku, quantity, uom.value, cause, at, why)
            self.raise_alert(alert)
            return quantity, uom, why
        self.clear(store_id, sku, alert_key(AlertKind.NO_CONVERSION, uom.value), cause, at)
        return converted.quantize(MILLI, rounding=ROUND_HALF_EVEN), product.uom, None

    def item_type(self, sku: str, sent: ItemType) -> ItemType:
        product = self.products.get(sku)
        return sent if product is None else product.item_type

    def moved_since(self, store_id: str, sku: str, after: datetime) -> Decimal:
        return sum((q for at, q in self.at(store_id, sku).moved if at > after), Decimal(0))

    def plan(
        self, event_keys: tuple[str, ...], voids: list[tuple[str, str]], hops: list[Hop]
    ) -> InventoryPlan:
        return InventoryPlan(
            event_keys=event_keys,
            movements=tuple(self.movements),
            voids=tuple(voids),
            hops=tuple(hops),
            business_days=tuple(self.days),
            excluded=tuple(sorted(self.excluded.items())),
            counts=tuple(self.counts.values()),
            alerts=tuple(self.alerts),
            cleared=tuple(self.cleared),
        )


Hop = tuple[str, str, str | None]


def _sale_movements(tx: StockView, planner: _Planner) -> tuple[int, int]:
    """Add the movements of a sale, return or exchange; returns (movements, those that moved)."""
    made = moved = 0
    tx_id, store_id, at = tx.transaction_id, tx.store_id, tx.ended_at  # once, not per line
    for line in tx.lines:
        if planner.item_type(line.sku, line.item_type) is not ItemType.STOCK:
            continue
        if line.action is LineAction.SALE:
            quantity, reason = -line.quantity, MovementReason.SALE
        elif line.restock:
            quantity, reason = line.quantity, MovementReason.RETURN
        else:
            continue  # damaged goods do not go back on the shelf
        quantity, uom, why = planner.in_stock_unit(store_id, line.sku, quantity, line.uom, tx_id, at)
        movement = InventoryMovement.model_construct(
            store_id=store_id,
            sku=line.sku,
            quantity=quantity,
            uom=uom,
            reason=reason,
            transaction_id=tx_id,
            line_no=line.line_no,
            occurred_at=at,
        )
        made += 1
        moved += planner.add(movement, tx.business_day, excluded=why)
    return made, moved


def _count_movements(count: StockCount, planner: _Planner, stock: StockBook | None) -> str:
    """Add the movements that set the positions a count names; returns the hop's detail."""
    if stock is None:
        raise PoisonEventError("a stock count needs the stock book to read positions from")
    store = count.store_id
    totals: dict[str, tuple[Decimal, UnitOfMeasure]] = {}
    skipped: dict[str, str] = {}
    for line in count.lines:
        if line.sku in skipped:
            continue
        if planner.item_type(line.sku, ItemType.STOCK) is not ItemType.STOCK:
            skipped[line.sku] = "not a stock item"
            continue
        quantity, uom, why = planner.in_stock_unit(
            store, line.sku, line.quantity, line.uom, count.reference, count.counted_at
        )
        if why is None and line.sku in totals and totals[line.sku][1] is not uom:
            why = f"counted in {totals[line.sku][1].value} and {uom.value}, with no conversion"
        if why is not None:
            skipped[line.sku] = why
            totals.pop(line.sku, None)
            continue
        before = totals.get(line.sku, (Decimal(0), uom))[0]
        totals[line.sku] = (before + quantity, uom)
    superseded = []
    live = []
    for sku in totals:
        st = planner.at(store, sku)
        if st.counted_at is not None and count.counted_at <= st.counted_at:
            superseded.append(sku)
        else:
            live.append(sku)
    earlier = stock.sum_moved_after(store, live, count.counted_at) if live else {}
    for line_no, sku in enumerate(live, 1):
        counted, uom = totals[sku]
        st = planner.at(store, sku)
        after = earlier.get(sku, Decimal(0)) + planner.moved_since(store, sku, count.counted_at)
        movement = InventoryMovement.model_construct(
            store_id=store,
            sku=sku,
            quantity=counted - (st.quantity - after),
            uom=uom,
            reason=MovementReason.COUNT,
            transaction_id=count.reference,
            line_no=line_no,
            occurred_at=count.counted_at,
        )
        planner.add(movement, count.business_day)
        st.count_id, st.counted_at = count.count_id, count.counted_at
        planner.counts[(store, sku)] = CountApplied(store, sku, count.count_id, count.counted_at, counted)
    detail = f"count {count.count_id}: {len(live)} positions set"
    if superseded:
        detail += f"; {len(superseded)} already counted later ({', '.join(superseded[:10])})"
    if skipped:
        detail += "; not set: " + "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:10])
    return detail


def _touched(
    decoded: Sequence[StockView | StockCount], earlier: Mapping[str, list[InventoryMovement]]
) -> tuple[set[str], set[tuple[str, str]]]:
    skus: set[str] = set()
    keys: set[tuple[str, str]] = set()
    for item in decoded:
        for line in item.lines:
            skus.add(line.sku)
            keys.add((item.store_id, line.sku))
    for moved in earlier.values():
        for m in moved:
            skus.add(m.sku)
            keys.add((m.store_id, m.sku))
    return skus, keys


def plan_inventory(
    events: Sequence[LoggedEvent],
    *,
    ledger: InventoryLedger,
    catalog: ProductCatalog | None = None,
    stock: StockBook | None = None,
) -> InventoryPlan:
    """Work out what a batch of events does to stock; events already applied are left out.
    Without `catalog` every SKU moves as the till sent it; without `stock` no alert is raised
    and no count can be applied."""
    done = ledger.find_processed(FLOW, [event_key(e) for e in events])
    events = [e for e in events if event_key(e) not in done]
    decoded = decode_stock_events(events)
    txs = [d for d in decoded if isinstance(d, StockView)]
    void_targets = [tx.voided.transaction_id for tx in txs if tx.voided is not None]
    earlier = ledger.find_movements(void_targets) if void_targets else {}
    voided = ledger.find_voided([tx.transaction_id for tx in txs] + void_targets)
    skus, keys = _touched(decoded, earlier)
    products = catalog.find_products(sorted(skus)) if catalog is not None and skus else {}
    states = stock.find_stock(sorted(keys)) if stock is not None and keys else {}
    planner = _Planner(products, states, alerting=stock is not None)

    moved: dict[str, list[InventoryMovement]] = dict(earlier)
    voids: list[tuple[str, str]] = []
    hops: list[Hop] = []
    for item in decoded:
        if isinstance(item, StockCount):
            hops.append((item.reference, "inventory.applied", _count_movements(item, planner, stock)))
            continue
        tx = item
        tx_id = tx.transaction_id
        if tx.voided is not None:
            target = tx.voided.transaction_id
            if target in voided:  # a second post-void of the same sale changes nothing
                hops.append((tx_id, "inventory.applied", f"no movement: {target} was already voided"))
                continue
            reversal = reversal_of(moved.pop(target, ()), tx)
            for m in reversal:
                planner.add(m, tx.business_day)
            voids.append((target, tx_id))
            voided.add(target)
            hops.append((tx_id, "inventory.applied", f"{len(reversal)} movements reversed for {target}"))
        elif tx_id in voided:
            hops.append((tx_id, "inventory.applied", "no movement: already post-voided"))
        else:
            first = len(planner.movements)
            made, applied = _sale_movements(tx, planner)
            # a post-void reverses what moved the position (not a line in a unit it could not take)
            moved[tx_id] = [
                m for i, m in enumerate(planner.movements[first:], first) if not _unconverted(planner, i)
            ]
            detail = f"{made} movements"
            if applied < made:
                detail += f" ({made - applied} recorded without moving stock)"
            hops.append((tx_id, "inventory.applied", detail))
    return planner.plan(tuple(event_key(e) for e in events), voids, hops)


def _unconverted(planner: _Planner, index: int) -> bool:
    return planner.excluded.get(index, "").startswith("no conversion")


def apply_inventory(
    events: Sequence[LoggedEvent],
    *,
    ledger: InventoryLedger,
    catalog: ProductCatalog | None = None,
    stock: StockBook | None = None,
) -> int:
    """Handler of the inventory consumer group: plan the batch and record it once."""
    plan = plan_inventory(events, ledger=ledger, catalog=catalog, stock=stock)
    return ledger.record_movements(plan, flow=FLOW)
