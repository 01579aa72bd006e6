"""The agent's lookups while its link to the hub is cut, over real processes: a hub with the
reference loyalty platform, a `tillflow edge` reaching it through a fault-injecting proxy, and a
till talking to the agent. Master data follows the hub and is answered while the link is down;
points granted offline are settled once it is back and the sale that spent them names the hub's
hold; a grant the hub refuses keeps its sale at the agent until an operator releases it."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import RunningHub, hub_process, reference_service
from tests.e2e.test_edge_agent import CLI, STORES, EdgeAgentProcess, drained, eventually, post, traffic, tx_id
from tillflow.config import TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.sim.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

START = "2026-03-01T00:00:00"
OPTIONS = (
    "--offline-redemptions",
    "cap",
    "--offline-cap-points",
    "1500",
    "--master-sync-seconds",
    "0.5",
    "--member-ttl-seconds",
    "0",
)


@dataclass
class Link:
    hub: RunningHub
    proxy: FaultProxy
    agent: EdgeAgentProcess


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Link]:
    """A hub with the reference loyalty platform, and an agent for S001 and S002 whose link to it
    goes through a proxy; the agent knows the stores from the hub's config file."""
    with reference_service("loyalty", tmp_path / "loyalty") as loyalty:
        config = TillflowConfig(
            stores=STORES, connectors=ConnectorSettings(loyalty=HttpConnectorSettings(url=loyalty.url))
        )
        (tmp_path / "hub").mkdir()
        with hub_process(tmp_path / "hub", config) as hub:
            port = urlsplit(hub.url).port
            assert port is not None
            with FaultProxy(0, "127.0.0.1", port, seed=3) as proxy:
                options = (*OPTIONS, "--config", str(hub.config_path))
                agent = EdgeAgentProcess(
                    f"http://127.0.0.1:{proxy.port}", hub.keys, tmp_path / "edge", options=options
                )
                try:
                    yield Link(hub, proxy, agent)
                finally:
                    agent.stop()


def paid_with_points(record: dict[str, Any], hold: str, value: str = "1.00") -> dict[str, Any]:
    """The sale with `value` of its card tender paid with loyalty points held as `hold`."""
    paid = copy.deepcopy(record)
    [card] = paid["tenders"]
    card["amount"] = str(Decimal(card["amount"]) - Decimal(value))
    paid["tenders"] = [
        card,
        {"kind": "loyalty_points", "amount": value, "change": "0", "reference": hold, "points": 100},
    ]
    return paid


def card_sales(store_id: str) -> list[dict[str, Any]]:
    """Sales of the store paid with one card, as its tills send them."""
    return [
        r
        for r in traffic(date(2026, 11, 20), 120)
        if r["store_id"] == store_id and r["kind"] == "sale" and [t["kind"] for t in r["tenders"]] == ["card"]
    ]


def price(sku: str, amount: str, **scope: str) -> dict[str, Any]:
    return {"sku": sku, "price": amount, "currency": STORES[0].currency, "effective_from": START, **scope}


def status_of(agent: EdgeAgentProcess, store_id: str) -> dict[str, Any]:
    found: dict[str, Any] = agent.status()["stores"][store_id]
    return found


def reserve(agent: EdgeAgentProcess, key: str, member: str, points: int) -> httpx.Response:
    with agent.client() as client:
        return client.post(
            "/v1/loyalty/redemptions",
            json={"store_id": "S001", "member_id": member, "points": points},
            headers={"idempotency-key": key},
        )


def at_hub(hub: RunningHub, path: str) -> httpx.Response:
    with hub.client(hub.admin) as admin:
        return admin.get(path)


def health_of(hub: RunningHub, store_id: str) -> dict[str, Any]:
    [found] = [s for s in at_hub(hub, "/v1/stores/health").json()["stores"] if s["store_id"] == store_id]
    result: dict[str, Any] = found
    return result


class TestMasterDataAtTheStore:
    def test_it_follows_the_hub_and_answers_as_the_hub_while_the_link_is_down(self, link: Link) -> None:
        hub, agent = link.hub, link.agent
        region = STORES[0].region
        with hub.client(hub.admin) as admin:
            admin.put("/v1/items", json=[{"sku": "EDGE-A", "department": "dairy"}]).raise_for_status()
            loaded = admin.put(
                "/v1/prices", json=[price("EDGE-A", "2.00"), price("EDGE-A", "1.80", region=region)]
            )
            loaded.raise_for_status()

        def acked() -> int | None:
            stores = at_hub(hub, "/v1/masterdata/status").json()["stores"]
            [s001] = [s for s in stores if s["store_id"] == "S001"]
            return int(s001["acked_version"]) if s001["up_to_date"] else None

        version = eventually(acked)
        assert eventually(lambda: status_of(agent, "S001")["master_data"]["version"] == version)
        when = {"at": "2026-06-01T10:00:00+00:00"}
        with hub.client(hub.keys["S001"]) as s001:
            hub_price = s001.get("/v1/prices/S001/EDGE-A", params=when).json()
            hub_item = s001.get("/v1/products/EDGE-A").json()
        with agent.client() as till:
            online = till.get("/v1/prices/S001/EDGE-A", params=when)
        link.proxy.set_faults(down=True)
        cut = eventually(lambda: status_of(agent, "S001")["master_data"]["last_error"])
        with agent.client() as till:
            offline = till.get("/v1/prices/S001/EDGE-A", params=when)
            item = till.get("/v1/items/EDGE-A")
        master = status_of(agent, "S001")["master_data"]

        assert hub_price["price"]["price"] == "1.80"  # the store's region's
        assert online.status_code == offline.status_code == 200
        assert online.json() == offline.json() == hub_price
        assert item.json() == hub_item
        assert cut and "unavailable" in cut
        assert master["version"] == version and master["synced_at"] is not None


