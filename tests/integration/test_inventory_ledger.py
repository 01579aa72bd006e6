"""Stock positions on SQLite and PostgreSQL: the inventory flow fed from the real event log.

Each story rings transactions up (their completed events go into the `SQLEventLog`), lets the
inventory consumer group handle what it has not acknowledged yet (`apply_inventory` on a
`SQLInventoryLedger`), and reads the positions back.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select

from tests.builders import (
    STORE,
    canonical_bytes,
    customer_return,
    exchange,
    incoming,
    line,
    post_void,
    returned,
    sale,
    weighed,
)
from tillflow.bus.sql import SQLEventLog
from tillflow.flows.inventory import FLOW, apply_inventory
from tillflow.model import ItemType, LoggedEvent, Transaction
from tillflow.model.events import transaction_completed
from tillflow.storage.inventory import SQLInventoryLedger
from tillflow.storage.tables import inventory_movements
from tillflow.storage.transactions import SQLTransactionStore


class Shop:
    """One store's tills, its event log and the inventory consumer group."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.log = SQLEventLog(engine)
        self.ledger = SQLInventoryLedger(engine)

    def ring_up(self, *txs: Transaction) -> None:
        self.log.append_events(
            [transaction_completed(tx, canonical_bytes(tx), traceparent=None) for tx in txs]
        )

    def pending(self) -> list[LoggedEvent]:
        return self.log.fetch_batch(FLOW, limit=1000)

    def run_inventory(self) -> list[LoggedEvent]:
        """Handle and acknowledge the next batch, as the consumer runner does; returns the batch."""
        batch = self.pending()
        apply_inventory(batch, ledger=self.ledger)
        self.log.ack_events(FLOW, batch)
        return batch

    def stock(self, sku: str) -> Decimal | None:
        return self.ledger.read_position(STORE, sku)

    def movement_rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(inventory_movements)).scalar_one())


@pytest.fixture
def shop(engine: Engine) -> Shop:
    return Shop(engine)


class TestSalesAndReturns:
    def test_a_sale_takes_stock_out(self, shop: Shop) -> None:
        shop.ring_up(sale(1, line(1, "GRO-0001", quantity="3"), line(2, "BAK-0001")))

        shop.run_inventory()

        assert shop.stock("GRO-0001") == Decimal(-3)
        assert shop.stock("BAK-0001") == Decimal(-1)

    def test_sales_of_the_same_sku_add_up(self, shop: Shop) -> None:
        shop.ring_up(sale(1, line(1, "GRO-0001", quantity="2")))
        shop.run_inventory()
        shop.ring_up(sale(2, line(1, "GRO-0001")), sale(3, line(1, "GRO-0001")))
        shop.run_inventory()

        assert shop.stock("GRO-0001") == Decimal(-4)

    def test_a_restocked_return_brings_stock_back(self, shop: Shop) -> None:
        shop.ring_up(
            sale(1, line(1, "APP-0001", quantity="3")),
            customer_return(2, returned(1, "APP-0001", quantity="2", restock=True)),
        )

        shop.run_inventory()

        assert shop.stock("APP-0001") == Decimal(-1)

    def test_damaged_goods_returned_do_not_go_back_on_the_shelf(self, shop: Shop) -> None:
        shop.ring_up(sale(1, line(1, "APP-0001")))
        shop.run_inventory()

        shop.ring_up(customer_return(2, returned(1, "APP-0001", restock=False)))
        shop.run_inventory()

        assert shop.stock("APP-0001") == Decimal(-1)

    def test_an_exchange_takes_one_item_back_and_another_out(self, shop: Shop) -> None:
        shop.ring_up(exchange(1, returned(1, "APP-0004"), line(2, "APP-0003")))

        shop.run_inventory()

        assert shop.stock("APP-0004") == Decimal(1)
        assert shop.stock("APP-0003") == Decimal(-1)

    def test_non_stock_and_service_items_never_move(self, shop: Shop) -> None:
        shop.ring_up(
            sale(
                1,
                line(1, "GRO-0001"),
                line(2, "NSM-0001", unit_price="0.20", item_type=ItemType.NON_STOCK),
                line(3, "SVC-0001", item_type=ItemType.SERVICE),
            )
        )

        shop.run_inventory()

        assert shop.stock("GRO-0001") == Decimal(-1)
        assert shop.stock("NSM-0001") is None
        assert shop.stock("SVC-0001") is None

    def test_weighed_quantities_add_up_exactly(self, shop: Shop) -> None:
        shop.ring_up(sale(1, weighed(1, "PRO-0001", "1.235")), sale(2, weighed(1, "PRO-0001", "0.765")))

        shop.run_inventory()

        assert shop.stock("PRO-0001") == Decimal("-2.000")

    def test_many_small_weighings_do_not_drift(self, shop: Shop) -> None:
        shop.ring_up(*(sale(n, weighed(1, "DEL-0001", "0.001", price_per_kg="14.90")) for n in range(1, 101)))

        shop.run_inventory()

        assert shop.stock("DEL-0001") == Decimal("-0.100")


