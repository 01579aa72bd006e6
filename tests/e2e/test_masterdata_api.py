"""Master data over HTTP against a real hub process: loads answer per row (refused rows as
problem details), each store gets its own delta (another store's key is refused), acks move the
status, a withdrawal reaches the store, the price lookup, and the import from the command line
(prices, and items with their unit conversions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import RunningHub

CLI = [sys.executable, "-m", "tillflow.cli"]
PROBLEM = "application/problem+json"
START = "2026-03-01T00:00:00"


def price(sku: str, amount: str, **scope: str) -> dict[str, Any]:
    return {"sku": sku, "price": amount, "currency": "EUR", "effective_from": START, **scope}


def promotion(pid: str, sku: str, **targets: Any) -> dict[str, Any]:
    return {
        "promotion_id": pid,
        "kind": "percent_off",
        "percent": "10",
        "skus": [sku],
        "starts": START,
        "ends": "2026-12-31T00:00:00",
        **targets,
    }


def keys_of(body: dict[str, Any]) -> dict[tuple[str, str], Any]:
    assert body["fields"] == ["version", "kind", "key", "record"]
    return {(kind, key): record for _, kind, key, record in body["changes"]}


class TestLoads:
    def test_each_row_is_answered_and_the_valid_ones_load(self, hub: RunningHub) -> None:
        with hub.client(hub.admin) as admin:
            items = admin.put("/v1/items", json=[{"sku": "MD-A", "uom": "EA"}, {"sku": "MD-B", "uom": "BOX"}])
            prices = admin.put("/v1/prices", json=[price("MD-A", "2.00"), price("MD-A", "-1", region="eu")])
            promos = admin.put(
                "/v1/promotions", json=[promotion("MD-P", "MD-A", regions=["eu"]), {"kind": "x"}]
            )
            again = admin.put("/v1/items", json=[{"sku": "MD-A", "uom": "EA"}])
        with hub.client(hub.keys["S001"]) as store:
            refused = store.put("/v1/prices", json=[price("MD-A", "1.00")])

        assert items.status_code == 200, items.text
        assert items.json()["summary"]["created"] == 1
        bad = items.json()["results"][1]
        assert (bad["status"], bad["key"], bad["errors"][0]["field"]) == ("invalid", "MD-B", "uom")
        assert bad["type"].endswith("/invalid-record") and bad["title"] == "Invalid record"
        assert [r["status"] for r in prices.json()["results"]] == ["created", "invalid"]
        assert prices.json()["results"][0]["key"] == f"MD-A|all|{START}"
        assert prices.json()["results"][1]["errors"][0]["field"] == "price"
        assert [r["status"] for r in promos.json()["results"]] == ["created", "invalid"]
        assert again.json()["results"][0]["status"] == "unchanged"
        assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM


class TestDeltasAndAcks:
    def test_a_store_syncs_acks_and_gets_a_withdrawal(self, hub: RunningHub) -> None:
        with hub.client(hub.admin) as admin:
            admin.put("/v1/items", json=[{"sku": "MD-C"}])
            admin.put("/v1/prices", json=[price("MD-C", "3.00"), price("MD-C", "2.50", region="eu")])
            admin.put("/v1/promotions", json=[promotion("MD-Q", "MD-C", regions=["eu"])])
        with hub.client(hub.keys["S001"]) as s1, hub.client(hub.keys["S002"]) as s2:
            snapshot = s1.get("/v1/stores/S001/masterdata", params={"since": 0})
            other = s2.get("/v1/stores/S002/masterdata", params={"since": 0})
            foreign = s2.get("/v1/stores/S001/masterdata", params={"since": 0})
            version = snapshot.json()["version"]
            acked = s1.post("/v1/stores/S001/masterdata/ack", json={"version": version})
            beyond = s1.post("/v1/stores/S001/masterdata/ack", json={"version": version + 100})
            with hub.client(hub.admin) as admin:
                status = admin.get("/v1/masterdata/status").json()
                withdrawn = admin.delete("/v1/promotions/MD-Q")
                missing = admin.delete("/v1/promotions/MD-Q")
            delta = s1.get("/v1/stores/S001/masterdata", params={"since": version})
            paged = s1.get("/v1/stores/S001/masterdata", params={"since": 0, "limit": 1})

        assert snapshot.status_code == 200, snapshot.text
        mine, theirs = keys_of(snapshot.json()), keys_of(other.json())
        assert mine[("promotion", "MD-Q")]["regions"] == ["eu"]
        assert mine[("price", f"MD-C|region:eu|{START}")]["price"] == "2.50"
        assert ("promotion", "MD-Q") not in theirs and ("item", "MD-C") in theirs
        assert foreign.status_code == 403 and foreign.headers["content-type"] == PROBLEM
        assert acked.json() == {"store_id": "S001", "acked_version": version}
        assert beyond.status_code == 409 and beyond.headers["content-type"] == PROBLEM
        by_store = {s["store_id"]: s for s in status["stores"]}
        assert (by_store["S001"]["acked_version"], by_store["S001"]["behind"]) == (version, 0)
        assert by_store["S002"]["acked_version"] == 0 and by_store["S002"]["behind"] > 0
        assert withdrawn.json()["status"] == "withdrawn" and missing.status_code == 404
        assert keys_of(delta.json()) == {("promotion", "MD-Q"): None}
        assert delta.json()["complete"] is True
        assert paged.json()["complete"] is False and len(paged.json()["changes"]) == 1

    def test_a_version_ahead_of_the_hub_is_refused(self, hub: RunningHub) -> None:
        with hub.client(hub.keys["S001"]) as s1:
            answer = s1.get("/v1/stores/S001/masterdata", params={"since": 10**9})

        assert answer.status_code == 409 and answer.json()["type"].endswith("/version-ahead")


class TestPriceLookup:
    def test_the_regional_price_wins_with_the_active_promotions(self, hub: RunningHub) -> None:
        with hub.client(hub.admin) as admin:
            admin.put("/v1/items", json=[{"sku": "MD-D", "department": "dairy"}])
            admin.put("/v1/prices", json=[price("MD-D", "4.00"), price("MD-D", "3.50", region="eu")])
            admin.put("/v1/promotions", json=[promotion("MD-R", "MD-D", regions=["eu"])])
        with hub.client(hub.keys["S001"]) as s1:
            found = s1.get("/v1/prices/S001/MD-D", params={"at": "2026-06-01T10:00:00+00:00"})
            before = s1.get("/v1/prices/S001/MD-D", params={"at": "2026-01-01T10:00:00+00:00"})
            naive = s1.get("/v1/prices/S001/MD-D", params={"at": "2026-06-01T10:00:00"})
            foreign = s1.get("/v1/prices/S002/MD-D")

        assert found.status_code == 200, found.text
        body = found.json()
        assert (body["price"]["price"], body["price"]["region"]) == ("3.50", "eu")
        assert [p["promotion_id"] for p in body["promotions"]] == ["MD-R"]
        assert before.status_code == 404 and before.headers["content-type"] == PROBLEM
        assert naive.status_code == 400
        assert foreign.status_code == 403


class TestImport:
    def test_a_csv_of_prices_loads_and_refused_rows_are_quarantined(
        self, hub: RunningHub, tmp_path: Path
    ) -> None:
        source = tmp_path / "prices.csv"
        source.write_text(
            "sku,price,currency,region,effective_from\n"
            f"MD-E,5.00,EUR,,{START}\n"
            f"MD-E,oops,EUR,,{START}\n"
            f"MD-E,4.50,EUR,eu,{START}\n"
        )
        report = tmp_path / "quarantine.csv"
        config = str(hub.data_dir / "tillflow.yaml")

        done = subprocess.run(
            [*CLI, "masterdata", "import", str(source), "--kind", "prices", "--config", config,
             "--report", str(report), "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        with hub.client(hub.keys["S001"]) as s1:
            found = s1.get("/v1/prices/S001/MD-E", params={"at": "2026-06-01T10:00:00+00:00"})

        assert done.returncode == 3, done.stderr
        [row] = json.loads(done.stdout)
        assert (row["read"], row["created"], row["quarantined"]) == (3, 2, 1)
        assert "line 3" in report.read_text() and "price" in report.read_text()
        assert found.json()["price"]["price"] == "4.50"

    def test_a_csv_of_items_loads_with_its_unit_conversions(self, hub: RunningHub, tmp_path: Path) -> None:
        source = tmp_path / "items.csv"
        source.write_text(
            "sku,description,uom,gtins,conversions\n"
            "MD-F,Cheese,KG,4012345678901,G=0.001\n"
            "MD-G,Apples,EA,,KG=5;LB=2.27\n"
            "MD-H,Pears,EA,,KG=oops\n"
        )
        report = tmp_path / "quarantine.csv"
        config = str(hub.data_dir / "tillflow.yaml")

        done = subprocess.run(
            [*CLI, "masterdata", "import", str(source), "--kind", "items", "--config", config,
             "--report", str(report), "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        with hub.client(hub.admin) as admin:
            cheese = admin.get("/v1/products/MD-F").json()
            apples = admin.get("/v1/products/MD-G").json()
            pears = admin.get("/v1/products/MD-H")
        with hub.client(hub.keys["S001"]) as s1:
            snapshot = keys_of(s1.get("/v1/stores/S001/masterdata", params={"since": 0}).json())

        assert done.returncode == 3, done.stderr
        [row] = json.loads(done.stdout)
        assert (row["kind"], row["read"], row["created"], row["quarantined"]) == ("items", 3, 2, 1)
        assert (cheese["conversions"], cheese["gtins"]) == ({"G": "0.001"}, ["4012345678901"])
        assert apples["conversions"] == {"KG": "5", "LB": "2.27"}
        assert snapshot[("item", "MD-G")]["conversions"] == {"KG": "5", "LB": "2.27"}
        assert pears.status_code == 404
        assert "line 4" in report.read_text() and "conversions" in report.read_text()
