"""The event log in a SQL database: `SQLiteEventLog` (embedded) and the same log on PostgreSQL.

Events sit in the state store's `events` table ordered by `seq` (see storage.outbox). A
consumer group is a settled position plus two side tables: `deliveries` (events it nak'ed,
due again at a time) and `dead_letters` (events it set aside, copied whole). Settling an
event — ack, nak or dead letter — moves the position past it, so one bad event never holds
back the ones behind it. Operator actions are written to `event_log_audit`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from tillflow.errors import EventLogError, StorageError
from tillflow.model import CloudEvent, LoggedEvent
from tillflow.ports import AuditEntry, DeadLetter, DeadLetterSelection, GroupState
from tillflow.storage.db import Synchronous, create_state_engine, read_tx, sqlite_url, write_tx
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.outbox import append_in, event_row
from tillflow.storage.sql import from_us, insert_for, insert_rows, to_us
from tillflow.storage.tables import consumer_groups, dead_letters, deliveries, event_log_audit, events

_EVENT_FIELDS = (
    "source",
    "event_id",
    "type",
    "time",
    "subject",
    "partitionkey",
    "sequence",
    "traceparent",
    "data",
)


class SQLEventLog:
    """The EventLog port on a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _write(self, what: str) -> Iterator[Connection]:
        try:
            with write_tx(self.engine) as conn:
                yield conn
        except (StorageError, SQLAlchemyError) as exc:
            raise EventLogError(f"{what} failed: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with read_tx(self.engine) as conn:
                yield conn
        except (StorageError, SQLAlchemyError) as exc:
            raise EventLogError(f"reading the event log failed: {exc}") from exc

    # -- the consumer's side ---------------------------------------------------------------

    def append_events(self, events_: Sequence[CloudEvent]) -> list[int | None]:
        with self._write("append") as conn:
            return append_in(conn, events_, logged_us=_now_us())

    def fetch_batch(self, group: str, *, limit: int) -> list[LoggedEvent]:
        with self._read() as conn:
            is_due = and_(deliveries.c.group_name == group, deliveries.c.due_us <= _now_us())
            from_log = conn.execute(
                select(events, deliveries.c.attempts)
                .join(deliveries, deliveries.c.seq == events.c.seq)
                .where(is_due, deliveries.c.dead_letter_id.is_(None))
                .order_by(events.c.seq)
                .limit(limit)
            ).all()
            from_copies = conn.execute(
                select(dead_letters, deliveries.c.attempts.label("delivered"))
                .join(deliveries, deliveries.c.dead_letter_id == dead_letters.c.id)
                .where(is_due)
                .order_by(dead_letters.c.seq)
                .limit(limit)
            ).all()
            due = sorted(
                [(r.seq, _logged(r, attempt=r.attempts + 1, redelivered=True)) for r in from_log]
                + [
                    (r.seq, _logged(r, attempt=r.delivered + 1, redelivered=True, replayed=True))
                    for r in from_copies
                ],
                key=lambda pair: pair[0],
            )
            batch = [logged for _, logged in due[:limit]]
            if len(batch) < limit:
                position = self._position(conn, group)
                fresh = conn.execute(
                    select(events)
                    .where(events.c.seq > position)
                    .order_by(events.c.seq)
                    .limit(limit - len(batch))
                ).all()
                batch.extend(_logged(r) for r in fresh)
        return batch

    def ack_events(self, group: str, events_: Sequence[LoggedEvent]) -> None:
        if not events_:
            return
        with self._write(f"ack for {group}") as conn:
            self._settle(conn, group, events_)

    def nak_event(self, group: str, event: LoggedEvent, *, delay: float, error: str) -> None:
        with self._write(f"nak for {group}") as conn:
            if conn.execute(select(events.c.seq).where(events.c.seq == event.seq)).first() is None:
                # retention dropped it while it was in flight: keep it as a dead letter
                self._bury(
                    conn, group, event, f"retention dropped the event while it was retried; error: {error}"
                )
                return
            stmt = insert_for(conn, deliveries).values(
                group_name=group,
                seq=event.seq,
                attempts=event.attempt,
                due_us=_now_us() + int(delay * 1_000_000),
                last_error=error[:2000],
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[deliveries.c.group_name, deliveries.c.seq],
                    set_={k: stmt.excluded[k] for k in ("attempts", "due_us", "last_error")},
                )
            )
            self._advance(conn, group, [event], clear_failures=False)

    def dead_letter(self, group: str, event: LoggedEvent, *, reason: str) -> None:
        with self._write(f"dead letter for {group}") as conn:
            self._bury(conn, group, event, reason)

    def _bury(self, conn: Connection, group: str, event: LoggedEvent, reason: str) -> None:
        conn.execute(
            dead_letters.insert().values(
                group_name=group,
                seq=event.seq,
                attempts=event.attempt,
                reason=reason[:4000],
                dead_us=_now_us(),
                **event_row(event.event),
            )
        )
        self._settle(conn, group, [event])

    def _settle(self, conn: Connection, group: str, settled: Sequence[LoggedEvent]) -> None:
        redelivered = [e.seq for e in settled if e.redelivered]
        if redelivered:
            mine = and_(deliveries.c.group_name == group, deliveries.c.seq.in_(redelivered))
            copies = [i for i in conn.execute(select(deliveries.c.dead_letter_id).where(mine)).scalars() if i]
            if copies:  # a replayed dead letter is settled: its copy has served
                conn.execute(delete(dead_letters).where(dead_letters.c.id.in_(copies)))
            conn.execute(delete(deliveries).where(mine))
        self._advance(conn, group, settled, clear_failures=True)

    @staticmethod
    def _advance(
        conn: Connection, group: str, settled: Sequence[LoggedEvent], *, clear_failures: bool
    ) -> None:
        """Move the position past the settled first deliveries; a redelivery may sit behind or
        ahead of the position (a replayed dead letter) and must never move it."""
        first_deliveries = [e.seq for e in settled if not e.redelivered]
        if not first_deliveries:
            if clear_failures:
                conn.execute(
                    update(consumer_groups).where(consumer_groups.c.group_name == group).values(failures=0)
                )
            return
        seq = max(first_deliveries)
        stmt = insert_for(conn, consumer_groups).values(group_name=group, position=seq, updated_us=_now_us())
        greatest = func.max if conn.dialect.name == "sqlite" else func.greatest
        changes: dict[str, Any] = {
            "position": greatest(consumer_groups.c.position, stmt.excluded.position),
            "updated_us": stmt.excluded.updated_us,
        }
        if clear_failures:
            changes["failures"] = 0
        conn.execute(stmt.on_conflict_do_update(index_elements=[consumer_groups.c.group_name], set_=changes))

    def record_failure(self, group: str, error: str) -> None:
        now = _now_us()
        with self._write(f"recording a failure of {group}") as conn:
            stmt = insert_for(conn, consumer_groups).values(
                group_name=group, position=0, updated_us=now, failures=1, last_error=error
            )
            stmt = stmt.values(last_error_us=now)
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

    # -- positions -------------------------------------------------------------------------

    def read_position(self, group: str) -> int:
        with self._read() as conn:
            return self._position(conn, group)

    def read_head(self) -> int:
        with self._read() as conn:
            return _head(conn)

    def read_groups(self) -> dict[str, GroupState]:
        with self._read() as conn:
            head = _head(conn)
            rows = conn.execute(select(consumer_groups)).all()
            pending: dict[str, int] = dict(
                conn.execute(
                    select(deliveries.c.group_name, func.count()).group_by(deliveries.c.group_name)
                ).all()
            )
            dead = {
                r.group_name: (r.n, r.oldest)
                for r in conn.execute(
                    select(
                        dead_letters.c.group_name,
                        func.count().label("n"),
                        func.min(dead_letters.c.dead_us).label("oldest"),
                    )
                    .where(dead_letters.c.replayed_us.is_(None))
                    .group_by(dead_letters.c.group_name)
                )
            }
        return {
            r.group_name: GroupState(
                position=r.position,
                lag=max(0, head - r.position),
                pending=int(pending.get(r.group_name, 0)),
                dead_letters=dead.get(r.group_name, (0, None))[0],
                oldest_dead_letter_at=_maybe_time(dead.get(r.group_name, (0, None))[1]),
                failures=r.failures,
                last_error=r.last_error,
                last_error_at=_maybe_time(r.last_error_us),
            )
            for r in rows
        }

    @staticmethod
    def _position(conn: Connection, group: str) -> int:
        found = conn.execute(
            select(consumer_groups.c.position).where(consumer_groups.c.group_name == group)
        ).scalar_one_or_none()
        return int(found or 0)

    # -- operators -------------------------------------------------------------------------

    def reset_group(
        self, group: str, *, from_seq: int | None = None, since: datetime | None = None, actor: str, why: str
    ) -> int:
        if (from_seq is None) == (since is None):
            raise ValueError("reset a group from a sequence or from a time, one of the two")
        with self._write(f"reset of {group}") as conn:
            if from_seq is not None:
                position = max(0, from_seq - 1)
                detail = f"from seq {from_seq}"
            else:
                assert since is not None
                first = conn.execute(
                    select(func.min(events.c.seq)).where(events.c.logged_us >= to_us(since))
                ).scalar_one_or_none()
                position = _head(conn) if first is None else int(first) - 1
                detail = f"since {since.isoformat()}"
            before = self._position(conn, group)
            stmt = insert_for(conn, consumer_groups).values(
                group_name=group, position=position, updated_us=_now_us()
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[consumer_groups.c.group_name],
                    set_={
                        "position": stmt.excluded.position,
                        "updated_us": stmt.excluded.updated_us,
                        "failures": 0,
                    },
                )
            )
            conn.execute(  # replayed dead letters not yet settled become dead letters again
                update(dead_letters)
                .where(dead_letters.c.group_name == group, dead_letters.c.replayed_us.is_not(None))
                .values(replayed_us=None)
            )
            dropped = conn.execute(delete(deliveries).where(deliveries.c.group_name == group)).rowcount or 0
            write_audit(
                conn,
                "reset-group",
                group,
                1,
                actor,
                why,
                f"{detail}: position {before} -> {position}; {dropped} pending retries dropped",
            )
        return position

    def list_dead_letters(
        self, *, group: str | None = None, ids: Sequence[int] = (), limit: int = 100
    ) -> list[DeadLetter]:
        selection = DeadLetterSelection(group=group, ids=tuple(ids))
        query = select(dead_letters).where(_matching(selection)).order_by(dead_letters.c.id).limit(limit)
        with self._read() as conn:
            return [_dead_letter(r) for r in conn.execute(query)]

    def replay_dead_letters(self, selection: DeadLetterSelection, *, actor: str, why: str) -> int:
        with self._write("dead-letter replay") as conn:
            matched = conn.execute(
                select(dead_letters).where(_matching(selection)).order_by(dead_letters.c.id)
            ).all()
            newest = {(c.group_name, c.seq): c for c in matched}  # one event dead-lettered twice: once
            chosen = list(newest.values())
            stale = [c.id for c in matched if newest[(c.group_name, c.seq)].id != c.id]
            if stale:
                conn.execute(delete(dead_letters).where(dead_letters.c.id.in_(stale)))
            if chosen:  # delivered from the copy: the log may have dropped the event since
                stmt = insert_for(conn, deliveries)
                insert_rows(
                    conn,
                    stmt.on_conflict_do_update(
                        index_elements=[deliveries.c.group_name, deliveries.c.seq],
                        set_={
                            k: stmt.excluded[k]
                            for k in ("attempts", "due_us", "last_error", "dead_letter_id")
                        },
                    ),
                    [
                        {
                            "group_name": c.group_name,
                            "seq": c.seq,
                            "attempts": 0,
                            "due_us": 0,
                            "last_error": None,
                            "dead_letter_id": c.id,
                        }
                        for c in chosen
                    ],
                )
                conn.execute(
                    update(dead_letters)
                    .where(dead_letters.c.id.in_([c.id for c in chosen]))
                    .values(replayed_us=_now_us())
                )
            replayable = chosen
            write_audit(
                conn,
                "replay-dead-letters",
                selection.group,
                len(replayable),
                actor,
                why,
                describe_selection(selection, [c.id for c in replayable]),
            )
        return len(replayable)

    def purge_dead_letters(self, selection: DeadLetterSelection, *, actor: str, why: str) -> int:
        with self._write("dead-letter purge") as conn:
            ids = list(conn.execute(select(dead_letters.c.id).where(_matching(selection))).scalars())
            purged = conn.execute(delete(dead_letters).where(dead_letters.c.id.in_(ids))).rowcount or 0
            detail = describe_selection(selection, ids)
            write_audit(conn, "purge-dead-letters", selection.group, purged, actor, why, detail)
        return purged

    def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        with self._read() as conn:
            rows = conn.execute(select(event_log_audit).order_by(event_log_audit.c.id.desc()).limit(limit))
            return [
                AuditEntry(
                    action=r.action,
                    group=r.group_name,
                    count=r.affected,
                    actor=r.actor,
                    why=r.why,
                    at=from_us(r.at_us),
                    detail=r.detail,
                )
                for r in rows
            ]

    def trim_events(self, *, max_age: timedelta | None = None, max_events: int | None = None) -> int:
        with self._write("retention trim") as conn:
            keep_after = 0
            if max_events is not None:  # sequences may have gaps: count rows, not numbers
                oldest_dropped = conn.execute(
                    select(events.c.seq).order_by(events.c.seq.desc()).offset(max_events).limit(1)
                ).scalar()
                keep_after = max(keep_after, int(oldest_dropped or 0))
            if max_age is not None:
                cutoff = to_us(datetime.now(UTC) - max_age)
                newest_old = conn.execute(
                    select(func.max(events.c.seq)).where(events.c.logged_us < cutoff)
                ).scalar()
                keep_after = max(keep_after, int(newest_old or 0))
            if not keep_after:
                return 0
            self._dead_letter_orphans(conn, keep_after)
            return conn.execute(delete(events).where(events.c.seq <= keep_after)).rowcount or 0

    @staticmethod
    def _dead_letter_orphans(conn: Connection, keep_after: int) -> None:
        """Retries still pending for events about to be dropped become dead letters (nothing is
        lost to retention: an operator can replay them from the copy)."""
        waiting = and_(deliveries.c.seq <= keep_after, deliveries.c.dead_letter_id.is_(None))
        orphans = conn.execute(
            select(events, deliveries.c.group_name, deliveries.c.attempts, deliveries.c.last_error)
            .join(deliveries, deliveries.c.seq == events.c.seq)
            .where(waiting)
        ).all()
        insert_rows(
            conn,
            dead_letters.insert(),
            [
                {k: getattr(r, k) for k in _EVENT_FIELDS}
                | {
                    "group_name": r.group_name,
                    "seq": r.seq,
                    "attempts": r.attempts,
                    "reason": "retention dropped the event while a retry was pending;"
                    f" last error: {r.last_error}",
                    "dead_us": _now_us(),
                    "replayed_us": None,
                }
                for r in orphans
            ],
        )
        conn.execute(delete(deliveries).where(waiting))


