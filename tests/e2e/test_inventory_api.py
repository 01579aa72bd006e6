"""The product master and stock counts over HTTP and from the command line, against a real hub
process: PUT /v1/products answers per row, POST /v1/inventory/counts sets a position once,
another store's key is refused, an invalid count is a problem naming the field."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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


class TestProductsOverHttp:
    def test_put_answers_per_row_and_get_reads_back(self, hub: RunningHub) -> None:
        rows = [
            {"sku": "E2E-CHEESE", "uom": "KG", "description": "Gouda"},
            {"sku": "E2E-BAD", "uom": "BOX"},
            {"sku": "E2E-MELON", "conversions": {"KG": "0.5"}},
        ]
        with hub.client(hub.admin) as admin:
            answer = admin.put("/v1/products", json=rows)
            again = admin.put("/v1/products", json=rows[:1])
            got = admin.get("/v1/products/E2E-MELON")
            missing = admin.get("/v1/products/E2E-NONE")
        with hub.client(hub.keys["S001"]) as store:
            refused = store.put("/v1/products", json=rows)

        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["summary"] == {"created": 2, "updated": 0, "unchanged": 0, "invalid": 1}
        assert body["results"][1]["errors"][0]["field"] == "uom"
        assert again.json()["results"][0]["status"] == "unchanged"
        assert got.json()["conversions"] == {"KG": "0.5"}
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
        assert refused.status_code == 403


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


class TestProductsImportCli:
    def test_a_bad_row_is_quarantined_and_the_rest_load(self, hub: RunningHub, tmp_path: Path) -> None:
        csv = tmp_path / "master.csv"
        csv.write_text("sku,uom,conversions\nE2E-CLI-1,KG,\nE2E-CLI-2,EA,KG=oops\nE2E-CLI-3,EA,G=0.002\n")
        report = tmp_path / "quarantine.csv"

        run = subprocess.run(
            [
                *CLI,
                "products",
                "import",
                str(csv),
                "--report",
                str(report),
                "--json",
                "--data-dir",
                str(hub.data_dir),
            ],
            capture_output=True,
        )

        assert run.returncode == 3, run.stderr
        [summary] = orjson.loads(run.stdout)
        assert (summary["created"], summary["quarantined"]) == (2, 1)
        assert "E2E-CLI-2" not in report.read_text() and "conversions" in report.read_text()
        with hub.client(hub.admin) as admin:
            assert admin.get("/v1/products/E2E-CLI-3").json()["conversions"] == {"G": "0.002"}
