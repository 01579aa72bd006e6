"""`/metrics`: the hub in the Prometheus exposition, and `/v1/metrics/summary`, the headline
figures as JSON for the dashboard.

`/metrics` asks for an admin key as a bearer token (Prometheus' `authorization` credentials)
unless `observe.metrics_auth` is "none". Every scrape reads the figures afresh, and a collector
builds the families from them:

- ingest: transactions accepted and conflicting records refused, from the state store (exact
  across API processes); records answered by outcome and batch requests by HTTP status, counted
  by each API process;
- flows, per consumer group: position, lag, events handled, retries, dead letters (counted and
  waiting), the oldest waiting dead letter's age, the failure streak;
- end-to-end latency, till to inventory applied, to loyalty accrued and to ERP posted;
- connectors, per downstream system: breaker state, calls, throttle waits, 429 answers,
  failures, refusals, pauses, summed over the worker processes;
- stores: per store online, buffer depth, oldest unsent age, seconds since the last heartbeat;
  stores per status;
- processes: each process that published its counters, up or not.

`FAMILY_SOURCES` takes more families (a callable of the services, called at scrape time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.concurrency import run_in_threadpool

from tillflow.hub.auth import require_admin
from tillflow.hub.responses import json_response
from tillflow.model import StoreStatus
from tillflow.model.health import store_status
from tillflow.observe.metrics import (
    BREAKER_LEVELS,
    LATENCY_PATHS,
    Histogram,
    MergedFigures,
    effect_latencies,
    latency_quantiles,
    merge_figures,
)
from tillflow.ports import GroupState, Principal
from tillflow.services import Services

router = APIRouter(tags=["operations"])
FAMILY_SOURCES: list[Callable[[Services], Iterable[Metric]]] = []
SUMMARY_WINDOW_SECONDS = 300.0
# each downstream system's counters the summary carries beside its breaker
SUMMARY_DOWNSTREAM = (
    "calls", "failures", "throttle_waits", "throttled", "paused_by_maintenance", "paused_by_breaker",
)  # fmt: skip
LATENCY_HELP = (
    "Seconds from the till handing the sale over (its store agent's durable acknowledgement; the "
    "hub's receipt for a till that sends to the hub) to the effect recorded, never negative; "
    "path erp_posted counts one posting per ERP target"
)


@dataclass(frozen=True)
class StoreFigures:
    store_id: str
    status: StoreStatus
    buffer_depth: int | None
    oldest_unsent_age_seconds: float | None
    seconds_since: float | None


@dataclass(frozen=True)
class MetricsView:
    """Everything a scrape shows, read at `at`."""

    at: datetime
    accepted: int
    conflicts: int
    head: int
    groups: dict[str, GroupState]
    merged: MergedFigures
    latencies: dict[str, Histogram]
    stores: list[StoreFigures]


def read_view(services: Services) -> MetricsView:
    """Read the figures from the state store, the event log and every process's counters."""
    now = datetime.now(UTC)
    accepted, conflicts = services.process_metrics.count_transactions()
    head = services.event_log.read_head()
    found = services.event_log.read_groups()
    groups = {g: found.get(g, GroupState(position=0, lag=head)) for g in services.consumer_groups}
    groups.update({g: s for g, s in found.items() if g not in groups})
    latest = {h.store_id: h for h in services.store_health.list_health()}
    offline_after = services.config.hub.store_offline_seconds
    stores = []
    for store in services.config.stores:
        beat = latest.get(store.store_id)
        since = None if beat is None else max(0.0, (now - beat.received_at).total_seconds())
        stores.append(
            StoreFigures(
                store_id=store.store_id,
                status=store_status(since, offline_after),
                buffer_depth=None if beat is None else beat.beat.buffer_depth,
                oldest_unsent_age_seconds=None if beat is None else beat.beat.oldest_unsent_age_seconds,
                seconds_since=since,
            )
        )
    return MetricsView(
        at=now,
        accepted=accepted,
        conflicts=conflicts,
        head=head,
        groups=groups,
        merged=merge_figures(services, now),
        latencies=effect_latencies(services).snapshot(),
        stores=stores,
    )


