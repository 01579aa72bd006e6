"""The hub asks a store's agent for what its day close counts and never arrived, over real
processes: a hub posting to the reference ERP and a `tillflow edge` for its stores. A sale the
agent holds as delivered but the hub never received is sent again after the next heartbeat, and
the store's day settles; a sale the agent never had is reported missing, and the hub shows it
with the store's health."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import RunningHub, hub_process, reference_service
from tests.e2e.test_edge_agent import STORES, drained, edge_agent, eventually, post, traffic, tx_id
from tillflow.config import PostingSettings, TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.edge.agent import close_day
from tillflow.edge.outbox import SQLiteOutbox
from tillflow.flows.store_day import StorePolicy
from tillflow.flows.z_report import z_reports
from tillflow.hub.ingest import ingest_records
from tillflow.model import Transaction

pytestmark = pytest.mark.e2e

DAY = datetime.now(UTC).date() - timedelta(days=1)  # the hub asks back over the last days only


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub posting S001 per day to the reference ERP (its day close waits for every sale its
    Z report counts), S002 line by line."""
    data_dir = tmp_path_factory.mktemp("resend")
    with reference_service("erp", data_dir / "erp") as erp:
        config = TillflowConfig(
            stores=STORES,
            connectors=ConnectorSettings(erp=HttpConnectorSettings(url=erp.url)),
            posting=PostingSettings(stores={"S001": StorePolicy(policy="aggregated")}),
        )
        with hub_process(data_dir, config) as hub:
            yield hub


def delivered_without_reaching_the_hub(data_dir: Path, record: dict[str, Any]) -> None:
    """Put a sale in the store's outbox as delivered, as if the hub had acknowledged it and then
    lost it (restored from a backup, say)."""
    outbox = SQLiteOutbox(data_dir / f"outbox-{record['store_id']}.db", record["store_id"])
    try:
        [result] = ingest_records([record], outbox, traceparent=None)
        assert result.status.value == "accepted"
        assert outbox.mark_delivered([tx_id(record)]) == 1
    finally:
        outbox.close()


def day_close_of(hub: RunningHub, store_id: str) -> dict[str, Any]:
    with hub.client(hub.keys[store_id]) as client:
        body = client.get("/v1/day-closes", params={"day": DAY.isoformat(), "store": store_id}).json()
    [found] = body["day_closes"]
    result: dict[str, Any] = found
    return result


def health_of(hub: RunningHub, store_id: str) -> dict[str, Any]:
    with hub.client(hub.admin) as admin:
        stores = admin.get("/v1/stores/health").raise_for_status().json()["stores"]
    [found] = [s for s in stores if s["store_id"] == store_id]
    result: dict[str, Any] = found
    return result


class TestResendOnTheHubsRequest:
    def test_a_delivered_sale_the_hub_lacks_is_sent_again_and_the_day_settles(
        self, books: RunningHub, tmp_path: Path
    ) -> None:
        records = [r for r in traffic(DAY, 120) if r["store_id"] == "S001"]
        lost = records[10]
        with books.client(books.keys["S001"]) as s001:
            assert s001.get(f"/v1/transactions/{tx_id(lost)}").status_code == 404
        delivered_without_reaching_the_hub(tmp_path / "edge", lost)
        with edge_agent(books.url, books.keys, tmp_path / "edge") as agent:
            post(agent, [r for r in records if r is not lost])
            assert eventually(lambda: drained(agent))
            report, queued = close_day(agent.url, "S001", DAY)
            settled = eventually(lambda: day_close_of(books, "S001")["state"] == "posted", within=90)
            status = agent.status()["stores"]["S001"]
        with books.client(books.keys["S001"]) as s001:
            at_hub = s001.get(f"/v1/transactions/{tx_id(lost)}")
        close = day_close_of(books, "S001")

        assert queued["verdict"] == "accepted"
        assert sum(r.transaction_count for r in report.registers) == len(records)  # it counts the lost one
        assert settled and close["gap"] == []
        assert at_hub.status_code == 200
        assert at_hub.json()["transaction"] == Transaction.model_validate(lost).model_dump(mode="json")
        assert status["resent_total"] == 1 and status["missing"] == []
        assert status["delivered_total"] == len(records)  # the others once, the lost one again

    def test_a_sale_the_agent_never_had_is_reported_missing_to_the_hub(
        self, books: RunningHub, tmp_path: Path
    ) -> None:
        records = [r for r in traffic(DAY, 120) if r["store_id"] == "S002"]
        never_sent = records[7]
        [report] = z_reports([Transaction.model_validate(r) for r in records], closed_at=datetime.now(UTC))
        with edge_agent(books.url, books.keys, tmp_path / "edge") as agent:
            post(agent, [r for r in records if r is not never_sent])
            with agent.client() as client:
                queued = client.post("/v1/edge/day-close", json=orjson.loads(report.model_dump_json()))
            reported = eventually(lambda: health_of(books, "S002")["missing"] == [tx_id(never_sent)])
            status = agent.status()["stores"]["S002"]

        assert queued.status_code == 202
        assert reported
        assert status["missing"] == [tx_id(never_sent)] and status["resent_total"] == 0
        assert day_close_of(books, "S002")["gap"] == [tx_id(never_sent)]
