"""Forwarding a store's outbox to the hub, in order, and telling the hub how the store is doing.

One forwarder (one thread) per store. It reads the pending transactions oldest first and posts
them to the hub's `POST /v1/transactions` with the store's key, as the exact bytes the till sent
(`{"transactions": [<record>, ...]}`), so a resend after a lost acknowledgement is a duplicate
at the hub, never a conflict. A transaction is delivered only when the hub answers for it:

- accepted or duplicate: delivered;
- conflict: kept as `conflict` (with the reason), never sent again;
- invalid: kept as `refused` with the hub's field and reason (the agent validates as the hub
  does, so this should not happen).

Batches close at `batch` transactions, or once the oldest waiting has lingered `linger`
seconds; a batch never mixes two traces the till started (records the till sent without a
traceparent join any batch). Each batch is an `edge.forward` span (a child of the till's trace)
whose traceparent the request carries, and says in `Tillflow-Edge-Accepted` when the agent
acknowledged each record (UTC epoch microseconds, in record order). While the hub is
unreachable or answers 5xx the forwarder backs off exponentially with full jitter (at most
`backoff_cap` seconds); a 429 or 503 with `Retry-After` is waited out as said; 401/403 (the key
refused) is reported as the last error and retried later; 413 halves the batch size from then
on (a lone record the hub finds too large is kept as `refused`). New transactions wake it at
once. A day close is sent once every transaction of its store-day that was pending before it
is delivered.

A till's `loyalty_points` tender may name a grant the agent made while the hub was away (an
``OFF-...`` id, `edge.members.OfflineRedemptions`): the hub never held those points, and its
loyalty flow would refuse the sale's tender. Before such a transaction is sent, its grants are
settled with the hub (their holds made) and the tender names the hub's hold instead; those bytes
are kept in the outbox before the first send, so every send carries the same ones. While a grant
cannot be settled yet (the hub or its loyalty platform away), the transaction waits, and those
after it too (till order). A grant the hub refused (or one this agent never made) cannot be
spent: the transaction is `held` with the reason, reported as the last error, until an operator
releases it (then it is sent as the till sent it).

Every `heartbeat_seconds` it posts the store's heartbeat (`POST /v1/stores/{id}/heartbeat`);
a hub without that endpoint answers 404, which is noted once and otherwise ignored. The hub's
answer may name transactions it misses (`resend`: the gaps of the store's day closes): those
delivered and still kept are sent again; those the outbox does not hold are reported as
`missing` in the next heartbeats. Now and then it forgets delivered transactions older than the
retention.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

import tillflow
from tillflow.connectors.http import problem, problem_reason, retry_after, segment
from tillflow.edge.members import GRANT_PREFIX, OfflineRedemptions
from tillflow.edge.outbox import EntryState, OutboxEntry, OutboxStats, PendingDayClose, SQLiteOutbox
from tillflow.errors import DownstreamRejectedError, StorageError
from tillflow.model.health import MAX_ERROR_LENGTH, MAX_MISSING, StoreHeartbeat
from tillflow.observe import tracing
from tillflow.storage.sql import to_us

log = logging.getLogger(__name__)

JSON = {"content-type": "application/json"}
EDGE_ACCEPTED = "tillflow-edge-accepted"  # per record sent, when this agent acknowledged it (epoch µs)
MAX_RETRY_AFTER = 3600.0  # seconds; a longer Retry-After is taken as this
CONFLICT_REASON = "the hub holds other content for this transaction's identity"
OFFLINE_GRANT = f'"{GRANT_PREFIX}'.encode()  # a till's bytes that may name an offline grant
LOYALTY_POINTS = "loyalty_points"  # the tender kind that names a hold


class Forwarder:
    """Sends one store's outbox to the hub. `start(stop)` runs it in its own thread until
    `stop` is set (the request in flight is finished); `step()` does one round of work."""

    def __init__(
        self,
        outbox: SQLiteOutbox,
        hub_url: str,
        api_key: str,
        *,
        batch: int = 500,
        linger: float = 0.2,
        retention: timedelta = timedelta(days=7),
        heartbeat_seconds: float = 5.0,
        purge_every: float = 3600.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        grants: OfflineRedemptions | None = None,
        other_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        if batch < 1:
            raise ValueError("a batch holds at least one transaction")
        self.outbox = outbox
        self.store_id = outbox.store_id
        self.batch = batch
        self.linger = linger
        self.retention = retention
        self.heartbeat_seconds = heartbeat_seconds
        self.purge_every = purge_every
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self.client = httpx.Client(
            base_url=hub_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={
                "authorization": f"Bearer {api_key}",
                "accept": "application/json, application/problem+json",
                "user-agent": f"tillflow-edge/{tillflow.__version__}",
            },
            transport=transport,
        )
        self.rng = rng or random.Random()
        self.clock = clock  # seconds, monotonic
        self.grants = grants  # the offline grants the tills' loyalty tenders may name
        self.other_error = other_error  # what else of the store the heartbeat reports (lookups)
        # what the status and the heartbeat report
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.delivered_total = 0  # acknowledged by the hub since this forwarder started
        self.conflicts_total = 0  # of those sent, refused by the hub as conflicts
        self.clock_skew_seconds: float | None = None  # the hub's clock minus ours, as it said
        self.failures = 0  # consecutive failed exchanges
        self.resent_total = 0  # delivered transactions sent again because the hub asked
        self.missing: list[str] = []  # what the hub last asked for that the outbox does not hold
        self._limit = batch  # the batch size now: halved while the hub answers 413
        self._resume_at = clock()  # before this (by `clock`) nothing is sent: backing off
        self._heartbeat_missing = False

    # -- running -----------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run, args=(stop,), name=f"forwarder-{self.store_id}", daemon=True
        )
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """Forward until `stop` is set; whoever sets it also sets the outbox's `wake`. The
        heartbeat has a thread of its own: a batch slow to be answered never delays it, so a
        busy store does not look offline."""
        beats = threading.Thread(
            target=self._beat, args=(stop,), name=f"heartbeat-{self.store_id}", daemon=True
        )
        beats.start()
        next_purge = self.clock()
        while not stop.is_set():
            now = self.clock()
            if now >= next_purge:
                self._purge()
                next_purge = now + self.purge_every
            self.outbox.wake.clear()
            try:
                wait = self.step()
            except Exception as exc:  # the outbox failed (a full disk); keep going after a pause
                log.exception("store %s: forwarding failed", self.store_id)
                wait = self._back_off(f"forwarding failed: {type(exc).__name__}: {exc}")
            until_purge = max(0.0, next_purge - self.clock())
            if wait is None:
                self.outbox.wake.wait(until_purge)
            elif wait > 0:
                stop.wait(min(wait, until_purge))
        beats.join(timeout=10)

    def _beat(self, stop: threading.Event) -> None:
        """A heartbeat now and every `heartbeat_seconds` until `stop`."""
        while True:
            try:
                self.send_heartbeat()
            except Exception:  # a heartbeat that fails must not end the beats
                log.exception("store %s: the heartbeat failed", self.store_id)
            if stop.wait(self.heartbeat_seconds):
                return

    def close(self) -> None:
        self.client.close()

    def step(self) -> float | None:
        """One round: send the day closes now due, else a batch. Returns how long to wait
        before the next round: 0 when more may be waiting, the pause when backing off or
        lingering, None when there is nothing to send."""
        now = self.clock()
        if now < self._resume_at:
            return self._resume_at - now
        due = self.outbox.due_day_closes()
        if due:
            return self._send_day_closes(due)
        entries = self.outbox.pending(self._limit)
        if not entries:
            return None
        if len(entries) < self._limit and self.linger > 0:
            age = (datetime.now(UTC) - entries[0].received_at).total_seconds()
            if 0 <= age < self.linger:
                return self.linger - age  # let the batch fill a little longer
        run, traceparent = _one_trace(entries)
        ready, wait = self._spend_grants(run)
        if wait is not None:
            return wait
        if not ready:
            return 0.0  # every one was held: look at the next ones
        return self._send_batch(ready, traceparent)

    # -- offline grants ----------------------------------------------------------------------

    def _spend_grants(self, run: list[OutboxEntry]) -> tuple[list[OutboxEntry], float | None]:
        """The leading entries of `run` that can be sent now, each naming the hub's holds in
        place of its offline grants; those held are left out. When one must wait for its grants
        to be settled, the entries before it go (None), or, when it is the first, the pause."""
        ready: list[OutboxEntry] = []
        for entry in run:
            if entry.sent_data is not None or OFFLINE_GRANT not in entry.data:
                ready.append(entry)
                continue
            grant_ids = offline_grants(entry.data)
            if not grant_ids:
                ready.append(entry)
                continue
            spent = self._settle_grants(entry, grant_ids)
            if isinstance(spent, OutboxEntry):
                ready.append(spent)
            elif spent is not None:  # why it waits
                return ready, None if ready else self._back_off(spent)
        return ready, None

    def _settle_grants(self, entry: OutboxEntry, grant_ids: list[str]) -> OutboxEntry | str | None:
        """The entry with the hub's hold in place of each offline grant it names (those bytes
        kept); or why it must wait (a grant not settled yet); or None: it is held."""
        holds: dict[str, str] = {}
        for grant_id in grant_ids:
            grant = None if self.grants is None else self.grants.find_grant(grant_id)
            if grant is not None and grant.store_id != self.store_id:
                grant = None  # another store's: not this till's to spend
            if grant is not None and grant.state == "pending":
                assert self.grants is not None
                try:
                    settlement = self.grants.settle(self.client, store_id=self.store_id)
                except DownstreamRejectedError as exc:
                    return f"cannot settle offline grant {grant_id}: {exc}"
                grant = self.grants.find_grant(grant_id)
                if grant is None or grant.state == "pending":
                    said = settlement.error or "the hub did not settle it"
                    return f"offline grant {grant_id} is not settled yet: {said}"
            if grant is None:
                why = f"its loyalty tender names {grant_id}, not a grant of this agent to {self.store_id}"
            elif grant.state == "unsettled_refused" or grant.hold_id is None:
                why = (
                    f"the hub refused offline grant {grant_id} ({grant.points} points of {grant.member_id}):"
                    f" {grant.reason}"
                )
            else:
                holds[grant_id] = grant.hold_id
                continue
            reason = f"{why}; release it to send it as the till did"
            if self.outbox.hold(entry.transaction_id, reason):
                log.error("store %s: %s held: %s", self.store_id, entry.transaction_id, reason)
            return None
        data = self.outbox.keep_sent_data(entry.transaction_id, with_holds(entry.data, holds))
        return replace(entry, sent_data=data)

    # -- transactions ------------------------------------------------------------------------

    def _send_batch(self, run: list[OutboxEntry], traceparent: str | None) -> float:
        body = orjson.dumps({"transactions": [orjson.Fragment(e.to_send) for e in run]})
        ids = [e.transaction_id for e in run]
        # when each record was acknowledged here: the hub shows it as the edge.accepted hop
        accepted = ",".join(str(to_us(e.received_at)) for e in run)
        attributes: dict[str, str | int] = {"tillflow.store_id": self.store_id, "tillflow.records": len(run)}
        with tracing.span(
            "edge.forward", kind=tracing.SpanKind.CLIENT, parent=traceparent, attributes=attributes
        ) as span:
            # the hub's ingest span is a child of this one (or, without tracing, of the till's)
            sent = span.traceparent or traceparent
            headers = JSON | {EDGE_ACCEPTED: accepted} | ({"traceparent": sent} if sent else {})
            try:
                answer = self.client.post("/v1/transactions", content=body, headers=headers)
            except httpx.HTTPError as exc:
                span.fail(type(exc).__name__)
                return self._failed(ids, f"the hub is unreachable: {type(exc).__name__}: {exc}")
            span.set("http.response.status_code", answer.status_code)
            if answer.status_code != 200:
                span.fail(f"HTTP {answer.status_code}")
        status = answer.status_code
        if status == 200:
            try:
                results = _results(answer, len(run))
            except ValueError as exc:
                return self._failed(ids, f"unreadable answer from the hub: {exc}")
            self._settle(run, results)
            return 0.0
        if status == 413:
            if len(run) > 1:
                self._limit = max(1, len(run) // 2)
                log.warning("store %s: %d records too large for the hub; halving", self.store_id, len(run))
                return 0.0
            reason = f"too large for the hub: {problem_reason(answer)}"
            self._limit = self.batch  # the record was too large, not the batches
            self.outbox.mark_failed(run[0].transaction_id, EntryState.REFUSED, reason)
            log.error("store %s: %s refused: %s", self.store_id, run[0].transaction_id, reason)
            return 0.0
        return self._failed(ids, _failure(answer), answer)

    def _settle(self, run: Sequence[OutboxEntry], results: list[dict[str, Any]]) -> None:
        delivered: list[str] = []
        for entry, result in zip(run, results, strict=True):
            status = result.get("status")
            if status in ("accepted", "duplicate"):
                delivered.append(entry.transaction_id)
            elif status == "conflict":
                self.outbox.mark_failed(entry.transaction_id, EntryState.CONFLICT, CONFLICT_REASON)
                self.conflicts_total += 1
                log.error("store %s: %s is a conflict at the hub", self.store_id, entry.transaction_id)
            else:  # invalid: the hub judged what the agent accepted differently
                errors = [e for e in result.get("errors") or [] if isinstance(e, dict)]
                said = "; ".join(f"{e.get('field')}: {e.get('reason')}" for e in errors)
                reason = f"the hub refused it as {status}: {said or 'no reason given'}"
                self.outbox.mark_failed(entry.transaction_id, EntryState.REFUSED, reason)
                log.error("store %s: %s %s", self.store_id, entry.transaction_id, reason)
        self.delivered_total += self.outbox.mark_delivered(delivered)
        self._succeeded()

    # -- day closes --------------------------------------------------------------------------

    def _send_day_closes(self, due: Sequence[PendingDayClose]) -> float:
        for close in due:
            wait = self._send_day_close(close)
            if wait:
                return wait
        return 0.0

    def _send_day_close(self, close: PendingDayClose) -> float:
        day = close.business_day
        try:
            answer = self.client.post("/v1/day-closes", content=close.data, headers=JSON)
        except httpx.HTTPError as exc:
            error = f"the hub is unreachable: {type(exc).__name__}: {exc}"
            self.outbox.mark_day_close(day, EntryState.PENDING, error)
            return self._back_off(error)
        status = answer.status_code
        if status in (200, 201):
            self.outbox.mark_day_close(day, EntryState.DELIVERED)
            self._succeeded()
            return 0.0
        if status in (400, 409, 422):
            state = EntryState.CONFLICT if status == 409 else EntryState.REFUSED
            reason = problem_reason(answer)
            self.outbox.mark_day_close(day, state, reason)
            log.error("store %s: day close of %s refused (%d): %s", self.store_id, day, status, reason)
            return 0.0
        error = _failure(answer)
        self.outbox.mark_day_close(day, EntryState.PENDING, error)
        return self._back_off(error, answer)

    # -- failures ----------------------------------------------------------------------------

    def _failed(self, ids: Sequence[str], error: str, answer: httpx.Response | None = None) -> float:
        try:
            self.outbox.note_attempt(ids, error)
        except StorageError as exc:
            log.error("store %s: cannot note the failed attempt: %s", self.store_id, exc)
        return self._back_off(error, answer)

    def _back_off(self, error: str, answer: httpx.Response | None = None) -> float:
        """Note the error and pause: the hub's Retry-After (429, 503), else exponential backoff
        with full jitter."""
        if error != self.last_error:
            log.warning("store %s: %s", self.store_id, error)
        self.last_error = error
        self.last_error_at = datetime.now(UTC)
        self.failures += 1
        said = retry_after(answer) if answer is not None and answer.status_code in (429, 503) else None
        if said is not None:
            delay = min(said, MAX_RETRY_AFTER)
        else:
            ceiling = self.backoff_base * 2 ** min(self.failures - 1, 30)
            delay = self.rng.uniform(0, min(self.backoff_cap, ceiling))
        self._resume_at = self.clock() + delay
        return delay

    def _succeeded(self) -> None:
        if self.failures:
            log.info("store %s: the hub answers again", self.store_id)
        self.failures = 0
        self.last_error = None

    # -- heartbeat and retention -------------------------------------------------------------

    def send_heartbeat(self) -> None:
        """Tell the hub the store's buffer depth, oldest unsent age, last error and version."""
        try:
            stats = self.outbox.stats()
        except StorageError as exc:
            log.error("store %s: cannot read the outbox for the heartbeat: %s", self.store_id, exc)
            return
        error = self.reported_error(stats)
        beat = StoreHeartbeat(
            agent_version=tillflow.__version__,
            sent_at=datetime.now(UTC),
            buffer_depth=stats.depth,
            oldest_unsent_age_seconds=stats.oldest_unsent_age_seconds,
            last_error=None if error is None else error[:MAX_ERROR_LENGTH],
            delivered_total=self.delivered_total,
            conflicts=self.conflicts_total,
            missing=tuple(self.missing) or None,
        )
        try:
            answer = self.client.post(
                f"/v1/stores/{segment(self.store_id)}/heartbeat",
                content=beat.model_dump_json(exclude_none=True),
                headers=JSON,
                timeout=min(self.timeout, 5.0),
            )
        except httpx.HTTPError:
            return  # forwarding reports the link
        if answer.status_code == 404:
            if not self._heartbeat_missing:
                log.info("store %s: the hub takes no heartbeat (404); going on without", self.store_id)
                self._heartbeat_missing = True
            return
        if answer.is_success:
            body = problem(answer)  # the JSON object of the answer
            skew = body.get("clock_skew_seconds")
            if isinstance(skew, int | float):
                self.clock_skew_seconds = float(skew)
            resend = body.get("resend")
            if isinstance(resend, list):
                self.resend([i for i in resend if isinstance(i, str)])
        else:
            log.debug("store %s: heartbeat answered %d", self.store_id, answer.status_code)

    def reported_error(self, stats: OutboxStats) -> str | None:
        """What the store reports as its last error: the link's, the transactions held for an
        operator, the lookups' (the master data sync)."""
        parts = [self.last_error]
        if stats.held:
            try:
                first = self.outbox.held(1)
            except StorageError:
                first = []
            example = f" ({first[0].transaction_id}: {first[0].reason})" if first else ""
            parts.append(f"{stats.held} transaction(s) held for an operator{example}")
        parts.append(self.other_error())
        said = "; ".join(p for p in parts if p)
        return said or None

    def resend(self, transaction_ids: Sequence[str]) -> int:
        """The hub misses these (gaps of its day closes): send those delivered and still kept
        again, and report those the outbox does not hold as missing. Returns how many are sent
        again."""
        try:
            states = self.outbox.find_states(transaction_ids)
            delivered = [i for i, state in states.items() if state == EntryState.DELIVERED]
            requeued = self.outbox.requeue(delivered) if delivered else 0
        except StorageError as exc:
            log.error("store %s: cannot send again what the hub misses: %s", self.store_id, exc)
            return 0
        self.missing = [i for i in dict.fromkeys(transaction_ids) if i not in states][:MAX_MISSING]
        if requeued:
            self.resent_total += requeued
            log.info(
                "store %s: the hub misses %d delivered transactions; sending them again",
                self.store_id,
                requeued,
            )
        if self.missing:
            log.warning(
                "store %s: the hub misses %d transactions this outbox does not hold",
                self.store_id,
                len(self.missing),
            )
        return requeued

    def _purge(self) -> None:
        try:
            purged = self.outbox.purge_delivered(datetime.now(UTC) - self.retention)
        except StorageError as exc:
            log.error("store %s: cannot purge delivered transactions: %s", self.store_id, exc)
            return
        if purged:
            log.info("store %s: forgot %d delivered over %s ago", self.store_id, purged, self.retention)


