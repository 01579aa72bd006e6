"""The store's own copy of what it needs while the link to the hub is down: master data kept
from the hub's deltas in a SQLite file, members' balances kept with a TTL, and the offline
redemption policy.

Deltas are the hub's own: read from a master data store (SQLite) and written as the hub serves
them (`delta_body`). Where the network has to fail, a fake hub answers them through
`httpx.MockTransport`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tillflow.edge.cache import MasterCache, MasterSync
from tillflow.edge.members import MemberCache, OfflineRedemptions
from tillflow.errors import ConfigError, DownstreamRejectedError, DownstreamUnavailableError, MasterDeltaError
from tillflow.flows.masterdata import active_promotions, price_at
from tillflow.hub.api.masterdata import delta_body
from tillflow.model import Product, Store
from tillflow.model.loyalty import ReserveRedemption
from tillflow.model.masterdata import MasterKind, Price, Promotion
from tillflow.storage.db import create_state_engine, sqlite_url
from tillflow.storage.masterdata import SQLMasterData
from tillflow.storage.migrate import upgrade_schema

PARIS = Store(store_id="P01", brand="city", region="fr-idf", timezone="Europe/Paris")
CHICAGO = Store(store_id="C01", brand="city", region="us-mw", currency="USD", timezone="America/Chicago")
LOADED = datetime(2026, 3, 1, tzinfo=UTC)  # when the hub loaded the records
MARCH = datetime(2026, 3, 1)
AT = datetime(2026, 6, 1, 10, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def price(sku: str, amount: str, start: datetime = MARCH, **scope: Any) -> Price:
    return Price.model_validate(
        {"sku": sku, "price": amount, "currency": "EUR", "effective_from": start, **scope}
    )


def promotion(pid: str, starts: datetime, ends: datetime, **fields: Any) -> Promotion:
    base: dict[str, Any] = {"promotion_id": pid, "kind": "percent_off", "percent": "10", "skus": ["SKU1"]}
    return Promotion.model_validate({**base, **fields, "starts": starts, "ends": ends})


def as_json(model: Product | Price | Promotion) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(model.model_dump_json())
    return loaded


@pytest.fixture
def master(tmp_path: Path) -> Iterator[SQLMasterData]:
    """The hub's master data store."""
    engine = create_state_engine(sqlite_url(tmp_path / "hub.db"), sqlite_synchronous="NORMAL")
    upgrade_schema(engine)
    yield SQLMasterData(engine)
    engine.dispose()


def delta(master: SQLMasterData, store: Store, since: int = 0, limit: int | None = None) -> dict[str, Any]:
    """The delta answer the hub serves `store`."""
    found: dict[str, Any] = orjson.loads(delta_body(master.read_delta(store, since=since, limit=limit)))
    return found


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[MasterCache]:
    opened = MasterCache(tmp_path / "edge" / "P01.db", PARIS)
    yield opened
    opened.close()