class TestExactlyOnce:
    def test_applying_the_same_events_twice_changes_nothing(self, shop: Shop) -> None:
        shop.ring_up(sale(1, line(1, "GRO-0001", quantity="2")), sale(2, weighed(1, "PRO-0002", "0.500")))
        batch = shop.pending()
        apply_inventory(batch, ledger=shop.ledger)
        rows = shop.movement_rows()

        assert apply_inventory(batch, ledger=shop.ledger) == 0

        assert shop.stock("GRO-0001") == Decimal(-2)
        assert shop.stock("PRO-0002") == Decimal("-0.5")
        assert shop.movement_rows() == rows

    def test_a_batch_redelivered_after_a_missed_ack_moves_only_the_new_events(self, shop: Shop) -> None:
        shop.ring_up(sale(1, line(1, "GRO-0001")))
        apply_inventory(shop.pending(), ledger=shop.ledger)  # handled, but the ack never happened
        shop.ring_up(sale(2, line(1, "GRO-0001")))

        redelivered = shop.run_inventory()

        assert len(redelivered) == 2
        assert shop.stock("GRO-0001") == Decimal(-2)


class TestPostVoids:
    def test_a_post_void_reverses_the_original(self, shop: Shop) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"), weighed(2, "PRO-0001", "1.235"))
        shop.ring_up(original)
        shop.run_inventory()

        shop.ring_up(post_void(2, original))
        shop.run_inventory()

        assert shop.stock("GRO-0001") == Decimal(0)
        assert shop.stock("PRO-0001") == Decimal(0)

    def test_a_post_void_of_a_return_takes_the_restocked_goods_out_again(self, shop: Shop) -> None:
        refund = customer_return(1, returned(1, "APP-0001", quantity="2"))
        shop.ring_up(refund)
        shop.run_inventory()

        shop.ring_up(post_void(2, refund))
        shop.run_inventory()

        assert shop.stock("APP-0001") == Decimal(0)

    def test_a_void_that_arrives_before_its_original_leaves_the_late_original_without_effect(
        self, shop: Shop
    ) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"))
        shop.ring_up(post_void(2, original))
        shop.run_inventory()

        shop.ring_up(original)
        shop.run_inventory()

        assert shop.stock("GRO-0001") is None
        assert shop.movement_rows() == 0

    def test_an_original_and_its_void_in_one_batch_net_to_zero(self, shop: Shop) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"), line(2, "BAK-0002"))
        shop.ring_up(original, sale(2, line(1, "GRO-0001")), post_void(3, original))

        shop.run_inventory()

        assert shop.stock("GRO-0001") == Decimal(-1)  # only the other sale is left
        assert shop.stock("BAK-0002") == Decimal(0)

    def test_a_second_post_void_of_the_same_transaction_moves_nothing(self, shop: Shop) -> None:
        original = sale(1, line(1, "GRO-0001", quantity="2"))
        shop.ring_up(original, post_void(2, original))
        shop.run_inventory()

        shop.ring_up(post_void(3, original))  # voided again, e.g. from the other till's journal
        shop.run_inventory()

        assert shop.stock("GRO-0001") == Decimal(0)


def test_the_trace_shows_when_inventory_applied_a_transaction(shop: Shop, engine: Engine) -> None:
    store = SQLTransactionStore(engine)
    tx = sale(1, line(1, "GRO-0001"))
    store.record_batch([incoming(tx)], received_at=tx.ended_at)

    shop.run_inventory()

    stored = store.get_transaction(tx.transaction_id)
    assert stored is not None
    assert [h.hop for h in stored.hops] == ["received", "logged", "inventory.applied"]
    assert stored.hops[2].detail == "1 movements"
