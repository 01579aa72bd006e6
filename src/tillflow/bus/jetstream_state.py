"""The state-store side of the JetStream event log: durable facts JetStream does not keep.

Retries a consumer group scheduled (so retention can dead-letter them before dropping their
messages, and positions can count them as handed over), failure streaks, the operators' audit
trail, and forgetting the dedupe records of events retention dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, func, select, update

from tillflow.bus.sql import SQLEventLog, write_audit
from tillflow.errors import EventLogError, StorageError
from tillflow.ports import AuditEntry
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import insert_for, to_us
from tillflow.storage.tables import consumer_groups, events, stream_retries


class StreamState:
    def __init__(self, engine: Engine, stream: str) -> None:
        self.engine = engine
        self.stream = stream
        self._sql = SQLEventLog(engine)  # failure streaks and the audit trail, as the SQL log keeps them

    def record_failure(self, group: str, error: str) -> None:
        self._sql.record_failure(group, error)

    def list_audit(self, *, limit: int) -> list[AuditEntry]:
        return self._sql.list_audit(limit=limit)

    def remember_retries(self, group: str, seqs: Sequence[int], attempts: int, error: str) -> None:
        try:
            with write_tx(self.engine) as conn:
                for seq in seqs:
                    stmt = insert_for(conn, stream_retries).values(
                        stream=self.stream,
                        group_name=group,
                        stream_seq=seq,
                        attempts=attempts,
                        last_error=error[:2000],
                    )
                    conn.execute(
                        stmt.on_conflict_do_update(
                            index_elements=[
                                stream_retries.c.stream,
                                stream_retries.c.group_name,
                                stream_retries.c.stream_seq,
                            ],
                            set_={k: stmt.excluded[k] for k in ("attempts", "last_error")},
                        )
                    )
        except StorageError as exc:
            raise EventLogError(f"recording a retry of {group} failed: {exc}") from exc

    def forget_retries(self, group: str | None, seqs: Sequence[int] | None = None) -> None:
        """Drop retry records: of `seqs` in `group`, of the whole group (seqs None), or of the
        stream's messages the list names (group None)."""
        if seqs is not None and not seqs:
            return
        where = [stream_retries.c.stream == self.stream]
        if group is not None:
            where.append(stream_retries.c.group_name == group)
        if seqs is not None:
            where.append(stream_retries.c.stream_seq.in_(sorted(set(seqs))))
        try:
            with write_tx(self.engine) as conn:
                conn.execute(stream_retries.delete().where(*where))
        except StorageError as exc:
            raise EventLogError(f"clearing retries failed: {exc}") from exc

    def clear_failures(self, group: str) -> None:
        try:
            with read_tx(self.engine) as conn:
                failing = conn.execute(
                    select(consumer_groups.c.failures).where(consumer_groups.c.group_name == group)
                ).scalar_one_or_none()
            if failing:
                with write_tx(self.engine) as conn:
                    conn.execute(
                        update(consumer_groups)
                        .where(consumer_groups.c.group_name == group)
                        .values(failures=0)
                    )
        except StorageError as exc:
            raise EventLogError(f"clearing the failures of {group} failed: {exc}") from exc

    def audit(self, action: str, group: str | None, count: int, actor: str, why: str, detail: str) -> None:
        try:
            with write_tx(self.engine) as conn:
                write_audit(conn, action, group, count, actor, why, detail)
        except StorageError as exc:
            raise EventLogError(f"auditing {action} failed: {exc}") from exc

    def retry_counts(self) -> dict[str, int]:
        """How many retries each group has scheduled and not yet settled."""
        try:
            with read_tx(self.engine) as conn:
                rows = conn.execute(
                    select(stream_retries.c.group_name, func.count())
                    .where(stream_retries.c.stream == self.stream)
                    .group_by(stream_retries.c.group_name)
                ).all()
        except StorageError as exc:
            raise EventLogError(f"reading pending retries failed: {exc}") from exc
        return {group: int(count) for group, count in rows}

    def retries(self) -> list[Row[Any]]:
        try:
            with read_tx(self.engine) as conn:
                return list(
                    conn.execute(select(stream_retries).where(stream_retries.c.stream == self.stream))
                )
        except StorageError as exc:
            raise EventLogError(f"reading pending retries failed: {exc}") from exc

    def forget_trimmed(self, cutoff: datetime | None, max_events: int | None) -> None:
        """Drop the dedupe records of events retention dropped (as the SQL log forgets them)."""
        try:
            with write_tx(self.engine) as conn:
                if max_events is not None:
                    oldest_dropped = conn.execute(
                        select(events.c.seq).order_by(events.c.seq.desc()).offset(max_events).limit(1)
                    ).scalar()
                    if oldest_dropped is not None:
                        conn.execute(events.delete().where(events.c.seq <= oldest_dropped))
                if cutoff is not None:
                    conn.execute(events.delete().where(events.c.logged_us < to_us(cutoff)))
        except StorageError as exc:
            raise EventLogError(f"retention trim failed: {exc}") from exc
