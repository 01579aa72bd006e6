"""The alert webhook: the body and its HMAC signature, retries until the receiver takes it, and
a delivery dropped once another process holds the right to send the alert."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from tillflow.observe import webhook
from tillflow.observe.webhook import SIGNATURE_HEADER, WebhookSender, sign, verify
from tillflow.ports import Alert, AlertState

AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
SECRET = "s3cret"


def alert(**fields: object) -> Alert:
    values: dict[str, object] = {
        "id": 7,
        "rule": "store-offline",
        "kind": "store_offline",
        "subject": "S001",
        "severity": "critical",
        "summary": "store S001 offline for 5.0 min",
        "value": 5.0,
        "threshold": 5.0,
        "fired_at": AT,
        "notify_until": AT + timedelta(minutes=2),
    }
    return Alert(**(values | fields))  # type: ignore[arg-type]


class FakeBook:
    """The delivery side of an alert book: who holds the right to send, and what was told."""

    def __init__(self, held: datetime | None) -> None:
        self.held = held
        self.told: list[tuple[int, AlertState]] = []

    def claim_delivery(
        self, alert_id: int, *, now: datetime, until: datetime, held: datetime | None = None
    ) -> bool:
        if held != self.held:
            return False
        self.held = until
        return True

    def record_delivery(self, alert_id: int, state: AlertState, *, held: datetime) -> bool:
        if held != self.held:
            return False
        self.told.append((alert_id, state))
        self.held = None
        return True


Handler = Callable[[httpx.Request], httpx.Response]


def deliver(
    book: FakeBook, handler: Handler, sent: Alert, state: AlertState, *, secret: str | None = SECRET
) -> bool:
    """Deliver `state` of `sent` as the process holding the right to send until `book.held`."""
    transport = httpx.MockTransport(handler)
    sender = WebhookSender("http://ops.example/hook", book, secret=secret, transport=transport)  # type: ignore[arg-type]
    assert book.held is not None
    return sender.deliver(webhook.Delivery(sent, state, book.held), threading.Event())


class TestSignature:
    def test_a_signature_is_the_hmac_of_time_dot_body(self) -> None:
        import hashlib
        import hmac

        expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert sign(b"k", b"{}", 1700000000) == f"t=1700000000,v1={expected}"

    def test_verify_refuses_another_body_or_secret(self) -> None:
        header = sign(b"k", b'{"a":1}', 1700000000)
        assert verify(b"k", b'{"a":1}', header)
        assert not verify(b"k", b'{"a":2}', header)
        assert not verify(b"other", b'{"a":1}', header)
        assert not verify(b"k", b'{"a":1}', "v1=abc")


class TestDelivery:
    def test_the_alert_is_posted_signed_and_recorded_as_told(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(204)

        book = FakeBook(held=AT + timedelta(minutes=2))
        done = deliver(book, handler, alert(), AlertState.FIRING)

        assert done and book.told == [(7, AlertState.FIRING)]
        [request] = seen
        body = orjson.loads(request.content)
        assert body["state"] == "firing"
        assert body["alert"]["subject"] == "S001" and body["alert"]["state"] == "firing"
        assert verify(SECRET.encode(), request.content, request.headers[SIGNATURE_HEADER])

    def test_a_failing_receiver_is_tried_again(self, monkeypatch: pytest.MonkeyPatch) -> None:
        answers = iter([httpx.Response(500), httpx.Response(503), httpx.Response(200)])
        calls = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            return next(answers)

        monkeypatch.setattr(webhook, "BASE_DELAY", 0.0)
        book = FakeBook(held=AT)
        done = deliver(book, handler, alert(resolved_at=AT + timedelta(minutes=1)), AlertState.RESOLVED)

        assert done and len(calls) == 3
        assert book.told == [(7, AlertState.RESOLVED)]

    def test_a_delivery_another_process_took_over_is_dropped(self) -> None:
        calls = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            return httpx.Response(200)

        book = FakeBook(held=AT)
        transport = httpx.MockTransport(handler)
        sender = WebhookSender("http://ops.example/hook", book, secret=SECRET, transport=transport)  # type: ignore[arg-type]
        book.claim_delivery(7, now=AT, until=AT + timedelta(hours=1), held=AT)  # by another process

        done = sender.deliver(webhook.Delivery(alert(), AlertState.FIRING, AT), threading.Event())

        assert not done and calls == [] and book.told == []

    def test_without_a_secret_it_goes_unsigned(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200)

        deliver(FakeBook(held=AT), handler, alert(), AlertState.FIRING, secret=None)

        assert SIGNATURE_HEADER not in seen[0].headers