class TestApplyingDeltas:
    def test_each_delta_applied_twice_changes_nothing_and_a_withdrawal_deletes(
        self, master: SQLMasterData, cache: MasterCache
    ) -> None:
        master.record_items([Product(sku="A", department="dairy"), Product(sku="B")], at=LOADED)
        master.record_prices([price("A", "2.00"), price("A", "1.80", region="fr-idf")], at=LOADED)
        dairy = promotion("P1", MARCH, datetime(2026, 12, 31), skus=[], departments=["dairy"])
        master.record_promotions([dairy], at=LOADED)
        first = delta(master, PARIS)

        assert cache.apply(first) == 5
        once, version = cache.records(), cache.version
        assert cache.apply(first) == 0
        assert (cache.records(), cache.version) == (once, version) == (once, first["version"])
        assert [p.promotion_id for p in cache.promotions(AT, department="dairy")] == ["P1"]

        master.record_prices([price("A", "1.70", region="fr-idf")], at=LOADED)
        master.withdraw_records(MasterKind.PROMOTION, ["P1"], at=LOADED)
        second = delta(master, PARIS, since=version)

        assert cache.apply(second) == 2
        after = cache.records()
        assert cache.apply(second) == 0 and cache.records() == after
        assert cache.price("A", AT) == price("A", "1.70", region="fr-idf")
        assert cache.promotions(AT) == [] and cache.promotions(AT, department="dairy") == []
        fresh = MasterCache(":memory:", PARIS)
        fresh.apply(delta(master, PARIS))
        assert after == fresh.records() and cache.version == fresh.version  # as a new snapshot

    def test_a_gap_or_an_overlap_is_refused_and_changes_nothing(
        self, master: SQLMasterData, cache: MasterCache
    ) -> None:
        master.record_items([Product(sku="A")], at=LOADED)
        cache.apply(delta(master, PARIS))
        v1 = cache.version
        master.record_items([Product(sku="B")], at=LOADED)
        master.record_items([Product(sku="C")], at=LOADED)
        kept = cache.records()

        with pytest.raises(MasterDeltaError, match=f"starts at version {v1 + 1} but the cache runs {v1}"):
            cache.apply(delta(master, PARIS, since=v1 + 1))
        assert (cache.records(), cache.version) == (kept, v1)

        cache.apply(delta(master, PARIS, since=v1, limit=1))  # B only: the cache runs v1 + 1
        with pytest.raises(MasterDeltaError, match=f"covers versions {v1} to {v1 + 2}"):
            cache.apply(delta(master, PARIS, since=v1))
        assert set(cache.records()) == {("item", "A"), ("item", "B")} and cache.version == v1 + 1

    def test_a_malformed_record_leaves_the_whole_delta_unapplied(self, cache: MasterCache) -> None:
        broken = {
            "since": 0,
            "version": 2,
            "complete": True,
            "fields": ["version", "kind", "key", "record"],
            "changes": [
                [1, "item", "A", as_json(Product(sku="A"))],
                [2, "promotion", "P1", {"promotion_id": "P1", "kind": "percent_off"}],  # no dates
            ],
        }

        with pytest.raises(MasterDeltaError, match="malformed"):
            cache.apply(broken)
        assert cache.records() == {} and cache.version == 0
        with pytest.raises(MasterDeltaError, match="not a master data delta"):
            cache.apply({"version": 2, "changes": []})

    def test_the_cache_is_kept_on_disk_for_its_own_store(self, master: SQLMasterData, tmp_path: Path) -> None:
        master.record_prices([price("A", "2.00")], at=LOADED)
        path = tmp_path / "P01.db"
        first = MasterCache(path, PARIS)
        first.apply(delta(master, PARIS))
        first.close()

        again = MasterCache(path, PARIS)
        assert again.version == master.read_head() and again.price("A", AT) == price("A", "2.00")
        again.close()
        with pytest.raises(ConfigError, match="holds the master data of store P01, not C01"):
            MasterCache(path, CHICAGO)


