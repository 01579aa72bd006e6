"""How tillflow's events travel on NATS: subjects, CloudEvents headers, messages read back, and
pipelined acknowledged publishes. Pure mapping plus one small publisher; the log is in jetstream.py."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from tillflow.errors import EventLogError
from tillflow.model import CloudEvent, LoggedEvent
from tillflow.ports import DeadLetter
from tillflow.storage.sql import from_us, to_us

EVENTS = "tillflow.events"
REPLAY = "tillflow.replay"
DLQ = "tillflow.dlq"
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")  # CE HTTP binding: %-encode the rest
_CE = ("id", "source", "type", "specversion", "time", "subject", "partitionkey", "sequence", "traceparent")
NS = 1_000_000_000


class JetStreamApiError(EventLogError):
    """Raised when the JetStream API answers a request with an error (its code is kept)."""

    def __init__(self, what: str, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{what}: {description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code


class Publisher:
    """Pipelined acknowledged publishes: every message goes out at once with its own reply
    subject under one wildcard subscription, then the server's acks are awaited together
    (nats-py's publish_async spends more on its per-message bookkeeping than on the wire)."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._count = 0
        self._waiting: dict[str, asyncio.Future[Msg]] = {}

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox()
        await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, messages: Sequence[tuple[str, bytes, dict[str, str]]]) -> list[dict[str, Any]]:
        """Publish each (subject, payload, headers); returns the stream's acks, in order."""
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        futures: list[asyncio.Future[Msg]] = []
        try:
            for subject, payload, headers in messages:
                self._count += 1
                token = str(self._count)
                future: asyncio.Future[Msg] = loop.create_future()
                self._waiting[token] = future
                tokens.append(token)
                futures.append(future)
                await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
            replies = await asyncio.wait_for(asyncio.gather(*futures), self._timeout)
        finally:
            for token in tokens:
                self._waiting.pop(token, None)
        acks = []
        for reply in replies:
            status = (reply.headers or {}).get("Status")
            if status == "503":
                raise EventLogError("publishing: no stream takes these subjects (JetStream answered 503)")
            ack: dict[str, Any] = orjson.loads(reply.data)
            error = ack.get("error")
            if error:
                raise JetStreamApiError(
                    "publishing", error.get("code", 0), error.get("err_code", 0), error["description"]
                )
            acks.append(ack)
        return acks


def headers_of(event: CloudEvent) -> dict[str, str]:
    values = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "specversion": event.specversion,
        "time": event.time.isoformat(),
        "subject": event.subject,
        "partitionkey": event.partitionkey,
        "sequence": event.sequence,
        "traceparent": event.traceparent,
    }
    headers = {f"ce-{k}": encode_header(v) for k, v in values.items() if v is not None}
    headers["content-type"] = event.datacontenttype
    return headers


def encode_header(value: str) -> str:
    """A header value: printable ASCII as it is, anything else %-encoded (CloudEvents HTTP binding)."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return quote(value, safe=_SAFE)


def event_of(headers: dict[str, str], data: bytes) -> CloudEvent:
    ce = {k: unquote(headers[f"ce-{k}"]) for k in _CE if f"ce-{k}" in headers}
    return CloudEvent(
        id=ce["id"],
        source=ce["source"],
        type=ce["type"],
        specversion=ce.get("specversion", "1.0"),
        datacontenttype=headers.get("content-type", "application/json"),
        time=datetime.fromisoformat(ce["time"]),
        subject=ce.get("subject"),
        partitionkey=ce.get("partitionkey"),
        sequence=ce.get("sequence"),
        traceparent=ce.get("traceparent"),
        data=bytes(data),
    )


def logged_of(msg: Msg) -> LoggedEvent:
    headers = msg.headers or {}
    meta = msg.metadata
    attempt = int(meta.num_delivered)
    replayed = msg.subject.startswith(f"{REPLAY}.")
    seq = int(headers["tf-original-seq"]) if replayed else int(meta.sequence.stream)
    return LoggedEvent(
        seq=seq,
        attempt=attempt,
        redelivered=replayed or attempt > 1,
        replayed=replayed,
        event=event_of(headers, msg.data),
    )


def stored_event(message: dict[str, Any]) -> LoggedEvent:
    """The event of a message read back from the event stream (STREAM.MSG.GET)."""
    headers = parse_headers(base64.b64decode(message.get("hdrs") or b""))
    event = event_of(headers, base64.b64decode(message.get("data") or b""))
    return LoggedEvent(seq=int(headers.get("tf-original-seq", message["seq"])), event=event)


def dead_letter_of(message: dict[str, Any]) -> DeadLetter:
    headers = parse_headers(base64.b64decode(message.get("hdrs") or b""))
    event = event_of(headers, base64.b64decode(message.get("data") or b""))
    attempts = int(headers["tf-attempts"])
    return DeadLetter(
        id=int(message["seq"]),
        group=headers["tf-group"],
        event=LoggedEvent(seq=int(headers["tf-original-seq"]), event=event, attempt=attempts),
        attempts=attempts,
        reason=unquote(headers["tf-reason"]),
        dead_at=from_us(int(headers["tf-dead-at"])),
    )


def parse_headers(raw: bytes) -> dict[str, str]:
    """A NATS header block (``NATS/1.0\\r\\nKey: value\\r\\n...``) as a dict (last value wins)."""
    headers: dict[str, str] = {}
    for line in raw.decode().split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers


def nanos(span: timedelta) -> int:
    return int(span.total_seconds() * NS)


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def now_us() -> int:
    return to_us(datetime.now(UTC))
