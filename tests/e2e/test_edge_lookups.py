"""The store agent's lookups against a real hub process: master data followed over the hub's API
(deltas, acknowledgements, the status), answered as the hub answers it and still answered once
the hub is gone; members' balances and redemption holds through the agent's local router, and
points granted offline settled with the hub and the reference loyalty platform, once each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.e2e.conftest import RunningHub, hub_process, reference_service
from tests.servers import free_port
from tillflow.config import TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.edge.cache import MasterCache, MasterSync
from tillflow.edge.lookups import router
from tillflow.edge.members import MemberCache, OfflineRedemptions
from tillflow.errors import DownstreamUnavailableError
from tillflow.hub.problems import install_problem_handlers
from tillflow.model.loyalty import ReserveRedemption
from tillflow.sim.pos import demo_stores

STORES = demo_stores(2)
S001 = STORES[0]
START = "2026-03-01T00:00:00"
INSTANTS = ("2026-02-27T12:00:00+00:00", "2026-06-01T10:00:00+00:00", "2026-03-29T01:30:00+00:00")


def price(sku: str, amount: str, **scope: str) -> dict[str, Any]:
    return {"sku": sku, "price": amount, "currency": S001.currency, "effective_from": START, **scope}


def promotion(pid: str, **targets: Any) -> dict[str, Any]:
    window = {"starts": START, "ends": "2026-12-31T00:00:00"}
    return {"promotion_id": pid, "kind": "percent_off", "percent": "10", **window, **targets}


def offline_client() -> httpx.Client:
    """A client to a hub that is not there: nothing listens on its port."""
    return httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=5)


class EdgeClient:
    """Requests to an app in this process, through `httpx.ASGITransport`."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def edge_app(caches: dict[str, MasterCache], hub_client: httpx.Client, tmp: Path, **policy: Any) -> FastAPI:
    """The agent's lookups on an app of their own, with the state they read."""
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)
    app.state.master_caches = caches
    app.state.member_cache = MemberCache(tmp / "members.db", ttl_seconds=policy.pop("ttl_seconds", 30))
    app.state.offline_redemptions = OfflineRedemptions(tmp / "grants.db", **policy)
    app.state.hub_clients = dict.fromkeys(caches, hub_client)
    return app


