"""Versions and deltas of master data, against a plain reference model.

Random change sets (items, prices of every scope, promotions with random targets, withdrawals,
repeats) go through the master data store; a straightforward model of the same changes,
judged with `flows.masterdata.applies_to`, says what each store must get. The delta since any
version is exactly that; applying it twice changes nothing; a snapshot plus the later deltas
(whole or paged by a limit) is the snapshot at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tillflow.flows.masterdata import applies_to
from tillflow.model import Product, Store
from tillflow.model.masterdata import MasterKind, Price, Promotion, PromotionKind, key_of
from tillflow.ports import MasterDelta, MasterOutcome
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.masterdata import SQLMasterData
from tillflow.storage.tables import metadata

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
START = datetime(2026, 3, 1)
STORES = [
    Store(store_id="S1", region="R1", brand="B1"),
    Store(store_id="S2", region="R1", brand="B2"),
    Store(store_id="S3", region="R2", brand="B1"),
    Store(store_id="S4", region="R2", brand="B2"),
]
Record = Product | Price | Promotion
View = dict[tuple[str, str], dict[str, Any]]


def kind_of(record: Record) -> str:
    return {Product: "item", Price: "price", Promotion: "promotion"}[type(record)]


def as_json(record: Record) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(record.model_dump_json(exclude_defaults=True))
    return loaded


# --- the reference -------------------------------------------------------------------------------


@dataclass
class Reference:
    """Every accepted change in order: (version, kind, key, record or None)."""

    log: list[tuple[int, str, str, Record | None]] = field(default_factory=list)
    current: dict[tuple[str, str], Record] = field(default_factory=dict)

    def record(self, record: Record) -> None:
        k = (kind_of(record), key_of(record))
        if k in self.current and as_json(self.current[k]) == as_json(record):
            return  # the same record again: no version
        self.current[k] = record
        self.log.append((len(self.log) + 1, *k, record))

    def withdraw(self, kind: str, key: str) -> None:
        if self.current.pop((kind, key), None) is not None:
            self.log.append((len(self.log) + 1, kind, key, None))

    def state(self, upto: int) -> dict[tuple[str, str], tuple[int, Record | None]]:
        """Per key: the version and record of its change current at `upto`."""
        out: dict[tuple[str, str], tuple[int, Record | None]] = {}
        for version, kind, key, record in self.log[:upto]:
            out[(kind, key)] = (version, record)
        return out

    def view(self, store: Store, upto: int) -> View:
        return {
            k: as_json(record)
            for k, (_, record) in self.state(upto).items()
            if record is not None and applies_to(record, store)
        }

    def delta(self, store: Store, since: int, upto: int) -> list[tuple[int, str, str, dict[str, Any] | None]]:
        before, after = self.view(store, since), self.state(upto)
        changed = {(kind, key) for version, kind, key, _ in self.log[since:upto]}
        out: list[tuple[int, str, str, dict[str, Any] | None]] = []
        for k in changed:
            version, record = after[k]
            if record is not None and applies_to(record, store):
                out.append((version, *k, as_json(record)))
            elif k in before:
                out.append((version, *k, None))
        return sorted(out, key=lambda e: e[0])


def entries(delta: MasterDelta) -> list[tuple[int, str, str, dict[str, Any] | None]]:
    return [(v, kind, key, None if rec is None else orjson.loads(rec)) for v, kind, key, rec in delta.entries]


def apply(copy: View, delta: MasterDelta) -> View:
    """What a store does with a delta: each entry replaces (or deletes) the record by key."""
    out = dict(copy)
    for _, kind, key, record in delta.entries:
        if record is None:
            out.pop((kind, key), None)
        else:
            out[(kind, key)] = orjson.loads(record)
    return out


# --- random change sets --------------------------------------------------------------------------

skus = st.sampled_from(["A", "B"])
prices = st.builds(
    lambda sku, scope, amount, day: Price(
        sku=sku, price=Decimal(amount), currency="EUR", effective_from=START.replace(day=day), **scope
    ),
    skus,
    st.sampled_from(
        [{}, {"region": "R1"}, {"region": "R2"}, {"store_id": "S1"}, {"store_id": "S3"}, {"store_id": "S9"}]
    ),
    st.sampled_from(["1.00", "2.50"]),
    st.sampled_from([1, 2]),
)
promotions = st.builds(
    lambda pid, stores, regions, brands, percent: Promotion(
        promotion_id=pid,
        kind=PromotionKind.PERCENT_OFF,
        percent=Decimal(percent),
        skus=("A",),
        stores=tuple(stores),
        regions=tuple(regions),
        brands=tuple(brands),
        starts=START,
        ends=START.replace(month=4),
    ),
    st.sampled_from(["P1", "P2", "P3"]),
    st.lists(st.sampled_from(["S1", "S2", "S3", "S9"]), max_size=2, unique=True),
    st.lists(st.sampled_from(["R1", "R2"]), max_size=1),
    st.lists(st.sampled_from(["B1", "B2"]), max_size=1),
    st.sampled_from(["10", "20"]),
)
items = st.builds(lambda sku, text: Product(sku=sku, description=text), skus, st.sampled_from(["", "x"]))
withdrawals = st.one_of(
    st.tuples(st.just("promotion"), st.sampled_from(["P1", "P2", "P3"])),
    st.tuples(st.just("price"), prices.map(lambda p: p.key)),
)
operations = st.lists(
    st.one_of(st.lists(st.one_of(items, prices, promotions), min_size=1, max_size=4), withdrawals),
    min_size=1,
    max_size=14,
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = create_state_engine(sqlite_url(tmp_path_factory.mktemp("md") / "state.db"))
    metadata.create_all(eng)
    yield eng
    eng.dispose()


def reset(engine: Engine) -> tuple[SQLMasterData, Reference]:
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    return SQLMasterData(engine), Reference()


def perform(master: SQLMasterData, ref: Reference, op: Any) -> None:
    """One operation on the store and on the reference: a withdrawal, or a batch per kind."""
    if isinstance(op, tuple):
        master.withdraw_records(MasterKind(op[0]), [op[1]], at=AT)
        ref.withdraw(*op)
        return
    batches: list[tuple[type[Any], Any]] = [
        (Product, master.record_items),
        (Price, master.record_prices),
        (Promotion, master.record_promotions),
    ]
    for cls, recorder in batches:
        batch = [r for r in op if isinstance(r, cls)]
        if batch:
            recorder(batch, at=AT)
            for record in {key_of(r): r for r in batch}.values():  # the last of a key wins
                ref.record(record)


def run(engine: Engine, ops: list[Any]) -> tuple[SQLMasterData, Reference, list[int]]:
    """Apply the operations to an empty store and to the reference; the head after each."""
    master, ref = reset(engine)
    heads = [0]
    for op in ops:
        perform(master, ref, op)
        heads.append(master.read_head())
    return master, ref, heads


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class TestDeltas:
    @PROPERTY
    @given(ops=operations, data=st.data())
    def test_the_delta_since_a_version_is_exactly_what_applies_to_the_store(
        self, engine: Engine, ops: list[Any], data: st.DataObject
    ) -> None:
        master, ref, heads = run(engine, ops)

        assert heads[-1] == len(ref.log)  # a version per accepted change, none for a repeat
        since = data.draw(st.sampled_from(heads))
        for store in STORES:
            delta = master.read_delta(store, since=since)
            assert (delta.version, delta.complete) == (heads[-1], True)
            assert entries(delta) == ref.delta(store, since, heads[-1])

    @PROPERTY
    @given(ops=operations, data=st.data())
    def test_snapshot_then_deltas_is_the_snapshot_at_the_end_and_twice_changes_nothing(
        self, engine: Engine, ops: list[Any], data: st.DataObject
    ) -> None:
        master, ref = reset(engine)
        store = data.draw(st.sampled_from(STORES))
        syncs = set(data.draw(st.lists(st.integers(0, len(ops) - 1), max_size=4)))
        copy: View = {}
        version = 0
        for i, op in enumerate(ops):
            perform(master, ref, op)
            if i in syncs:  # the store syncs now: a snapshot first, deltas from its last version
                delta = master.read_delta(store, since=version)
                copy, version = apply(copy, delta), delta.version
                assert apply(copy, delta) == copy  # applied twice: nothing more changes
        delta = master.read_delta(store, since=version)
        copy = apply(copy, delta)

        assert copy == apply({}, master.read_delta(store, since=0)) == ref.view(store, len(ref.log))
        assert apply(copy, delta) == copy

    @PROPERTY
    @given(ops=operations, limit=st.integers(1, 4), data=st.data())
    def test_paged_by_a_limit_each_page_leaves_the_store_at_its_version(
        self, engine: Engine, ops: list[Any], limit: int, data: st.DataObject
    ) -> None:
        master, ref, heads = run(engine, ops)
        store = data.draw(st.sampled_from(STORES))
        since = data.draw(st.sampled_from(heads))
        copy = ref.view(store, since)
        version, pages = since, 0
        while True:
            page = master.read_delta(store, since=version, limit=limit)
            assert len(page.entries) <= limit
            copy = apply(copy, page)
            assert copy == ref.view(store, page.version)  # exactly the state at the page's version
            version, pages = page.version, pages + 1
            if page.complete:
                break
            assert pages < 100
        assert version == heads[-1]
        assert copy == ref.view(store, heads[-1])


class TestStatus:
    @PROPERTY
    @given(ops=operations, data=st.data())
    def test_behind_counts_the_changes_that_concern_the_store_after_its_ack(
        self, engine: Engine, ops: list[Any], data: st.DataObject
    ) -> None:
        master, ref, heads = run(engine, ops)
        acked = {s.store_id: data.draw(st.sampled_from(heads)) for s in STORES}
        for store_id, version in acked.items():
            master.record_ack(store_id, version, at=AT)

        status = {s.store_id: s for s in master.read_sync(STORES)}

        for store in STORES:
            before: dict[tuple[str, str], Record | None] = {}
            concerning = []
            for version, kind, key, record in ref.log:
                old = before.get((kind, key))
                if any(r is not None and applies_to(r, store) for r in (old, record)):
                    concerning.append(version)
                before[(kind, key)] = record
            mine = status[store.store_id]
            assert mine.acked_version == acked[store.store_id]
            assert mine.behind == len([v for v in concerning if v > acked[store.store_id]])
            assert mine.latest_version == max(concerning, default=0)


class TestVersions:
    def test_loading_the_same_records_again_makes_no_version(self, engine: Engine) -> None:
        master, _, heads = run(engine, [[Product(sku="A"), Price(sku="A", price=Decimal(1), currency="EUR",
                                                                  effective_from=START)]])  # fmt: skip

        again = master.record_items([Product(sku="A")], at=AT)

        assert heads[-1] == 2
        assert again == [MasterOutcome.UNCHANGED]
        assert master.read_head() == 2

    def test_a_promotion_retargeted_away_is_withdrawn_from_that_store_only(self, engine: Engine) -> None:
        promo = Promotion(promotion_id="P1", kind=PromotionKind.PERCENT_OFF, percent=Decimal(10), skus=("A",),
                          regions=("R1",), starts=START, ends=START.replace(month=4))  # fmt: skip
        master, _, heads = run(
            engine, [[promo], [promo.model_copy(update={"regions": (), "stores": ("S1",)})]]
        )

        s1 = master.read_delta(STORES[0], since=heads[1])
        s2 = master.read_delta(STORES[1], since=heads[1])
        s3 = master.read_delta(STORES[2], since=heads[1])

        assert [(e[2], e[3] is None) for e in s1.entries] == [("P1", False)]
        assert [(e[2], e[3]) for e in s2.entries] == [("P1", None)]
        assert s3.entries == []
