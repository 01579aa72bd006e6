"""The event log in a SQL database: `SQLiteEventLog` (embedded) and the same log on PostgreSQL.

Events sit in the state store's `events` table ordered by `seq` (see storage.outbox); a
consumer group is a committed position.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from tillflow.errors import EventLogError, StorageError
from tillflow.model import CloudEvent, LoggedEvent
from tillflow.ports import GroupState
from tillflow.storage.db import Synchronous, create_state_engine, read_tx, sqlite_url, write_tx
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.outbox import append_in
from tillflow.storage.sql import from_us, insert_for, to_us
from tillflow.storage.tables import consumer_groups, events


class SQLEventLog:
    """The EventLog port on a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append_events(self, events_: Sequence[CloudEvent]) -> list[int | None]:
        try:
            with write_tx(self.engine) as conn:
                return append_in(conn, events_, logged_us=_now_us())
        except StorageError as exc:
            raise EventLogError(str(exc)) from exc

    def fetch_batch(self, group: str, *, limit: int) -> list[LoggedEvent]:
        try:
            with read_tx(self.engine) as conn:
                position = self._position(conn, group)
                rows = conn.execute(
                    select(events).where(events.c.seq > position).order_by(events.c.seq).limit(limit)
                ).all()
        except StorageError as exc:
            raise EventLogError(str(exc)) from exc
        return [_logged(r) for r in rows]

    def ack_events(self, group: str, events_: Sequence[LoggedEvent]) -> None:
        if not events_:
            return
        last = max(e.seq for e in events_)
        try:
            with write_tx(self.engine) as conn:
                stmt = insert_for(conn, consumer_groups).values(
                    group_name=group, position=last, updated_us=_now_us()
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[consumer_groups.c.group_name],
                        set_={
                            "position": func.max(consumer_groups.c.position, stmt.excluded.position)
                            if conn.dialect.name == "sqlite"
                            else func.greatest(consumer_groups.c.position, stmt.excluded.position),
                            "updated_us": stmt.excluded.updated_us,
                            "failures": 0,
                        },
                    )
                )
        except (StorageError, SQLAlchemyError) as exc:
            raise EventLogError(f"ack for {group} failed: {exc}") from exc

    def record_failure(self, group: str, error: str) -> None:
        now = _now_us()
        try:
            with write_tx(self.engine) as conn:
                stmt = insert_for(conn, consumer_groups).values(
                    group_name=group,
                    position=0,
                    updated_us=now,
                    failures=1,
                    last_error=error,
                    last_error_us=now,
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[consumer_groups.c.group_name],
                        set_={
                            "failures": consumer_groups.c.failures + 1,
                            "last_error": stmt.excluded.last_error,
                            "last_error_us": stmt.excluded.last_error_us,
                        },
                    )
                )
        except StorageError as exc:
            raise EventLogError(f"recording a failure of {group} failed: {exc}") from exc

    def read_groups(self) -> dict[str, GroupState]:
        try:
            with read_tx(self.engine) as conn:
                head = int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())
                rows = conn.execute(select(consumer_groups)).all()
        except StorageError as exc:
            raise EventLogError(str(exc)) from exc
        return {
            r.group_name: GroupState(
                position=r.position,
                lag=head - r.position,
                failures=r.failures,
                last_error=r.last_error,
                last_error_at=None if r.last_error_us is None else from_us(r.last_error_us),
            )
            for r in rows
        }

    def read_position(self, group: str) -> int:
        try:
            with read_tx(self.engine) as conn:
                return self._position(conn, group)
        except StorageError as exc:
            raise EventLogError(str(exc)) from exc

    def read_head(self) -> int:
        try:
            with read_tx(self.engine) as conn:
                return int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())
        except StorageError as exc:
            raise EventLogError(str(exc)) from exc

    @staticmethod
    def _position(conn: Connection, group: str) -> int:
        found = conn.execute(
            select(consumer_groups.c.position).where(consumer_groups.c.group_name == group)
        ).scalar_one_or_none()
        return int(found or 0)


class SQLiteEventLog(SQLEventLog):
    """The embedded event log on its own: one SQLite file in WAL mode, created when missing."""

    def __init__(self, path: Path, *, synchronous: Synchronous = "NORMAL") -> None:
        super().__init__(create_state_engine(sqlite_url(path), sqlite_synchronous=synchronous))
        upgrade_schema(self.engine)


def _logged(row: Any) -> LoggedEvent:
    return LoggedEvent(
        seq=row.seq,
        event=CloudEvent(
            id=row.event_id,
            source=row.source,
            type=row.type,
            time=datetime.fromisoformat(row.time),
            subject=row.subject,
            partitionkey=row.partitionkey,
            sequence=row.sequence,
            traceparent=row.traceparent,
            data=row.data,
        ),
    )


def _now_us() -> int:
    return to_us(datetime.now(UTC))
