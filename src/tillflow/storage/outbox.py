"""The `events` table: where the gateway appends events in the same commit as its state.

In the embedded deployment this table *is* the event log (bus.sql reads it). With an external
broker it is the transactional outbox that a relay publishes from, so "accepted" still
implies "logged" without a distributed transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from tillflow.model import CloudEvent
from tillflow.storage.db import lock_for_append
from tillflow.storage.sql import insert_for
from tillflow.storage.tables import events

APPEND_LOCK = "tillflow.events.append"


def event_row(event: CloudEvent) -> dict[str, Any]:
    """The columns of an event (without its sequence and log time)."""
    return {
        "source": event.source,
        "event_id": event.id,
        "type": event.type,
        "time": event.time.isoformat(),
        "subject": event.subject,
        "partitionkey": event.partitionkey,
        "sequence": event.sequence,
        "traceparent": event.traceparent,
        "data": event.data,
    }


def append_in(conn: Connection, batch: Sequence[CloudEvent], *, logged_us: int) -> list[int | None]:
    """Append within the caller's transaction; returns each event's seq (None: a duplicate)."""
    if not batch:
        return []
    lock_for_append(conn, APPEND_LOCK)
    fresh: dict[tuple[str, str], CloudEvent] = {}
    for event in batch:
        fresh.setdefault((event.source, event.id), event)
    inserted = conn.execute(
        insert_for(conn, events)
        .on_conflict_do_nothing()
        .returning(events.c.source, events.c.event_id, events.c.seq),
        [event_row(e) | {"logged_us": logged_us} for e in fresh.values()],
    )
    seq_of = {(r.source, r.event_id): r.seq for r in inserted}
    out: list[int | None] = []
    for event in batch:  # only the first of repeats inside the batch gets the seq
        out.append(seq_of.pop((event.source, event.id), None))
    return out
