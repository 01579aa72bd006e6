"""Master data deltas at catalog scale, beside a same-run baseline of plain SQL reads.

A catalog of 100,000 items; prices for 1,200 stores as a national list (every item), one list
per region (20,000 items in each of 6 regions) and 20 overrides per store; 200 promotions with
mixed targets. All loaded through the master data store (versioned, on SQLite).

(a) a store's full snapshot: `read_delta(store, since=0)` and its JSON body, against a plain
    `SELECT` of the same items, prices and promotions from the current-state tables;
(b) the delta after 1,000 price changes (national, regional and store prices): `read_delta`
    since the version before them and its JSON body, against a plain `SELECT` of the changes
    after that version joined with the prices of the store's scopes;
(c) the status of the 1,200 stores after those changes (most acknowledged an older version, some
    are up to date, a few never acknowledged): `read_sync` (which also gives each store's latest
    version), against one plain `SELECT` counting, per store, the distinct versions after its
    acknowledgement among its targets.

Each is timed as its best run over about a second; the ratio is baseline time / our time.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tillflow.hub.runtime import tune_gc
from tillflow.model import Product, Store
from tillflow.model.masterdata import Price, Promotion, PromotionKind
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.masterdata import SQLMasterData
from tillflow.storage.migrate import upgrade_schema

ITEMS, STORES, REGIONS, REGIONAL, OVERRIDES, PROMOTIONS, CHANGES = 100_000, 1_200, 6, 20_000, 20, 200, 1_000
START = datetime(2026, 1, 1)
CHUNK = 10_000


def _best(run: Callable[[], object], budget: float = 1.0) -> float:
    best, spent, runs = float("inf"), 0.0, 0
    while spent < budget or runs < 3:
        started = time.perf_counter()
        run()
        took = time.perf_counter() - started
        best, spent, runs = min(best, took), spent + took, runs + 1
    return best


def _stores() -> list[Store]:
    return [
        Store(store_id=f"S{i:04d}", region=f"R{i % REGIONS}", brand=f"B{i % 3}", timezone="Europe/Paris")
        for i in range(STORES)
    ]


def _load(master: SQLMasterData, rng: random.Random, stores: list[Store]) -> None:
    at = datetime.now(UTC)
    items = [
        Product(sku=f"SKU{i:06d}", department=f"D{i % 40}", description=f"item {i}") for i in range(ITEMS)
    ]
    prices = [
        Price(sku=f"SKU{i:06d}", price=Decimal(f"{1 + i % 50}.99"), currency="EUR", effective_from=START)
        for i in range(ITEMS)
    ]
    for r in range(REGIONS):
        for i in rng.sample(range(ITEMS), REGIONAL):
            prices.append(
                Price(sku=f"SKU{i:06d}", price=Decimal(f"{i % 50}.49"), currency="EUR", region=f"R{r}",
                      effective_from=START)
            )  # fmt: skip
    for store in stores:
        for i in rng.sample(range(ITEMS), OVERRIDES):
            prices.append(
                Price(sku=f"SKU{i:06d}", price=Decimal(f"{i % 50}.19"), currency="EUR",
                      store_id=store.store_id, effective_from=START)
            )  # fmt: skip
    promotions = []
    for p in range(PROMOTIONS):
        where: dict[str, Any] = [
            {},
            {"regions": [f"R{p % REGIONS}"]},
            {"brands": [f"B{p % 3}"]},
            {"stores": [s.store_id for s in rng.sample(stores, 5)]},
        ][p % 4]
        promotions.append(
            Promotion(promotion_id=f"P{p:04d}", kind=PromotionKind.PERCENT_OFF, percent=Decimal(10),
                      skus=tuple(f"SKU{i:06d}" for i in rng.sample(range(ITEMS), 5)),
                      starts=START, ends=datetime(2026, 12, 31), **where)
        )  # fmt: skip
    for start in range(0, len(items), CHUNK):
        master.record_items(items[start : start + CHUNK], at=at)
    for start in range(0, len(prices), CHUNK):
        master.record_prices(prices[start : start + CHUNK], at=at)
    master.record_promotions(promotions, at=at)


def _changes(rng: random.Random, stores: list[Store]) -> list[Price]:
    """1,000 price changes: 600 national, 300 regional, 100 store prices (new or changed)."""
    out = []
    for n in range(CHANGES):
        i = rng.randrange(ITEMS)
        scope: dict[str, Any] = (
            {} if n < 600 else {"region": f"R{rng.randrange(REGIONS)}"} if n < 900 else
            {"store_id": rng.choice(stores).store_id}
        )  # fmt: skip
        out.append(
            Price(
                sku=f"SKU{i:06d}",
                price=Decimal(f"{i % 50}.79"),
                currency="EUR",
                effective_from=START,
                **scope,
            )
        )
    return out


def _acknowledge(master: SQLMasterData, rng: random.Random, stores: list[Store], before: int) -> int:
    """Acknowledgements as after a day of syncing: most stores at an older version (before the
    price changes or part way through them, as a delta paged by a limit leaves a store), every
    tenth store up to date, every 300th never; returns how many stores acknowledged."""
    head, at, count = master.read_head(), datetime.now(UTC), 0
    for i, store in enumerate(stores):
        if i % 300 == 0:
            continue
        version = head if i % 10 == 0 else rng.randrange(before - 1_000, head)
        master.record_ack(store.store_id, version, at=at)
        count += 1
    return count


def masterdata_figures() -> list[dict[str, Any]]:
    """The snapshot, delta and status figures (value: ms per answer; ratio: baseline / ours)."""
    from tillflow.hub.api.masterdata import delta_body

    tune_gc()  # as in the hub
    directory = Path(tempfile.mkdtemp(prefix="tillflow-bench-md-"))
    try:
        db = directory / "state.db"
        engine = create_state_engine(sqlite_url(db))
        upgrade_schema(engine)
        master = SQLMasterData(engine)
        rng = random.Random(8)
        stores = _stores()
        _load(master, rng, stores)
        store = stores[7]
        raw = sqlite3.connect(db)
        scope = (store.region, store.store_id)
        price_sql = (
            "SELECT price_key, price FROM prices WHERE (region IS NULL AND store_id IS NULL)"
            " OR region = ? OR store_id = ?"
        )

        def plain_snapshot() -> int:
            rows = raw.execute("SELECT sku, product FROM products").fetchall()
            rows += raw.execute(price_sql, scope).fetchall()
            rows += raw.execute("SELECT promotion_id, promotion FROM promotions").fetchall()
            return len(rows)

        def snapshot() -> int:
            delta = master.read_delta(store, since=0)
            delta_body(delta)
            return len(delta.entries)

        snapshot_rows = snapshot()
        snap_ours, snap_base = _best(snapshot), _best(plain_snapshot)

        before = master.read_head()
        master.record_prices(_changes(rng, stores), at=datetime.now(UTC))
        changed_sql = (
            "SELECT c.record_key, c.record FROM master_changes c JOIN prices p ON p.price_key = c.record_key"
            " WHERE c.version > ? AND c.superseded_by IS NULL"
            " AND ((p.region IS NULL AND p.store_id IS NULL) OR p.region = ? OR p.store_id = ?)"
        )

        def plain_delta() -> int:
            return len(raw.execute(changed_sql, (before, *scope)).fetchall())

        def delta() -> int:
            answer = master.read_delta(store, since=before)
            delta_body(answer)
            return len(answer.entries)

        delta_rows, plain_rows = delta(), plain_delta()
        if delta_rows != plain_rows:
            raise RuntimeError(f"the delta has {delta_rows} entries, the plain query {plain_rows}")
        delta_ours, delta_base = _best(delta), _best(plain_delta)

        acked = _acknowledge(master, rng, stores, before)
        raw.execute("CREATE TEMP TABLE bench_stores (store_id TEXT PRIMARY KEY, region TEXT, brand TEXT)")
        raw.executemany(
            "INSERT INTO bench_stores VALUES (?, ?, ?)", [(s.store_id, s.region, s.brand) for s in stores]
        )
        behind_sql = (
            "SELECT s.store_id, COUNT(DISTINCT t.version) FROM bench_stores s"
            " LEFT JOIN master_acks a ON a.store_id = s.store_id"
            " LEFT JOIN master_targets t"
            " ON t.target IN ('*', 'store:' || s.store_id, 'region:' || s.region, 'brand:' || s.brand)"
            " AND t.version > COALESCE(a.version, 0)"
            " GROUP BY s.store_id"
        )

        def plain_status() -> dict[str, int]:
            return dict(raw.execute(behind_sql).fetchall())

        def status() -> dict[str, int]:
            return {s.store_id: s.behind for s in master.read_sync(stores)}

        ours, plain = status(), plain_status()
        if ours != plain:
            wrong = sorted(k for k in ours if ours[k] != plain.get(k))
            raise RuntimeError(f"read_sync and the plain query disagree on {len(wrong)} stores: {wrong[:5]}")
        behind = sum(ours.values())
        status_ours, status_base = _best(status), _best(plain_status)
        raw.close()
        engine.dispose()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return [
        _figure(f"store snapshot ({snapshot_rows} records)", snap_ours, snap_base),
        _figure(f"store delta after {CHANGES} price changes ({delta_rows} records)", delta_ours, delta_base),
        _figure(
            f"status of {STORES} stores ({acked} acknowledged, {behind} changes not acknowledged)",
            status_ours,
            status_base,
        ),
    ]


def _figure(name: str, ours: float, base: float) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(ours * 1000, 2),
        "unit": "ms",
        "baseline": round(base * 1000, 2),
        "ratio": round(base / ours, 3),
    }