class TestMasterDataAtTheStore:
    def test_the_store_follows_the_hub_and_answers_alone_once_it_is_gone(self, tmp_path: Path) -> None:
        cache = MasterCache(tmp_path / "edge" / "S001.db", S001)
        config = TillflowConfig(stores=STORES)
        (tmp_path / "hub").mkdir()
        with hub_process(tmp_path / "hub", config) as hub:
            with hub.client(hub.admin) as admin:
                admin.put("/v1/items", json=[{"sku": "E-A", "department": "dairy"}, {"sku": "E-B"}])
                admin.put("/v1/prices", json=[price("E-A", "2.00"), price("E-A", "1.80", region=S001.region)])
                admin.put("/v1/prices", json=[price("E-B", "5.00", store_id="S002")])  # not S001's
                admin.put(
                    "/v1/promotions",
                    json=[promotion("E-P1", departments=["dairy"]), promotion("E-P2", skus=["E-B"])],
                )
                with hub.client(hub.keys["S001"]) as s001:
                    sync = MasterSync(cache, s001, "S001", hub.keys["S001"])
                    first = sync.sync()
                    status = {s["store_id"]: s for s in admin.get("/v1/masterdata/status").json()["stores"]}
                    admin.put("/v1/prices", json=[price("E-A", "1.70", region=S001.region)])
                    second = sync.sync()
                    after = {s["store_id"]: s for s in admin.get("/v1/masterdata/status").json()["stores"]}
                    at_hub = {
                        (sku, at): s001.get(f"/v1/prices/S001/{sku}", params={"at": at})
                        for sku in ("E-A", "E-B")
                        for at in INSTANTS
                    }
                    item_at_hub = s001.get("/v1/products/E-A").json()
            app = edge_app({"S001": cache}, hub.client(hub.keys["S001"]), tmp_path, policy="deny")
            edge = EdgeClient(app)
            online = {key: edge.get(f"/v1/prices/S001/{key[0]}", params={"at": key[1]}) for key in at_hub}

        offline = {key: edge.get(f"/v1/prices/S001/{key[0]}", params={"at": key[1]}) for key in at_hub}
        with pytest.raises(DownstreamUnavailableError), httpx.Client(base_url=hub.url, timeout=5) as gone:
            MasterSync(cache, gone, "S001", hub.keys["S001"]).sync()

        assert not first.reloaded and first.applied == 6  # 2 items, 2 of its prices, 2 promotions
        assert (status["S001"]["acked_version"], status["S001"]["up_to_date"]) == (first.version, True)
        assert status["S002"]["up_to_date"] is False
        assert (second.applied, after["S001"]["acked_version"], after["S001"]["up_to_date"]) == (
            1,
            second.version,
            True,
        )
        found = at_hub[("E-A", INSTANTS[1])].json()
        assert found["price"]["price"] == "1.70"
        assert [p["promotion_id"] for p in found["promotions"]] == ["E-P1"]
        assert at_hub[("E-A", INSTANTS[0])].status_code == 404  # before the prices start
        for key, hub_answer in at_hub.items():
            for edge_answer in (online[key], offline[key]):
                assert edge_answer.status_code == hub_answer.status_code, key
                if hub_answer.status_code == 200:
                    assert edge_answer.json() == hub_answer.json(), key
                else:
                    assert edge_answer.json()["type"] == hub_answer.json()["type"], key
        assert edge.get("/v1/items/E-A").json() == item_at_hub
        assert cache.version == second.version  # the failed sync left it as it was


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub for stores S001 and S002 whose loyalty platform is the reference one."""
    tmp = tmp_path_factory.mktemp("edge-loyalty")
    with reference_service("loyalty", tmp / "loyalty") as loyalty:
        config = TillflowConfig(
            stores=STORES, connectors=ConnectorSettings(loyalty=HttpConnectorSettings(url=loyalty.url))
        )
        with hub_process(tmp, config) as hub:
            yield hub


def reserve(edge: EdgeClient, key: str, member: str, points: int) -> httpx.Response:
    body = {"store_id": "S001", "member_id": member, "points": points}
    return edge.post("/v1/loyalty/redemptions", json=body, headers={"idempotency-key": key})


def holds_of(hub: RunningHub, member: str) -> list[dict[str, Any]]:
    with hub.client(hub.admin) as admin:
        listed = admin.get("/v1/loyalty/redemptions", params={"state": "held", "limit": 10_000}).json()
    return [r for r in listed["redemptions"] if r["member_id"] == member]


class TestLoyaltyAtTheStore:
    def test_a_balance_is_kept_and_answered_stale_while_the_hub_is_away(
        self, running: RunningHub, tmp_path: Path
    ) -> None:
        hub_client = running.client(running.keys["S001"])
        app = edge_app({"S001": MasterCache(":memory:", S001)}, hub_client, tmp_path, policy="deny")
        app.state.member_cache.ttl_seconds = 0  # every lookup asks the hub first
        edge = EdgeClient(app)

        online = edge.get("/v1/loyalty/members/M0030")
        unknown = edge.get("/v1/loyalty/members/M9000")
        app.state.hub_clients = {"S001": offline_client()}
        stale = edge.get("/v1/loyalty/members/M0030", params={"program": "default"})
        missed = edge.get("/v1/loyalty/members/M0031")

        assert online.status_code == 200, online.text
        assert (online.json()["balance"], online.json()["stale"]) == (1000, False)
        assert unknown.status_code == 404 and unknown.json()["type"].endswith("/unknown-member")
        assert stale.status_code == 200 and stale.json()["stale"] is True
        assert stale.json()["balance"] == 1000 and stale.json()["age_seconds"] >= 0
        assert missed.status_code == 503 and missed.headers["content-type"] == "application/problem+json"
        assert missed.headers["retry-after"] == "5"

    def test_holds_go_to_the_hub_while_it_answers_and_the_policy_decides_while_it_does_not(
        self, running: RunningHub, tmp_path: Path
    ) -> None:
        app = edge_app(
            {"S001": MasterCache(":memory:", S001)},
            running.client(running.keys["S001"]),
            tmp_path,
            policy="cap",
            cap_points=500,
        )
        edge = EdgeClient(app)

        held = reserve(edge, "till-1-online", "M0040", 150)
        again = reserve(edge, "till-1-online", "M0040", 150)
        app.state.hub_clients = {"S001": offline_client()}
        granted = reserve(edge, "till-1-offline", "M0041", 300)
        repeated = reserve(edge, "till-1-offline", "M0041", 300)
        over = reserve(edge, "till-1-over", "M0041", 250)
        app.state.hub_clients = {"S001": running.client(running.keys["S001"])}
        kept = reserve(edge, "till-1-offline", "M0041", 300)  # online again: still the grant

        assert held.status_code == 201 and held.json()["state"] == "held", held.text
        assert again.status_code == 200 and again.json()["hold_id"] == held.json()["hold_id"]
        assert [h["hold_id"] for h in holds_of(running, "M0040")] == [held.json()["hold_id"]]
        assert granted.status_code == 201 and granted.json()["hold_id"].startswith("OFF-")
        assert granted.json()["offline"] is True and granted.json()["settlement"] == "pending"
        assert repeated.status_code == kept.status_code == 200
        assert repeated.json()["hold_id"] == kept.json()["hold_id"] == granted.json()["hold_id"]
        assert over.status_code == 503 and over.json()["type"].endswith("/offline-redemption-refused")
        assert over.json()["remaining_points"] == 200
        assert holds_of(running, "M0041") == []  # nothing reached the hub

    def test_deny_refuses_a_hold_while_the_hub_is_away(self, running: RunningHub, tmp_path: Path) -> None:
        app = edge_app({"S001": MasterCache(":memory:", S001)}, offline_client(), tmp_path, policy="deny")

        refused = reserve(EdgeClient(app), "till-2-1", "M0042", 10)

        assert refused.status_code == 503 and "refused while the hub cannot be reached" in refused.text
        assert app.state.offline_redemptions.list_grants() == []


class LosingAnswers(httpx.BaseTransport):
    """Forwards each request, but loses the answer to the first `lose` of them, as a link that
    drops once the request was sent."""

    def __init__(self, lose: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose = lose

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.inner.handle_request(request)
        if self.lose > 0:
            self.lose -= 1
            answer.read()
            answer.close()
            raise httpx.ReadTimeout("the answer was lost on the way", request=request)
        return answer


class TestSettlement:
    def test_each_grant_is_held_once_at_the_hub_and_a_refusal_is_kept(
        self, running: RunningHub, tmp_path: Path
    ) -> None:
        offline = OfflineRedemptions(tmp_path / "grants.db", "cap", 1500)
        asked = [("M0050", 200, "t-1"), ("M0051", 300, "t-2"), ("M0052", 1200, "t-3")]  # M0052 has 1000
        grants = []
        for member, points, key in asked:
            decision = offline.grant(ReserveRedemption(store_id="S001", member_id=member, points=points), key)
            assert decision.grant is not None
            grants.append(decision.grant)
        bearer = {"authorization": f"Bearer {running.keys['S001']}"}
        lossy = httpx.Client(base_url=running.url, headers=bearer, transport=LosingAnswers(1), timeout=60)

        cut = offline.settle(lossy, ttl_seconds=600)
        with running.client(running.keys["S001"]) as s001:
            done = offline.settle(s001, ttl_seconds=600)
            again = offline.settle(s001, ttl_seconds=600)

        assert cut.settled == [] and cut.pending == 3 and cut.error is not None
        assert [g.grant_id for g in done.settled] == [grants[0].grant_id, grants[1].grant_id]
        [refused] = done.refused
        assert (refused.grant_id, refused.state) == (grants[2].grant_id, "unsettled_refused")
        assert refused.reason is not None and "insufficient points" in refused.reason
        assert again.settled == again.refused == [] and again.pending == 0
        for grant, (member, points, _) in zip(grants[:2], asked, strict=False):
            holds = holds_of(running, member)
            assert [(h["points"], h["state"]) for h in holds] == [(points, "held")]  # once, though sent twice
            kept = offline.find_grant(grant.grant_id)
            assert kept is not None and kept.state == "settled" and kept.hold_id == holds[0]["hold_id"]
        assert holds_of(running, "M0052") == []
