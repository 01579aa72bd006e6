"""The hub's loyalty book in the state store (the `LoyaltyBook` port): redemption sagas and the
points ledger the liability is valued from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from tillflow.ports import JournalState, PointsEntry, PointsJournal, Redemption, RedemptionState
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import from_us, insert_for, to_us
from tillflow.storage.tables import (
    loyalty_statements,
    points_journals,
    points_ledger,
    redemptions,
    trace_hops,
)

_CHUNK = 500  # ids per IN (...) query


class SQLLoyaltyBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- redemption sagas

    def open_redemption(self, redemption: Redemption, *, request_key: str) -> tuple[Redemption, bool]:
        row = {
            "hold_id": redemption.hold_id,
            "request_key": request_key,
            "program": redemption.program,
            "member_id": redemption.member_id,
            "store_id": redemption.store_id,
            "points": redemption.points,
            "state": redemption.state.value,
            "created_us": to_us(redemption.created_at),
            "expires_us": to_us(redemption.expires_at),
            "updated_us": to_us(redemption.updated_at),
            "transaction_id": redemption.transaction_id,
            "void_id": redemption.void_id,
            "reason": redemption.reason,
            "conflict": redemption.conflict,
        }
        with write_tx(self.engine) as conn:
            inserted = conn.execute(insert_for(conn, redemptions).values(**row).on_conflict_do_nothing())
            if inserted.rowcount:
                return redemption, True
            found = conn.execute(
                select(redemptions).where(
                    (redemptions.c.request_key == request_key) | (redemptions.c.hold_id == redemption.hold_id)
                )
            ).first()
        assert found is not None
        return _redemption(found), False

    def find_redemption(self, hold_id: str) -> Redemption | None:
        return self.find_redemptions([hold_id]).get(hold_id)

    def find_request(self, request_key: str) -> Redemption | None:
        with read_tx(self.engine) as conn:
            row = conn.execute(select(redemptions).where(redemptions.c.request_key == request_key)).first()
        return None if row is None else _redemption(row)

    def find_redemptions(self, hold_ids: Sequence[str]) -> dict[str, Redemption]:
        found: dict[str, Redemption] = {}
        with read_tx(self.engine) as conn:
            for chunk in _chunks(sorted(set(hold_ids))):
                for row in conn.execute(select(redemptions).where(redemptions.c.hold_id.in_(chunk))):
                    found[row.hold_id] = _redemption(row)
        return found

    def list_redemptions(
        self, *, states: Sequence[RedemptionState] = (), expired_by: datetime | None = None, limit: int = 1000
    ) -> list[Redemption]:
        query = select(redemptions).order_by(redemptions.c.created_us, redemptions.c.hold_id).limit(limit)
        if states:
            query = query.where(redemptions.c.state.in_([s.value for s in states]))
        if expired_by is not None:
            query = query.where(redemptions.c.expires_us <= to_us(expired_by))
        with read_tx(self.engine) as conn:
            return [_redemption(row) for row in conn.execute(query)]

    def settle_redemption(
        self,
        hold_id: str,
        *,
        state: RedemptionState,
        at: datetime,
        transaction_id: str | None = None,
        void_id: str | None = None,
        reason: str | None = None,
        entry: PointsEntry | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state.value, "updated_us": to_us(at)}
        for name, value in (("transaction_id", transaction_id), ("void_id", void_id), ("reason", reason)):
            if value is not None:
                values[name] = value
        with write_tx(self.engine) as conn:
            conn.execute(update(redemptions).where(redemptions.c.hold_id == hold_id).values(**values))
            if entry is not None:
                _insert_entries(conn, [entry], at)

    def record_conflict(self, hold_id: str, conflict: str, *, at: datetime) -> None:
        with write_tx(self.engine) as conn:
            earlier = conn.execute(
                select(redemptions.c.conflict).where(redemptions.c.hold_id == hold_id)
            ).scalar_one_or_none()
            if earlier and conflict in earlier.split("\n"):
                return  # the same step redelivered: kept once
            text = conflict if not earlier else f"{earlier}\n{conflict}"
            conn.execute(
                update(redemptions)
                .where(redemptions.c.hold_id == hold_id)
                .values(conflict=text, updated_us=to_us(at))
            )

    # -- the points ledger

    def record_entries(self, entries: Sequence[PointsEntry], *, at: datetime) -> int:
        if not entries:
            return 0
        with write_tx(self.engine) as conn:
            return _insert_entries(conn, entries, at)

    def find_entries(self, transaction_ids: Sequence[str]) -> list[PointsEntry]:
        found: list[PointsEntry] = []
        with read_tx(self.engine) as conn:
            for chunk in _chunks(sorted(set(transaction_ids))):
                query = select(points_ledger).where(points_ledger.c.transaction_id.in_(chunk))
                found.extend(_entry(row) for row in conn.execute(query.order_by(points_ledger.c.entry_key)))
        return found

    def find_reversals(self, transaction_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        columns = (points_ledger.c.transaction_id, points_ledger.c.entry_key, points_ledger.c.points)
        found: dict[str, dict[str, int]] = {}
        with read_tx(self.engine) as conn:
            for chunk in _chunks(sorted(set(transaction_ids))):
                query = select(*columns).where(
                    points_ledger.c.transaction_id.in_(chunk) & (points_ledger.c.kind == "reversal")
                )
                for tx_id, key, points in conn.execute(query):
                    found.setdefault(tx_id, {})[key] = int(points)
        return found

    def points_by_kind(self) -> dict[str, dict[str, int]]:
        columns = (points_ledger.c.program, points_ledger.c.kind)
        query = select(*columns, func.sum(points_ledger.c.points)).group_by(*columns)
        out: dict[str, dict[str, int]] = {}
        with read_tx(self.engine) as conn:
            for program, kind, total in conn.execute(query):
                out.setdefault(program, {})[kind] = int(total or 0)
        return out

    # -- the journals of the points issued

    def unjournaled_entries(self, kinds: Sequence[str], *, limit: int = 100_000) -> list[PointsEntry]:
        query = (
            select(points_ledger)
            .where(
                points_ledger.c.journal_id.is_(None)
                & points_ledger.c.store_id.is_not(None)
                & points_ledger.c.kind.in_(list(kinds))
            )
            .order_by(points_ledger.c.recorded_us, points_ledger.c.entry_key)
            .limit(limit)
        )
        with read_tx(self.engine) as conn:
            return [_entry(row) for row in conn.execute(query)]

    def record_points_journals(
        self, journals: Sequence[tuple[PointsJournal, Sequence[str]]], *, at: datetime
    ) -> None:
        if not journals:
            return
        with write_tx(self.engine) as conn:
            for journal, keys in journals:
                conn.execute(
                    points_journals.insert().values(
                        journal_id=journal.journal_id,
                        store_id=journal.store_id,
                        business_day=journal.business_day.isoformat(),
                        currency=journal.currency,
                        points=journal.points,
                        state=journal.state.value,
                        document_number=journal.document_number,
                        reason=journal.reason,
                        recorded_us=to_us(at),
                    )
                )
                for chunk in _chunks(list(keys)):
                    conn.execute(
                        update(points_ledger)
                        .where(points_ledger.c.entry_key.in_(chunk) & points_ledger.c.journal_id.is_(None))
                        .values(journal_id=journal.journal_id)
                    )

    def settle_points_journal(
        self, journal_id: str, *, state: JournalState, document_number: str | None, reason: str | None
    ) -> None:
        with write_tx(self.engine) as conn:
            conn.execute(
                update(points_journals)
                .where(points_journals.c.journal_id == journal_id)
                .values(state=state.value, document_number=document_number, reason=reason)
            )

    def find_points_journals(
        self,
        *,
        store_id: str | None = None,
        business_day: date | None = None,
        state: JournalState | None = None,
    ) -> list[PointsJournal]:
        query = select(points_journals).order_by(
            points_journals.c.store_id, points_journals.c.business_day, points_journals.c.recorded_us,
            points_journals.c.journal_id,
        )  # fmt: skip
        if store_id is not None:
            query = query.where(points_journals.c.store_id == store_id)
        if business_day is not None:
            query = query.where(points_journals.c.business_day == business_day.isoformat())
        if state is not None:
            query = query.where(points_journals.c.state == state.value)
        with read_tx(self.engine) as conn:
            return [
                PointsJournal(
                    journal_id=row.journal_id,
                    store_id=row.store_id,
                    business_day=date.fromisoformat(row.business_day),
                    currency=row.currency,
                    points=int(row.points),
                    state=JournalState(row.state),
                    document_number=row.document_number,
                    reason=row.reason,
                )
                for row in conn.execute(query)
            ]

    def statement_cursor(self, program: str) -> int:
        with read_tx(self.engine) as conn:
            found = conn.execute(
                select(loyalty_statements.c.after_seq).where(loyalty_statements.c.program == program)
            ).scalar_one_or_none()
        return int(found or 0)

    def record_statement(
        self, program: str, entries: Sequence[PointsEntry], *, after: int, at: datetime
    ) -> int:
        with write_tx(self.engine) as conn:
            new = _insert_entries(conn, entries, at)
            upsert = insert_for(conn, loyalty_statements).values(program=program, after_seq=after)
            conn.execute(upsert.on_conflict_do_update(index_elements=["program"], set_={"after_seq": after}))
        return new


def _insert_entries(conn: Connection, entries: Sequence[PointsEntry], at: datetime) -> int:
    """Insert the entries whose key is not recorded yet; how many that was. A transaction's own
    accrual, recorded, is a hop of its trace (`loyalty.accrued`)."""
    fresh = {e.entry_key: e for e in entries}
    for chunk in _chunks(list(fresh)):
        for key in conn.execute(
            select(points_ledger.c.entry_key).where(points_ledger.c.entry_key.in_(chunk))
        ):
            fresh.pop(key[0], None)
    at_us = to_us(at)
    rows = [
        {
            "entry_key": e.entry_key,
            "program": e.program,
            "member_id": e.member_id,
            "kind": e.kind,
            "points": e.points,
            "transaction_id": e.transaction_id,
            "hold_id": e.hold_id,
            "store_id": e.store_id,
            "business_day": None if e.business_day is None else e.business_day.isoformat(),
            "recorded_us": at_us,
        }
        for e in fresh.values()
    ]
    if rows:  # a key another writer recorded meanwhile is skipped by ON CONFLICT
        conn.execute(insert_for(conn, points_ledger).on_conflict_do_nothing(), rows)
    hops = [
        {
            "transaction_id": e.transaction_id,
            "hop": "loyalty.accrued",
            "at_us": at_us,
            "detail": f"{e.points} points accrued in program {e.program}",
        }
        for e in fresh.values()
        if e.kind == "accrual" and e.entry_key == f"accrue:{e.transaction_id}"
    ]
    if hops:
        conn.execute(trace_hops.insert(), hops)
    return len(rows)


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _redemption(row: Any) -> Redemption:
    return Redemption(
        hold_id=row.hold_id,
        program=row.program,
        member_id=row.member_id,
        store_id=row.store_id,
        points=row.points,
        state=RedemptionState(row.state),
        created_at=from_us(row.created_us),
        expires_at=from_us(row.expires_us),
        updated_at=from_us(row.updated_us),
        transaction_id=row.transaction_id,
        void_id=row.void_id,
        reason=row.reason,
        conflict=row.conflict,
    )


def _entry(row: Any) -> PointsEntry:
    return PointsEntry(
        entry_key=row.entry_key,
        program=row.program,
        member_id=row.member_id,
        kind=row.kind,
        points=row.points,
        transaction_id=row.transaction_id,
        hold_id=row.hold_id,
        store_id=row.store_id,
        business_day=None if row.business_day is None else date.fromisoformat(row.business_day),
    )