def _one_trace(entries: Sequence[OutboxEntry]) -> tuple[list[OutboxEntry], str | None]:
    """The leading entries that belong to one trace (or to none), and that trace's parent."""
    trace: str | None = None
    run: list[OutboxEntry] = []
    for entry in entries:
        if entry.traceparent is not None:
            if trace is not None and entry.traceparent != trace:
                break
            trace = entry.traceparent
        run.append(entry)
    return run, trace


def offline_grants(data: bytes) -> list[str]:
    """The offline grants (``OFF-...``) the `loyalty_points` tenders of a till's record name."""
    record = orjson.loads(data)
    tenders = record.get("tenders") if isinstance(record, dict) else None
    found = [
        t["reference"]
        for t in tenders or ()
        if isinstance(t, dict)
        and t.get("kind") == LOYALTY_POINTS
        and isinstance(t.get("reference"), str)
        and t["reference"].startswith(GRANT_PREFIX)
    ]
    return list(dict.fromkeys(found))


def with_holds(data: bytes, holds: Mapping[str, str]) -> bytes:
    """A till's record with each `loyalty_points` tender naming the hub's hold in place of the
    offline grant it named (keys sorted, as the till's bytes are kept)."""
    record = orjson.loads(data)
    for tender in record["tenders"]:
        if tender.get("kind") == LOYALTY_POINTS and tender.get("reference") in holds:
            tender["reference"] = holds[tender["reference"]]
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _results(answer: httpx.Response, expected: int) -> list[dict[str, Any]]:
    """The hub's answer per record, in the order sent; ValueError when it does not say."""
    try:
        body = answer.json()
    except ValueError as exc:
        raise ValueError("not JSON") from exc
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise ValueError("no results")
    by_index = {r.get("index"): r for r in results if isinstance(r, dict)}
    if sorted(k for k in by_index if isinstance(k, int)) != list(range(expected)):
        raise ValueError(f"{len(results)} results for {expected} records")
    return [by_index[i] for i in range(expected)]


def _failure(answer: httpx.Response) -> str:
    """What an answer other than 200 says, as the last error."""
    status = answer.status_code
    reason = problem_reason(answer)
    if status in (401, 403):
        return f"the hub refused the store's key ({status}): {reason}"
    if status == 429:
        return f"the hub is throttling (429): {reason}"
    if status >= 500:
        return f"the hub answered {status}: {reason}"
    return f"the hub refused the batch ({status}): {reason}"
