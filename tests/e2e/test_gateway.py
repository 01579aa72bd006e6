"""The gateway over real HTTP: a `tillflow hub` process, answered per record, problems as RFC 9457."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from typing import Any

import httpx
import orjson

from tests.e2e.conftest import RunningHub, record, sales
from tillflow.sim.pos import PosTrafficGenerator

PROBLEM = "application/problem+json"


def eventually(probe: Callable[[], Any], *, within: float = 30.0) -> Any:
    """Poll `probe` until it returns something truthy (the flows are asynchronous)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class TestBatchAnswers:
    def test_each_record_gets_its_own_verdict_and_the_good_ones_land(
        self, hub: RunningHub, traffic: PosTrafficGenerator
    ) -> None:
        first, second, third = sales(traffic, "S001", 3)
        broken = record(third)
        broken["tenders"][0]["amount"] = "0.01"  # tenders no longer cover the total
        lines_missing_sku = record(sales(traffic, "S001", 1)[0])
        del lines_missing_sku["lines"][0]["sku"]
        with hub.client(hub.keys["S001"]) as client:
            client.post("/v1/transactions", json={"transactions": [record(first)]}).raise_for_status()
            clash = record(second) | {"operator_id": "SOMEONE-ELSE"}
            answer = client.post(
                "/v1/transactions",
                json={"transactions": [record(first), record(second), broken, clash, lines_missing_sku]},
            )
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert [r["status"] for r in results] == ["duplicate", "accepted", "invalid", "conflict", "invalid"]
        assert "tenders - change" in results[2]["errors"][0]["reason"]
        assert results[4]["errors"] == [{"field": "lines[0].sku", "reason": "Field required"}]
        assert answer.json()["summary"] == {"accepted": 1, "duplicate": 1, "conflict": 1, "invalid": 2}

    def test_a_conflict_keeps_the_original_and_is_recorded(
        self, hub: RunningHub, traffic: PosTrafficGenerator
    ) -> None:
        (tx,) = sales(traffic, "S002", 1)
        with hub.client(hub.keys["S002"]) as client:
            client.post("/v1/transactions", json={"transactions": [record(tx)]}).raise_for_status()
            clash = record(tx) | {"operator_id": "RESTORED-FROM-BACKUP"}
            verdict = client.post("/v1/transactions", json={"transactions": [clash]}).json()["results"][0]
            stored = client.get(f"/v1/transactions/{tx.transaction_id}").json()
        assert verdict["status"] == "conflict"
        assert stored["conflicts"] == 1
        assert stored["transaction"]["operator_id"] == tx.operator_id

    def test_a_retry_spelled_differently_is_a_duplicate_not_a_conflict(
        self, hub: RunningHub, traffic: PosTrafficGenerator
    ) -> None:
        (tx,) = sales(traffic, "S001", 1)
        respelled = record(tx)
        respelled["ended_at"] = tx.ended_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        respelled["totals"]["grand_total"] = str(tx.totals.grand_total.quantize(Decimal("0.0001")))
        respelled["tenders"] = [
            t | {"amount": str(Decimal(t["amount"]).quantize(Decimal("0.0001")))}
            for t in respelled["tenders"]
        ]
        with hub.client(hub.keys["S001"]) as client:
            first = client.post("/v1/transactions", json={"transactions": [record(tx)]}).json()
            again = client.post("/v1/transactions", json={"transactions": [respelled]}).json()
        assert first["results"][0]["status"] == "accepted"
        assert again["results"][0]["status"] == "duplicate"

    def test_amounts_sent_as_binary_floats_are_refused_with_the_field(
        self, hub: RunningHub, traffic: PosTrafficGenerator
    ) -> None:
        bad = record(sales(traffic, "S001", 1)[0])
        bad["totals"]["grand_total"] = float(bad["totals"]["grand_total"])
        with hub.client(hub.keys["S001"]) as client:
            result = client.post("/v1/transactions", json={"transactions": [bad]}).json()["results"][0]
        assert result["status"] == "invalid"
        assert result["errors"][0]["field"] == "totals.grand_total"
        assert "decimal strings" in result["errors"][0]["reason"]


