"""The metrics as Prometheus reads them: the families a scrape builds parse as the exposition
format, histograms are cumulative, latency never runs backwards, and the flow runners of a
process count what they handled, retried and dead-lettered."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from tests.unit.test_runner import Clock, ListLog, failing_on
from tillflow.bus.runner import ConsumerRunner, RetryPolicy, process_stats
from tillflow.errors import PoisonEventError
from tillflow.hub.api.metrics import HubCollector, MetricsView, StoreFigures
from tillflow.model import StoreStatus
from tillflow.observe.metrics import LATENCY_BUCKETS, Histogram, MergedFigures, effect_seconds
from tillflow.ports import EffectHop, GroupState, ProcessFigures

AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def view() -> MetricsView:
    """A hub with two flows, one worker up and one gone, an open ERP breaker, two stores."""
    inventory, posting = Histogram(), Histogram()
    for seconds in (0.2, 0.2, 3.0, 7200.0):
        inventory.observe(seconds)
    merged = MergedFigures(
        processes=[
            (ProcessFigures("h:1:1", "worker", AT, AT, {}), True),
            (ProcessFigures("h:2:1", "worker", AT, AT - timedelta(minutes=5), {}), False),
        ],
        records=Counter({"accepted": 90, "duplicate": 4, "invalid": 1}),
        requests=Counter({"200": 3, "413": 1}),
        flows={"inventory": Counter({"handled": 90, "retries": 2, "dead_letters": 1})},
        downstream={"erp": Counter({"calls": 12, "throttle_waits": 3, "throttle_wait_seconds": 1.5})},
        breakers={"erp": "open"},
    )
    return MetricsView(
        at=AT,
        accepted=90,
        conflicts=1,
        head=90,
        groups={
            "inventory": GroupState(
                position=85, lag=5, dead_letters=1, oldest_dead_letter_at=AT - timedelta(seconds=42)
            ),
            "posting": GroupState(position=90, lag=0),
        },
        merged=merged,
        latencies={"inventory_applied": inventory, "erp_posted": posting, "loyalty_accrued": Histogram()},
        stores=[
            StoreFigures("S001", StoreStatus.ONLINE, 3, 1.5, 0.8),
            StoreFigures("S002", StoreStatus.UNKNOWN, None, None, None),
        ],
    )


def scrape(collector: HubCollector) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class TestTheScrape:
    def test_every_family_parses_with_its_values(self) -> None:
        samples = scrape(HubCollector(view()))

        assert samples[("tillflow_transactions_accepted_total", ())] == 90
        assert samples[("tillflow_ingest_records_total", (("outcome", "conflict"),))] == 0  # always shown
        assert samples[("tillflow_ingest_requests_total", (("status", "413"),))] == 1
        assert samples[("tillflow_flow_lag", (("group", "inventory"),))] == 5
        assert samples[("tillflow_flow_oldest_dead_letter_age_seconds", (("group", "inventory"),))] == 42
        assert samples[("tillflow_flow_oldest_dead_letter_age_seconds", (("group", "posting"),))] == 0
        assert samples[("tillflow_flow_events_handled_total", (("group", "posting"),))] == 0
        assert samples[("tillflow_downstream_breaker_state", (("downstream", "erp"),))] == 2
        assert samples[("tillflow_downstream_throttle_wait_seconds_total", (("downstream", "erp"),))] == 1.5
        assert samples[("tillflow_process_up", (("process", "h:2:1"), ("role", "worker")))] == 0
        assert samples[("tillflow_stores", (("status", "online"),))] == 1
        assert ("tillflow_store_buffer_depth", (("store", "S002"),)) not in samples  # never heard from
        assert samples[("tillflow_store_online", (("store", "S002"),))] == 0

    def test_the_latency_histogram_is_cumulative_up_to_inf(self) -> None:
        samples = scrape(HubCollector(view()))

        def bucket(le: str) -> float:
            return samples[
                ("tillflow_end_to_end_latency_seconds_bucket", (("le", le), ("path", "inventory_applied")))
            ]

        assert bucket("0.25") == 2
        assert bucket("5.0") == 3
        assert bucket("3600.0") == 3
        assert bucket("14400.0") == bucket("+Inf") == 4
        assert (
            samples[("tillflow_end_to_end_latency_seconds_sum", (("path", "inventory_applied"),))] == 7203.4
        )
        assert samples[("tillflow_end_to_end_latency_seconds_count", (("path", "loyalty_accrued"),))] == 0

    def test_more_families_can_be_added(self) -> None:
        samples = scrape(
            HubCollector(view(), [GaugeMetricFamily("tillflow_alerts_firing", "Alerts firing", 2)])
        )

        assert samples[("tillflow_alerts_firing", ())] == 2


class TestEffectLatency:
    def test_a_bound_holds_what_equals_it(self) -> None:
        histogram = Histogram()
        histogram.observe(LATENCY_BUCKETS[0])
        histogram.observe(LATENCY_BUCKETS[-1] + 1)

        assert histogram.cumulative()[0] == (str(LATENCY_BUCKETS[0]), 1)
        assert histogram.cumulative()[-2:] == [(str(LATENCY_BUCKETS[-1]), 1), ("+Inf", 2)]

    def test_from_the_till_when_known_else_from_the_receipt_and_never_negative(self) -> None:
        assert effect_seconds(EffectHop(1, "erp.cloud", 9_000_000, 1_000_000, 5_000_000)) == 8.0
        assert effect_seconds(EffectHop(2, "erp.cloud", 9_000_000, None, 5_000_000)) == 4.0
        assert effect_seconds(EffectHop(3, "erp.cloud", 9_000_000, 12_000_000, 5_000_000)) == 0.0


class TestRunnerCounters:
    def test_the_process_counts_what_its_runners_handled_retried_and_buried(self) -> None:
        group = "metrics-unit"
        before = process_stats().get(group)
        assert before is None
        log = ListLog(["S1", "S2", "S3"])
        _, flaky = failing_on(2, attempts=1)
        ConsumerRunner(log, group, flaky, policy=RetryPolicy(base_delay=0.01), clock=Clock()).run_once()  # type: ignore[arg-type]
        log2 = ListLog(["S1", "S2"])
        _, poison = failing_on(1, error=PoisonEventError("no SKU"))
        ConsumerRunner(log2, group, poison, clock=Clock()).run_once()  # type: ignore[arg-type]

        stats = process_stats()[group]

        assert (stats.events, stats.retries, stats.dead_letters) == (5, 1, 1)
