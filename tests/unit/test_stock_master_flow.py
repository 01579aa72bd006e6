"""The inventory flow with the product master, stock counts and alerts: plain values, fakes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from tests.builders import OPENING, STORE, completed, customer_return, line, post_void, returned, sale
from tests.unit.test_inventory_flow import FakeInventoryLedger
from tillflow.flows.goods_movements import aggregate_movements, split_lines
from tillflow.flows.inventory import apply_inventory, plan_inventory
from tillflow.hub.api.inventory import count_event
from tillflow.model import (
    InventoryMovement,
    ItemType,
    LoggedEvent,
    MovementReason,
    Product,
    StockCount,
    Transaction,
    UnitOfMeasure,
)
from tillflow.ports import AlertKind, InventoryPlan, StockAlert, StockState, Verdict

KG, G, EA = UnitOfMeasure.KILOGRAM, UnitOfMeasure.GRAM, UnitOfMeasure.EACH


class FakeCatalog:
    def __init__(self, *products: Product) -> None:
        self.products = {p.sku: p for p in products}
        self.lookups = 0

    def find_products(self, skus: Sequence[str]) -> dict[str, Product]:
        self.lookups += 1
        return {s: self.products[s] for s in skus if s in self.products}


class FakeStockLedger(FakeInventoryLedger):
    """The ledger and the stock book in dicts: positions leave excluded movements out."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[tuple[InventoryMovement, str | None]] = []
        self.counted: dict[tuple[str, str], tuple[str, datetime]] = {}
        self.alerts: list[StockAlert] = []

    def record_movements(self, plan: InventoryPlan, *, flow: str) -> int:
        excluded = dict(plan.excluded)
        moving = tuple(m for i, m in enumerate(plan.movements) if i not in excluded)
        super().record_movements(replace(plan, movements=moving), flow=flow)
        self.recorded += [(m, excluded.get(i)) for i, m in enumerate(plan.movements)]
        for c in plan.counts:
            self.counted[(c.store_id, c.sku)] = (c.count_id, c.counted_at)
        for cleared in plan.cleared:
            self.alerts = [
                replace(a, cleared_by=cleared.cleared_by, cleared_at=cleared.at)
                if (a.store_id, a.sku, a.key) == (cleared.store_id, cleared.sku, cleared.key)
                and a.cleared_at is None
                else a
                for a in self.alerts
            ]
        self.alerts += plan.alerts
        return len(plan.movements)

    def find_movements(self, transaction_ids: Sequence[str]) -> dict[str, list[InventoryMovement]]:
        """As the SQL ledger: what a post-void may reverse (not a line that could not convert)."""
        found: dict[str, list[InventoryMovement]] = {}
        for m, why in self.recorded:
            unconverted = why is not None and why.startswith("no conversion")
            if (
                m.transaction_id in transaction_ids
                and m.reason is not MovementReason.VOID
                and not unconverted
            ):
                found.setdefault(m.transaction_id, []).append(m)
        return found

    def find_stock(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], StockState]:
        out = {}
        for key in keys:
            count_id, counted_at = self.counted.get(key, (None, None))
            open_ = frozenset(
                a.key for a in self.alerts if (a.store_id, a.sku) == key and a.cleared_at is None
            )
            out[key] = StockState(self.positions.get(key, Decimal(0)), count_id, counted_at, open_)
        return out

    def sum_moved_after(self, store_id: str, skus: Sequence[str], after: datetime) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for m, why in self.recorded:
            if m.store_id == store_id and m.sku in skus and m.occurred_at > after and why is None:
                out[m.sku] = out.get(m.sku, Decimal(0)) + m.quantity
        return out

    def list_alerts(self, **_: object) -> list[StockAlert]:
        return list(self.alerts)

    def record_count(self, event: object, *, received_at: datetime) -> Verdict:
        raise NotImplementedError

    def open_alerts(self) -> set[tuple[str, str]]:
        return {(a.sku, a.kind.value) for a in self.alerts if a.cleared_at is None}


CHEESE = Product(sku="CHE-0001", uom=KG)  # sold by the gram (built in)
APPLES = Product(sku="APP-0001")  # each
SERVICE = Product(sku="SVC-0001", item_type=ItemType.SERVICE)
BAGS = Product(sku="BAG-0001", item_type=ItemType.NON_STOCK)
MELON = Product(sku="MEL-0001", conversions={KG: Decimal("0.5")})  # each, sold by the kg at 2 kg each


