"""The hub's own figures for `/metrics`: this process's counters, what every process published,
and the end-to-end latency of the transactions' effects.

Counters that only a process knows (records answered by the gateway, events its flow runners
handled and retried, its connectors' throttle waits and breakers) are kept here and published
to the state store every `observe.metrics_publish_seconds` by `start_publisher`; `merge_figures`
sums what every process published, so any API process answers for all of them. A process not
heard from for `STALE_INTERVALS` intervals is marked down, and its last counters still count.

Latency is read from the trace hops that record a transaction's effects (`inventory.applied`,
`loyalty.accrued`, `erp.<target>`), measured from the moment the till handed the sale over:
its store agent's durable acknowledgement (the `edge.accepted` hop), or the hub's receipt for a
till that sends to the hub itself; never negative. Not from the sale's own timestamp: a till's
clock may be off, and a sale captured offline or imported from a file ends long before it
reaches tillflow.
Each process scans the hops once, page by page after the last one it saw, into cumulative
histograms, and keeps the last hour's observations for `latency_quantiles`.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tillflow.bus.runner import process_stats
from tillflow.ports import EffectHop, ProcessFigures, ProcessMetrics
from tillflow.services import Services

log = logging.getLogger(__name__)

STARTED_AT = datetime.now(UTC)
PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{int(STARTED_AT.timestamp() * 1_000_000)}"
STALE_INTERVALS = 3  # publish intervals a process may miss before it is marked down
BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}
LATENCY_PATHS = ("erp_posted", "loyalty_accrued", "inventory_applied")
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
RECENT_SECONDS = 3600.0  # observations kept for the quantiles over a recent window
RECENT_MAX = 100_000  # at most this many per path (the most recent)
HOP_PAGE = 20_000  # trace hop ids read per query
HOP_PAGES = 50  # pages read per refresh: a fresh process catches up over a few scrapes


class _IngestCounters:
    """The records the gateway of this process answered, by outcome, and its batch requests,
    by HTTP status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"records": dict(self.records), "requests": dict(self.requests)}


INGEST = _IngestCounters()


def count_records(outcomes: Mapping[str, int]) -> None:
    """Count a batch's answers in this process: records by outcome (accepted, duplicate, ...)."""
    with INGEST._lock:
        INGEST.records.update(outcomes)


def count_request(status: int) -> None:
    """Count a batch request of this process's gateway by the HTTP status it was answered with."""
    with INGEST._lock:
        INGEST.requests[str(status)] += 1


def process_figures(services: Services) -> dict[str, Any]:
    """This process's own counters: its gateway's, its flow runners' and its connectors'."""
    return {
        "ingest": INGEST.snapshot(),
        "flows": {
            group: {
                "handled": stats.events,
                "retries": stats.retries,
                "dead_letters": stats.dead_letters,
                "batches": stats.batches,
                "failures": stats.failures,
            }
            for group, stats in process_stats().items()
        },
        "downstream": services.downstream_figures(),
    }


def own_figures(services: Services, now: datetime) -> ProcessFigures:
    """This process's counters as it publishes them, as of `now`."""
    return ProcessFigures(
        process_id=PROCESS_ID,
        role=services.config.hub.role,
        started_at=STARTED_AT,
        updated_at=now,
        figures=process_figures(services),
    )


def start_publisher(services: Services, stop: threading.Event) -> threading.Thread | None:
    """Publish this process's own counters to the state store every
    `observe.metrics_publish_seconds` until `stop`, then once more, so its final counters are
    kept (a worker process; an API process may run one too, so that every API process's
    `/metrics` sees its gateway's counters)."""
    every = services.config.observe.metrics_publish_seconds

    def publish() -> None:
        try:
            services.process_metrics.publish_figures(own_figures(services, datetime.now(UTC)))
        except Exception:  # the state store may be away: the next round publishes again
            log.warning("could not publish this process's metrics", exc_info=True)

    def run() -> None:
        publish()
        while not stop.wait(every):
            publish()
        publish()

    thread = threading.Thread(target=run, name="metrics-publisher", daemon=True)
    thread.start()
    return thread


@dataclass
class MergedFigures:
    """Every process's counters summed (down processes' last ones too), and which are up."""

    processes: list[tuple[ProcessFigures, bool]] = field(default_factory=list)
    records: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    flows: dict[str, Counter[str]] = field(default_factory=dict)
    downstream: dict[str, Counter[str]] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)  # the worst state of a live process


