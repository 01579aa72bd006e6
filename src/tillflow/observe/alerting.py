"""The alert evaluator: a thread in each API process that evaluates the configured rules every
`alerts.evaluate_seconds` against the shared state, opens an alert for each (rule, subject)
that starts holding and resolves it once it stops, and tells the webhook.

The figures are read afresh each round from the state store: the stores' latest heartbeats,
the consumer groups of the event log, the latency of the recorded effects and, every
`every_minutes` of the reconciliation rule, the three-way comparison of the closed store-days
of the last few business days. Several processes may evaluate at once: the transitions are
decided by the `AlertBook`, and only the process whose statement changed an alert sends it.
A delivery that process could not finish (it stopped) is sent again by whichever process next
finds its right to send run out, for alerts that changed in the last `REDELIVER_WITHIN`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from tillflow.observe.alert_eval import Figures, GroupFigures, StoreDayCheck, evaluate, latency_windows
from tillflow.observe.alert_rules import AlertRule, ReconciliationRule
from tillflow.observe.metrics import latency_quantiles
from tillflow.observe.webhook import LEASE, SECRET_VARIABLE, WebhookSender
from tillflow.ports import Alert, AlertState, CloseState
from tillflow.services import Services

log = logging.getLogger(__name__)

REDELIVER_WITHIN = timedelta(days=1)
CLOSED = (CloseState.POSTED, CloseState.FAILED)
T = TypeVar("T")


class AlertEvaluator:
    """Evaluates the rules against the services' state and records what changed."""

    def __init__(self, services: Services, sender: WebhookSender | None = None) -> None:
        self.services = services
        self.rules: Sequence[AlertRule] = services.config.alerts.rules
        self.sender = sender
        self._compared_at: float | None = None  # monotonic time of the last reconciliation

    def evaluate_once(self, now: datetime | None = None) -> None:
        """One round: read the figures, open and resolve alerts, hand transitions to the webhook."""
        now = now or datetime.now(UTC)
        book = self.services.alerts
        result = evaluate(self.rules, self.read_figures(now))
        holding = {(f.rule, f.subject): f for f in result.firing}
        open_alerts = {(a.rule, a.subject): a for a in book.list_alerts(state=AlertState.FIRING)}
        configured = {rule.name for rule in self.rules}
        notify_until = None if self.sender is None else now + LEASE
        for key, firing in holding.items():
            if key not in open_alerts:
                opened = book.open_alert(firing, at=now, notify_until=notify_until)
                if opened is not None:
                    log.warning("alert %s fired: %s", opened.rule, opened.summary)
                    self._send(opened)
        for (rule, subject), alert in open_alerts.items():
            gone = rule not in configured  # its rule was removed from the config
            judged = rule in result.evaluated and (rule, subject) not in result.undecided
            if gone or (judged and (rule, subject) not in holding):
                resolved = book.resolve_alert(rule, subject, at=now, notify_until=notify_until)
                if resolved is not None:
                    log.info("alert %s resolved: %s", alert.rule, alert.summary)
                    if resolved.notify_until == notify_until:  # else the firing is being told
                        self._send(resolved)
        if self.sender is not None:
            self.redeliver(now)

    def redeliver(self, now: datetime) -> None:
        """Take over the deliveries whose right to send ran out, and send them again."""
        assert self.sender is not None
        book = self.services.alerts
        for alert in book.list_undelivered(now=now, since=now - REDELIVER_WITHIN):
            if book.claim_delivery(alert.id, now=now, until=now + LEASE):
                claimed = book.find_alert(alert.id)
                if claimed is not None:
                    self._send(claimed)

    def _send(self, alert: Alert) -> None:
        if self.sender is not None:
            self.sender.submit(alert)

    def read_figures(self, now: datetime) -> Figures:
        """The figures the configured rules need; a figure that cannot be read is left out."""
        kinds = {rule.kind for rule in self.rules}
        silence = groups = p99 = None
        if "store_offline" in kinds:
            silence = _guarded("store health", lambda: self.read_silence(now))
        if kinds & {"dead_letters", "lag"}:
            groups = _guarded("consumer groups", lambda: self.read_groups(now))
        if "latency_p99" in kinds:
            p99 = _guarded("latency", lambda: self.read_latency(now))
        return Figures(
            offline_after_seconds=self.services.config.hub.store_offline_seconds,
            silence=silence,
            groups=groups,
            latency_p99=p99,
            store_days=_guarded("reconciliation", lambda: self.read_store_days(now)),
        )

    def read_silence(self, now: datetime) -> dict[str, float]:
        configured = set(self.services.config.store_ids())
        return {
            found.store_id: max(0.0, (now - found.received_at).total_seconds())
            for found in self.services.store_health.list_health()
            if found.store_id in configured
        }

    def read_groups(self, now: datetime) -> dict[str, GroupFigures]:
        out = {}
        for name, state in self.services.event_log.read_groups().items():
            oldest = state.oldest_dead_letter_at
            age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
            out[name] = GroupFigures(state.lag, state.dead_letters, age)
        return out

    def read_latency(self, now: datetime) -> dict[tuple[str, float], float | None]:
        return {
            (path, window): latency_quantiles(self.services, path, window)["p99"]
            for path, window in latency_windows(self.rules)
        }

    def read_store_days(self, now: datetime) -> list[StoreDayCheck] | None:
        """The closed store-days of the reconciliation rules' last business days, compared
        again once every `every_minutes` (the shortest of the rules'); None between."""
        rules = [r for r in self.rules if isinstance(r, ReconciliationRule)]
        if not rules:
            return None
        every = min(r.every_minutes for r in rules) * 60
        if self._compared_at is not None and time.monotonic() - self._compared_at < every:
            return None
        self._compared_at = time.monotonic()
        if self.services.erp() is None:
            return []  # no ERP: nothing to reconcile against
        days = max(r.days for r in rules)
        # a store's business day may run ahead of the hub's date (stores east of it)
        recent = [now.date() - timedelta(days=back) for back in range(-1, days)]
        wanted = {
            (record.close.store_id, day)
            for day in recent
            for record in self.services.store_days.list_day_closes(business_day=day)
            if record.state in CLOSED
        }
        # and the store-days already alerted on, however old, so that they clear once fixed
        names = {r.name for r in rules}
        for alert in self.services.alerts.list_alerts(state=AlertState.FIRING):
            store_day = _store_day(alert.subject) if alert.rule in names else None
            if store_day is not None:
                wanted.add(store_day)
        return [self.compare(store_id, day) for store_id, day in sorted(wanted)]

    def compare(self, store_id: str, business_day: date) -> StoreDayCheck:
        """A store-day's three-way reconciliation; not judged when the ERP could not be read."""
        from tillflow.reconciling import reconcile

        [(rec, _)] = reconcile(self.services, business_day, store_id)
        matched = None if not rec.trial_balance else rec.matched
        return StoreDayCheck(store_id, business_day, matched, rec.differences)


