"""The hub on NATS JetStream: the gateway's outbox is relayed to the stream and flows consume it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.e2e.conftest import hub_process
from tests.nats_server import NatsServer, nats_server
from tests.servers import free_port
from tillflow.bootstrap import bootstrap
from tillflow.config import BusSettings, HubSettings, TillflowConfig
from tillflow.errors import EventLogError
from tillflow.sim.pos import PosTrafficGenerator, demo_stores


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with nats_server() as running:
        yield running


def config_for(data_dir: Path, servers: list[str]) -> TillflowConfig:
    return TillflowConfig(
        hub=HubSettings(data_dir=data_dir),
        bus=BusSettings(kind="jetstream", servers=servers, stream="HUBTEST"),
        stores=demo_stores(1),
    )


class TestHubOnJetStream:
    def test_a_sale_goes_through_jetstream_to_inventory(self, server: NatsServer, tmp_path: Path) -> None:
        with hub_process(tmp_path, config_for(tmp_path, [server.url])) as hub:
            sales = [
                tx
                for tx in PosTrafficGenerator(
                    hub.config.stores, business_day=date(2026, 11, 29), seed=4
                ).transactions(40)
                if tx.kind.value == "sale"
            ]
            with hub.client(hub.keys["S001"]) as client, hub.client(hub.admin) as admin:
                answer = client.post(
                    "/v1/transactions", json={"transactions": [tx.model_dump(mode="json") for tx in sales]}
                )
                assert answer.json()["summary"]["accepted"] == len(sales)
                deadline = time.monotonic() + 60
                while True:  # the flow is asynchronous: wait for the last sale's applied step
                    trace = client.get(f"/v1/transactions/{sales[-1].transaction_id}/trace").json()
                    if len(trace["hops"]) >= 3 or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                flows = admin.get("/v1/flows").json()
                inventory = flows["consumer_groups"]["inventory"]
        assert flows["head"] == len(sales)  # every accepted sale reached the stream, once
        assert inventory["lag"] == 0 and inventory["position"] == len(sales)
        assert [h["hop"] for h in trace["hops"]] == ["received", "logged", "inventory.applied"]

    def test_an_unreachable_nats_at_start_names_the_url(self, tmp_path: Path) -> None:
        url = f"nats://127.0.0.1:{free_port()}"
        with pytest.raises(EventLogError, match=url):
            bootstrap(config_for(tmp_path, [url]))