class HubCollector(Collector):
    """The families of one scrape, built from a `MetricsView`."""

    def __init__(self, view: MetricsView, extra: Iterable[Metric] = ()) -> None:
        self.view = view
        self.extra = list(extra)

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._flows()
        yield from self._latency()
        yield from self._downstream()
        yield from self._stores()
        yield from self._processes()
        yield from self.extra

    def _ingest(self) -> Iterator[Metric]:
        view, merged = self.view, self.view.merged
        yield CounterMetricFamily(
            "tillflow_transactions_accepted",
            "Transactions accepted and logged (the state store's count: every API process)",
            value=view.accepted,
        )
        yield CounterMetricFamily(
            "tillflow_transaction_conflicts",
            "Records refused as conflicts: a known identity with other content (the state store's count)",
            value=view.conflicts,
        )
        records = CounterMetricFamily(
            "tillflow_ingest_records",
            "Records the gateways answered, by outcome (accepted, duplicate, conflict, invalid, "
            "not_posted), summed over the API processes",
            labels=["outcome"],
        )
        for outcome in sorted({"accepted", "duplicate", "conflict", "invalid", *merged.records}):
            records.add_metric([outcome], merged.records.get(outcome, 0))
        yield records
        requests = CounterMetricFamily(
            "tillflow_ingest_requests", "Transaction batch requests by HTTP status", labels=["status"]
        )
        for status, n in sorted(merged.requests.items()):
            requests.add_metric([status], n)
        yield requests
        yield GaugeMetricFamily(
            "tillflow_event_log_head", "The last sequence number of the event log", view.head
        )

    def _flows(self) -> Iterator[Metric]:
        groups, counted = self.view.groups, self.view.merged.flows
        names = sorted({*groups, *counted})
        now = self.view.at

        def gauge(name: str, doc: str, value: Callable[[GroupState], float]) -> Metric:
            family = GaugeMetricFamily(name, doc, labels=["group"])
            for g in names:
                if g in groups:
                    family.add_metric([g], value(groups[g]))
            return family

        def counter(name: str, doc: str, key: str) -> Metric:
            family = CounterMetricFamily(name, doc, labels=["group"])
            for g in names:
                family.add_metric([g], counted.get(g, Counter()).get(key, 0))
            return family

        yield gauge("tillflow_flow_position", "The consumer group's committed position", lambda s: s.position)
        yield gauge("tillflow_flow_lag", "Events logged past the consumer group's position", lambda s: s.lag)
        yield gauge(
            "tillflow_flow_pending", "Events nak'ed, waiting to be delivered again", lambda s: s.pending
        )
        yield gauge(
            "tillflow_flow_dead_letters", "Dead letters waiting (not replayed)", lambda s: s.dead_letters
        )
        yield gauge(
            "tillflow_flow_oldest_dead_letter_age_seconds",
            "Age of the oldest waiting dead letter (0: none)",
            lambda s: (
                0.0
                if s.oldest_dead_letter_at is None
                else max(0.0, (now - s.oldest_dead_letter_at).total_seconds())
            ),
        )
        yield gauge(
            "tillflow_flow_failures",
            "Consecutive failures of the batch past the position",
            lambda s: s.failures,
        )
        yield counter(
            "tillflow_flow_events_handled", "Events delivered to the flow, summed over the workers", "handled"
        )
        yield counter("tillflow_flow_retries", "Failed events nak'ed for another attempt", "retries")
        yield counter("tillflow_flow_dead_lettered", "Events the flow sent to dead letters", "dead_letters")

    def _latency(self) -> Iterator[Metric]:
        family = HistogramMetricFamily("tillflow_end_to_end_latency_seconds", LATENCY_HELP, labels=["path"])
        for path in LATENCY_PATHS:
            histogram = self.view.latencies[path]
            family.add_metric([path], histogram.cumulative(), histogram.sum)
        yield family

    def _downstream(self) -> Iterator[Metric]:
        merged = self.view.merged
        systems = sorted({*merged.downstream, *merged.breakers})
        breaker = GaugeMetricFamily(
            "tillflow_downstream_breaker_state",
            "The downstream system's circuit breaker: 0 closed, 1 half-open, 2 open (worst of the workers)",
            labels=["downstream"],
        )
        for system in systems:
            breaker.add_metric([system], BREAKER_LEVELS.get(merged.breakers.get(system, "closed"), 0))
        yield breaker
        counters = (
            ("calls", "Calls made to the downstream system"),
            ("throttle_waits", "Calls that waited for the client-side throttle"),
            ("throttle_wait_seconds", "Seconds spent waiting for the client-side throttle"),
            ("throttled", "Answers 429 (too many requests) from the downstream system, retried later"),
            ("failures", "Calls that failed (unreachable, 5xx, timeouts), retried later"),
            ("rejected", "Requests the downstream system refused for good"),
            ("paused_by_breaker", "Calls held back while the breaker was open"),
            ("paused_by_maintenance", "Calls held back in a maintenance window"),
        )
        for key, doc in counters:
            family = CounterMetricFamily(f"tillflow_downstream_{key}", doc, labels=["downstream"])
            for system in systems:
                family.add_metric([system], merged.downstream.get(system, Counter()).get(key, 0))
            yield family

    def _stores(self) -> Iterator[Metric]:
        stores = self.view.stores
        online = GaugeMetricFamily(
            "tillflow_store_online", "1 while the store's latest heartbeat is recent", labels=["store"]
        )
        depth = GaugeMetricFamily(
            "tillflow_store_buffer_depth",
            "Transactions in the store's outbox not yet acknowledged",
            labels=["store"],
        )
        oldest = GaugeMetricFamily(
            "tillflow_store_oldest_unsent_age_seconds",
            "Age of the store's oldest unsent transaction",
            labels=["store"],
        )
        since = GaugeMetricFamily(
            "tillflow_store_seconds_since_heartbeat",
            "Seconds since the store's latest heartbeat",
            labels=["store"],
        )
        for store in stores:
            online.add_metric([store.store_id], 1 if store.status is StoreStatus.ONLINE else 0)
            if store.buffer_depth is not None:
                depth.add_metric([store.store_id], store.buffer_depth)
            if store.oldest_unsent_age_seconds is not None:
                oldest.add_metric([store.store_id], store.oldest_unsent_age_seconds)
            if store.seconds_since is not None:
                since.add_metric([store.store_id], store.seconds_since)
        yield from (online, depth, oldest, since)
        by_status = Counter(store.status for store in stores)
        counts = GaugeMetricFamily("tillflow_stores", "Configured stores by status", labels=["status"])
        for status in StoreStatus:
            counts.add_metric([status.value], by_status.get(status, 0))
        yield counts

    def _processes(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "tillflow_process_up",
            "1 while the hub process publishes its counters; 0 once silent for 3 intervals (its last "
            "counters still count)",
            labels=["process", "role"],
        )
        for figures, alive in self.view.merged.processes:
            up.add_metric([figures.process_id, figures.role], 1 if alive else 0)
        yield up