class TestLookupsAcrossDaylightSaving:
    """Paris changes on 2026-03-29 01:00 UTC (02:00 CET → 03:00 CEST) and 2026-10-25 01:00 UTC
    (03:00 CEST → 02:00 CET); Chicago on 2026-03-08 and 2026-11-01. The same records as the rules'
    own tests, answered from the cache."""

    NIGHT = promotion("NIGHT", datetime(2026, 3, 29, 1, 0), datetime(2026, 3, 29, 4, 0))
    UNTIL_0230 = promotion(
        "UNTIL-0230", datetime(2026, 10, 25), datetime(2026, 10, 25, 2, 30), skus=[], departments=["dairy"]
    )
    FROM_0230 = promotion("FROM-0230", datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 6, 0))
    MEMBERS = promotion("MEMBERS", datetime(2026, 10, 24), datetime(2026, 10, 26), member_only=True)
    PROMOTIONS = (NIGHT, UNTIL_0230, FROM_0230, MEMBERS)
    PRICES = (price("SKU1", "2.00"), price("SKU1", "1.50", datetime(2026, 3, 29, 2, 30), store_id="P01"))

    @pytest.fixture
    def caches(self, master: SQLMasterData) -> dict[str, MasterCache]:
        master.record_items([Product(sku="SKU1", department="dairy")], at=LOADED)
        master.record_prices(list(self.PRICES), at=LOADED)
        master.record_promotions(list(self.PROMOTIONS), at=LOADED)
        out = {}
        for store in (PARIS, CHICAGO):
            out[store.store_id] = MasterCache(":memory:", store)
            out[store.store_id].apply(delta(master, store))
        return out

    def running(self, cache: MasterCache, at: datetime) -> list[str]:
        return [p.promotion_id for p in cache.promotions(at, sku="SKU1", department="dairy")]

    def test_spring_forward_in_paris(self, caches: dict[str, MasterCache]) -> None:
        paris = caches["P01"]

        assert "NIGHT" not in self.running(paris, utc(2026, 3, 28, 23, 59, 59))
        assert "NIGHT" in self.running(paris, utc(2026, 3, 29, 0, 0))  # 01:00 CET
        assert "NIGHT" in self.running(paris, utc(2026, 3, 29, 1, 59, 59))  # 03:59:59 CEST
        assert "NIGHT" not in self.running(paris, utc(2026, 3, 29, 2, 0))  # 04:00 CEST
        before, after = utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 1, 0)  # 01:59:59 CET, 03:00 CEST
        assert paris.price("SKU1", before) == self.PRICES[0]
        assert paris.price("SKU1", after) == self.PRICES[1]  # a start inside the gap: from 03:00

    def test_the_same_local_window_in_chicago_is_other_instants(self, caches: dict[str, MasterCache]) -> None:
        chicago = caches["C01"]

        assert "NIGHT" not in self.running(chicago, utc(2026, 3, 29, 0, 30))  # running in Paris then
        assert "NIGHT" in self.running(chicago, utc(2026, 3, 29, 6, 0))  # 01:00 CDT
        assert "NIGHT" not in self.running(chicago, utc(2026, 3, 29, 9, 0))
        assert chicago.price("SKU1", utc(2026, 3, 29, 12, 0)) == self.PRICES[0]  # Paris's own is not its

    def test_fall_back_in_paris_each_pass_by_its_own_clock(self, caches: dict[str, MasterCache]) -> None:
        paris = caches["P01"]

        assert "UNTIL-0230" in self.running(paris, utc(2026, 10, 25, 0, 29, 59))  # 02:29:59 CEST
        assert "UNTIL-0230" not in self.running(paris, utc(2026, 10, 25, 0, 30))  # 02:30 CEST
        assert "UNTIL-0230" in self.running(paris, utc(2026, 10, 25, 1, 0))  # 02:00 CET, again
        assert "UNTIL-0230" not in self.running(paris, utc(2026, 10, 25, 1, 30))  # 02:30 CET
        assert "FROM-0230" in self.running(paris, utc(2026, 10, 25, 0, 30))
        assert "FROM-0230" not in self.running(paris, utc(2026, 10, 25, 1, 0))  # paused on the second pass
        members = utc(2026, 10, 25, 12)
        assert [p.promotion_id for p in paris.promotions(members, member=False)] == []
        assert [p.promotion_id for p in paris.promotions(members)] == ["MEMBERS"]

    def test_every_quarter_hour_of_the_change_nights_it_answers_as_the_rules(
        self, caches: dict[str, MasterCache]
    ) -> None:
        nights = [utc(2026, 3, 7, 12), utc(2026, 3, 28, 12), utc(2026, 10, 24, 12), utc(2026, 10, 31, 12)]
        instants = [night + timedelta(minutes=15 * i) for night in nights for i in range(4 * 30)]
        for store_id, cache in caches.items():
            store = cache.store
            for at in instants:
                assert cache.promotions(at) == active_promotions(self.PROMOTIONS, store, at), (store_id, at)
                assert cache.promotions(at, sku="SKU1") == active_promotions(
                    self.PROMOTIONS, store, at, sku="SKU1"
                )
                assert cache.price("SKU1", at) == price_at(self.PRICES, store, at), (store_id, at)


def shelf(i: int) -> str:
    return f"{1 + i % 90}.{i % 100:02d}"