class TestProblems:
    def test_malformed_json_is_a_400_problem(self, hub: RunningHub) -> None:
        with hub.client(hub.keys["S001"]) as client:
            answer = client.post(
                "/v1/transactions",
                content=b'{"transactions": [',
                headers={"content-type": "application/json"},
            )
        assert answer.status_code == 400
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["title"] == "Malformed JSON"

    def test_a_body_that_is_not_a_batch_is_a_400_problem(self, hub: RunningHub) -> None:
        with hub.client(hub.keys["S001"]) as client:
            answer = client.post("/v1/transactions", json=[1, 2, 3])
        assert answer.status_code == 400
        assert answer.json()["type"].endswith("/not-a-batch")

    def test_too_many_records_is_413(self, hub: RunningHub, traffic: PosTrafficGenerator) -> None:
        batch = [record(tx) for tx in sales(traffic, "S001", 51)]  # the test hub allows 50
        with hub.client(hub.keys["S001"]) as client:
            answer = client.post("/v1/transactions", json={"transactions": batch})
            after = client.get(f"/v1/transactions/{batch[0]['store_id']}:{batch[0]['register_id']}:x")
        assert answer.status_code == 413
        assert answer.headers["content-type"] == PROBLEM
        assert "limit is 50" in answer.json()["detail"]
        assert after.status_code == 404

    def test_a_body_over_the_byte_limit_is_413(self, hub: RunningHub) -> None:
        with hub.client(hub.keys["S001"]) as client:
            answer = client.post(
                "/v1/transactions", content=b" " * (300 * 1024), headers={"content-type": "application/json"}
            )
        assert answer.status_code == 413
        assert answer.json()["type"].endswith("/body-too-large")

    def test_a_store_key_cannot_send_another_stores_transactions(
        self, hub: RunningHub, traffic: PosTrafficGenerator
    ) -> None:
        (tx,) = sales(traffic, "S002", 1)
        with hub.client(hub.keys["S001"]) as client:
            answer = client.post("/v1/transactions", json={"transactions": [record(tx)]})
            after = client.get(f"/v1/transactions/{tx.transaction_id}")
        assert answer.status_code == 403
        assert "S002" in answer.json()["detail"]
        assert after.status_code == 404  # nothing of the refused batch was stored

    def test_an_unknown_store_is_403_even_for_an_admin(
        self, hub: RunningHub, traffic: PosTrafficGenerator
    ) -> None:
        tx = record(sales(traffic, "S001", 1)[0]) | {"store_id": "S999"}
        with hub.client(hub.admin) as client:
            answer = client.post("/v1/transactions", json={"transactions": [tx]})
        assert answer.status_code == 403
        assert "S999" in answer.json()["detail"]

    def test_no_key_or_a_wrong_key_is_401(self, hub: RunningHub) -> None:
        with hub.client() as client:
            missing = client.post("/v1/transactions", json={"transactions": []})
        with hub.client("tf_0000000000000000_not-a-real-secret") as client:
            wrong = client.post("/v1/transactions", json={"transactions": []})
        assert (missing.status_code, wrong.status_code) == (401, 401)
        assert missing.headers["content-type"] == PROBLEM


class TestFlowAndTrace:
    def test_a_sale_moves_stock_and_its_trace_shows_every_hop(
        self, hub: RunningHub, traffic: PosTrafficGenerator
    ) -> None:
        (tx,) = sales(traffic, "S001", 1)
        stock_line = next(line for line in tx.lines if line.item_type.value == "stock")
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        with hub.client(hub.keys["S001"]) as client:
            before = client.get(f"/v1/inventory/S001/{stock_line.sku}")
            answer = client.post(
                "/v1/transactions",
                json={"transactions": [record(tx)]},
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
            trace = eventually(
                lambda: (
                    (t := client.get(f"/v1/transactions/{tx.transaction_id}/trace").json())
                    and len(t["hops"]) >= 3
                    and t
                )
            )
            position = client.get(f"/v1/inventory/S001/{stock_line.sku}").json()
        assert answer.headers["traceparent"].split("-")[1] == trace_id
        assert trace["trace_id"] == trace_id
        assert [h["hop"] for h in trace["hops"]] == ["received", "logged", "inventory.applied"]
        moved = sum(
            line.quantity
            for line in tx.lines
            if line.sku == stock_line.sku and line.item_type.value == "stock"
        )
        previous = before.json()["quantity"] if before.status_code == 200 else "0"
        assert Decimal(position["quantity"]) == Decimal(previous) - moved

    def test_a_store_key_cannot_read_another_stores_stock(self, hub: RunningHub) -> None:
        with hub.client(hub.keys["S001"]) as client:
            assert client.get("/v1/inventory/S002/GRO-0001").status_code == 403


class TestOperations:
    def test_health_readiness_and_openapi(self, hub: RunningHub) -> None:
        with hub.client() as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            ready = client.get("/readyz").json()
            spec = client.get("/openapi.json").json()
            docs = client.get("/docs")
        assert ready["status"] == "ready" and ready["checks"]["worker_process"] == "ok"
        assert "Transaction" in spec["components"]["schemas"]
        assert "/v1/transactions" in spec["paths"]
        assert docs.status_code == 200

    def test_flows_and_stats_need_an_admin_key(self, hub: RunningHub) -> None:
        with hub.client(hub.keys["S001"]) as client:
            assert client.get("/v1/flows").status_code == 403
        with hub.client(hub.admin) as client:
            flows = client.get("/v1/flows").json()
            stats = client.get("/v1/stats").json()
        assert "inventory" in flows["consumer_groups"]
        assert stats["transactions"] >= 1


def test_batch_bodies_are_plain_json(hub: RunningHub) -> None:
    # the gateway reads the raw body; a UTF-8 BOM or trailing garbage is malformed, not a crash
    with httpx.Client(base_url=hub.url, headers={"authorization": f"Bearer {hub.keys['S001']}"}) as client:
        answer = client.post("/v1/transactions", content=orjson.dumps({"transactions": []}) + b"xyz")
    assert answer.status_code == 400