def exposition(services: Services, accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type (the text format, or OpenMetrics if asked for)."""
    extra = [family for source in FAMILY_SOURCES for family in source(services)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(read_view(services), extra))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


@router.get("/metrics", summary="The hub's metrics in the Prometheus exposition format")
async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    if services.config.observe.metrics_auth == "admin":
        await run_in_threadpool(require_admin, request)
    body, content_type = await run_in_threadpool(exposition, services, request.headers.get("accept"))
    return Response(body, media_type=content_type)


def summary(services: Services) -> dict[str, Any]:
    """The headline figures for the dashboard; latency over the last `SUMMARY_WINDOW_SECONDS`."""
    view = read_view(services)
    merged = view.merged
    by_status = Counter(store.status.value for store in view.stores)
    return {
        "at": view.at.isoformat(),
        "ingest": {
            "accepted_total": view.accepted,
            "duplicate_total": merged.records.get("duplicate", 0),
            "conflict_total": view.conflicts,
            "invalid_total": merged.records.get("invalid", 0),
        },
        "flows": {
            group: {
                "position": state.position,
                "lag": state.lag,
                "handled_total": merged.flows.get(group, Counter()).get("handled", 0),
                "retries_total": merged.flows.get(group, Counter()).get("retries", 0),
                "dead_letters": state.dead_letters,
                "oldest_dead_letter_age_seconds": None
                if state.oldest_dead_letter_at is None
                else max(0.0, (view.at - state.oldest_dead_letter_at).total_seconds()),
                "pending": state.pending,
                "failures": state.failures,  # the streak of the batch that keeps failing, 0 when moving
                "last_error": state.last_error if state.failures else None,
                "last_error_at": state.last_error_at.isoformat()
                if state.failures and state.last_error_at
                else None,
            }
            for group, state in view.groups.items()
        },
        "latency_seconds": {
            path: latency_quantiles(services, path, SUMMARY_WINDOW_SECONDS) for path in LATENCY_PATHS
        },
        "stores": {
            **{status.value: by_status.get(status.value, 0) for status in StoreStatus},
            "buffered": sum(store.buffer_depth or 0 for store in view.stores),
        },
        "downstream": {
            system: {
                "breaker": merged.breakers.get(system, "closed"),
                **{key: merged.downstream.get(system, Counter()).get(key, 0) for key in SUMMARY_DOWNSTREAM},
            }
            for system in sorted({*merged.downstream, *merged.breakers})
        },
    }


@router.get("/v1/metrics/summary", summary="Headline figures for the dashboard")
async def get_summary(request: Request, _: Principal = Depends(require_admin)) -> Response:
    return json_response(await run_in_threadpool(summary, request.app.state.services))
