"""The metrics on SQLite and PostgreSQL: each process's published counters merged into one
scrape (a silent process marked down, its counters still counted), the effect hops read page
by page into latency histograms, and the loyalty accrual as a hop of the trace."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert

from tillflow.bootstrap import bootstrap
from tillflow.config import HubSettings, TillflowConfig
from tillflow.hub.api.metrics import exposition, summary
from tillflow.observe.metrics import PROCESS_ID, EffectLatencies, merge_figures
from tillflow.ports import PointsEntry, ProcessFigures
from tillflow.services import Services
from tillflow.sim.pos import demo_stores
from tillflow.storage.db import write_tx
from tillflow.storage.loyalty import SQLLoyaltyBook
from tillflow.storage.process_metrics import SQLProcessMetrics
from tillflow.storage.sql import to_us
from tillflow.storage.tables import events, trace_hops, transactions

NOW = datetime.now(UTC)


@pytest.fixture
def services(state_url: str, tmp_path: Path) -> Iterator[Services]:
    config = TillflowConfig(hub=HubSettings(data_dir=tmp_path, state_url=state_url), stores=demo_stores(2))
    wired = bootstrap(config)
    yield wired
    wired.close()


def worker(
    process_id: str, updated_at: datetime, *, handled: int, retries: int, breaker: str
) -> ProcessFigures:
    """The counters a worker process publishes: its inventory runner's and its ERP connector's."""
    figures: dict[str, Any] = {
        "ingest": {"records": {}, "requests": {}},
        "flows": {"inventory": {"handled": handled, "retries": retries, "dead_letters": 1}},
        "downstream": {
            "erp": {"calls": handled, "throttle_waits": 2, "throttle_wait_seconds": 0.5, "breaker": breaker}
        },
    }
    return ProcessFigures(process_id, "worker", updated_at - timedelta(hours=1), updated_at, figures)


def scrape(services: Services) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = exposition(services, None)
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


class TestPublishedFigures:
    def test_a_process_publishes_again_over_its_own_figures(self, services: Services) -> None:
        store = services.process_metrics
        store.publish_figures(
            worker("w1", NOW - timedelta(seconds=5), handled=10, retries=0, breaker="closed")
        )
        store.publish_figures(worker("w1", NOW, handled=25, retries=1, breaker="open"))
        store.publish_figures(worker("w2", NOW, handled=7, retries=0, breaker="closed"))

        found = {f.process_id: f for f in store.list_figures()}

        assert sorted(found) == ["w1", "w2"]
        assert found["w1"].figures["flows"]["inventory"]["handled"] == 25
        assert found["w1"].updated_at == NOW
        assert found["w1"].started_at == NOW - timedelta(seconds=5, hours=1)  # as first published

    def test_two_workers_are_summed_and_a_silent_one_still_counts(self, services: Services) -> None:
        every = services.config.observe.metrics_publish_seconds
        now = datetime.now(UTC)  # the scrape judges who is alive by the clock: not a stale instant
        silent_since = now - timedelta(seconds=every * 3 + 1)
        # this process's own counters count too: other tests in it may have run flows already
        own = merge_figures(services, now).flows.get("inventory", {})
        before = scrape(services)
        services.process_metrics.publish_figures(
            worker("live", now, handled=30, retries=2, breaker="half_open")
        )
        services.process_metrics.publish_figures(
            worker("gone", silent_since, handled=12, retries=1, breaker="open")
        )

        merged = merge_figures(services, now)
        samples = scrape(services)

        def added(name: str, labels: tuple[tuple[str, str], ...]) -> float:
            return samples[(name, labels)] - before.get((name, labels), 0)

        up = {figures.process_id: alive for figures, alive in merged.processes}
        assert up == {"live": True, "gone": False, PROCESS_ID: True}
        assert merged.flows["inventory"]["handled"] == own.get("handled", 0) + 42
        inventory, erp = (("group", "inventory"),), (("downstream", "erp"),)
        assert added("tillflow_flow_events_handled_total", inventory) == 42
        assert added("tillflow_flow_retries_total", inventory) == 3
        assert added("tillflow_flow_dead_lettered_total", inventory) == 2
        assert added("tillflow_downstream_throttle_waits_total", erp) == 4
        assert added("tillflow_downstream_throttle_wait_seconds_total", erp) == 1.0
        # the breaker of the live worker: the silent one's open breaker is a thing of the past
        own_breaker = before.get(("tillflow_downstream_breaker_state", erp), 0)  # this process's
        assert samples[("tillflow_downstream_breaker_state", erp)] == max(1, own_breaker)
        assert samples[("tillflow_process_up", (("process", "gone"), ("role", "worker")))] == 0
        assert samples[("tillflow_process_up", (("process", "live"), ("role", "worker")))] == 1

    def test_the_stores_never_heard_from_are_unknown(self, services: Services) -> None:
        samples = scrape(services)
        figures = summary(services)

        assert samples[("tillflow_stores", (("status", "unknown"),))] == 2
        assert samples[("tillflow_store_online", (("store", "S001"),))] == 0
        assert figures["stores"] == {"online": 0, "offline": 0, "unknown": 2, "buffered": 0}
        assert figures["ingest"] == {
            "accepted_total": 0,
            "duplicate_total": 0,
            "conflict_total": 0,
            "invalid_total": 0,
        }


def add_transaction(engine: Engine, tx_id: str, *, ended: datetime | None, received: datetime) -> None:
    """A transaction's idempotency record, and its event when `ended` (else the log dropped it)."""
    seq = None
    with write_tx(engine) as conn:
        if ended is not None:
            seq = conn.execute(
                insert(events).values(
                    source="/stores/S001/registers/R01",
                    event_id=tx_id,
                    type="retail.transaction.completed.v1",
                    time=ended.isoformat(),
                    data=b"{}",
                    logged_us=to_us(received),
                )
            ).inserted_primary_key[0]
        conn.execute(
            insert(transactions).values(
                transaction_id=tx_id,
                store_id="S001",
                register_id="R01",
                business_day="2026-11-29",
                sequence=int(tx_id[-3:]),
                kind="sale",
                currency="EUR",
                grand_total="1.00",
                digest="d",
                received_us=to_us(received),
                logged_us=to_us(received),
                event_seq=seq,
            )
        )


