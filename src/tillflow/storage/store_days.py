"""Day closes and the merged journals of each store-day, in the state store (the `StoreDays` port)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, select, update

from tillflow.model import DayClose
from tillflow.ports import CloseState, DayCloseRecord, DayJournal, JournalState, Verdict
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import from_us, insert_rows, to_us
from tillflow.storage.tables import day_closes, day_journals, journal_members


class SQLStoreDays:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_day_close(self, close: DayClose, *, received_at: datetime, grace: timedelta) -> Verdict:
        report = close.model_dump_json()
        key = (day_closes.c.store_id == close.store_id) & (
            day_closes.c.business_day == close.business_day.isoformat()
        )
        with write_tx(self.engine) as conn:
            found = conn.execute(select(day_closes.c.report, day_closes.c.state).where(key)).one_or_none()
            if found is not None and _same(found.report, close):
                return Verdict.DUPLICATE
            if found is not None and found.state != CloseState.WAITING:
                return Verdict.CONFLICT
            row = {
                "report": report,
                "received_us": to_us(received_at),
                "deadline_us": to_us(received_at + grace),
                "state": CloseState.WAITING.value,
                "gap": "[]",
                "reason": None,
                "posted_us": None,
            }
            if found is None:
                conn.execute(
                    day_closes.insert().values(
                        store_id=close.store_id, business_day=close.business_day.isoformat(), **row
                    )
                )
            else:  # a corrected Z report before the day was posted replaces the first
                conn.execute(update(day_closes).where(key).values(**row))
        return Verdict.ACCEPTED

    def find_day_close(self, store_id: str, business_day: date) -> DayCloseRecord | None:
        query = select(day_closes).where(
            (day_closes.c.store_id == store_id) & (day_closes.c.business_day == business_day.isoformat())
        )
        with read_tx(self.engine) as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _record(row)

    def list_day_closes(
        self,
        *,
        business_day: date | None = None,
        state: CloseState | None = None,
        store_id: str | None = None,
        since: date | None = None,
    ) -> list[DayCloseRecord]:
        query = select(day_closes).order_by(day_closes.c.business_day, day_closes.c.store_id)
        if business_day is not None:
            query = query.where(day_closes.c.business_day == business_day.isoformat())
        if state is not None:
            query = query.where(day_closes.c.state == state.value)
        if store_id is not None:
            query = query.where(day_closes.c.store_id == store_id)
        if since is not None:
            query = query.where(day_closes.c.business_day >= since.isoformat())
        with read_tx(self.engine) as conn:
            return [_record(row) for row in conn.execute(query)]

    def settle_day_close(
        self,
        store_id: str,
        business_day: date,
        *,
        state: CloseState,
        gap: Sequence[str] = (),
        reason: str | None = None,
        at: datetime,
    ) -> None:
        with write_tx(self.engine) as conn:
            conn.execute(
                update(day_closes)
                .where(
                    (day_closes.c.store_id == store_id)
                    & (day_closes.c.business_day == business_day.isoformat())
                )
                .values(
                    state=state.value,
                    gap=orjson.dumps(list(gap)).decode(),
                    reason=reason,
                    posted_us=to_us(at),
                )
            )

    def record_journals(self, journals: Sequence[DayJournal], *, at: datetime) -> None:
        if not journals:
            return
        at_us = to_us(at)
        with write_tx(self.engine) as conn:
            insert_rows(
                conn,
                day_journals.insert(),
                [
                    {
                        "journal_id": j.journal_id,
                        "store_id": j.store_id,
                        "business_day": j.business_day.isoformat(),
                        "register_id": j.register_id,
                        "adjustment": j.adjustment,
                        "state": j.state.value,
                        "document_number": j.document_number,
                        "reason": j.reason,
                        "transactions": len(j.transaction_ids),
                        "recorded_us": at_us,
                    }
                    for j in journals
                ],
            )
            insert_rows(
                conn,
                journal_members.insert(),
                [
                    {"transaction_id": tx, "journal_id": j.journal_id}
                    for j in journals
                    for tx in j.transaction_ids
                ],
            )

    def settle_journal(
        self,
        journal_id: str,
        *,
        state: JournalState,
        document_number: str | None,
        reason: str | None,
        at: datetime,
    ) -> None:
        with write_tx(self.engine) as conn:
            conn.execute(
                update(day_journals)
                .where(day_journals.c.journal_id == journal_id)
                .values(
                    state=state.value, document_number=document_number, reason=reason, recorded_us=to_us(at)
                )
            )

    def find_journals(self, store_id: str, business_day: date) -> list[DayJournal]:
        where = (day_journals.c.store_id == store_id) & (
            day_journals.c.business_day == business_day.isoformat()
        )
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(day_journals)
                .where(where)
                .order_by(day_journals.c.adjustment, day_journals.c.journal_id)
            ).all()
            members: dict[str, list[str]] = defaultdict(list)
            for m in conn.execute(
                select(journal_members.c.journal_id, journal_members.c.transaction_id)
                .join(day_journals, day_journals.c.journal_id == journal_members.c.journal_id)
                .where(where)
                .order_by(journal_members.c.transaction_id)
            ):
                members[m.journal_id].append(m.transaction_id)
        return [
            DayJournal(
                journal_id=r.journal_id,
                store_id=r.store_id,
                business_day=date.fromisoformat(r.business_day),
                register_id=r.register_id,
                adjustment=r.adjustment,
                transaction_ids=tuple(members[r.journal_id]),
                state=JournalState(r.state),
                document_number=r.document_number,
                reason=r.reason,
            )
            for r in rows
        ]

    def find_memberships(self, transaction_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(transaction_ids))
        with read_tx(self.engine) as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = select(journal_members).where(journal_members.c.transaction_id.in_(chunk))
                found.update({r.transaction_id: r.journal_id for r in conn.execute(query)})
        return found

    def retry_failed(
        self, store_id: str, business_day: date, journal_ids: Sequence[str] | None = None
    ) -> int:
        day = (day_journals.c.store_id == store_id) & (
            day_journals.c.business_day == business_day.isoformat()
        )
        which = day & (day_journals.c.state == JournalState.FAILED.value)
        if journal_ids is not None:
            which = which & day_journals.c.journal_id.in_(list(journal_ids))
        with write_tx(self.engine) as conn:
            count = conn.execute(
                update(day_journals).where(which).values(state=JournalState.PENDING.value, reason=None)
            ).rowcount
            conn.execute(
                update(day_closes)
                .where(
                    (day_closes.c.store_id == store_id)
                    & (day_closes.c.business_day == business_day.isoformat())
                    & (day_closes.c.state == CloseState.FAILED.value)
                )
                .values(state=CloseState.WAITING.value, reason=None)
            )
        return int(count)


def _same(stored: str, close: DayClose) -> bool:
    return DayClose.model_validate_json(stored) == close


def _record(row: Any) -> DayCloseRecord:
    return DayCloseRecord(
        close=DayClose.model_validate_json(row.report),
        received_at=from_us(row.received_us),
        deadline=from_us(row.deadline_us),
        state=CloseState(row.state),
        gap=tuple(orjson.loads(row.gap)),
        reason=row.reason,
        posted_at=None if row.posted_us is None else from_us(row.posted_us),
    )
