"""Each hub process's published counters, and the figures `/metrics` reads from the state store
itself (the `ProcessMetrics` port): transactions accepted and conflicts refused, and the trace
hops that record a transaction's effects, read page by page after the last one seen."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy import Engine, Table, and_, func, or_, select

from tillflow.ports import EffectHop, EffectHopPage, ProcessFigures
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import from_us, insert_for, to_us
from tillflow.storage.tables import conflicts, process_metrics, trace_hops, transactions

# hops are read only once they are this old: on PostgreSQL a hop id is taken before its commit,
# so a hop still being written may hold a lower id than one already visible
SETTLE_US = 2_000_000
EFFECT_HOPS = ("inventory.applied", "loyalty.accrued")
EDGE_HOP = "edge.accepted"  # when the store's agent had the sale on the store's disk
ERP_HOPS = "erp.%"  # erp.<target>: what the ERP target answered for a posting
ERP_REFUSED = "% rejected: %"  # the detail of a posting the target refused (storage/postings.py)


class SQLProcessMetrics:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def publish_figures(self, figures: ProcessFigures) -> None:
        row = {
            "process_id": figures.process_id,
            "role": figures.role,
            "started_us": to_us(figures.started_at),
            "updated_us": to_us(figures.updated_at),
            "data": orjson.dumps(figures.figures),
        }
        with write_tx(self.engine) as conn:
            stmt = insert_for(conn, process_metrics).values(row)
            latest = {name: stmt.excluded[name] for name in ("role", "updated_us", "data")}
            conn.execute(stmt.on_conflict_do_update(index_elements=["process_id"], set_=latest))

    def list_figures(self) -> list[ProcessFigures]:
        query = select(process_metrics).order_by(process_metrics.c.process_id)
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
        return [
            ProcessFigures(
                process_id=row.process_id,
                role=row.role,
                started_at=from_us(row.started_us),
                updated_at=from_us(row.updated_us),
                figures=orjson.loads(row.data),
            )
            for row in rows
        ]

    def count_transactions(self) -> tuple[int, int]:
        with read_tx(self.engine) as conn:

            def count(table: Table) -> int:
                return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

            return count(transactions), count(conflicts)

    def read_effect_hops(self, *, after_id: int, limit: int) -> EffectHopPage:
        settled_us = to_us(datetime.now(UTC)) - SETTLE_US
        with read_tx(self.engine) as conn:
            # the newest settled hop: walks the id index back over the last seconds' hops only
            head = conn.execute(
                select(trace_hops.c.id)
                .where(trace_hops.c.at_us <= settled_us)
                .order_by(trace_hops.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            head = max(after_id, int(head or 0))
            upto = min(head, after_id + limit)
            if upto <= after_id:
                return EffectHopPage(hops=[], scanned_to=after_id, head=head)
            edge = trace_hops.alias("edge")
            handed_over = (
                select(func.min(edge.c.at_us))
                .where(edge.c.transaction_id == trace_hops.c.transaction_id, edge.c.hop == EDGE_HOP)
                .scalar_subquery()
            )
            query = (
                select(
                    trace_hops.c.id,
                    trace_hops.c.hop,
                    trace_hops.c.at_us,
                    transactions.c.received_us,
                    handed_over.label("edge_us"),
                )
                .join(transactions, transactions.c.transaction_id == trace_hops.c.transaction_id)
                .where(
                    trace_hops.c.id > after_id,
                    trace_hops.c.id <= upto,
                    or_(
                        trace_hops.c.hop.in_(EFFECT_HOPS),
                        and_(
                            trace_hops.c.hop.like(ERP_HOPS),
                            or_(trace_hops.c.detail.is_(None), trace_hops.c.detail.not_like(ERP_REFUSED)),
                        ),
                    ),
                )
                .order_by(trace_hops.c.id)
            )
            rows = conn.execute(query).all()
        hops = [
            EffectHop(
                hop_id=int(row.id),
                hop=row.hop,
                at_us=int(row.at_us),
                edge_us=None if row.edge_us is None else int(row.edge_us),
                received_us=int(row.received_us),
            )
            for row in rows
        ]
        return EffectHopPage(hops=hops, scanned_to=upto, head=head)