def add_hop(engine: Engine, tx_id: str, hop: str, at: datetime, detail: str | None = None) -> None:
    with write_tx(engine) as conn:
        conn.execute(insert(trace_hops).values(transaction_id=tx_id, hop=hop, at_us=to_us(at), detail=detail))


class TestEffectLatency:
    def test_latency_runs_from_the_store_agent_or_else_from_the_hub_receipt(self, engine: Engine) -> None:
        base = datetime.now(UTC) - timedelta(minutes=2)
        earlier = base - timedelta(hours=5)  # the sale's own time: rung up offline, not what counts
        add_transaction(engine, "T-001", ended=earlier, received=base + timedelta(seconds=3))
        add_transaction(engine, "T-002", ended=None, received=base)
        add_transaction(engine, "T-003", ended=base, received=base)
        add_hop(engine, "T-001", "edge.accepted", base)  # the agent had it 3 s before the hub
        add_hop(engine, "T-003", "edge.accepted", base + timedelta(seconds=30))  # agent's clock ahead
        add_hop(engine, "T-001", "received", base + timedelta(seconds=3))  # not an effect
        add_hop(engine, "T-001", "inventory.applied", base + timedelta(seconds=4))
        add_hop(engine, "T-001", "erp.cloud", base + timedelta(seconds=10), "sale T-001 posted as D1")
        add_hop(engine, "T-002", "erp.cloud", base + timedelta(seconds=8), "sale T-002 rejected: no account")
        add_hop(engine, "T-002", "loyalty.accrued", base + timedelta(seconds=6))
        add_hop(engine, "T-003", "loyalty.accrued", base + timedelta(seconds=1))

        page = SQLProcessMetrics(engine).read_effect_hops(after_id=0, limit=100)

        assert sorted(h.hop for h in page.hops) == [
            "erp.cloud",
            "inventory.applied",
            "loyalty.accrued",
            "loyalty.accrued",
        ]
        scan = EffectLatencies(SQLProcessMetrics(engine))
        histograms = scan.snapshot()
        assert (histograms["inventory_applied"].count, histograms["inventory_applied"].sum) == (1, 4.0)
        assert (histograms["erp_posted"].count, histograms["erp_posted"].sum) == (1, 10.0)  # refusal left out
        # T-002 from its receipt (no agent), T-003 from its agent's acknowledgement, clamped at zero
        assert (histograms["loyalty_accrued"].count, histograms["loyalty_accrued"].sum) == (2, 6.0)
        assert scan.quantiles("loyalty_accrued", 300) == {"count": 2, "p50": 0.0, "p99": 6.0}
        assert scan.quantiles("loyalty_accrued", 60)["count"] == 0  # both older than a minute

    def test_each_hop_is_counted_once_over_scans_and_pages(self, engine: Engine) -> None:
        base = datetime.now(UTC) - timedelta(minutes=1)
        for i in range(7):
            add_transaction(engine, f"T-{i:03d}", ended=base, received=base)
            add_hop(engine, f"T-{i:03d}", "inventory.applied", base + timedelta(seconds=1))
        source = SQLProcessMetrics(engine)
        first = source.read_effect_hops(after_id=0, limit=3)
        scan = EffectLatencies(source)

        assert (len(first.hops), first.scanned_to) == (3, 3)
        assert scan.snapshot()["inventory_applied"].count == 7
        assert scan.snapshot()["inventory_applied"].count == 7  # nothing new: nothing added
        add_transaction(engine, "T-100", ended=base, received=base)
        add_hop(engine, "T-100", "inventory.applied", base + timedelta(seconds=2))
        add_hop(engine, "T-100", "erp.legacy", datetime.now(UTC))  # too fresh to be read yet
        after = scan.snapshot()
        assert after["inventory_applied"].count == 8
        assert after["erp_posted"].count == 0
        assert after["inventory_applied"].cumulative()[-1] == ("+Inf", 8)


class TestLoyaltyHop:
    def test_an_accrual_recorded_is_a_hop_of_its_transaction_once(self, engine: Engine) -> None:
        add_transaction(engine, "T-001", ended=NOW, received=NOW)
        book = SQLLoyaltyBook(engine)
        accrual = PointsEntry(
            entry_key="accrue:T-001",
            program="default",
            member_id="M0001",
            kind="accrual",
            points=42,
            transaction_id="T-001",
            store_id="S001",
            business_day=date(2026, 11, 29),
        )
        bonus = PointsEntry(
            entry_key="platform:9", program="default", member_id="M0001", kind="bonus", points=5
        )

        book.record_entries([accrual, bonus], at=NOW)
        book.record_entries([accrual], at=NOW + timedelta(seconds=1))  # redelivered

        with engine.connect() as conn:
            hops = conn.execute(trace_hops.select().order_by(trace_hops.c.id)).all()
        assert [(h.transaction_id, h.hop, h.at_us) for h in hops] == [
            ("T-001", "loyalty.accrued", to_us(NOW))
        ]
        assert hops[0].detail == "42 points accrued in program default"
        assert "M0001" not in hops[0].detail
