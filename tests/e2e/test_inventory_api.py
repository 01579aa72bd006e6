"""The product master and stock counts over HTTP and from the command line, against a real hub
process: PUT /v1/products answers per row exactly as PUT /v1/items (its alias), `products import`
as `masterdata import --kind items`, POST /v1/inventory/counts sets a position once, another
store's key is refused, an invalid count is a problem naming the field."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.conftest import RunningHub

CLI = [sys.executable, "-m", "tillflow.cli"]
PROBLEM = "application/problem+json"


def count_body(count_id: str, quantity: str = "12", store: str = "S001") -> dict[str, object]:
    return {
        "store_id": store,
        "count_id": count_id,
        "counted_at": "2026-11-29T08:00:00+00:00",
        "lines": [{"sku": "E2E-CHEESE", "quantity": quantity, "uom": "KG"}],
    }


def wait_position(hub: RunningHub, sku: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    with hub.client(hub.keys["S001"]) as client:
        while time.monotonic() < deadline:
            answer = client.get(f"/v1/inventory/S001/{sku}")
            if answer.status_code == 200:
                return str(answer.json()["quantity"])
            time.sleep(0.1)
    raise AssertionError(f"{sku} never got a position")


def product_rows(prefix: str) -> list[dict[str, Any]]:
    return [
        {"sku": f"{prefix}-CHEESE", "uom": "KG", "description": "Gouda"},
        {"sku": f"{prefix}-BAD", "uom": "BOX"},
        {"sku": f"{prefix}-MELON", "conversions": {"KG": "0.5"}},
    ]


def without_prefix(body: dict[str, Any], prefix: str) -> dict[str, Any]:
    """An answer to a load with the SKU prefix of its rows and the version left out."""
    results = [{**r, "key": r["key"].removeprefix(prefix)} for r in body["results"]]
    return {**body, "results": results, "version": None}


class TestProductsOverHttp:
    def test_put_answers_per_row_as_put_items_and_get_reads_back(self, hub: RunningHub) -> None:
        with hub.client(hub.admin) as admin:
            products = admin.put("/v1/products", json=product_rows("E2E-P"))
            items = admin.put("/v1/items", json=product_rows("E2E-I"))
            again = admin.put("/v1/items", json=product_rows("E2E-P")[:1])
            got = admin.get("/v1/products/E2E-P-MELON")
            missing = admin.get("/v1/products/E2E-NONE")
        with hub.client(hub.keys["S001"]) as store:
            refused = store.put("/v1/products", json=product_rows("E2E-S"))
            delta = store.get("/v1/stores/S001/masterdata", params={"since": 0})

        assert products.status_code == items.status_code == 200, products.text
        body = products.json()
        assert without_prefix(body, "E2E-P") == without_prefix(items.json(), "E2E-I")
        assert body["summary"] == {
            "created": 2,
            "updated": 0,
            "unchanged": 0,
            "withdrawn": 0,
            "absent": 0,
            "invalid": 1,
        }
        bad = body["results"][1]
        assert (bad["status"], bad["key"], bad["errors"][0]["field"]) == ("invalid", "E2E-P-BAD", "uom")
        assert bad["type"].endswith("/invalid-record") and bad["title"] == "Invalid record"
        assert again.json()["results"][0]["status"] == "unchanged"
        assert got.json()["conversions"] == {"KG": "0.5"}
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
        assert refused.status_code == 403
        versioned = {(kind, key) for _, kind, key, _ in delta.json()["changes"]}
        assert {("item", "E2E-P-CHEESE"), ("item", "E2E-P-MELON")} <= versioned


class TestCountsOverHttp:
    def test_a_count_sets_the_position_once(self, hub: RunningHub) -> None:
        with hub.client(hub.admin) as admin:
            admin.put("/v1/products", json=[{"sku": "E2E-CHEESE", "uom": "KG"}])
        with hub.client(hub.keys["S001"]) as client:
            first = client.post("/v1/inventory/counts", json=count_body("E2E-C1"))
            again = client.post("/v1/inventory/counts", json=count_body("E2E-C1"))
            other = client.post("/v1/inventory/counts", json=count_body("E2E-C1", quantity="13"))

        assert (first.status_code, first.json()["status"]) == (202, "accepted")
        assert first.json()["business_day"] == "2026-11-29"
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")
        assert other.status_code == 409
        assert wait_position(hub, "E2E-CHEESE") == "12"

    def test_another_stores_key_is_refused(self, hub: RunningHub) -> None:
        with hub.client(hub.keys["S002"]) as client:
            answer = client.post("/v1/inventory/counts", json=count_body("E2E-C2"))

        assert answer.status_code == 403
        assert answer.headers["content-type"] == PROBLEM

    def test_an_invalid_count_names_the_field(self, hub: RunningHub) -> None:
        body = count_body("E2E-C3", quantity="-1")
        body["counted_at"] = "2026-11-29T08:00:00"  # no offset
        with hub.client(hub.keys["S001"]) as client:
            answer = client.post("/v1/inventory/counts", json=body)

        assert answer.status_code == 400
        assert answer.headers["content-type"] == PROBLEM
        fields = {e["field"] for e in answer.json()["errors"]}
        assert fields == {"counted_at", "lines[0].quantity"}

    def test_negative_stock_shows_in_the_alerts(self, hub: RunningHub) -> None:
        record = {
            "store_id": "S001",
            "register_id": "R01",
            "business_day": "2026-11-29",
            "sequence": 990001,
            "kind": "sale",
            "currency": "EUR",
            "ended_at": "2026-11-29T10:00:00+00:00",
            "lines": [
                {
                    "line_no": 1,
                    "sku": "E2E-NEG",
                    "quantity": "2",
                    "unit_price": "1.00",
                    "extended_amount": "2.00",
                }
            ],
            "tenders": [{"kind": "cash", "amount": "2.00"}],
            "totals": {"subtotal": "2.00", "tax": "0", "grand_total": "2.00"},
        }
        with hub.client(hub.keys["S001"]) as client:
            sent = client.post("/v1/transactions", json={"transactions": [record]})
            assert sent.json()["summary"]["accepted"] == 1, sent.text
            assert wait_position(hub, "E2E-NEG") == "-2"
            alerts = client.get("/v1/inventory/alerts").json()["alerts"]
            other = client.get("/v1/inventory/alerts", params={"store": "S002"})

        assert [(a["sku"], a["kind"], a["quantity"]) for a in alerts if a["sku"] == "E2E-NEG"] == [
            ("E2E-NEG", "negative_stock", "-2")
        ]
        assert other.status_code == 403
        shown = subprocess.run(
            [*CLI, "inventory", "alerts", "--store", "S001", "--json", "--data-dir", str(hub.data_dir)],
            capture_output=True,
            check=True,
        )
        assert "E2E-NEG" in {row["sku"] for row in orjson.loads(shown.stdout)}


def import_cli(hub: RunningHub, *command: str, report: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *command, "--report", str(report), "--json", "--data-dir", str(hub.data_dir)],
        capture_output=True,
    )


class TestProductsImportCli:
    def test_a_bad_row_is_quarantined_and_the_rest_load(self, hub: RunningHub, tmp_path: Path) -> None:
        csv = tmp_path / "master.csv"
        csv.write_text("sku,uom,conversions\nE2E-CLI-1,KG,\nE2E-CLI-2,EA,KG=oops\nE2E-CLI-3,EA,G=0.002\n")
        report = tmp_path / "quarantine.csv"

        run = import_cli(hub, "products", "import", str(csv), report=report)

        assert run.returncode == 3, run.stderr
        [summary] = orjson.loads(run.stdout)
        assert (summary["kind"], summary["created"], summary["quarantined"]) == ("items", 2, 1)
        assert "E2E-CLI-2" not in report.read_text() and "conversions" in report.read_text()
        with hub.client(hub.admin) as admin:
            assert admin.get("/v1/products/E2E-CLI-3").json()["conversions"] == {"G": "0.002"}

    def test_it_answers_as_masterdata_import_of_items(self, hub: RunningHub, tmp_path: Path) -> None:
        rows = "sku,uom,gtins,conversions\n{p}-1,KG,,G=0.001\n{p}-2,BOX,,\n{p}-3,EA,40123456;40123457,KG=2\n"
        products, items = tmp_path / "products.csv", tmp_path / "items.csv"
        products.write_text(rows.format(p="E2E-ALIAS-P"))
        items.write_text(rows.format(p="E2E-ALIAS-I"))

        by_alias = import_cli(hub, "products", "import", str(products), report=tmp_path / "p.csv")
        by_kind = import_cli(
            hub, "masterdata", "import", str(items), "--kind", "items", report=tmp_path / "i.csv"
        )

        assert (by_alias.returncode, by_kind.returncode) == (3, 3), by_alias.stderr
        [alias_row], [kind_row] = orjson.loads(by_alias.stdout), orjson.loads(by_kind.stdout)
        assert kind_row["version"] > alias_row["version"]
        ignored = {"file": None, "version": None}
        assert {**alias_row, **ignored} == {**kind_row, **ignored}
        assert (kind_row["read"], kind_row["created"], kind_row["quarantined"]) == (3, 2, 1)
        report = (tmp_path / "p.csv").read_text().replace("products.csv", "items.csv")
        assert report == (tmp_path / "i.csv").read_text()
        with hub.client(hub.admin) as admin:
            assert admin.get("/v1/products/E2E-ALIAS-P-3").json()["gtins"] == ["40123456", "40123457"]
