"""The alert webhook: each alert that fires or clears is POSTed as JSON, signed, in order.

The body is ``{"alert": {...}, "state": "firing"|"resolved"}`` (the alert as `GET /v1/alerts`
shows it). With a secret (`TILLFLOW_ALERT_WEBHOOK_SECRET`) the request carries
``Tillflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``; a receiver
recomputes it over the raw body and rejects an old `t`. Without a secret it goes unsigned.

Deliveries run on their own thread, one at a time in the order they were handed over, retried
with exponential backoff until the receiver answers 2xx. Before each attempt the sender renews
its right to deliver (see `AlertBook.claim_delivery`); once another process has taken it over
(the alert changed state there), this delivery is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from tillflow.ports import Alert, AlertBook, AlertState

log = logging.getLogger(__name__)

SECRET_VARIABLE = "TILLFLOW_ALERT_WEBHOOK_SECRET"
SIGNATURE_HEADER = "Tillflow-Signature"
LEASE = timedelta(seconds=120)  # a delivery's right to send, renewed before every attempt
BASE_DELAY = 1.0
MAX_DELAY = 30.0  # under the lease, so the sender renews it in time


def alert_json(alert: Alert) -> dict[str, Any]:
    """An alert as the API and the webhook show it."""

    def iso(at: datetime | None) -> str | None:
        return None if at is None else at.isoformat()

    return {
        "id": alert.id,
        "rule": alert.rule,
        "kind": alert.kind,
        "subject": alert.subject,
        "severity": alert.severity,
        "state": alert.state.value,
        "summary": alert.summary,
        "value": alert.value,
        "threshold": alert.threshold,
        "fired_at": iso(alert.fired_at),
        "resolved_at": iso(alert.resolved_at),
        "acknowledged_at": iso(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
    }


def sign(secret: bytes, body: bytes, at: int) -> str:
    """The `Tillflow-Signature` value of `body` sent at unix second `at`."""
    digest = hmac.new(secret, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """True when `header` is a valid signature of `body` (for receivers and tests)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        at = int(parts["t"])
    except (KeyError, ValueError):
        return False
    return hmac.compare_digest(sign(secret, body, at), f"t={at},v1={parts.get('v1', '')}")


@dataclass
class Delivery:
    """One state of one alert to send, under a right to send held until `held`."""

    alert: Alert
    state: AlertState
    held: datetime


class WebhookSender:
    """Sends alert transitions to `url` on its own thread, in order, retrying with backoff."""

    def __init__(
        self,
        url: str,
        book: AlertBook,
        *,
        secret: str | None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = url
        self.book = book
        self.secret = secret.encode() if secret else None
        self.clock = clock
        self.client = httpx.Client(timeout=timeout, transport=transport)
        self.pending: queue.Queue[Delivery] = queue.Queue()
        if self.secret is None:
            log.warning("%s is not set: alert webhooks are sent unsigned", SECRET_VARIABLE)

    def submit(self, alert: Alert) -> None:
        """Deliver the alert's current state (it must hold the right to, `alert.notify_until`)."""
        if alert.notify_until is not None:
            self.pending.put(Delivery(alert, alert.state, alert.notify_until))

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="alert-webhook", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    delivery = self.pending.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.deliver(delivery, stop)
        finally:
            self.client.close()

    def deliver(self, delivery: Delivery, stop: threading.Event) -> bool:
        """Send until the receiver takes it, the right to send is lost, or `stop`; True once sent."""
        body = orjson.dumps({"alert": alert_json(delivery.alert), "state": delivery.state.value})
        delay = BASE_DELAY
        while not stop.is_set():
            now = self.clock()
            until = now + LEASE
            try:
                if not self.book.claim_delivery(delivery.alert.id, now=now, until=until, held=delivery.held):
                    return False  # another process delivers this alert's newer state
                delivery.held = until
                if self._post(body):
                    self.book.record_delivery(delivery.alert.id, delivery.state, held=until)
                    return True
            except Exception:  # the state store away: try again, the lease still runs
                log.exception("alert %s: could not deliver to the webhook", delivery.alert.id)
            stop.wait(delay)
            delay = min(delay * 2, MAX_DELAY)
        return False

    def _post(self, body: bytes) -> bool:
        headers = {"content-type": "application/json"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, int(time.time()))
        try:
            answer = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("alert webhook %s unreachable: %s", self.url, exc)
            return False
        if answer.is_success:
            return True
        log.warning("alert webhook %s answered %s", self.url, answer.status_code)
        return False