class TestTenThousandItems:
    def test_a_snapshot_of_10000_items_in_pages_is_looked_up_by_index(self, cache: MasterCache) -> None:
        records: list[tuple[str, str, dict[str, Any]]] = []
        for i in range(10_000):
            item = Product(sku=f"SKU{i:05d}", department=f"D{i % 50:02d}")
            records.append(("item", item.sku, as_json(item)))
            all_stores = price(item.sku, shelf(i))
            records.append(("price", all_stores.key, as_json(all_stores)))
            if i % 10 == 0:
                regional = price(item.sku, "0.99", region="fr-idf")
                records.append(("price", regional.key, as_json(regional)))
        for d in range(20):
            promo = promotion(f"P{d:02d}", MARCH, datetime(2026, 12, 31), skus=[], departments=[f"D{d:02d}"])
            records.append(("promotion", promo.promotion_id, as_json(promo)))
        for start in range(0, len(records), 1000):
            page = records[start : start + 1000]
            cache.apply(
                {
                    "since": start,
                    "version": start + len(page),
                    "complete": start + 1000 >= len(records),
                    "changes": [
                        {"version": start + n + 1, "kind": kind, "key": key, "record": record}
                        for n, (kind, key, record) in enumerate(page)
                    ],
                }
            )
        statements: list[str] = []
        cache._db._conn.set_trace_callback(statements.append)

        assert cache.version == len(records) == 21_020
        assert cache.price("SKU01234", AT) == price("SKU01234", shelf(1234))
        assert cache.price("SKU01230", AT) == price("SKU01230", "0.99", region="fr-idf")
        assert cache.item("SKU09999") == Product(sku="SKU09999", department="D49")
        assert cache.item("SKU10000") is None and cache.price("SKU10000", AT) is None
        assert [p.promotion_id for p in cache.promotions(AT, sku="SKU01234", department="D34")] == []
        assert [p.promotion_id for p in cache.promotions(AT, sku="SKU01207", department="D07")] == ["P07"]
        assert len(cache.promotions(AT)) == 20
        cache._db._conn.set_trace_callback(None)
        plans = [
            detail
            for sql in statements
            if sql.lstrip().upper().startswith("SELECT")
            for *_, detail in cache._db._conn.execute(f"EXPLAIN QUERY PLAN {sql}")
        ]
        assert not [p for p in plans if p.startswith("SCAN")], plans  # no lookup reads it all
        assert "SEARCH records USING INDEX records_by_sku (kind=? AND sku=?)" in plans  # prices
        assert "SEARCH records USING PRIMARY KEY (kind=? AND key=?)" in plans  # items, promotions
        assert "SEARCH promotion_terms USING PRIMARY KEY (term=?)" in plans  # by SKU or department


class FakeHub:
    """The hub's master data API through `httpx.MockTransport`, over a real master data store:
    the store's delta (409 `version-ahead` when asked from beyond the hub), and its acks. A
    request from the `fail_from`-th on fails as a dropped link."""

    def __init__(self, master: SQLMasterData, store: Store, key: str = "k-P01") -> None:
        self.master, self.store, self.key = master, store, key
        self.acked: list[int] = []
        self.requests = 0
        self.fail_from: int | None = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="http://hub.test", transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.fail_from is not None and self.requests >= self.fail_from:
            raise httpx.ConnectError("the link is down", request=request)
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return httpx.Response(403, json={"title": "Forbidden", "detail": "not this store's key"})
        if request.method == "POST":
            self.acked.append(orjson.loads(request.content)["version"])
            return httpx.Response(200, json={"acked_version": self.acked[-1]})
        since, limit = int(request.url.params["since"]), int(request.url.params["limit"])
        if since > self.master.read_head():
            return httpx.Response(409, json={"type": "https://tillflow.dev/problems/version-ahead"})
        found = self.master.read_delta(self.store, since=since, limit=limit)
        return httpx.Response(200, content=delta_body(found))


def items(master: SQLMasterData, n: int, prefix: str = "I") -> None:
    master.record_items([Product(sku=f"{prefix}{i:03d}") for i in range(n)], at=LOADED)


@pytest.fixture
def restored(tmp_path: Path) -> Iterator[SQLMasterData]:
    """The hub's master data store as restored from an older backup."""
    engine = create_state_engine(sqlite_url(tmp_path / "restored.db"), sqlite_synchronous="NORMAL")
    upgrade_schema(engine)
    yield SQLMasterData(engine)
    engine.dispose()


