"""What the ERP targets answered for each posting, in the state store (the `PostingLog` port)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

import orjson
from sqlalchemy import Engine, select

from tillflow.ports import PostingOutcome
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import insert_for, insert_rows, to_us
from tillflow.storage.tables import erp_postings, trace_hops

_UPDATED = ("accepted", "document_number", "reason", "lines", "amounts", "recorded_us")


class SQLPostingLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_outcomes(self, outcomes: Sequence[PostingOutcome], *, at: datetime) -> None:
        if not outcomes:
            return
        at_us = to_us(at)
        rows = [
            {
                "external_id": o.external_id,
                "target": o.target,
                "store_id": o.store_id,
                "business_day": o.business_day.isoformat(),
                "kind": o.kind,
                "accepted": o.accepted,
                "document_number": o.document_number,
                "reason": o.reason,
                "lines": o.lines,
                "amounts": orjson.dumps({c: format(a, "f") for c, a in o.amounts}).decode(),
                "recorded_us": at_us,
            }
            for o in outcomes
        ]
        hops = [
            {"transaction_id": tx_id, "hop": f"erp.{o.target}", "at_us": at_us, "detail": _detail(o)}
            for o in outcomes
            for tx_id in o.transaction_ids
        ]
        with write_tx(self.engine) as conn:
            stmt = insert_for(conn, erp_postings)
            upsert = stmt.on_conflict_do_update(
                index_elements=["external_id", "target"], set_={c: stmt.excluded[c] for c in _UPDATED}
            )
            insert_rows(conn, upsert, rows)
            insert_rows(conn, insert_for(conn, trace_hops), hops)

    def find_outcomes(self, business_day: date, store_id: str | None = None) -> list[PostingOutcome]:
        query = select(erp_postings).where(erp_postings.c.business_day == business_day.isoformat())
        if store_id is not None:
            query = query.where(erp_postings.c.store_id == store_id)
        query = query.order_by(erp_postings.c.store_id, erp_postings.c.external_id, erp_postings.c.target)
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
        return [
            PostingOutcome(
                external_id=r.external_id,
                target=r.target,
                store_id=r.store_id,
                business_day=date.fromisoformat(r.business_day),
                kind=r.kind,
                accepted=bool(r.accepted),
                document_number=r.document_number,
                reason=r.reason,
                lines=r.lines,
                amounts=tuple((c, Decimal(a)) for c, a in orjson.loads(r.amounts).items()),
            )
            for r in rows
        ]


def _detail(outcome: PostingOutcome) -> str:
    if outcome.accepted:
        return f"{outcome.kind} {outcome.external_id} posted as {outcome.document_number}"
    return f"{outcome.kind} {outcome.external_id} rejected: {outcome.reason}"