def count(count_id: str, minute: int, *lines: tuple[str, str, UnitOfMeasure]) -> StockCount:
    return StockCount(
        store_id=STORE,
        count_id=count_id,
        counted_at=OPENING + timedelta(minutes=minute),
        business_day=OPENING.date(),
        lines=tuple({"sku": s, "quantity": q, "uom": u} for s, q, u in lines),
    )


def logged(item: Transaction | StockCount, seq: int) -> LoggedEvent:
    if isinstance(item, StockCount):
        return LoggedEvent(seq=seq, event=count_event(item))
    return completed(item, seq)


class Store:
    def __init__(self) -> None:
        self.ledger = FakeStockLedger()
        self.catalog = FakeCatalog(CHEESE, APPLES, SERVICE, BAGS, MELON)
        self.seq = 0

    def apply(self, *items: Transaction | StockCount) -> int:
        events = []
        for item in items:
            self.seq += 1
            events.append(logged(item, self.seq))
        return apply_inventory(events, ledger=self.ledger, catalog=self.catalog, stock=self.ledger)

    def stock(self, sku: str) -> Decimal | None:
        return self.ledger.read_position(STORE, sku)


@pytest.fixture
def store() -> Store:
    return Store()


# The story, minute by minute (sale(n) ends at 09:00 + n minutes):
SALE_1 = sale(
    1,
    line(1, "CHE-0001", quantity="250", uom=G),  # 0.25 kg out
    line(2, "APP-0001", quantity="2"),
    line(3, "SVC-0001", quantity="1"),  # the master says service: never moves
    line(4, "BAG-0001", quantity="1"),  # the master says non-stock
)
RETURN_2 = customer_return(
    2, returned(1, "APP-0001", quantity="1"), returned(2, "APP-0001", quantity="1", restock=False)
)
LATE_SALE_4 = sale(4, line(1, "APP-0001", quantity="3"))  # before the count, arrives after it
COUNT_10 = count("C-10", 10, ("CHE-0001", "5", KG), ("APP-0001", "6", EA), ("APP-0001", "4", EA))
SALE_12 = sale(12, line(1, "CHE-0001", quantity="500", uom=G))


class TestAMixedDay:
    def test_positions_hand_computed_event_by_event(self, store: Store) -> None:
        store.apply(SALE_1)
        assert (store.stock("CHE-0001"), store.stock("APP-0001")) == (Decimal("-0.25"), Decimal(-2))
        assert store.stock("SVC-0001") is None and store.stock("BAG-0001") is None

        store.apply(RETURN_2)  # one back on the shelf, the damaged one not
        assert store.stock("APP-0001") == Decimal(-1)

        store.apply(COUNT_10)  # 5 kg of cheese; 6 + 4 apples (shelf and backroom)
        assert (store.stock("CHE-0001"), store.stock("APP-0001")) == (Decimal(5), Decimal(10))

        store.apply(LATE_SALE_4)  # the count already saw it: recorded, moves nothing
        assert store.stock("APP-0001") == Decimal(10)
        [(late, why)] = [
            (m, w) for m, w in store.ledger.recorded if m.transaction_id == LATE_SALE_4.transaction_id
        ]
        assert late.quantity == Decimal(-3) and why is not None and "C-10" in why

        store.apply(SALE_12)
        assert store.stock("CHE-0001") == Decimal("4.5")

        store.apply(post_void(15, SALE_12))  # after the count: the 500 g come back
        assert store.stock("CHE-0001") == Decimal(5)

        store.apply(post_void(16, LATE_SALE_4))  # voided after the count: the 3 apples come back
        assert store.stock("APP-0001") == Decimal(13)

    def test_the_same_story_in_one_batch_ends_the_same(self, store: Store) -> None:
        store.apply(SALE_1, RETURN_2, COUNT_10, LATE_SALE_4, SALE_12, post_void(15, SALE_12))

        assert store.stock("CHE-0001") == Decimal(5)
        assert store.stock("APP-0001") == Decimal(10)
        assert store.catalog.lookups == 1  # one master read per batch

    def test_a_count_counts_what_moved_after_it_was_taken(self, store: Store) -> None:
        store.apply(SALE_1)
        store.apply(SALE_12)  # 09:12, logged before the 09:10 count arrives
        store.apply(COUNT_10)

        assert store.stock("CHE-0001") == Decimal("4.5")  # 5 counted at 09:10, 0.5 sold at 09:12

    def test_an_older_count_sets_nothing(self, store: Store) -> None:
        store.apply(COUNT_10)
        store.apply(count("C-05", 5, ("CHE-0001", "99", KG)))

        assert store.stock("CHE-0001") == Decimal(5)

    def test_a_configured_conversion_moves_stock_units(self, store: Store) -> None:
        store.apply(sale(1, line(1, "MEL-0001", quantity="4", uom=KG)))

        assert store.stock("MEL-0001") == Decimal(-2)

    def test_an_unknown_sku_moves_as_the_till_sent_it(self, store: Store) -> None:
        store.apply(sale(1, line(1, "NEW-0001", quantity="1.5", uom=KG)))

        assert store.stock("NEW-0001") == Decimal("-1.5")


