"""The redemption saga over HTTP: a real hub process (gateway and workers) and the reference
loyalty platform (its own process). Points held at checkout, refusals as problem+json with the
field and reason, a cancelled checkout, a sale that spends its hold, and the liability the hub
reconciles, over the API and from the command line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.builders import DAY
from tests.e2e.conftest import RunningHub, hub_process, reference_service
from tests.integration.test_loyalty_saga import member_sale
from tillflow.config import TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.sim.pos import demo_stores

PROBLEM = "application/problem+json"
CLI = (sys.executable, "-m", "tillflow.cli")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub for stores S001 and S002 whose loyalty platform is the reference one."""
    tmp = tmp_path_factory.mktemp("redemptions")
    with reference_service("loyalty", tmp / "loyalty") as loyalty:
        config = TillflowConfig(
            stores=demo_stores(2),
            connectors=ConnectorSettings(loyalty=HttpConnectorSettings(url=loyalty.url)),
        )
        with hub_process(tmp, config) as hub:
            yield hub


def reserve(client: httpx.Client, key: str | None, **fields: Any) -> httpx.Response:
    body = {"store_id": "S001", "member_id": "M0001", "points": 100} | fields
    headers = {} if key is None else {"idempotency-key": key}
    return client.post("/v1/loyalty/redemptions", json=body, headers=headers)


def balance(client: httpx.Client, member: str) -> tuple[int, int]:
    body = client.get(f"/v1/loyalty/members/{member}").json()
    return body["balance"], body["held"]


def wait_for(probe: Any, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("nothing happened in time")


class TestReservations:
    def test_a_hold_once_per_idempotency_key(self, running: RunningHub) -> None:
        with running.client(running.keys["S001"]) as s001:
            first = reserve(s001, "till-1-checkout-1", member_id="M0002", points=250)
            again = reserve(s001, "till-1-checkout-1", member_id="M0002", points=250)
            other = reserve(s001, "till-1-checkout-1", member_id="M0002", points=900)
            held = balance(s001, "M0002")

        assert first.status_code == 201, first.text
        assert again.status_code == 200 and again.json()["hold_id"] == first.json()["hold_id"]
        assert first.json()["state"] == "held" and first.json()["points"] == 250
        assert other.status_code == 422 and other.headers["content-type"].startswith(PROBLEM)
        assert "already reserved 250 points" in other.json()["detail"]
        assert held == (750, 250)

    def test_refusals_are_problems_naming_the_field_and_reason(self, running: RunningHub) -> None:
        with running.client(running.keys["S001"]) as s001, running.client(running.keys["S002"]) as s002:
            no_key = reserve(s001, None)
            zero = reserve(s001, "k-zero", points=0)
            too_long = reserve(s001, "k-ttl", ttl_seconds=86_400)
            too_many = reserve(s001, "k-many", member_id="M0003", points=5000)
            other_store = reserve(s002, "k-other")

        for answer in (no_key, zero, too_long, too_many, other_store):
            assert answer.headers["content-type"].startswith(PROBLEM), answer.text
        assert no_key.status_code == 400 and "Idempotency-Key" in no_key.json()["detail"]
        assert zero.status_code == 400 and "points" in zero.text
        assert too_long.status_code == 400 and "ttl_seconds: 86400" in too_long.json()["detail"]
        assert too_many.status_code == 422 and "insufficient points" in too_many.json()["detail"]
        assert other_store.status_code == 403

    def test_a_cancelled_checkout_gives_the_points_back(self, running: RunningHub) -> None:
        with running.client(running.keys["S001"]) as s001, running.client(running.keys["S002"]) as s002:
            hold = reserve(s001, "till-2-checkout-7", member_id="M0004", points=300).json()["hold_id"]
            hidden = s002.get(f"/v1/loyalty/redemptions/{hold}")
            released = s001.post(f"/v1/loyalty/redemptions/{hold}/release")
            again = s001.post(f"/v1/loyalty/redemptions/{hold}/release")
            read = s001.get(f"/v1/loyalty/redemptions/{hold}")
            after = balance(s001, "M0004")

        assert hidden.status_code == 404  # another store's hold is not shown
        assert released.status_code == again.status_code == 200
        assert (
            read.json()["state"] == "released" and read.json()["reason"] == "checkout cancelled at the till"
        )
        assert after == (1000, 0)


class TestCheckout:
    def test_the_sale_spends_its_hold_and_the_liability_reconciles(self, running: RunningHub) -> None:
        with running.client(running.keys["S001"]) as s001, running.client(running.admin) as admin:
            hold = reserve(s001, "till-3-checkout-1", member_id="M0001", points=200).json()["hold_id"]
            tx = member_sale(1, "20.00", hold=hold, points=200)
            sent = s001.post(
                "/v1/transactions",
                content=orjson.dumps({"transactions": [tx.model_dump(mode="json")]}),
                headers={"content-type": "application/json"},
            )
            saga = wait_for(
                lambda: (
                    (b := s001.get(f"/v1/loyalty/redemptions/{hold}").json())["state"] == "committed" and b
                )
            )
            spent = s001.post(f"/v1/loyalty/redemptions/{hold}/release")
            forbidden = s001.get("/v1/loyalty/liability")
            liability = wait_for(lambda: (b := admin.get("/v1/loyalty/liability").json())["matched"] and b)
            listed = admin.get("/v1/loyalty/redemptions", params={"state": "committed"}).json()

        assert sent.json()["summary"]["accepted"] == 1
        assert saga["transaction_id"] == tx.transaction_id and saga["conflicts"] == []
        assert spent.status_code == 409 and spent.headers["content-type"].startswith(PROBLEM)
        assert forbidden.status_code == 403
        [program] = liability["programs"]
        assert program["hub_points"] == program["platform_points"]
        assert program["moves"]["redemption"] == -200 and program["moves"]["accrual"] == 20
        assert [r["hold_id"] for r in listed["redemptions"]] == [hold]

        done = subprocess.run(
            [
                *CLI,
                "reconcile",
                "--day",
                DAY.isoformat(),
                "--config",
                str(running.config_path),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        report = orjson.loads(done.stdout)
        assert report["loyalty"][0]["status"] == "matched", done.stdout + done.stderr
        assert report["loyalty"][0]["sagas"]["committed"] == 1
