"""The alerts the rules raised, in the state store (the `AlertBook` port).

Every transition is one conditional statement, so processes that evaluate the rules at the same
time agree on it: an alert opens by an INSERT that a partial unique index (one open row per rule
and subject) turns into nothing for all but one of them, and resolves by an UPDATE of the open
row only. The statement that changed the row returns it; only its process tells the webhook.

The right to tell the webhook is a lease (`notify_until_us`): the process that made a transition
holds it, renews it while it retries, and gives it up once the webhook took the state
(`notified`). A lease that ran out (its process stopped) may be taken by any process. An alert
that resolves while its firing is still being told keeps that lease: the resolution is told
after the firing, by whichever process next finds it untold.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, case, func, or_, select, update

from tillflow.ports import Alert, AlertFiring, AlertState
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import from_us, insert_for, to_us
from tillflow.storage.tables import alerts

_OPEN = alerts.c.resolved_us.is_(None)


class SQLAlertBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open_alert(self, firing: AlertFiring, *, at: datetime, notify_until: datetime | None) -> Alert | None:
        row = {
            "rule": firing.rule,
            "subject": firing.subject,
            "kind": firing.kind,
            "severity": firing.severity,
            "summary": firing.summary,
            "value": firing.value,
            "threshold": firing.threshold,
            "fired_us": to_us(at),
            "notify_until_us": _us(notify_until),
        }
        with write_tx(self.engine) as conn:
            stmt = insert_for(conn, alerts).values(row).on_conflict_do_nothing().returning(*alerts.c)
            found = conn.execute(stmt).one_or_none()
        return None if found is None else _alert(found)

    def resolve_alert(
        self, rule: str, subject: str, *, at: datetime, notify_until: datetime | None
    ) -> Alert | None:
        lease = alerts.c.notify_until_us
        held = and_(lease.is_not(None), lease >= to_us(at))  # telling the firing: it tells this next
        stmt = (
            update(alerts)
            .where(alerts.c.rule == rule, alerts.c.subject == subject, _OPEN)
            .values(resolved_us=to_us(at), notify_until_us=case((held, lease), else_=_us(notify_until)))
            .returning(*alerts.c)
        )
        with write_tx(self.engine) as conn:
            found = conn.execute(stmt).one_or_none()
        return None if found is None else _alert(found)

    def list_alerts(self, *, state: AlertState | None = None, limit: int = 500) -> list[Alert]:
        query = select(alerts)
        if state is AlertState.FIRING:
            query = query.where(_OPEN)
        elif state is AlertState.RESOLVED:
            query = query.where(alerts.c.resolved_us.is_not(None))
        firing_first = case((_OPEN, 0), else_=1)
        query = query.order_by(firing_first, alerts.c.fired_us.desc(), alerts.c.id.desc()).limit(limit)
        with read_tx(self.engine) as conn:
            return [_alert(row) for row in conn.execute(query)]

    def find_alert(self, alert_id: int) -> Alert | None:
        with read_tx(self.engine) as conn:
            found = conn.execute(select(alerts).where(alerts.c.id == alert_id)).one_or_none()
        return None if found is None else _alert(found)

    def acknowledge_alert(self, alert_id: int, *, by: str, at: datetime) -> Alert | None:
        stmt = (
            update(alerts)
            .where(alerts.c.id == alert_id, alerts.c.acknowledged_us.is_(None))
            .values(acknowledged_us=to_us(at), acknowledged_by=by)
        )
        with write_tx(self.engine) as conn:
            conn.execute(stmt)
            found = conn.execute(select(alerts).where(alerts.c.id == alert_id)).one_or_none()
        return None if found is None else _alert(found)

    def claim_delivery(
        self, alert_id: int, *, now: datetime, until: datetime, held: datetime | None = None
    ) -> bool:
        lease = alerts.c.notify_until_us
        free = or_(lease.is_(None), lease < to_us(now))
        stmt = (
            update(alerts)
            .where(alerts.c.id == alert_id, free if held is None else lease == to_us(held))
            .values(notify_until_us=to_us(until))
        )
        with write_tx(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1

    def record_delivery(self, alert_id: int, state: AlertState, *, held: datetime) -> bool:
        stmt = (
            update(alerts)
            .where(alerts.c.id == alert_id, alerts.c.notify_until_us == to_us(held))
            .values(notified=state.value, notify_until_us=None)
        )
        with write_tx(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1

    def list_undelivered(self, *, now: datetime, since: datetime) -> list[Alert]:
        lease = alerts.c.notify_until_us
        told = alerts.c.notified
        untold = or_(
            and_(_OPEN, told.is_(None)),
            and_(alerts.c.resolved_us.is_not(None), or_(told.is_(None), told != AlertState.RESOLVED.value)),
        )
        changed = func.coalesce(alerts.c.resolved_us, alerts.c.fired_us)
        query = (
            select(alerts)
            .where(untold, or_(lease.is_(None), lease < to_us(now)), changed >= to_us(since))
            .order_by(changed, alerts.c.id)
        )
        with read_tx(self.engine) as conn:
            return [_alert(row) for row in conn.execute(query)]


def _us(at: datetime | None) -> int | None:
    return None if at is None else to_us(at)


def _at(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def _alert(row: Any) -> Alert:
    return Alert(
        id=row.id,
        rule=row.rule,
        kind=row.kind,
        subject=row.subject,
        severity=row.severity,
        summary=row.summary,
        value=row.value,
        threshold=row.threshold,
        fired_at=from_us(row.fired_us),
        resolved_at=_at(row.resolved_us),
        acknowledged_at=_at(row.acknowledged_us),
        acknowledged_by=row.acknowledged_by,
        notified=None if row.notified is None else AlertState(row.notified),
        notify_until=_at(row.notify_until_us),
    )