class TestMasterSync:
    def test_pages_are_applied_then_the_version_acknowledged(
        self, master: SQLMasterData, cache: MasterCache
    ) -> None:
        items(master, 25)
        hub = FakeHub(master, PARIS)
        sync = MasterSync(cache, hub.client(), "P01", "k-P01", page=10)

        first = sync.sync()
        again = sync.sync()

        assert (first.applied, first.version, first.reloaded) == (25, master.read_head(), False)
        assert hub.acked == [first.version, first.version] and again.applied == 0
        assert hub.requests == 3 + 1 + 1 + 1  # three pages and an ack, then one empty page and an ack
        assert len(cache.records()) == 25

    def test_a_link_lost_midway_keeps_the_pages_applied_and_the_next_sync_goes_on(
        self, master: SQLMasterData, cache: MasterCache
    ) -> None:
        items(master, 25)
        hub = FakeHub(master, PARIS)
        hub.fail_from = 2
        sync = MasterSync(cache, hub.client(), "P01", "k-P01", page=10)

        with pytest.raises(DownstreamUnavailableError, match="hub unavailable"):
            sync.sync()
        assert len(cache.records()) == 10 and cache.version == 10 and hub.acked == []

        hub.fail_from = None
        done = sync.sync()
        assert (done.applied, done.version, hub.acked) == (15, 25, [25])

    def test_a_hub_restored_from_a_backup_is_followed_from_its_snapshot(
        self, master: SQLMasterData, restored: SQLMasterData, cache: MasterCache
    ) -> None:
        items(master, 8)
        hub = FakeHub(master, PARIS)
        MasterSync(cache, hub.client(), "P01", "k-P01").sync()
        items(restored, 3, prefix="R")
        hub.master = restored  # the hub comes back at version 3, behind the store's 8

        done = MasterSync(cache, hub.client(), "P01", "k-P01").sync()

        assert (done.reloaded, done.version, done.applied) == (True, 3, 3)
        assert set(cache.records()) == {("item", "R000"), ("item", "R001"), ("item", "R002")}
        assert hub.acked == [8, 3] and cache.item("I000") is None

    def test_a_reload_cut_short_leaves_the_cache_as_it_was(
        self, master: SQLMasterData, restored: SQLMasterData, cache: MasterCache
    ) -> None:
        items(master, 30)
        hub = FakeHub(master, PARIS)
        MasterSync(cache, hub.client(), "P01", "k-P01").sync()
        kept = cache.records()
        items(restored, 25, prefix="R")
        hub.master, hub.requests, hub.fail_from = restored, 0, 3  # 409, the first page, then lost

        with pytest.raises(DownstreamUnavailableError):
            MasterSync(cache, hub.client(), "P01", "k-P01", page=10).sync()
        assert cache.records() == kept and cache.version == 30

        hub.fail_from = None
        done = MasterSync(cache, hub.client(), "P01", "k-P01", page=10).sync()
        assert done.reloaded and len(cache.records()) == 25 and cache.version == 25

    def test_a_refused_key_is_reported_and_nothing_changes(
        self, master: SQLMasterData, cache: MasterCache
    ) -> None:
        items(master, 3)
        hub = FakeHub(master, PARIS)

        with pytest.raises(DownstreamRejectedError, match="not this store's key") as refused:
            MasterSync(cache, hub.client(), "P01", "k-wrong").sync()
        assert refused.value.status == 403 and cache.version == 0


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class MemberHub:
    """The hub's member balance lookup through `httpx.MockTransport`; `down`: a dropped link."""

    def __init__(self) -> None:
        self.balances = {"M1": 500, "M2": 80}
        self.platform_away = False
        self.down = False
        self.asked = 0

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="http://hub.test", transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectTimeout("no route to the hub", request=request)
        self.asked += 1
        member_id = request.url.path.rsplit("/", 1)[-1]
        if member_id not in self.balances:
            return httpx.Response(404, json={"title": "Unknown member", "detail": f"{member_id} is unknown"})
        body = {"member_id": member_id, "program": request.url.params["program"], "tier": "silver"}
        body |= {"balance": self.balances[member_id], "held": 0, "as_of": "2026-11-30T09:00:00+00:00"}
        return httpx.Response(200, json=body | {"stale": self.platform_away})