class SQLiteEventLog(SQLEventLog):
    """The embedded event log on its own: one SQLite file in WAL mode, created when missing."""

    def __init__(self, path: Path, *, synchronous: Synchronous = "NORMAL") -> None:
        super().__init__(create_state_engine(sqlite_url(path), sqlite_synchronous=synchronous))
        upgrade_schema(self.engine)


def _head(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())


def _logged(row: Any, attempt: int = 1, redelivered: bool = False, replayed: bool = False) -> LoggedEvent:
    return LoggedEvent(
        seq=row.seq,
        attempt=attempt,
        redelivered=redelivered,
        replayed=replayed,
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


def _dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        group=row.group_name,
        event=_logged(row, attempt=row.attempts),
        attempts=row.attempts,
        reason=row.reason,
        dead_at=from_us(row.dead_us),
    )


def _matching(selection: DeadLetterSelection) -> Any:
    conditions: list[ColumnElement[bool]] = [dead_letters.c.replayed_us.is_(None)]  # replaying: not dead now
    if selection.group is not None:
        conditions.append(dead_letters.c.group_name == selection.group)
    if selection.ids:
        conditions.append(dead_letters.c.id.in_(selection.ids))
    if selection.reason_contains:
        pattern = selection.reason_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(dead_letters.c.reason.ilike(f"%{pattern}%", escape="\\"))
    return and_(*conditions)


def describe_selection(selection: DeadLetterSelection, affected: Sequence[int]) -> str:
    """An audit line: what the operator asked for, and the dead-letter ids it applied to."""
    if selection.ids:
        asked = "ids " + ",".join(map(str, selection.ids))
    elif selection.reason_contains:
        asked = f"reason contains {selection.reason_contains!r}"
    else:
        asked = "all"
    return f"{asked}: ids {','.join(map(str, affected)) or 'none'}"


def write_audit(
    conn: Connection, action: str, group: str | None, count: int, actor: str, why: str, detail: str
) -> None:
    conn.execute(
        event_log_audit.insert().values(
            action=action,
            group_name=group,
            affected=count,
            actor=actor,
            why=why,
            detail=detail,
            at_us=_now_us(),
        )
    )


def _maybe_time(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def _now_us() -> int:
    return to_us(datetime.now(UTC))