class TestPointsGrantedOffline:
    def test_a_grant_is_settled_when_the_link_returns_and_its_sale_spends_the_hubs_hold(
        self, link: Link
    ) -> None:
        hub, agent = link.hub, link.agent
        sales = card_sales("S001")
        link.proxy.set_faults(down=True)
        granted = reserve(agent, "till-1-a", "M0061", 100)
        over = reserve(agent, "till-1-b", "M0062", 1200)  # within the cap; more than M0062 has
        spend = paid_with_points(sales[0], granted.json()["hold_id"])
        refused = paid_with_points(sales[1], over.json()["hold_id"])
        verdicts = [r["status"] for r in post(agent, [spend, refused, sales[2]])["results"]]
        waiting = status_of(agent, "S001")["buffer_depth"]

        link.proxy.clear_faults()
        assert eventually(lambda: status_of(agent, "S001")["held"] == 1 and drained(agent))
        settled = reserve(agent, "till-1-a", "M0061", 100).json()  # the till asks again: the grant
        hold = settled["hub_hold_id"]
        sold = at_hub(hub, f"/v1/transactions/{tx_id(spend)}").json()["transaction"]
        committed = eventually(
            lambda: at_hub(hub, f"/v1/loyalty/redemptions/{hold}").json()["state"] == "committed"
        )
        saga = at_hub(hub, f"/v1/loyalty/redemptions/{hold}").json()
        again = post(agent, [spend])["results"][0]["status"]

        assert (granted.status_code, over.status_code) == (201, 201)
        assert granted.json()["hold_id"].startswith("OFF-") and granted.json()["offline"] is True
        assert verdicts == ["accepted"] * 3 and waiting == 3
        assert settled["settlement"] == "settled" and hold and not hold.startswith("OFF-")
        assert [t["reference"] for t in sold["tenders"]] == [None, hold]
        assert committed and (saga["transaction_id"], saga["points"]) == (tx_id(spend), 100)
        assert again == "duplicate"  # judged against what the till sent
        assert at_hub(hub, f"/v1/transactions/{tx_id(sales[2])}").status_code == 200

    def test_a_sale_whose_grant_the_hub_refused_stays_at_the_agent_until_released(self, link: Link) -> None:
        hub, agent = link.hub, link.agent
        sales = card_sales("S001")
        link.proxy.set_faults(down=True)
        over = reserve(agent, "till-2-a", "M0063", 1200)  # more than M0063 has
        refused = paid_with_points(sales[3], over.json()["hold_id"])
        post(agent, [refused, sales[4]])

        link.proxy.clear_faults()
        assert eventually(lambda: status_of(agent, "S001")["held"] == 1 and drained(agent))
        status = status_of(agent, "S001")
        reported = eventually(lambda: "held" in (health_of(hub, "S001")["last_error"] or ""))
        kept_back = at_hub(hub, f"/v1/transactions/{tx_id(refused)}").status_code
        with agent.client() as operator:
            released = operator.post(f"/v1/edge/outbox/{tx_id(refused)}/release")
            twice = operator.post(f"/v1/edge/outbox/{tx_id(refused)}/release")
            unknown = operator.post("/v1/edge/outbox/S001:R09:2026-11-20:00000001/release")
        arrived = eventually(lambda: at_hub(hub, f"/v1/transactions/{tx_id(refused)}").status_code == 200)
        sold = at_hub(hub, f"/v1/transactions/{tx_id(refused)}").json()["transaction"]

        [held] = status["held_transactions"]
        assert held["transaction_id"] == tx_id(refused) and "insufficient points" in held["reason"]
        assert status["offline_grants"]["unsettled_refused"] == 1
        assert reported and kept_back == 404
        assert released.status_code == 200 and released.json()["state"] == "pending"
        assert twice.status_code == 409 and twice.json()["state"] in ("pending", "delivered")
        assert unknown.status_code == 404
        assert arrived and [t["reference"] for t in sold["tenders"]] == [None, over.json()["hold_id"]]
        assert eventually(lambda: status_of(agent, "S001")["held"] == 0)


def test_an_unknown_offline_policy_stops_the_agent_before_it_starts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLFLOW_")} | {"TILLFLOW_API_KEY": "k"}
    args = ["--store", "S001", "--hub", "http://127.0.0.1:9", "--data-dir", str(tmp_path / "edge")]
    run = subprocess.run(
        [*CLI, "edge", *args, "--offline-redemptions", "allow"], capture_output=True, env=env, check=False
    )

    assert run.returncode == 2
    assert "deny or cap" in run.stdout.decode() + run.stderr.decode()
    assert not (tmp_path / "edge").exists()  # nothing opened
