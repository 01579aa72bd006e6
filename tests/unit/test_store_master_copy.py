"""A store's copy of its master data, and tills ringing up with it.

The copy is kept from delta answers as the hub serves them; the traffic generator's tills charge
its prices and apply its promotions. Tills that know the calendar give exactly what it allows (the
compliance check finds nothing); a store that missed a flash sale shows as not applying it, and
only that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tillflow.flows.compliance import JUDGED_KINDS, check_compliance
from tillflow.flows.masterdata import local_time
from tillflow.model import Store, Transaction, TransactionKind
from tillflow.model.masterdata import Price, Promotion
from tillflow.ports import DeviationKind
from tillflow.sim.backoffice import StoreMasterCopy, demo_calendar, flash_sale
from tillflow.sim.pos import CATALOG, PosTrafficGenerator, demo_stores

DAY = date(2026, 11, 30)
MIDNIGHT = datetime(2026, 11, 30)
FIELDS = ["version", "kind", "key", "record"]
PRODUCTS = {p.sku: p for p in CATALOG}


def delta(records: Sequence[Price | Promotion | tuple[str, str]], since: int = 0) -> dict[str, Any]:
    """A delta answer as the hub serves it: a record, or (kind, key) for a withdrawal."""
    changes: list[list[Any]] = []
    for version, record in enumerate(records, since + 1):
        if isinstance(record, tuple):
            changes.append([version, *record, None])
        elif isinstance(record, Price):
            changes.append([version, "price", record.key, orjson.loads(record.model_dump_json())])
        else:
            changes.append(
                [version, "promotion", record.promotion_id, orjson.loads(record.model_dump_json())]
            )
    return {
        "fields": FIELDS,
        "since": since,
        "changes": changes,
        "version": since + len(records),
        "complete": True,
    }


def copies(stores: list[Store], first: dict[str, Any]) -> dict[str, StoreMasterCopy]:
    out = {s.store_id: StoreMasterCopy(s) for s in stores}
    for copy in out.values():
        copy.apply(first)
    return out


def deviations(
    txs: list[Transaction], stores: list[Store], calendar: list[Promotion]
) -> Counter[tuple[str, str, str | None]]:
    by_id = {s.store_id: s for s in stores}
    return Counter(
        (d.store_id, d.kind.value, d.promotion_id)
        for tx in txs
        if tx.kind in JUDGED_KINDS
        for d in check_compliance(tx, by_id[tx.store_id], calendar, PRODUCTS)
    )


@pytest.fixture(scope="module")
def stores() -> list[Store]:
    return demo_stores(5)


class TestTheCopy:
    def test_a_delta_applied_twice_changes_nothing_and_null_withdraws(self, stores: list[Store]) -> None:
        [socks] = [p for p in demo_calendar(DAY) if p.promotion_id == "EU-SOCKS-050"]
        price = Price(
            sku="GRO-0001", price=Decimal("1.49"), currency="EUR", region="eu", effective_from=MIDNIGHT
        )
        copy = StoreMasterCopy(stores[0])
        first = delta([price, socks])
        copy.apply(first)
        once = dict(copy.records)
        copy.apply(first)

        assert copy.records == once and copy.version == 2
        at = datetime.fromisoformat("2026-11-30T10:00:00+01:00")
        assert copy.price("GRO-0001", at) == Decimal("1.49")
        assert [p.promotion_id for p in copy.promotions(at)] == ["EU-SOCKS-050"]

        copy.apply(delta([("promotion", "EU-SOCKS-050")], since=2))

        assert copy.promotions(at) == [] and copy.version == 3
        assert copy.price("GRO-0001", at) == Decimal("1.49")

    def test_a_price_in_another_currency_is_not_charged(self, stores: list[Store]) -> None:
        copy = StoreMasterCopy(stores[3])  # Tokyo, JPY
        copy.apply(
            delta([Price(sku="GRO-0001", price=Decimal("1.49"), currency="EUR", effective_from=MIDNIGHT)])
        )

        assert copy.price("GRO-0001", datetime.fromisoformat("2026-11-30T10:00:00+09:00")) is None


class TestTillsRingingUpWithTheCopy:
    def test_tills_that_know_the_calendar_give_exactly_what_it_allows(self, stores: list[Store]) -> None:
        calendar = demo_calendar(DAY)
        prices = PosTrafficGenerator(stores, business_day=DAY).price_list(MIDNIGHT)
        known = copies(stores, delta([*prices, *calendar]))
        txs = PosTrafficGenerator(stores, business_day=DAY, seed=3, master=known).transactions(2_000)

        assert deviations(txs, stores, calendar) == Counter()
        applied = Counter(
            (tx.store_id, m.promotion_id) for tx in txs for line in tx.lines for m in line.modifiers
        )
        by_promotion = Counter(pid for _, pid in applied.elements())
        assert set(by_promotion) == {p.promotion_id for p in calendar}  # each one applied, none other
        assert {store for store, pid in applied if pid == "EU-SOCKS-050"} == {"S001"}  # the euro area's
        members_only = [
            tx
            for tx in txs
            for line in tx.lines
            if any(m.promotion_id == "MEMBERS-HOUSEHOLD-15" for m in line.modifiers)
        ]
        assert members_only and all(tx.customer is not None for tx in members_only)

    def test_tills_charge_a_price_change_from_its_start(self, stores: list[Store]) -> None:
        gen = PosTrafficGenerator(stores, business_day=DAY)
        old = {(p.region, p.sku): p.price for p in gen.price_list(MIDNIGHT)}
        noon = MIDNIGHT + timedelta(hours=12)
        rise = gen.price_list(noon, skus=["GRO-0003"], factor=Decimal("1.1"))
        new = {p.region: p.price for p in rise}
        known = copies(stores, delta([*gen.price_list(MIDNIGHT), *rise]))
        txs = PosTrafficGenerator(stores, business_day=DAY, seed=5, master=known).transactions(2_000)
        by_id = {s.store_id: s for s in stores}
        charged = Counter()
        for tx in txs:
            store = by_id[tx.store_id]
            for line in tx.lines:
                if line.sku == "GRO-0003" and tx.kind is TransactionKind.SALE:
                    after = local_time(store, tx.ended_at) >= noon
                    expected = new[store.region] if after else old[(store.region, "GRO-0003")]
                    assert line.unit_price == expected
                    charged[after] += 1

        assert charged[True] and charged[False]
        assert all(new[r] > old[(r, "GRO-0003")] for r in new)

    def test_a_store_that_missed_the_flash_sale_is_the_only_one_found_not_applying_it(
        self, stores: list[Store]
    ) -> None:
        calendar = demo_calendar(DAY)
        gen = PosTrafficGenerator(stores, business_day=DAY)
        first = delta([*gen.price_list(MIDNIGHT), *calendar])
        known = copies(stores, first)
        tills = PosTrafficGenerator(stores, business_day=DAY, seed=9, master=known)
        txs = tills.transactions(1_000)
        reached = max(local_time(s, tills.clock(s.store_id)) for s in stores)
        flash = flash_sale(reached.replace(second=0, microsecond=0) + timedelta(minutes=1), brand="demo")
        for store_id, copy in known.items():
            if store_id != "S005":
                copy.apply(delta([flash], since=first["version"]))
        txs += tills.transactions(1_000)

        found = deviations(txs, stores, [*calendar, flash])

        assert found and set(found) == {
            ("S005", DeviationKind.PROMOTION_NOT_APPLIED.value, flash.promotion_id)
        }
        assert any(
            m.promotion_id == flash.promotion_id for tx in txs for line in tx.lines for m in line.modifiers
        )  # the other stores applied it