def _store_day(subject: str) -> tuple[str, date] | None:
    """The (store, business day) of a reconciliation alert's subject ``S001/2026-11-29``."""
    store_id, _, day = subject.rpartition("/")
    try:
        return (store_id, date.fromisoformat(day)) if store_id else None
    except ValueError:
        return None


def _guarded(what: str, read: Callable[[], T]) -> T | None:
    """What `read` returns, or None (logged) when it fails: its rules sit this round out."""
    try:
        return read()
    except Exception:
        log.exception("alert rules: could not read %s", what)
        return None


def start_evaluator(services: Services, stop: threading.Event) -> threading.Thread | None:
    """Evaluate the configured alert rules every `alerts.evaluate_seconds` until `stop` (no
    thread when there are no rules and no webhook)."""
    settings = services.config.alerts
    if not settings.rules and settings.webhook_url is None:
        return None
    sender = None
    if settings.webhook_url is not None:
        sender = WebhookSender(
            settings.webhook_url,
            services.alerts,
            secret=os.environ.get(SECRET_VARIABLE),
            timeout=settings.webhook_timeout_seconds,
        )
        sender.start(stop)
    evaluator = AlertEvaluator(services, sender)

    def run() -> None:
        while not stop.is_set():
            try:
                evaluator.evaluate_once()
            except Exception:
                log.exception("alert rules: evaluation failed")
            stop.wait(settings.evaluate_seconds)

    thread = threading.Thread(target=run, name="alert-evaluator", daemon=True)
    thread.start()
    return thread
