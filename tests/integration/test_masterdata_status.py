"""The status of each store (`read_sync`) on SQLite and PostgreSQL: a change that names a store
through several of its targets counts once for it, and stores at many different versions are
each counted from their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tillflow.model import Product, Store
from tillflow.model.masterdata import MasterKind, Price, Promotion, PromotionKind
from tillflow.storage.masterdata import SQLMasterData

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
START = datetime(2026, 3, 1)
PARIS = Store(store_id="S1", region="FR", brand="city", timezone="Europe/Paris")
LYON = Store(store_id="S2", region="FR", brand="hyper", timezone="Europe/Paris")
TOKYO = Store(store_id="S3", region="JP", brand="city", timezone="Asia/Tokyo")
OSAKA = Store(store_id="S4", region="JP", brand="hyper", timezone="Asia/Tokyo")
STORES = [PARIS, LYON, TOKYO, OSAKA]


def promotion(pid: str, **targets: tuple[str, ...]) -> Promotion:
    return Promotion(
        promotion_id=pid,
        kind=PromotionKind.PERCENT_OFF,
        percent=Decimal(10),
        skus=("A",),
        starts=START,
        ends=START + timedelta(days=7),
        **targets,  # type: ignore[arg-type]
    )


@pytest.fixture
def master(engine: Engine) -> SQLMasterData:
    return SQLMasterData(engine)


def status(master: SQLMasterData, stores: list[Store]) -> dict[str, tuple[int, int, int]]:
    """Per store: (acknowledged version, latest version, changes not acknowledged)."""
    return {s.store_id: (s.acked_version, s.latest_version, s.behind) for s in master.read_sync(stores)}


class TestChangesThroughSeveralTargets:
    def test_a_promotion_for_its_store_region_and_brand_counts_once(self, master: SQLMasterData) -> None:
        master.record_items([Product(sku="A")], at=AT)
        master.record_promotions([promotion("P1", stores=("S1",), regions=("FR",), brands=("city",))], at=AT)
        master.record_ack("S2", 1, at=AT)

        assert status(master, STORES) == {
            "S1": (0, 2, 2),  # the item, and the promotion through its store, region and brand
            "S2": (1, 2, 1),  # through its region
            "S3": (0, 2, 2),  # through its brand
            "S4": (0, 1, 1),  # the item only
        }

    def test_a_promotion_moved_between_targets_of_a_store_counts_once_where_it_was_and_is(
        self, master: SQLMasterData
    ) -> None:
        master.record_promotions([promotion("P1", brands=("city",))], at=AT)  # 1: Paris, Tokyo
        master.record_promotions([promotion("P1", regions=("FR",))], at=AT)  # 2: from Tokyo to Lyon
        master.record_promotions([promotion("P2")], at=AT)  # 3: every store
        master.record_promotions([promotion("P2", stores=("S1", "S3"), regions=("FR",))], at=AT)  # 4
        master.withdraw_records(MasterKind.PROMOTION, ["P1"], at=AT)  # 5: from France
        for store in STORES:
            master.record_ack(store.store_id, 1, at=AT)

        assert status(master, STORES) == {
            "S1": (1, 5, 4),  # 2 (before by brand, after by region), 3, 4 (three targets), 5
            "S2": (1, 5, 4),  # 2, 3, 4 (everywhere before, its region after), 5
            "S3": (1, 4, 3),  # 2 (P1 withdrawn from its brand), 3, 4
            "S4": (1, 4, 2),  # 3, 4 (P2 withdrawn from it)
        }

    def test_a_store_counts_only_what_came_after_its_own_acknowledgement(self, master: SQLMasterData) -> None:
        master.record_promotions([promotion("P1", stores=("S1",), regions=("FR",))], at=AT)  # 1
        master.record_promotions([promotion("P2", stores=("S1",), brands=("city",))], at=AT)  # 2
        master.record_promotions([promotion("P1", brands=("city",))], at=AT)  # 3
        master.record_ack("S1", 2, at=AT)
        master.record_ack("S2", 1, at=AT)
        master.record_ack("S3", 3, at=AT)

        assert status(master, STORES) == {"S1": (2, 3, 1), "S2": (1, 3, 1), "S3": (3, 3, 0), "S4": (0, 0, 0)}
        assert master.read_sync([]) == []


class TestManyStores:
    def test_stores_each_at_its_own_version_are_each_counted_from_it(self, master: SQLMasterData) -> None:
        count = 500  # a version of its own per store on each of its four targets: several statements
        stores = [Store(store_id=f"S{i:03d}", region=f"R{i:03d}", brand=f"B{i:03d}") for i in range(count)]
        master.record_items([Product(sku=f"I{i:03d}") for i in range(count)], at=AT)  # 1 .. 500
        master.record_prices(  # 501 .. 1000: one for each store's region
            [
                Price(sku="I000", price=Decimal(1), currency="EUR", region=s.region, effective_from=START)
                for s in stores
            ],
            at=AT,
        )
        for i, store in enumerate(stores[1:], 1):
            master.record_ack(store.store_id, i, at=AT)

        found = status(master, stores)

        assert found == {s.store_id: (i, count + 1 + i, count - i + 1) for i, s in enumerate(stores)}
