"""Promotion compliance through a real hub process with `hub.promotion_compliance`: a promotion
calendar loaded over the API, sales sent by a till, the compliance flow (in the hub's worker)
finding a discount no promotion allows and a promotion the till skipped, shown per store-day
over HTTP (a store sees its own) and from the command line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests.builders import DAY, line, sale
from tests.e2e.conftest import RunningHub, hub_process
from tillflow.config import HubSettings, TillflowConfig
from tillflow.model import Transaction
from tillflow.sim.pos import demo_stores

CLI = (sys.executable, "-m", "tillflow.cli")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub for stores S001 and S002 that judges discounts against the promotion calendar."""
    config = TillflowConfig(
        hub=HubSettings(promotion_compliance=True, compliance_alert_deviations=2), stores=demo_stores(2)
    )
    with hub_process(tmp_path_factory.mktemp("compliance"), config) as hub:
        yield hub


def discounted(sequence: int, sku: str, amount: str, promotion_id: str | None) -> Transaction:
    """A cash sale of one 10.00 line of `sku` with a discount of `amount`."""
    tx = sale(sequence, line(1, sku, unit_price="10.00"))
    body: dict[str, Any] = tx.model_dump(mode="json")
    body["lines"][0]["modifiers"] = [{"amount": amount, "promotion_id": promotion_id}]
    total = str(Decimal("10.00") - Decimal(amount))
    body["totals"] |= {"subtotal": total, "grand_total": total}
    body["tenders"] = [{"kind": "cash", "amount": total}]
    return Transaction.model_validate(body)


def test_deviations_are_found_and_reported_per_store_day(running: RunningHub) -> None:
    promotion = {
        "promotion_id": "WINTER-10",
        "kind": "percent_off",
        "percent": "10",
        "skus": ["GRO-0001"],
        "starts": "2026-11-01T00:00:00",
        "ends": "2026-12-01T00:00:00",
    }
    clean = discounted(1, "GRO-0001", "1.00", "WINTER-10")
    unauthorised = discounted(2, "GRO-0002", "2.00", "STAFF")
    skipped = sale(3, line(1, "GRO-0001", unit_price="10.00"))
    with (
        running.client(running.admin) as admin,
        running.client(running.keys["S001"]) as s001,
        running.client(running.keys["S002"]) as s002,
    ):
        loaded = admin.put("/v1/promotions", json=[promotion])
        sent = s001.post(
            "/v1/transactions",
            content=orjson.dumps(
                {"transactions": [tx.model_dump(mode="json") for tx in (clean, unauthorised, skipped)]}
            ),
            headers={"content-type": "application/json"},
        )

        def found() -> list[dict[str, Any]]:
            body = s001.get("/v1/compliance", params={"day": DAY.isoformat()}).json()
            return [d for store_day in body["store_days"] for d in store_day["deviations"]]

        deadline = time.monotonic() + 60
        while len(found()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        report = s001.get("/v1/compliance", params={"day": DAY.isoformat()}).json()
        other = s002.get("/v1/compliance", params={"day": DAY.isoformat(), "store": "S001"})

    assert loaded.status_code == 200 and sent.json()["summary"]["accepted"] == 3
    [store_day] = report["store_days"]
    assert store_day["store_id"] == "S001"
    assert store_day["counts"] == {"unauthorised_discount": 1, "promotion_not_applied": 1, "wrong_price": 0}
    assert (report["alerts"], store_day["alert"]) == (["S001"], True)  # two reach the threshold
    by_kind = {d["kind"]: d for d in store_day["deviations"]}
    assert (
        by_kind["unauthorised_discount"]["transaction_id"],
        by_kind["unauthorised_discount"]["actual"],
    ) == (
        unauthorised.transaction_id,
        "2.00",
    )
    assert (
        by_kind["promotion_not_applied"]["transaction_id"],
        by_kind["promotion_not_applied"]["expected"],
    ) == (
        skipped.transaction_id,
        "1.00",
    )
    assert other.status_code == 403

    done = subprocess.run(
        [
            *CLI,
            "masterdata",
            "compliance",
            "--day",
            DAY.isoformat(),
            "--config",
            str(running.config_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    rows = orjson.loads(done.stdout)
    assert sorted(r["kind"] for r in rows) == ["promotion_not_applied", "unauthorised_discount"]
