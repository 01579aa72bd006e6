"""Promotion compliance findings in the state store (the `ComplianceLog` port)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, delete, select

from tillflow.ports import Deviation, DeviationKind
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import insert_rows, to_us
from tillflow.storage.tables import compliance_deviations

_CHUNK = 500


class SQLComplianceLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_deviations(
        self, transaction_ids: Sequence[str], deviations: Sequence[Deviation], *, at: datetime
    ) -> None:
        ids = sorted(set(transaction_ids))
        at_us = to_us(at)
        with write_tx(self.engine) as conn:
            for start in range(0, len(ids), _CHUNK):  # judged again: the new findings replace the old
                chunk = ids[start : start + _CHUNK]
                conn.execute(
                    delete(compliance_deviations).where(compliance_deviations.c.transaction_id.in_(chunk))
                )
            insert_rows(
                conn,
                compliance_deviations.insert(),
                [
                    {
                        "transaction_id": d.transaction_id,
                        "position": i,
                        "store_id": d.store_id,
                        "business_day": d.business_day.isoformat(),
                        "line_no": d.line_no,
                        "kind": d.kind.value,
                        "promotion_id": d.promotion_id,
                        "currency": d.currency,
                        "expected": format(d.expected, "f"),
                        "actual": format(d.actual, "f"),
                        "detail": d.detail,
                        "recorded_us": at_us,
                    }
                    for i, d in enumerate(deviations)
                ],
            )

    def find_deviations(self, business_day: date, store_id: str | None = None) -> list[Deviation]:
        table = compliance_deviations
        query = (
            select(table)
            .where(table.c.business_day == business_day.isoformat())
            .order_by(table.c.store_id, table.c.transaction_id, table.c.position)
        )
        if store_id is not None:
            query = query.where(table.c.store_id == store_id)
        with read_tx(self.engine) as conn:
            return [_deviation(row) for row in conn.execute(query)]


def _deviation(row: Any) -> Deviation:
    return Deviation(
        transaction_id=row.transaction_id,
        line_no=row.line_no,
        kind=DeviationKind(row.kind),
        promotion_id=row.promotion_id,
        expected=Decimal(row.expected),
        actual=Decimal(row.actual),
        detail=row.detail,
        store_id=row.store_id,
        business_day=date.fromisoformat(row.business_day),
        currency=row.currency,
    )
