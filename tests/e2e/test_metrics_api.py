"""`/metrics` and `/v1/metrics/summary` of a real hub process posting to the reference ERP and
loyalty platform: after a run, the counters equal what was sent — accepted, duplicates, the
conflict and the invalid record, each flow's events, each effect's latency observations — and
the scrape needs an admin key unless `observe.metrics_auth` is "none"."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import RunningHub, hub_process, record, reference_service
from tillflow.config import HubSettings, TillflowConfig
from tillflow.connectors.settings import ConnectorSettings, HttpConnectorSettings
from tillflow.flows.loyalty import accrual_of
from tillflow.model import Customer, Transaction
from tillflow.observe.metrics import LATENCY_PATHS
from tillflow.observe.settings import ObserveSettings
from tillflow.sim.pos import PosTrafficGenerator, demo_stores

STORES = demo_stores(2)
FLOWS = ("inventory", "posting", "loyalty")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def eventually(probe: Callable[[], Any], *, within: float = 90.0) -> Any:
    """Poll `probe` until it returns something truthy (flows and publishers are asynchronous)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sales() -> list[Transaction]:
    """Both stores' sales, every third one by a loyalty member who earns points."""
    gen = PosTrafficGenerator(STORES, business_day=date(2026, 11, 29), seed=21)
    found = [tx for tx in gen.transactions(120) if tx.kind.value == "sale"][:30]
    return [
        tx.model_copy(update={"customer": Customer(member_id=f"M{i % 5 + 1:04d}")}) if i % 3 == 0 else tx
        for i, tx in enumerate(found)
    ]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub posting to the reference ERP and accruing on the reference loyalty platform; its
    worker publishes its counters every half second."""
    data_dir = tmp_path_factory.mktemp("metrics")
    with (
        reference_service("erp", data_dir / "erp") as erp,
        reference_service("loyalty", data_dir / "loyalty") as lp,
    ):
        config = TillflowConfig(
            stores=STORES,
            connectors=ConnectorSettings(
                erp=HttpConnectorSettings(url=erp.url), loyalty=HttpConnectorSettings(url=lp.url)
            ),
            observe=ObserveSettings(metrics_publish_seconds=0.5),
        )
        with hub_process(data_dir, config) as running:
            yield running


def by_store(txs: list[Transaction], store: str) -> list[dict[str, Any]]:
    return [record(tx) for tx in txs if tx.store_id == store]


class TestCountersAfterARun:
    def test_the_counters_equal_what_was_sent(self, hub: RunningHub, sales: list[Transaction]) -> None:
        validated = [Transaction.model_validate(record(tx)) for tx in sales]
        earning = sum(1 for tx in validated if accrual_of(tx) is not None)
        s001 = by_store(sales, "S001")
        invalid = s001[0] | {"currency": "euro"}
        clash = s001[1] | {"operator_id": "SOMEONE-ELSE"}
        with hub.client(hub.keys["S001"]) as s1, hub.client(hub.keys["S002"]) as s2:
            first = s1.post("/v1/transactions", json={"transactions": s001})
            second = s2.post("/v1/transactions", json={"transactions": by_store(sales, "S002")})
            # the first four of S001 again, a conflicting copy of one of them, and a broken one
            third = s1.post("/v1/transactions", json={"transactions": [*s001[:4], clash, invalid]})
            beat = {
                "agent_version": "1.0.0",
                "sent_at": datetime.now(UTC).isoformat(),
                "buffer_depth": 3,
                "oldest_unsent_age_seconds": 1.5,
                "delivered_total": 10,
                "conflicts": 0,
            }
            s1.post("/v1/stores/S001/heartbeat", json=beat).raise_for_status()
        summaries = [answer.json()["summary"] for answer in (first, second, third)]
        assert summaries[2] == {"accepted": 0, "duplicate": 4, "conflict": 1, "invalid": 1}
        accepted = len(sales)
        assert summaries[0]["accepted"] + summaries[1]["accepted"] == accepted

        with hub.client(hub.admin) as admin:

            def settled() -> Samples | None:
                samples = parse(admin.get("/metrics").text)
                handled = [samples[("tillflow_flow_events_handled_total", (("group", g),))] for g in FLOWS]
                count = "tillflow_end_to_end_latency_seconds_count"
                seen = [samples[(count, (("path", p),))] for p in LATENCY_PATHS]
                done = handled == [accepted] * 3 and seen == [accepted, earning, accepted]
                return samples if done else None  # effects are read a few seconds after they happen

            samples = eventually(settled)
            assert samples is not None, parse(admin.get("/metrics").text)
            summary = admin.get("/v1/metrics/summary").json()

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        assert value("tillflow_transactions_accepted_total") == accepted
        assert value("tillflow_transaction_conflicts_total") == 1
        assert value("tillflow_ingest_records_total", outcome="accepted") == accepted
        assert value("tillflow_ingest_records_total", outcome="duplicate") == 4
        assert value("tillflow_ingest_records_total", outcome="conflict") == 1
        assert value("tillflow_ingest_records_total", outcome="invalid") == 1
        assert value("tillflow_ingest_requests_total", status="200") == 3
        assert value("tillflow_event_log_head") == accepted
        for group in FLOWS:
            assert value("tillflow_flow_position", group=group) == accepted
            assert value("tillflow_flow_lag", group=group) == 0
            assert value("tillflow_flow_retries_total", group=group) == 0
            assert value("tillflow_flow_dead_letters", group=group) == 0
        count = "tillflow_end_to_end_latency_seconds_count"
        assert value(count, path="inventory_applied") == accepted
        assert value(count, path="loyalty_accrued") == earning > 0
        assert value("tillflow_end_to_end_latency_seconds_bucket", path="erp_posted", le="+Inf") == accepted
        assert value("tillflow_downstream_calls_total", downstream="loyalty") > 0
        assert value("tillflow_downstream_breaker_state", downstream="erp") == 0
        assert value("tillflow_store_online", store="S001") == 1
        assert value("tillflow_store_buffer_depth", store="S001") == 3
        assert value("tillflow_stores", status="unknown") == 1
        processes = {labels: v for (name, labels), v in samples.items() if name == "tillflow_process_up"}
        # the API process and the worker processes of its groups of flows, each of them up
        assert {dict(labels)["role"] for labels in processes} == {"all", "worker"}
        assert set(processes.values()) == {1}

        assert summary["ingest"] == {
            "accepted_total": accepted,
            "duplicate_total": 4,
            "conflict_total": 1,
            "invalid_total": 1,
        }
        assert {
            g: (f["lag"], f["handled_total"], f["dead_letters"]) for g, f in summary["flows"].items()
        } == {g: (0, accepted, 0) for g in FLOWS}
        assert summary["latency_seconds"]["loyalty_accrued"]["count"] == earning
        assert summary["latency_seconds"]["inventory_applied"]["p99"] >= 0
        assert summary["stores"] == {"online": 1, "offline": 0, "unknown": 1, "buffered": 3}
        assert summary["downstream"]["erp"]["breaker"] == "closed"


class TestMetricsAuth:
    def test_an_admin_key_is_asked_for_by_default(self, hub: RunningHub) -> None:
        anonymous = httpx.get(f"{hub.url}/metrics", timeout=30)
        with hub.client(hub.keys["S001"]) as store, hub.client(hub.admin) as admin:
            as_store = store.get("/metrics")
            as_admin = admin.get("/metrics")
            summary_as_store = store.get("/v1/metrics/summary")

        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")
        assert as_store.status_code == 403
        assert summary_as_store.status_code == 403
        assert as_admin.status_code == 200
        assert as_admin.headers["content-type"].startswith("text/plain")

    def test_none_leaves_the_scrape_open(self, tmp_path: Path) -> None:
        config = TillflowConfig(
            hub=HubSettings(), stores=demo_stores(1), observe=ObserveSettings(metrics_auth="none")
        )
        with hub_process(tmp_path, config) as open_hub:
            scrape = httpx.get(f"{open_hub.url}/metrics", timeout=30)
            summary = httpx.get(f"{open_hub.url}/v1/metrics/summary", timeout=30)

        assert scrape.status_code == 200
        assert parse(scrape.text)[("tillflow_transactions_accepted_total", ())] == 0
        assert summary.status_code == 401  # the dashboard's figures stay behind an admin key
