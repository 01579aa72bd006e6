"""What the operations console looks up in the state store, and the re-sends operators ask the
stores for (the `OperationsBook` port, SQLite or PostgreSQL).

A transaction is found by an id prefix or by its trace id. Transaction ids are
`store:register:day:sequence` and identifiers hold no colon, so a prefix that names the store
(and its day) narrows the search to the store-day index.

An operator's request that a store send transactions again is kept in the operators' audit
trail beside the dead-letter replays and purges (`action` "request-resend", the store in
`group_name`, the ids as a JSON list in `detail`): every process reads it from there, and the
request is audited with who asked and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import orjson
from sqlalchemy import ColumnElement, Engine, and_, func, or_, select

from tillflow.ports import RecordedConflict, TransactionMatch
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import from_us, to_us
from tillflow.storage.tables import conflicts, event_log_audit, transactions

RESEND_ACTION = "request-resend"


class SQLOperationsBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find_transactions(
        self,
        *,
        id_prefix: str | None = None,
        trace_id: str | None = None,
        store_id: str | None = None,
        business_day: date | None = None,
        limit: int = 50,
    ) -> list[TransactionMatch]:
        t = transactions.c
        either: list[ColumnElement[bool]] = []
        if id_prefix:
            either.append(_id_prefix(id_prefix))
        if trace_id:
            # a traceparent is "00-<trace id>-<span id>-<flags>"
            either.append(func.substr(t.traceparent, 4, 32) == trace_id.lower())
        if not either:
            return []
        conditions = [or_(*either)]
        if store_id is not None:
            conditions.append(t.store_id == store_id)
        if business_day is not None:
            conditions.append(t.business_day == business_day.isoformat())
        query = (
            select(t.transaction_id, t.store_id, t.business_day, t.received_us, t.event_seq, t.traceparent)
            .where(and_(*conditions))
            .order_by(t.received_us.desc(), t.transaction_id.desc())
            .limit(limit)
        )
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
        return [
            TransactionMatch(
                transaction_id=r.transaction_id,
                store_id=r.store_id,
                business_day=date.fromisoformat(r.business_day),
                received_at=from_us(r.received_us),
                event_seq=r.event_seq,
                traceparent=r.traceparent,
            )
            for r in rows
        ]

    def list_conflicts(self, store_id: str, *, limit: int = 10) -> tuple[int, list[RecordedConflict]]:
        of_store = (
            select(conflicts.c.transaction_id, conflicts.c.received_us)
            .join(transactions, transactions.c.transaction_id == conflicts.c.transaction_id)
            .where(transactions.c.store_id == store_id)
        )
        with read_tx(self.engine) as conn:
            count = conn.execute(select(func.count()).select_from(of_store.subquery())).scalar_one()
            newest = conn.execute(
                of_store.order_by(conflicts.c.received_us.desc(), conflicts.c.id.desc()).limit(limit)
            ).all()
        return int(count), [RecordedConflict(r.transaction_id, from_us(r.received_us)) for r in newest]

    def request_resend(
        self, store_id: str, transaction_ids: Sequence[str], *, actor: str, why: str, at: datetime
    ) -> None:
        with write_tx(self.engine) as conn:
            conn.execute(
                event_log_audit.insert().values(
                    action=RESEND_ACTION,
                    group_name=store_id,
                    affected=len(transaction_ids),
                    actor=actor,
                    why=why,
                    detail=orjson.dumps(list(transaction_ids)).decode(),
                    at_us=to_us(at),
                )
            )

    def list_resend_requests(self, store_id: str, *, since: datetime) -> list[str]:
        a = event_log_audit.c
        query = (
            select(a.detail)
            .where((a.action == RESEND_ACTION) & (a.group_name == store_id) & (a.at_us >= to_us(since)))
            .order_by(a.id)
        )
        with read_tx(self.engine) as conn:
            details = conn.execute(query).scalars().all()
            asked = list(dict.fromkeys(i for detail in details for i in orjson.loads(detail)))
            if not asked:
                return []
            received = set(
                conn.execute(
                    select(transactions.c.transaction_id).where(transactions.c.transaction_id.in_(asked))
                )
                .scalars()
                .all()
            )
        return [i for i in asked if i not in received]


def _id_prefix(prefix: str) -> ColumnElement[bool]:
    """Ids starting with `prefix` (exactly, case and all); the store and day it names, if any,
    as indexed conditions."""
    t = transactions.c
    found: ColumnElement[bool] = func.substr(t.transaction_id, 1, len(prefix)) == prefix
    parts = prefix.split(":")
    if len(parts) > 1:
        found = and_(found, t.store_id == parts[0])
        if len(parts) > 3 or (len(parts) == 3 and len(parts[2]) == 10):
            found = and_(found, t.business_day == parts[2])
    return found
