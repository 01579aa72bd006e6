"""The event log on NATS JetStream: `JetStreamEventLog` (the distributed deployment).

Events are messages of one stream on `tillflow.events.<partitionkey>`; the CloudEvents
attributes travel as `ce-*` headers and the data as the payload. The stream sequence is the
event's seq. Dedupe is two-layered: the state store's `events` table (unique source+id, kept
as long as the events are retained, so a till resending after days offline is still judged a
repeat) and JetStream's `Nats-Msg-Id` window (a publish repeated because the state store did
not commit is dropped by the server). The publish happens inside the state store transaction,
so stream order equals commit order, and an event is never committed without being published.

A consumer group is a durable pull consumer with explicit acks and unlimited deliveries (the
runner decides when to dead-letter). JetStream has no dead-letter queue: a second stream,
`<stream>_DLQ`, keeps each dead letter whole (payload, headers, group, attempts, reason,
original seq); a replay republishes it on `tillflow.replay.<group>`, which only that group's
consumer reads. Operator actions and failure streaks live in the state store, as with the SQL log,
and so does each retry a group scheduled (nak'ed) until it is settled: retention that would drop
its message turns it into a dead letter first, and a group's position counts it as handed over,
as the SQL log does. A position is otherwise the consumer's ack floor, never mere delivery.

nats-py is asyncio; this class is a synchronous facade over a private event loop running in a
daemon thread. Every port method runs one coroutine there and waits for it. One instance may be
shared by threads, but a group is fetched by one thread of an instance at a time: a fetch hands
back (naks) what the same instance fetched for that group and never settled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import threading
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from tillflow.bus.jetstream_state import StreamState
from tillflow.bus.jetstream_wire import (
    DLQ,
    EVENTS,
    NS,
    REPLAY,
    JetStreamApiError,
    Publisher,
    dead_letter_of,
    encode_header,
    headers_of,
    logged_of,
    nanos,
    now_us,
    rfc3339,
    stored_event,
)
from tillflow.bus.sql import describe_selection
from tillflow.errors import EventLogError, StorageError
from tillflow.model import CloudEvent, LoggedEvent
from tillflow.ports import AuditEntry, DeadLetter, DeadLetterSelection, GroupState
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.outbox import append_in
from tillflow.storage.sql import from_us, to_us
from tillflow.storage.tables import consumer_groups

T = TypeVar("T")

_GROUP = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_TRIM_PREFIX = "tf_trim_"  # throwaway consumers of trim_events, not consumer groups


class JetStreamEventLog:
    """The EventLog port on NATS JetStream, with durable dedupe and audit in a SQL state store."""

    def __init__(
        self,
        servers: list[str],
        engine: Engine,
        *,
        stream: str = "TILLFLOW",
        replicas: int = 1,
        max_age: timedelta | None = None,
        max_msgs: int | None = None,
        duplicate_window: timedelta = timedelta(minutes=2),
        ack_wait: timedelta = timedelta(seconds=30),
        connect_timeout: float = 3.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.engine = engine
        self.stream = stream
        self.dlq_stream = f"{stream}_DLQ"
        self._servers = list(servers)
        self._state = StreamState(engine, stream)  # what JetStream does not keep
        self._ack_wait = ack_wait
        self._timeout = request_timeout
        self._held: dict[tuple[str, int, bool], list[Msg]] = {}  # fetched, not yet settled (loop thread only)
        self._consumers: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"jetstream-{stream}", daemon=True
        )
        self._thread.start()
        self._nc = Client()
        self._js: JetStreamContext | None = None
        stream_config: dict[str, Any] = {
            "name": stream,
            "subjects": [f"{EVENTS}.>", f"{REPLAY}.>"],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": replicas,
            "max_age": nanos(max_age) if max_age else 0,
            "max_msgs": max_msgs or -1,
            "duplicate_window": nanos(duplicate_window),
        }
        dlq_config = {
            "name": self.dlq_stream,
            "subjects": [f"{DLQ}.>"],
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
        }
        try:
            self._run(self._connect(connect_timeout), timeout=connect_timeout + request_timeout)
            self._run(self._ensure_stream(stream_config))
            self._run(self._ensure_stream(dlq_config))
        except BaseException:
            self.close()
            raise

    # -- the loop ----------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout if timeout is not None else self._timeout * 3)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise EventLogError(f"JetStream did not answer in time ({', '.join(self._servers)})") from exc
        except (TimeoutError, nats.errors.Error, JetStreamError, OSError) as exc:
            raise EventLogError(f"JetStream request failed: {type(exc).__name__}: {exc}") from exc

    async def _connect(self, connect_timeout: float) -> None:
        async def quiet(_exc: Exception) -> None:  # reconnects are logged by nats-py; keep stderr clean
            return None

        try:
            await asyncio.wait_for(
                self._nc.connect(
                    servers=self._servers,
                    connect_timeout=max(1, int(connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    error_cb=quiet,
                    pending_size=64 * 1024 * 1024,
                ),
                timeout=connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self._nc.close()
            raise EventLogError(
                f"cannot connect to NATS at {', '.join(self._servers)}: {type(exc).__name__} {exc}".strip()
            ) from exc
        self._js = self._nc.jetstream(timeout=self._timeout)
        self._publisher = Publisher(self._nc, self._timeout)
        await self._publisher.start()

    def close(self) -> None:
        """Disconnect (what was fetched and not settled is delivered again after ack_wait)."""
        if not self._loop.is_running():
            return
        with contextlib.suppress(Exception):  # closing is best effort
            asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(self._timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout)
        self._loop.close()

    async def _api(self, what: str, subject: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = orjson.dumps(request) if request is not None else b""
        try:
            msg = await self._nc.request(f"$JS.API.{subject}", payload, timeout=self._timeout)
        except nats.errors.NoRespondersError as exc:
            raise EventLogError(f"{what}: JetStream is not enabled on {', '.join(self._servers)}") from exc
        body: dict[str, Any] = orjson.loads(msg.data)
        error = body.get("error")
        if error:
            raise JetStreamApiError(
                what, error.get("code", 0), error.get("err_code", 0), error["description"]
            )
        return body

    async def _ensure_stream(self, config: dict[str, Any]) -> None:
        try:
            await self._api("creating a stream", f"STREAM.CREATE.{config['name']}", config)
        except JetStreamApiError as exc:
            if exc.err_code != 10058:  # it exists with other settings: use it as it is
                raise

    # -- the consumer's side -------------------------------------------------------------------

    def append_events(self, events_: Sequence[CloudEvent]) -> list[int | None]:
        if not events_:
            return []
        try:
            with write_tx(self.engine) as conn:
                logged = append_in(conn, events_, logged_us=now_us())
                fresh = [e for e, seq in zip(events_, logged, strict=True) if seq is not None]
                # published before the commit: a failed publish rolls the append back, and a commit
                # lost after the publish makes the resend a repeat that Nats-Msg-Id drops
                seqs = iter(self._run(self._publish(fresh)) if fresh else [])
        except (StorageError, SQLAlchemyError) as exc:
            raise EventLogError(f"append failed: {exc}") from exc
        return [None if seq is None else next(seqs) for seq in logged]

    def publish_events(self, events_: Sequence[CloudEvent]) -> list[int]:
        """Publish events the state store has already logged (the outbox relay): JetStream's
        Nats-Msg-Id drops what a crashed relay publishes twice; returns stream sequences."""
        return self._run(self._publish(list(events_))) if events_ else []

    async def _publish(self, fresh: list[CloudEvent]) -> list[int]:
        acks = await self._publisher.publish(
            [
                (
                    f"{EVENTS}.{e.partitionkey or '_'}",
                    e.data,
                    headers_of(e) | {"Nats-Msg-Id": f"{e.source} {e.id}"},
                )
                for e in fresh
            ]
        )
        seqs = [int(a["seq"]) for a in acks]
        repeated = [i for i, a in enumerate(acks) if a.get("duplicate")]
        if repeated:  # a repeat inside the dedupe window of an event retention since dropped: log it anew
            first = (await self._stream_state(self.stream))["first_seq"]
            again = [i for i in repeated if seqs[i] < first]
            fresh_acks = await self._publisher.publish(
                [
                    (
                        f"{EVENTS}.{fresh[i].partitionkey or '_'}",
                        fresh[i].data,
                        headers_of(fresh[i])
                        | {"Nats-Msg-Id": f"{fresh[i].source} {fresh[i].id} {time.time_ns()}"},
                    )
                    for i in again
                ]
            )
            for i, ack in zip(again, fresh_acks, strict=True):
                seqs[i] = int(ack["seq"])
        return seqs

    def fetch_batch(self, group: str, *, limit: int) -> list[LoggedEvent]:
        _check_group(group)
        return self._run(self._fetch(group, limit))

    async def _fetch(self, group: str, limit: int) -> list[LoggedEvent]:
        await self._ensure_consumer(group)
        unsettled = [m for (g, _, _), msgs in self._held.items() if g == group for m in msgs]
        if unsettled:  # fetched before and never settled: hand them back first
            self._held = {k: v for k, v in self._held.items() if k[0] != group}
            await self._settle(unsettled, b"-NAK")
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        batch: list[LoggedEvent] = []
        try:
            request = {"batch": limit, "no_wait": True}
            await self._nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{group}", orjson.dumps(request), reply=inbox
            )
            deadline = self._loop.time() + self._timeout
            while len(batch) < limit:
                try:
                    msg = await sub.next_msg(timeout=max(0.001, deadline - self._loop.time()))
                except nats.errors.TimeoutError:
                    self._consumers.discard(group)  # no answer at all: check the consumer next time
                    break
                status = (msg.headers or {}).get("Status")
                if status == "100":  # heartbeat
                    continue
                if status:  # 404 no messages, 408 request expired, 409 consumer gone or too much pending
                    if status == "409" or status == "503":
                        self._consumers.discard(group)
                    break
                logged = logged_of(msg)
                self._held.setdefault((group, logged.seq, logged.replayed), []).append(msg)
                batch.append(logged)
        finally:
            await sub.unsubscribe()
        return batch

    async def _ensure_consumer(self, group: str) -> None:
        if group in self._consumers:
            return
        try:
            await self._api("reading a consumer", f"CONSUMER.INFO.{self.stream}.{group}")
        except JetStreamApiError as exc:
            if exc.code != 404:
                raise
            await self._create_consumer(group, {"deliver_policy": "all"})
        self._consumers.add(group)

    async def _create_consumer(self, group: str, start: dict[str, Any]) -> dict[str, Any]:
        config = {
            "durable_name": group,
            "ack_policy": "explicit",
            "ack_wait": nanos(self._ack_wait),
            "max_deliver": -1,
            "max_ack_pending": -1,
            "filter_subjects": [f"{EVENTS}.>", f"{REPLAY}.{group}"],
            "replay_policy": "instant",
        } | start
        return await self._api(
            f"creating consumer {group}",
            f"CONSUMER.CREATE.{self.stream}.{group}",
            {"stream_name": self.stream, "config": config},
        )

    async def _settle(self, msgs: Sequence[Msg], verdict: bytes) -> None:
        """Send `verdict` for each message; wait until the server has applied the last one (it
        applies one connection's acks in order), so the next fetch or position sees them all."""
        if not msgs:
            return
        for msg in msgs[:-1]:
            await self._nc.publish(msg.reply, verdict)
        await self._nc.request(msgs[-1].reply, verdict, timeout=self._timeout)

    def _take(self, group: str, settled: Sequence[LoggedEvent]) -> list[Msg]:
        return [m for e in settled for m in self._held.pop((group, e.seq, e.replayed), [])]

    def ack_events(self, group: str, events_: Sequence[LoggedEvent]) -> None:
        if not events_:
            return
        retried = self._stream_seqs(group, [e for e in events_ if e.redelivered])

        async def ack() -> None:
            await self._settle(self._take(group, events_), b"+ACK")

        self._run(ack())
        self._state.forget_retries(group, retried)
        self._state.clear_failures(group)

    def _stream_seqs(self, group: str, fetched: Sequence[LoggedEvent]) -> list[int]:
        """Where the messages of fetched events sit in the stream (a replay's differs from its seq)."""
        return [
            int(m.metadata.sequence.stream)
            for e in fetched
            for m in self._held.get((group, e.seq, e.replayed), [])
        ]

    def nak_event(self, group: str, event: LoggedEvent, *, delay: float, error: str) -> None:
        verdict = b"-NAK" if delay <= 0 else b"-NAK " + orjson.dumps({"delay": int(delay * NS)})
        seqs = self._stream_seqs(group, [event])

        async def nak() -> bool:
            msgs = self._take(group, [event])
            if seqs and not any([await self._stream_message(seq) for seq in seqs]):
                # retention dropped it while it was in flight: keep it as a dead letter
                reason = f"retention dropped the event while it was retried; error: {error}"
                await self._publish_dead_letter(group, event, event.attempt, reason)
                await self._settle(msgs, b"+TERM")
                return False
            await self._settle(msgs, verdict)
            return True

        if self._run(nak()):
            self._state.remember_retries(group, seqs, event.attempt, error)
        else:
            self._state.forget_retries(group, seqs)

    def dead_letter(self, group: str, event: LoggedEvent, *, reason: str) -> None:
        seqs = self._stream_seqs(group, [event])

        async def dead() -> None:
            await self._publish_dead_letter(group, event, event.attempt, reason)
            await self._settle(self._take(group, [event]), b"+TERM")

        self._run(dead())
        self._state.forget_retries(group, seqs)
        self._state.clear_failures(group)

    async def _publish_dead_letter(self, group: str, event: LoggedEvent, attempts: int, reason: str) -> None:
        assert self._js is not None
        headers = headers_of(event.event) | {
            "tf-group": group,
            "tf-attempts": str(attempts),
            "tf-reason": encode_header(reason[:4000]),
            "tf-original-seq": str(event.seq),
            "tf-dead-at": str(now_us()),
        }
        await self._js.publish(f"{DLQ}.{group}", event.event.data, headers=headers)

    async def _stream_message(self, seq: int) -> dict[str, Any] | None:
        """The stored message at `seq` of the event stream, None when retention dropped it."""
        try:
            body = await self._api("reading a message", f"STREAM.MSG.GET.{self.stream}", {"seq": seq})
        except JetStreamApiError as exc:
            if exc.code == 404:
                return None
            raise
        message: dict[str, Any] = body["message"]
        return message

    def record_failure(self, group: str, error: str) -> None:
        self._state.record_failure(group, error)

    # -- positions -------------------------------------------------------------------------------

    def read_position(self, group: str) -> int:
        _check_group(group)

        async def consumer() -> dict[str, Any] | None:
            try:
                return await self._api("reading a consumer", f"CONSUMER.INFO.{self.stream}.{group}")
            except JetStreamApiError as exc:
                if exc.code == 404:
                    return None
                raise

        info = self._run(consumer())
        return _position(info, self._state.retry_counts().get(group, 0)) if info else 0

    def read_head(self) -> int:
        return int(self._run(self._stream_state(self.stream))["last_seq"])

    async def _stream_state(self, stream: str, subjects: str | None = None) -> dict[str, Any]:
        request = {"subjects_filter": subjects} if subjects else None
        info = await self._api("reading a stream", f"STREAM.INFO.{stream}", request)
        state: dict[str, Any] = info["state"]
        return state

    def read_groups(self) -> dict[str, GroupState]:
        consumers, dead, head = self._run(self._read_groups())
        retrying = self._state.retry_counts()
        try:
            with read_tx(self.engine) as conn:
                rows = {r.group_name: r for r in conn.execute(select(consumer_groups))}
        except StorageError as exc:
            raise EventLogError(f"reading failure streaks failed: {exc}") from exc
        out: dict[str, GroupState] = {}
        for name in sorted(set(consumers) | set(rows)):
            info, row = consumers.get(name), rows.get(name)
            count, oldest = dead.get(name, (0, None))
            out[name] = GroupState(
                position=_position(info, retrying.get(name, 0)) if info else 0,
                lag=_lag(info, retrying.get(name, 0)) if info else head,
                pending=int(info["num_ack_pending"]) if info else 0,
                dead_letters=count,
                oldest_dead_letter_at=oldest,
                failures=row.failures if row else 0,
                last_error=row.last_error if row else None,
                last_error_at=from_us(row.last_error_us) if row and row.last_error_us else None,
            )
        return out

    async def _read_groups(
        self,
    ) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[int, datetime | None]], int]:
        consumers: dict[str, dict[str, Any]] = {}
        while True:
            page = await self._api(
                "listing consumers", f"CONSUMER.LIST.{self.stream}", {"offset": len(consumers)}
            )
            for info in page.get("consumers") or []:
                consumers[info["name"]] = info
            if not page.get("consumers") or len(consumers) >= page.get("total", 0):
                break
        consumers = {k: v for k, v in consumers.items() if not k.startswith(_TRIM_PREFIX)}
        state = await self._stream_state(self.dlq_stream, f"{DLQ}.>")
        dead: dict[str, tuple[int, datetime | None]] = {}
        for subject, count in (state.get("subjects") or {}).items():
            group = subject.removeprefix(f"{DLQ}.")
            first = await self._next_dead_letter(1, subject)
            dead[group] = (int(count), first.dead_at if first else None)
        return consumers, dead, int((await self._stream_state(self.stream))["last_seq"])

    # -- dead letters ----------------------------------------------------------------------------

    async def _next_dead_letter(self, seq: int, subject: str) -> DeadLetter | None:
        try:
            body = await self._api(
                "reading a dead letter",
                f"STREAM.MSG.GET.{self.dlq_stream}",
                {"seq": seq, "next_by_subj": subject},
            )
        except JetStreamApiError as exc:
            if exc.code == 404:
                return None
            raise
        return dead_letter_of(body["message"])

    async def _get_dead_letter(self, seq: int) -> DeadLetter | None:
        try:
            body = await self._api("reading a dead letter", f"STREAM.MSG.GET.{self.dlq_stream}", {"seq": seq})
        except JetStreamApiError as exc:
            if exc.code == 404:
                return None
            raise
        return dead_letter_of(body["message"])

    async def _select(self, selection: DeadLetterSelection, limit: int | None = None) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        if selection.ids:
            for seq in sorted(set(selection.ids)):
                dl = await self._get_dead_letter(seq)
                if dl is not None:
                    found.append(dl)
        else:
            subject = f"{DLQ}.{selection.group}" if selection.group is not None else f"{DLQ}.>"
            seq = 1
            while limit is None or len(found) < limit:
                dl = await self._next_dead_letter(seq, subject)
                if dl is None:
                    break
                found.append(dl)
                seq = dl.id + 1
        return [
            d
            for d in found
            if (selection.group is None or d.group == selection.group)
            and (not selection.reason_contains or selection.reason_contains.casefold() in d.reason.casefold())
        ][:limit]

    def list_dead_letters(
        self, *, group: str | None = None, ids: Sequence[int] = (), limit: int = 100
    ) -> list[DeadLetter]:
        return self._run(self._select(DeadLetterSelection(group=group, ids=tuple(ids)), limit))

    def replay_dead_letters(self, selection: DeadLetterSelection, *, actor: str, why: str) -> int:
        async def replay() -> list[DeadLetter]:
            assert self._js is not None
            chosen = await self._select(selection)
            for dl in chosen:
                headers = headers_of(dl.event.event) | {
                    "tf-original-seq": str(dl.event.seq),
                    "Nats-Msg-Id": f"replay {self.dlq_stream} {dl.id} {to_us(dl.dead_at)}",
                }
                await self._js.publish(f"{REPLAY}.{dl.group}", dl.event.event.data, headers=headers)
                await self._delete_dead_letter(dl.id)
            return chosen

        chosen = self._run(replay())
        detail = describe_selection(selection, [d.id for d in chosen])
        self._state.audit("replay-dead-letters", selection.group, len(chosen), actor, why, detail)
        return len(chosen)

    def purge_dead_letters(self, selection: DeadLetterSelection, *, actor: str, why: str) -> int:
        async def purge() -> list[DeadLetter]:
            chosen = await self._select(selection)
            for dl in chosen:
                await self._delete_dead_letter(dl.id)
            return chosen

        chosen = self._run(purge())
        detail = describe_selection(selection, [d.id for d in chosen])
        self._state.audit("purge-dead-letters", selection.group, len(chosen), actor, why, detail)
        return len(chosen)

    async def _delete_dead_letter(self, seq: int) -> None:
        await self._api(
            "deleting a dead letter", f"STREAM.MSG.DELETE.{self.dlq_stream}", {"seq": seq, "no_erase": True}
        )

    # -- operators -------------------------------------------------------------------------------

    def reset_group(
        self, group: str, *, from_seq: int | None = None, since: datetime | None = None, actor: str, why: str
    ) -> int:
        if (from_seq is None) == (since is None):
            raise ValueError("reset a group from a sequence or from a time, one of the two")
        _check_group(group)
        if from_seq is not None:
            start: dict[str, Any] = {"deliver_policy": "by_start_sequence", "opt_start_seq": max(1, from_seq)}
            detail = f"from seq {from_seq}"
        else:
            assert since is not None
            start = {"deliver_policy": "by_start_time", "opt_start_time": rfc3339(since)}
            detail = f"since {since.isoformat()}"

        async def reset() -> int:
            try:
                await self._api("deleting a consumer", f"CONSUMER.DELETE.{self.stream}.{group}")
            except JetStreamApiError as exc:
                if exc.code != 404:
                    raise
            self._held = {k: v for k, v in self._held.items() if k[0] != group}
            info = await self._create_consumer(group, start)
            self._consumers.add(group)
            return _position(info, 0)

        position = self._run(reset())
        self._state.forget_retries(group)
        self._state.clear_failures(group)
        self._state.audit("reset-group", group, 1, actor, why, f"{detail}: position {position}")
        return position

    def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        return self._state.list_audit(limit=limit)

    def trim_events(self, *, max_age: timedelta | None = None, max_events: int | None = None) -> int:
        cutoff = datetime.now(UTC) - max_age if max_age is not None else None

        retries = self._state.retries()

        async def trim() -> tuple[int, list[int]]:
            kept = [(r, await self._stream_message(r.stream_seq)) for r in retries]
            purged = await purge()
            buried = []
            for retry, message in kept:
                if message is not None and await self._stream_message(retry.stream_seq) is None:
                    # a retry pending when retention dropped its event: keep it as a dead letter
                    reason = (
                        "retention dropped the event while a retry was pending;"
                        f" last error: {retry.last_error}"
                    )
                    await self._publish_dead_letter(
                        retry.group_name, stored_event(message), retry.attempts, reason
                    )
                    buried.append(retry.stream_seq)
            return purged, buried

        async def purge() -> int:
            purged = 0
            if max_events is not None:  # count events, not replays
                request: dict[str, Any] = {"filter": f"{EVENTS}.>"}
                if max_events > 0:
                    request["keep"] = max_events
                body = await self._api("trimming the log", f"STREAM.PURGE.{self.stream}", request)
                purged += int(body.get("purged", 0))
            if cutoff is not None:
                first_kept = await self._first_seq_since(cutoff)
                body = await self._api("trimming the log", f"STREAM.PURGE.{self.stream}", {"seq": first_kept})
                purged += int(body.get("purged", 0))
            return purged

        dropped, buried = self._run(trim())
        self._state.forget_retries(None, buried)
        self._state.forget_trimmed(cutoff, max_events)
        return dropped

    async def _first_seq_since(self, since: datetime) -> int:
        """The first sequence logged at or after `since` (the head + 1 when none): a throwaway
        consumer starting by time is how JetStream answers that."""
        name = f"{_TRIM_PREFIX}{time.time_ns()}"
        info = await self._api(
            "finding where to trim",
            f"CONSUMER.CREATE.{self.stream}.{name}",
            {
                "stream_name": self.stream,
                "config": {
                    "name": name,
                    "deliver_policy": "by_start_time",
                    "opt_start_time": rfc3339(since),
                    "ack_policy": "none",
                    "mem_storage": True,
                    "inactive_threshold": nanos(timedelta(seconds=30)),
                },
            },
        )
        await self._api("finding where to trim", f"CONSUMER.DELETE.{self.stream}.{name}")
        return int(info["delivered"]["stream_seq"]) + 1


def _position(info: dict[str, Any], retrying: int) -> int:
    """A group's position, as the SQL log counts it: how far it was delivered when everything
    delivered and not acked is a retry the group scheduled (nak'ed, tracked until settled);
    otherwise the ack floor, so an event fetched and not yet handled is not counted as done."""
    if int(info["num_ack_pending"]) <= retrying:
        return int(info["delivered"]["stream_seq"])
    return int(info["ack_floor"]["stream_seq"])


def _lag(info: dict[str, Any], retrying: int) -> int:
    """Events not yet handled, counted like the position: never delivered, plus (when the
    position is the ack floor) delivered and not settled."""
    unsettled = int(info["num_ack_pending"])
    return int(info["num_pending"]) + (unsettled if unsettled > retrying else 0)


def _check_group(group: str) -> None:
    if not _GROUP.match(group):
        raise EventLogError(f"consumer group name {group!r} must be 1-100 of A-Z a-z 0-9 _ -")