class TestMemberBalances:
    def test_an_answer_is_kept_for_the_ttl_then_asked_again(self, tmp_path: Path) -> None:
        clock, hub = Clock(utc(2026, 11, 30, 9)), MemberHub()
        members = MemberCache(tmp_path / "members.db", ttl_seconds=30, clock=clock)

        first = members.lookup(hub.client(), "M1")
        hub.balances["M1"] = 450
        clock.now += timedelta(seconds=20)
        kept = members.lookup(hub.client(), "M1")
        clock.now += timedelta(seconds=15)
        renewed = members.lookup(hub.client(), "M1")

        assert first is not None and kept is not None and renewed is not None
        assert (first.balance, first.stale, first.age_seconds) == (500, False, 0)
        assert (kept.balance, kept.stale, kept.age_seconds) == (500, False, 20)
        assert (renewed.balance, renewed.age_seconds, hub.asked) == (450, 0, 2)

    def test_while_the_hub_is_away_the_last_answer_is_stale_with_its_age(self, tmp_path: Path) -> None:
        clock, hub = Clock(utc(2026, 11, 30, 9)), MemberHub()
        members = MemberCache(tmp_path / "members.db", ttl_seconds=30, clock=clock)
        members.lookup(hub.client(), "M2", "default")
        members.close()
        hub.down = True
        clock.now += timedelta(minutes=10)
        restarted = MemberCache(tmp_path / "members.db", ttl_seconds=30, clock=clock)

        stale = restarted.lookup(hub.client(), "M2", "default")
        never_seen = restarted.lookup(hub.client(), "M1", "default")

        assert stale is not None and never_seen is None
        assert stale.body() == {
            "member_id": "M2",
            "program": "default",
            "tier": "silver",
            "balance": 80,
            "held": 0,
            "as_of": "2026-11-30T09:00:00+00:00",
            "stale": True,
            "age_seconds": 600.0,
        }

    def test_the_hubs_own_stale_answer_and_an_unknown_member(self, tmp_path: Path) -> None:
        hub = MemberHub()
        hub.platform_away = True
        members = MemberCache(tmp_path / "members.db", ttl_seconds=30)

        found = members.lookup(hub.client(), "M1")
        with pytest.raises(DownstreamRejectedError, match="M9 is unknown") as unknown:
            members.lookup(hub.client(), "M9")

        assert found is not None and found.stale  # the platform behind the hub is away
        assert unknown.value.status == 404


def ask(member: str, points: int, store: str = "P01") -> ReserveRedemption:
    return ReserveRedemption(store_id=store, member_id=member, points=points)


class TestOfflineRedemptionPolicy:
    def test_deny_refuses_every_request_and_records_nothing(self, tmp_path: Path) -> None:
        offline = OfflineRedemptions(tmp_path / "grants.db", "deny")

        decision = offline.grant(ask("M1", 10), "till-1-1")

        assert decision.grant is None and decision.remaining == 0
        assert decision.refusal is not None and "refused while the hub cannot be reached" in decision.refusal
        assert offline.list_grants() == []

    def test_cap_grants_up_to_the_cap_per_member_and_store_day(self, tmp_path: Path) -> None:
        clock = Clock(utc(2026, 11, 30, 22, 0))  # 23:00 in Paris
        offline = OfflineRedemptions(tmp_path / "grants.db", "cap", 500, clock=clock)
        paris = "Europe/Paris"

        first = offline.grant(ask("M1", 300), "k1", timezone=paris)
        over = offline.grant(ask("M1", 250), "k2", timezone=paris)
        rest = offline.grant(ask("M1", 200), "k3", timezone=paris)
        other = offline.grant(ask("M2", 500), "k4", timezone=paris)
        clock.now += timedelta(hours=1, minutes=30)  # 00:30 on 1 December in Paris, still 30 November in UTC
        next_day = offline.grant(ask("M1", 300), "k5", timezone=paris)

        assert first.grant is not None and first.new and first.remaining == 200
        assert over.grant is None and over.remaining == 200
        assert over.refusal is not None and "may be granted 200 more points offline" in over.refusal
        assert rest.grant is not None and rest.remaining == 0
        assert other.grant is not None and other.remaining == 0
        assert next_day.grant is not None and next_day.remaining == 200
        assert [str(g.business_day) for g in offline.list_grants()] == ["2026-11-30"] * 3 + ["2026-12-01"]
        assert all(g.state == "pending" and g.grant_id.startswith("OFF-") for g in offline.list_grants())

    def test_the_same_request_again_gets_the_same_grant_even_after_a_restart(self, tmp_path: Path) -> None:
        offline = OfflineRedemptions(tmp_path / "grants.db", "cap", 500)
        first = offline.grant(ask("M1", 300), "till-2-9")
        offline.close()
        offline = OfflineRedemptions(tmp_path / "grants.db", "cap", 500)

        again = offline.grant(ask("M1", 300), "till-2-9")
        with pytest.raises(ValueError, match="already granted 300 points of M1 offline"):
            offline.grant(ask("M1", 100), "till-2-9")

        assert first.grant is not None and again.grant == first.grant and not again.new
        assert again.remaining == 200 and len(offline.list_grants()) == 1
        assert offline.find_request("P01", "till-2-9") == first.grant
