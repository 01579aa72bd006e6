"""The master data store on SQLite and PostgreSQL: versions, deltas per store, withdrawals,
paging, acknowledgements and the status of each store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from sqlalchemy import Engine

from tillflow.model import Product, Store
from tillflow.model.masterdata import MasterKind, Price, Promotion, PromotionKind
from tillflow.ports import MasterOutcome
from tillflow.storage.db import create_state_engine
from tillflow.storage.masterdata import SQLMasterData
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.products import SQLProductCatalog
from tillflow.storage.tables import products

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
START = datetime(2026, 3, 1)
PARIS = Store(store_id="S1", region="FR", brand="city", timezone="Europe/Paris")
LYON = Store(store_id="S2", region="FR", brand="hyper", timezone="Europe/Paris")
TOKYO = Store(store_id="S3", region="JP", brand="city", timezone="Asia/Tokyo")


def price(sku: str, amount: str, **scope: str) -> Price:
    return Price(sku=sku, price=Decimal(amount), currency="EUR", effective_from=START, **scope)  # type: ignore[arg-type]


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


def keys(master: SQLMasterData, store: Store, since: int = 0) -> list[tuple[str, str, bool]]:
    return [
        (kind, key, record is None) for _, kind, key, record in master.read_delta(store, since=since).entries
    ]


class TestVersions:
    def test_each_accepted_change_gets_the_next_version_and_a_repeat_none(
        self, master: SQLMasterData
    ) -> None:
        first = master.record_items([Product(sku="A"), Product(sku="B")], at=AT)
        prices = master.record_prices([price("A", "1.00"), price("A", "0.90", region="FR")], at=AT)
        again = master.record_prices([price("A", "1.00"), price("A", "0.80", region="FR")], at=AT)

        assert first == [MasterOutcome.CREATED] * 2
        assert prices == [MasterOutcome.CREATED] * 2
        assert again == [MasterOutcome.UNCHANGED, MasterOutcome.UPDATED]
        assert master.read_head() == 5

    def test_items_are_the_product_master_each_change_versioned(
        self, engine: Engine, master: SQLMasterData
    ) -> None:
        created = master.record_items([Product(sku="A", uom="KG")], at=AT)  # type: ignore[arg-type]
        same = master.record_items([Product(sku="A", uom="KG")], at=AT)  # type: ignore[arg-type]

        assert (created, same) == ([MasterOutcome.CREATED], [MasterOutcome.UNCHANGED])
        assert master.read_head() == 1
        [entry] = master.read_delta(TOKYO, since=0).entries
        assert entry[:3] == (1, "item", "A")
        assert orjson.loads(entry[3] or "null") == {"sku": "A", "uom": "KG"}
        assert SQLProductCatalog(engine).find_products(["A", "B"]) == {"A": Product(sku="A", uom="KG")}  # type: ignore[arg-type]


class TestDeltas:
    def test_a_store_gets_what_applies_to_it_only(self, master: SQLMasterData) -> None:
        master.record_items([Product(sku="A")], at=AT)
        master.record_prices(
            [price("A", "1.00"), price("A", "0.90", region="FR"), price("A", "0.70", store_id="S2")], at=AT
        )
        master.record_promotions(
            [promotion("P-city", brands=("city",)), promotion("P-S2", stores=("S2",))], at=AT
        )

        national, regional = "A|all|2026-03-01T00:00:00", "A|region:FR|2026-03-01T00:00:00"
        assert [k for _, k, _ in keys(master, PARIS)] == ["A", national, regional, "P-city"]
        assert [k for _, k, _ in keys(master, TOKYO)] == ["A", national, "P-city"]
        assert ("promotion", "P-S2", False) in keys(master, LYON)

    def test_a_withdrawn_price_and_a_retargeted_promotion_are_withdrawn_where_they_applied(
        self, master: SQLMasterData
    ) -> None:
        regional = price("A", "0.90", region="FR")
        master.record_prices([regional], at=AT)
        master.record_promotions([promotion("P1", regions=("FR",))], at=AT)
        synced = master.read_head()

        gone = master.withdraw_records(MasterKind.PRICE, [regional.key, "nope"], at=AT)
        master.record_promotions([promotion("P1", stores=("S3",))], at=AT)

        assert gone == [MasterOutcome.WITHDRAWN, MasterOutcome.ABSENT]
        assert keys(master, PARIS, since=synced) == [("price", regional.key, True), ("promotion", "P1", True)]
        assert keys(master, TOKYO, since=synced) == [("promotion", "P1", False)]
        assert master.find_price_lists(["A"]) == {}

    def test_a_limit_pages_the_delta_and_each_page_says_where_to_resume(self, master: SQLMasterData) -> None:
        master.record_items([Product(sku=f"I{i}") for i in range(5)], at=AT)

        first = master.read_delta(PARIS, since=0, limit=2)
        second = master.read_delta(PARIS, since=first.version, limit=2)
        last = master.read_delta(PARIS, since=second.version, limit=2)

        assert (first.version, first.complete, len(first.entries)) == (2, False, 2)
        assert (second.version, second.complete) == (4, False)
        assert (last.version, last.complete, [e[2] for e in last.entries]) == (5, True, ["I4"])

    def test_prices_are_found_by_sku_and_promotions_listed_oldest_first(self, master: SQLMasterData) -> None:
        master.record_prices(
            [price("A", "1.00"), price("A", "0.70", store_id="S1"), price("B", "3.00")], at=AT
        )
        master.record_promotions([promotion("P2"), promotion("P1")], at=AT)

        assert [p.price for p in master.find_price_lists(["A"])["A"]] == [Decimal("1.00"), Decimal("0.70")]
        assert [p.promotion_id for p in master.list_promotions()] == ["P2", "P1"]


class TestAcks:
    def test_acks_only_move_forward_and_never_past_the_latest(self, master: SQLMasterData) -> None:
        master.record_items([Product(sku="A"), Product(sku="B")], at=AT)

        assert master.record_ack("S1", 2, at=AT) == 2
        assert master.record_ack("S1", 1, at=AT) == 2
        assert master.record_ack("S1", 3, at=AT) is None

    def test_status_shows_how_many_changes_of_its_own_each_store_has_not_acknowledged(
        self, master: SQLMasterData
    ) -> None:
        master.record_items([Product(sku="A")], at=AT)
        master.record_ack("S1", 1, at=AT)
        master.record_prices([price("A", "0.90", region="FR"), price("A", "0.50", store_id="S3")], at=AT)

        status = {s.store_id: s for s in master.read_sync([PARIS, LYON, TOKYO])}

        assert (status["S1"].acked_version, status["S1"].latest_version, status["S1"].behind) == (1, 2, 1)
        assert status["S1"].acked_at == AT
        assert (status["S2"].acked_version, status["S2"].acked_at, status["S2"].behind) == (0, None, 2)
        assert (status["S3"].latest_version, status["S3"].behind) == (3, 2)


class TestMigration:
    def test_products_already_in_the_master_become_the_first_versions(self, state_url: str) -> None:
        engine = create_state_engine(state_url)
        try:
            upgrade_schema(engine, "0007")
            with engine.begin() as conn:
                conn.execute(products.insert(), [{"sku": "OLD", "product": '{"sku":"OLD"}', "updated_us": 1}])
            upgrade_schema(engine)

            delta = SQLMasterData(engine).read_delta(TOKYO, since=0)
        finally:
            engine.dispose()

        assert (delta.version, delta.entries) == (1, [(1, "item", "OLD", '{"sku":"OLD"}')])
