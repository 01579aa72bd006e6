"""The latest heartbeat of each store's edge agent in the state store (the `StoreHealthBook` port)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, select

from tillflow.model import StoreHeartbeat
from tillflow.ports import LatestHeartbeat
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import from_us, insert_for, to_us
from tillflow.storage.tables import store_heartbeats


class SQLStoreHealthBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_heartbeat(self, store_id: str, beat: StoreHeartbeat, received_at: datetime) -> None:
        row = {
            "store_id": store_id,
            "agent_version": beat.agent_version,
            "sent_us": to_us(beat.sent_at),
            "received_us": to_us(received_at),
            "buffer_depth": beat.buffer_depth,
            "oldest_unsent_age_seconds": beat.oldest_unsent_age_seconds,
            "last_error": beat.last_error,
            "delivered_total": beat.delivered_total,
            "conflicts": beat.conflicts,
            "missing": None if beat.missing is None else orjson.dumps(beat.missing).decode(),
        }
        with write_tx(self.engine) as conn:
            stmt = insert_for(conn, store_heartbeats).values(row)
            latest = {name: stmt.excluded[name] for name in row if name != "store_id"}
            conn.execute(stmt.on_conflict_do_update(index_elements=["store_id"], set_=latest))

    def list_health(self) -> list[LatestHeartbeat]:
        query = select(store_heartbeats).order_by(store_heartbeats.c.store_id)
        with read_tx(self.engine) as conn:
            return [_latest(row) for row in conn.execute(query)]


def _latest(row: Any) -> LatestHeartbeat:
    beat = StoreHeartbeat(
        agent_version=row.agent_version,
        sent_at=from_us(row.sent_us),
        buffer_depth=row.buffer_depth,
        oldest_unsent_age_seconds=row.oldest_unsent_age_seconds,
        last_error=row.last_error,
        delivered_total=row.delivered_total,
        conflicts=row.conflicts,
        missing=None if row.missing is None else tuple(orjson.loads(row.missing)),
    )
    return LatestHeartbeat(store_id=row.store_id, beat=beat, received_at=from_us(row.received_us))