def merge_figures(services: Services, now: datetime) -> MergedFigures:
    """What every process published, with this process's own counters as they are now."""
    stale_after = STALE_INTERVALS * services.config.observe.metrics_publish_seconds
    published = [f for f in services.process_metrics.list_figures() if f.process_id != PROCESS_ID]
    merged = MergedFigures()
    breakers: dict[str, list[tuple[bool, str]]] = {}
    for figures in [*published, own_figures(services, now)]:
        up = figures.process_id == PROCESS_ID or (now - figures.updated_at).total_seconds() <= stale_after
        merged.processes.append((figures, up))
        ingest = figures.figures.get("ingest", {})
        merged.records.update(ingest.get("records", {}))
        merged.requests.update(ingest.get("requests", {}))
        for group, counts in figures.figures.get("flows", {}).items():
            merged.flows.setdefault(group, Counter()).update(counts)
        for system, found in figures.figures.get("downstream", {}).items():
            counts = {k: v for k, v in found.items() if _is_number(v)}
            merged.downstream.setdefault(system, Counter()).update(counts)
            breakers.setdefault(system, []).append((up, str(found.get("breaker", "closed"))))
    for system, states in breakers.items():
        live = [state for up, state in states if up] or [state for _, state in states]
        merged.breakers[system] = max(live, key=lambda s: BREAKER_LEVELS.get(s, 0))
    return merged


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def latency_path(hop: str) -> str | None:
    """The latency a trace hop ends: erp_posted, loyalty_accrued or inventory_applied."""
    if hop.startswith("erp."):
        return "erp_posted"
    return {"loyalty.accrued": "loyalty_accrued", "inventory.applied": "inventory_applied"}.get(hop)


def effect_seconds(hop: EffectHop) -> float:
    """From the moment the till handed the sale over (its store agent's durable acknowledgement;
    else the hub's receipt) to the effect, >= 0."""
    start = hop.edge_us if hop.edge_us is not None else hop.received_us
    return max(0, hop.at_us - start) / 1_000_000


@dataclass
class Histogram:
    """Cumulative observations of one latency: per upper bound (the last is +Inf), sum, count."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        i = next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound), len(LATENCY_BUCKETS))
        self.buckets[i] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or under it), +Inf last, as the exposition has them."""
        out, total = [], 0
        for bound, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.buckets, strict=True):
            total += n
            out.append((bound, total))
        return out


class EffectLatencies:
    """This process's scan of the effect hops: histograms since the first hop, and the
    observations of the last `RECENT_SECONDS` (at most `RECENT_MAX` per path)."""

    def __init__(self, source: ProcessMetrics) -> None:
        self.source = source
        self.after_id = 0
        self.histograms = {path: Histogram() for path in LATENCY_PATHS}
        self.recent: dict[str, deque[tuple[int, float]]] = {
            path: deque(maxlen=RECENT_MAX) for path in LATENCY_PATHS
        }
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Add the hops written since the last scan (up to `HOP_PAGES` pages of them)."""
        with self._lock:
            for _ in range(HOP_PAGES):
                page = self.source.read_effect_hops(after_id=self.after_id, limit=HOP_PAGE)
                now_us = _now_us()
                for hop in page.hops:
                    path = latency_path(hop.hop)
                    if path is None:
                        continue
                    seconds = effect_seconds(hop)
                    self.histograms[path].observe(seconds)
                    if hop.at_us >= now_us - RECENT_SECONDS * 1_000_000:
                        self.recent[path].append((hop.at_us, seconds))
                self.after_id = page.scanned_to
                if page.scanned_to >= page.head:
                    return

    def snapshot(self) -> dict[str, Histogram]:
        self.refresh()
        with self._lock:
            return {path: Histogram(list(h.buckets), h.sum, h.count) for path, h in self.histograms.items()}

    def quantiles(self, path: str, window_seconds: float) -> dict[str, Any]:
        self.refresh()
        since_us = _now_us() - int(window_seconds * 1_000_000)
        with self._lock:
            values = sorted(s for at_us, s in self.recent.get(path, ()) if at_us >= since_us)
        return {"count": len(values), "p50": _nearest_rank(values, 0.50), "p99": _nearest_rank(values, 0.99)}


def _now_us() -> int:
    return time.time_ns() // 1000


def _nearest_rank(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


_SCANS: weakref.WeakKeyDictionary[Any, EffectLatencies] = weakref.WeakKeyDictionary()
_SCANS_LOCK = threading.Lock()


def effect_latencies(services: Services) -> EffectLatencies:
    """The scan of this process over the state store of `services` (one per state store)."""
    with _SCANS_LOCK:
        scan = _SCANS.get(services.process_metrics)
        if scan is None:
            scan = _SCANS[services.process_metrics] = EffectLatencies(services.process_metrics)
        return scan


def latency_quantiles(services: Services, path: str, window_seconds: float) -> dict[str, Any]:
    """The p50 and p99 (seconds) of the till-to-`path` latency (erp_posted, loyalty_accrued,
    inventory_applied) of the effects recorded in the last `window_seconds`, and how many:
    {"count": n, "p50": s | None, "p99": s | None}. Windows longer than an hour see the last hour."""
    return effect_latencies(services).quantiles(path, window_seconds)
