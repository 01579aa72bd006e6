"""Operational figures read from the state store: counts, consumer lag, end-to-end latency."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Table, func, select, text

from tillflow.storage.db import read_tx
from tillflow.storage.tables import (
    conflicts,
    consumer_groups,
    events,
    inventory_movements,
    trace_hops,
    transactions,
)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of already sorted values, nearest-rank; None when empty."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


class SQLStatsReader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping_store(self) -> None:
        with read_tx(self.engine) as conn:
            conn.execute(text("SELECT 1"))

    def read_stats(self, *, latency_sample: int = 200_000) -> dict[str, Any]:
        """Counts, per-group position and lag, and received→inventory-applied latency (ms)."""
        with read_tx(self.engine) as conn:

            def count(table: Table) -> int:
                return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

            head = int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())
            groups = {r.group_name: int(r.position) for r in conn.execute(select(consumer_groups))}
            latencies = sorted(
                (r.at_us - r.received_us) / 1000
                for r in conn.execute(
                    select(trace_hops.c.at_us, transactions.c.received_us)
                    .join(transactions, transactions.c.transaction_id == trace_hops.c.transaction_id)
                    .where(trace_hops.c.hop == "inventory.applied")
                    .order_by(trace_hops.c.id.desc())
                    .limit(latency_sample)
                )
            )
            return {
                "transactions": count(transactions),
                "conflicts": count(conflicts),
                "events": head,
                "inventory_movements": count(inventory_movements),
                "consumer_groups": {g: {"position": p, "lag": head - p} for g, p in groups.items()},
                "latency_ms": {
                    "received_to_inventory": {
                        "count": len(latencies),
                        "p50": percentile(latencies, 0.50),
                        "p95": percentile(latencies, 0.95),
                        "p99": percentile(latencies, 0.99),
                    }
                },
            }