class TestNoConversion:
    def test_the_line_is_recorded_in_its_unit_moves_nothing_and_raises_an_alert(self, store: Store) -> None:
        store.apply(sale(1, line(1, "APP-0001", quantity="0.4", uom=KG)))

        [(movement, why)] = store.ledger.recorded
        assert (movement.quantity, movement.uom) == (Decimal("-0.4"), KG)
        assert why == "no conversion from KG to EA for APP-0001"
        assert store.stock("APP-0001") is None
        assert store.ledger.open_alerts() == {("APP-0001", "no_conversion")}

    def test_a_post_void_does_not_reverse_what_never_moved(self, store: Store) -> None:
        original = sale(1, line(1, "APP-0001", quantity="0.4", uom=KG), line(2, "APP-0001", quantity="1"))
        store.apply(original)
        store.apply(post_void(2, original))

        assert store.stock("APP-0001") == Decimal(0)


class TestNegativeStockAlerts:
    def test_raised_when_a_sale_goes_below_zero_and_cleared_by_the_count(self, store: Store) -> None:
        store.apply(sale(1, line(1, "APP-0001", quantity="2")))
        [alert] = store.ledger.alerts
        assert (alert.kind, alert.quantity, alert.transaction_id) == (
            AlertKind.NEGATIVE_STOCK,
            Decimal(-2),
            sale(1).transaction_id,
        )

        store.apply(sale(2, line(1, "APP-0001", quantity="1")))  # still negative: one alert
        assert len(store.ledger.alerts) == 1

        store.apply(count("C-1", 5, ("APP-0001", "7", EA)))
        [cleared] = store.ledger.alerts
        assert cleared.cleared_by == "count/S001/C-1"

    def test_raised_and_cleared_within_one_batch(self, store: Store) -> None:
        store.apply(sale(1, line(1, "APP-0001")), customer_return(2, returned(1, "APP-0001")))

        [alert] = store.ledger.alerts
        assert alert.cleared_by == customer_return(2, returned(1, "APP-0001")).transaction_id

    def test_no_alert_is_judged_without_a_stock_book(self) -> None:
        plan = plan_inventory([completed(sale(1), 1)], ledger=FakeInventoryLedger())

        assert plan.alerts == ()


class TestAggregation:
    def test_net_per_sku_unit_and_reason_zeros_left_out(self) -> None:
        at = OPENING

        def m(sku: str, q: str, reason: MovementReason = MovementReason.SALE) -> InventoryMovement:
            return InventoryMovement(
                store_id=STORE,
                sku=sku,
                quantity=Decimal(q),
                reason=reason,
                transaction_id="t",
                line_no=1,
                occurred_at=at,
            )

        lines = aggregate_movements(
            [
                m("A", "-1"),
                m("A", "-2"),
                m("B", "-1"),
                m("B", "1", MovementReason.VOID),
                m("C", "-1"),
                m("C", "1"),
            ],
            store_id=STORE,
            batch="gm.S001.2026-11-29.1",
        )

        assert [(x.sku, x.quantity, x.reason, x.line_no) for x in lines] == [
            ("A", Decimal(-3), MovementReason.SALE, 1),
            ("B", Decimal(-1), MovementReason.SALE, 2),
            ("B", Decimal(1), MovementReason.VOID, 3),
        ]
        assert split_lines([(i, x) for i, x in enumerate(lines)], 2)[1] == [(2, lines[2])]
