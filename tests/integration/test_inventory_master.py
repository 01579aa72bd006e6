"""The product master, stock counts and stock alerts on SQLite and PostgreSQL, fed through the
real event log (counts go in through the outbox, as the gateway puts them)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tests.builders import OPENING, STORE, canonical_bytes, customer_return, line, returned, sale
from tillflow.bus.sql import SQLEventLog
from tillflow.flows.inventory import FLOW, apply_inventory
from tillflow.formats.products import parse_products
from tillflow.formats.records import Quarantined
from tillflow.hub.api.inventory import count_event
from tillflow.model import LoggedEvent, Product, StockCount, Transaction, UnitOfMeasure
from tillflow.model.events import transaction_completed
from tillflow.ports import AlertKind, MasterOutcome, Verdict
from tillflow.storage.inventory import SQLInventoryLedger
from tillflow.storage.masterdata import SQLMasterData
from tillflow.storage.products import SQLProductCatalog

CSV = b"""sku,description,department,item_type,uom,gtins,tax_code,cost,cost_currency,conversions
CHE-0001,Gouda,DAIRY,stock,KG,4012345678901,STD,7.10,EUR,
APP-0001,Apples,FRUIT,stock,EA,4012345678902;4012345678903,,0.20,EUR,KG=5
BAD-0001,Broken,FRUIT,stock,BOX,,,,,
SVC-0001,Gift wrap,,service,EA,,,,,
"""


class Shop:
    def __init__(self, engine: Engine) -> None:
        self.log = SQLEventLog(engine)
        self.ledger = SQLInventoryLedger(engine)
        self.catalog = SQLProductCatalog(engine)
        self.master = SQLMasterData(engine)

    def ring_up(self, *txs: Transaction) -> None:
        self.log.append_events(
            [transaction_completed(tx, canonical_bytes(tx), traceparent=None) for tx in txs]
        )

    def post_count(self, count: StockCount) -> Verdict:
        return self.ledger.record_count(count_event(count), received_at=datetime.now(UTC))

    def run(self, *, ack: bool = True) -> list[LoggedEvent]:
        batch = self.log.fetch_batch(FLOW, limit=1000)
        apply_inventory(batch, ledger=self.ledger, catalog=self.catalog, stock=self.ledger)
        if ack:
            self.log.ack_events(FLOW, batch)
        return batch

    def stock(self, sku: str) -> Decimal | None:
        return self.ledger.read_position(STORE, sku)


@pytest.fixture
def shop(engine: Engine) -> Shop:
    return Shop(engine)


def counted(count_id: str, minute: int, sku: str, quantity: str) -> StockCount:
    return StockCount(
        store_id=STORE,
        count_id=count_id,
        counted_at=OPENING + timedelta(minutes=minute),
        business_day=OPENING.date(),
        lines=({"sku": sku, "quantity": quantity},),
    )


class TestImport:
    def test_a_bad_row_is_quarantined_and_the_rest_load(self, shop: Shop) -> None:
        parsed = list(parse_products(io.BytesIO(CSV), name="master.csv"))
        products = [p for p in parsed if isinstance(p, Product)]
        [bad] = [p for p in parsed if isinstance(p, Quarantined)]

        changes = shop.master.record_items(products, at=datetime.now(UTC))

        assert (bad.source.index, bad.field) == (3, "uom")
        assert changes == [MasterOutcome.CREATED] * 3
        found = shop.catalog.find_products(["CHE-0001", "APP-0001", "SVC-0001", "BAD-0001"])
        assert sorted(found) == ["APP-0001", "CHE-0001", "SVC-0001"]
        assert found["APP-0001"].conversions == {UnitOfMeasure.KILOGRAM: Decimal(5)}
        assert found["APP-0001"].gtins == ("4012345678902", "4012345678903")

    def test_importing_again_changes_only_what_differs(self, shop: Shop) -> None:
        first = [p for p in parse_products(io.BytesIO(CSV), name="m.csv") if isinstance(p, Product)]
        shop.master.record_items(first, at=datetime.now(UTC))
        changed = first[0].model_copy(update={"description": "Old Gouda"})

        assert shop.master.record_items([changed, first[1]], at=datetime.now(UTC)) == [
            MasterOutcome.UPDATED,
            MasterOutcome.UNCHANGED,
        ]

    def test_the_flow_converts_with_the_master(self, shop: Shop) -> None:
        products = [p for p in parse_products(io.BytesIO(CSV), name="m.csv") if isinstance(p, Product)]
        shop.master.record_items(products, at=datetime.now(UTC))
        shop.ring_up(
            sale(1, line(1, "CHE-0001", quantity="250", uom=UnitOfMeasure.GRAM), line(2, "SVC-0001")),
            sale(2, line(1, "APP-0001", quantity="0.6", uom=UnitOfMeasure.KILOGRAM)),
        )
        shop.run()

        assert shop.stock("CHE-0001") == Decimal("-0.25")
        assert shop.stock("APP-0001") == Decimal(-3)
        assert shop.stock("SVC-0001") is None


class TestCounts:
    def test_a_count_is_applied_exactly_once_under_redelivery(self, shop: Shop) -> None:
        shop.ring_up(sale(1, line(1, "GRO-0001", quantity="4")))
        shop.run()
        count = counted("C-1", 5, "GRO-0001", "20")

        assert shop.post_count(count) is Verdict.ACCEPTED
        assert shop.post_count(count) is Verdict.DUPLICATE
        assert shop.post_count(counted("C-1", 5, "GRO-0001", "21")) is Verdict.CONFLICT
        batch = shop.run(ack=False)  # handled, the ack lost: delivered again
        assert shop.stock("GRO-0001") == Decimal(20)
        apply_inventory(batch, ledger=shop.ledger, catalog=shop.catalog, stock=shop.ledger)
        shop.log.ack_events(FLOW, batch)

        assert shop.stock("GRO-0001") == Decimal(20)

    def test_a_late_sale_before_the_count_moves_nothing_a_later_one_does(self, shop: Shop) -> None:
        shop.post_count(counted("C-1", 10, "GRO-0001", "20"))
        shop.run()
        shop.ring_up(sale(3, line(1, "GRO-0001", quantity="2")), sale(12, line(1, "GRO-0001", quantity="1")))
        shop.run()

        assert shop.stock("GRO-0001") == Decimal(19)

    def test_a_count_keeps_what_moved_after_it_was_taken(self, shop: Shop) -> None:
        shop.ring_up(sale(12, line(1, "GRO-0001", quantity="1")))
        shop.run()
        shop.post_count(counted("C-1", 10, "GRO-0001", "20"))
        shop.run()

        assert shop.stock("GRO-0001") == Decimal(19)


class TestAlerts:
    def test_negative_stock_is_raised_and_cleared(self, shop: Shop) -> None:
        shop.ring_up(sale(1, line(1, "GRO-0001", quantity="2")))
        shop.run()
        [alert] = shop.ledger.list_alerts(store_id=STORE)
        assert (alert.kind, alert.quantity, alert.transaction_id) == (
            AlertKind.NEGATIVE_STOCK,
            Decimal(-2),
            sale(1).transaction_id,
        )

        back = customer_return(2, returned(1, "GRO-0001", quantity="2"))
        shop.ring_up(back)
        shop.run()

        assert shop.ledger.list_alerts(store_id=STORE) == []
        [cleared] = shop.ledger.list_alerts(store_id=STORE, include_cleared=True)
        assert cleared.cleared_by == back.transaction_id and cleared.cleared_at is not None
        assert shop.ledger.list_alerts(store_id="S999", include_cleared=True) == []

    def test_a_unit_with_no_conversion_raises_an_alert(self, shop: Shop) -> None:
        shop.master.record_items([Product(sku="GRO-0001")], at=datetime.now(UTC))
        shop.ring_up(sale(1, line(1, "GRO-0001", quantity="1", uom=UnitOfMeasure.LITRE)))
        shop.run()

        [alert] = shop.ledger.list_alerts()
        assert alert.kind is AlertKind.NO_CONVERSION
        assert alert.detail == "no conversion from L to EA for GRO-0001"
        assert shop.stock("GRO-0001") is None
