"""The consumer runner: feeds a flow's handler with batches from the event log and settles them.

Handlers are plain functions of a batch; retrying, dead-lettering, waiting and stopping live
here. What a failure means depends on what failed:

- the infrastructure (state store, event log, network: `StorageError`, `EventLogError`,
  `OSError`): nothing is settled; the runner backs off and tries the same batch again,
  without counting attempts against the events — unless the same batch keeps failing
  (`SUSPECT_AFTER` times): then its events are tried one by one and counted, so a record the
  database itself rejects ends in dead letters instead of stalling the flow. This handling
  is fixed: a flow's retry policy cannot change it;
- the event itself, for good (by default `PoisonEventError` and `ValueError` — a body that
  cannot be decoded or a record no retry will fix; a flow lists its own in
  `RetryPolicy.non_retryable`): it goes to dead letters at once. A class listed in
  `RetryPolicy.retryable` wins over the non-retryable ones: an error that is an instance of
  both (say `json.JSONDecodeError`, a `ValueError`) is retried;
- a downstream system held back by its connector (`DownstreamPausedError`: circuit open,
  maintenance window): nothing is settled and nothing counted; the runner pauses for the
  time the connector names (at most `MAX_PAUSE`), then tries the batch again. A downstream
  system that answered "later" with a Retry-After is waited for at least that long;
- the event refused for good by a downstream system (`DownstreamRejectedError`: an invalid
  posting) is, by default, not retried: it goes to dead letters with the system's reason;
- anything else: the batch is split and each event tried alone; the one that fails is
  nak'ed with exponential backoff and full jitter, and dead-lettered after `max_attempts`.

The rest of the batch always proceeds. Effects must be idempotent per event (every flow's
are), since delivery is at least once.

Order per partition key (the store), with `RetryPolicy.ordered`: the runner remembers which
events of each store it nak'ed and when each is due again. While one of them is unsettled, no
later event of that store (higher seq) — in this batch or any later one — goes to the
handler: it is nak'ed to wait, due `WAIT_MARGIN` after the earliest one, without counting an
attempt, and is remembered in turn. When the earliest comes back it is tried: acked or
dead-lettered, it is forgotten and the next in line (a waiting event, due just behind it) is
what the store waits for, until none is left and the store is forgotten; failed again, the
wait moves to its new due time. So a store is in the map only while it has events out, and
a fresh event cannot overtake one that waited. Events of other stores are never held;
events without a partition key wait only behind a failure in the same batch. A batch that
goes to the handler whole leaves out the events that must wait. An event that has not come
back `forget_blocks_after` seconds past its due time (settled elsewhere: by another worker of
the group, by an operator) is forgotten, so a store cannot be held forever.

The map lives in this process's memory, yet the order survives a restart: a waiting event is
always due after the event it waits for, and the log hands out due events oldest first (by
seq, or by due time), so after a restart the earliest comes back first and, failing again,
holds its store anew. Two workers of one group on a log that spreads a store's events over
both keep the order only within each worker. That a wait counts no attempt relies on the log
storing the attempt it is given (the SQL log does); JetStream counts deliveries itself
(`num_delivered`), so there every wait counts as a delivery, and an event that waited out many
retries of an earlier one has fewer tries of its own left before it goes to dead letters.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from tillflow.errors import (
    INFRASTRUCTURE,
    DownstreamPausedError,
    DownstreamRejectedError,
    DownstreamUnavailableError,
    PoisonEventError,
)
from tillflow.model import LoggedEvent
from tillflow.observe import logs, tracing
from tillflow.ports import EventLog

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[LoggedEvent]], object]
SUSPECT_AFTER = 5  # consecutive outage failures of a batch before its events are suspected
WAIT_MARGIN = 0.05  # seconds a waiting event is due after the event it waits for
FORGET_BLOCKS_AFTER = 60.0  # seconds past its due time a blocker that has not come back is forgotten
MAX_PAUSE = 30.0  # the longest a runner sleeps at once for a paused or throttling downstream system


@dataclass(frozen=True)
class RetryPolicy:
    """How a flow retries an event that failed: up to `max_attempts` deliveries, waiting a
    random time in [0, min(max_delay, base_delay * 2^(attempt-1))] between them. An error of a
    `non_retryable` class sends the event to dead letters at once, unless it is also of a
    `retryable` class (retryable wins). With `ordered`, a store's events wait behind its
    failed one."""

    max_attempts: int = 10
    base_delay: float = 2.0
    max_delay: float = 600.0
    ordered: bool = True
    non_retryable: tuple[type[BaseException], ...] = (PoisonEventError, ValueError, DownstreamRejectedError)
    retryable: tuple[type[BaseException], ...] = ()

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1)))

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether another attempt may succeed where this error failed the event."""
        return isinstance(exc, self.retryable) or not isinstance(exc, self.non_retryable)


@dataclass(frozen=True)
class Blocker:
    """A nak'ed event that later events of its partition key wait for: its seq and when it is
    due again (on the runner's clock)."""

    seq: int
    due: float


@dataclass
class RunnerStats:
    """What one runner did since it started (its process's view; the log holds the rest)."""

    batches: int = 0
    events: int = 0
    redeliveries: int = 0
    naks: int = 0
    retries: int = 0  # naks of failed events (not of events made to wait behind one)
    dead_letters: int = 0
    failures: int = 0
    pauses: int = 0
    last_error: str | None = None
    handle_seconds: float = 0.0


@dataclass
class RunnerHooks:
    """Callbacks for metrics; each gets the group and what happened."""

    on_batch: Callable[[str, int, float], None] = field(default=lambda group, size, seconds: None)
    on_nak: Callable[[str, LoggedEvent, str], None] = field(default=lambda group, event, error: None)
    on_dead_letter: Callable[[str, LoggedEvent, str], None] = field(default=lambda group, event, reason: None)


_PROCESS_STATS: list[tuple[str, RunnerStats]] = []  # every runner this process made: its group, stats


def process_stats() -> dict[str, RunnerStats]:
    """What the runners of this process did since it started, summed per consumer group."""
    out: dict[str, RunnerStats] = {}
    for group, stats in list(_PROCESS_STATS):
        total = out.setdefault(group, RunnerStats())
        total.batches += stats.batches
        total.events += stats.events
        total.naks += stats.naks
        total.retries += stats.retries
        total.dead_letters += stats.dead_letters
        total.failures += stats.failures
    return out


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class ConsumerRunner:
    def __init__(
        self,
        log_: EventLog,
        group: str,
        handler: Handler,
        *,
        policy: RetryPolicy | None = None,
        hooks: RunnerHooks | None = None,
        batch_size: int = 500,
        idle_wait: float = 0.02,
        max_backoff: float = 5.0,
        suspect_after: int | None = SUSPECT_AFTER,
        forget_blocks_after: float = FORGET_BLOCKS_AFTER,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        tick: Callable[[], object] | None = None,
        tick_every: float = 1.0,
    ) -> None:
        """`suspect_after`: consecutive outage failures of one batch before its events are tried
        one by one and counted; None for a consumer whose every failure is an outage (a relay
        to a broker), which must wait for the outage to end instead. `forget_blocks_after`:
        seconds past its due time after which an in-order flow stops waiting for a nak'ed event
        that has not come back; `clock` (seconds) times those waits. `tick`: work the flow
        does on its own schedule (a day close whose grace has passed), at most every
        `tick_every` seconds, before a batch; it fails like a batch does."""
        self.log = log_
        self.group = group
        self.handler = handler
        self.policy = policy or RetryPolicy()
        self.hooks = hooks or RunnerHooks()
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.max_backoff = max_backoff
        self.suspect_after = suspect_after
        self.forget_blocks_after = forget_blocks_after
        self.clock = clock
        self.rng = random.Random(seed)
        self.wake = threading.Event()
        self.stats = RunnerStats()
        _PROCESS_STATS.append((group, self.stats))
        # in-order flows: partition key -> its events this runner nak'ed and has not yet seen
        # settled (seq -> when due again); the key's later events wait for the lowest seq
        self.blocked: dict[str, dict[int, float]] = {}
        self.tick = tick
        self.tick_every = tick_every
        self._next_tick = float("-inf")

    def run_once(self, *, suspect_events: bool = False) -> int:
        """Handle and settle one batch; returns how many events it held (0: nothing to do).
        Raises only for infrastructure failures, leaving the batch unsettled. With
        `suspect_events` (the same batch failed repeatedly as an outage), an event whose own
        handling fails with an infrastructure error is retried and counted like any other
        failing event, so a record the database rejects cannot stall the flow forever."""
        if self.tick is not None and self.clock() >= self._next_tick:
            self._next_tick = self.clock() + self.tick_every  # a failing tick waits its turn too
            self.tick()
        batch = self.log.fetch_batch(self.group, limit=self.batch_size)
        if not batch:
            return 0
        started = time.perf_counter()
        self._forget_stale_blocks(batch)
        held = self._held_back(batch)
        rest = [e for i, e in enumerate(batch) if i not in held] if held else batch
        try:
            if rest:
                self._handle(rest)
        except INFRASTRUCTURE:
            if not suspect_events:
                raise
            log.warning("group %s: the batch keeps failing; trying its events one by one", self.group)
            self._one_by_one(batch, suspect_events=True)
        except Exception:  # something in the batch: find it, settle the rest
            log.warning(
                "group %s: a batch of %d failed; trying its events one by one", self.group, len(batch)
            )
            self._one_by_one(batch)
        else:
            self._settle_handled(batch, held)
        seconds = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.events += len(batch)
        self.stats.redeliveries += sum(1 for e in batch if e.redelivered)
        self.stats.handle_seconds += seconds
        self.hooks.on_batch(self.group, len(batch), seconds)
        return len(batch)

    def _handle(self, events: Sequence[LoggedEvent]) -> None:
        """The handler on `events`, in a consumer span linked to each event's trace; every log
        line meanwhile carries their transaction and trace ids."""
        traceparents = [e.event.traceparent for e in events]
        with (
            tracing.serving(f"consume {self.group}", traceparents, **{"tillflow.group": self.group}),
            logs.bound(**logs.correlation([e.event.id for e in events], traceparents)),
        ):
            self.handler(events)

    def _forget_stale_blocks(self, batch: Sequence[LoggedEvent]) -> None:
        if not self.blocked:
            return
        now = self.clock()
        here = {e.seq for e in batch}
        for key, nacked in list(self.blocked.items()):
            for seq, due in list(nacked.items()):
                if now > due + self.forget_blocks_after and seq not in here:
                    log.warning(
                        "group %s: event seq %d of store %s did not come back; no longer waiting for it",
                        self.group,
                        seq,
                        key,
                    )
                    del nacked[seq]
            if not nacked:
                del self.blocked[key]

    @staticmethod
    def _first(nacked: dict[int, float] | None, seq: int) -> Blocker | None:
        """The earliest of `nacked`, if event `seq` comes after it and so must wait for it."""
        if not nacked:
            return None
        first = min(nacked)
        return Blocker(first, nacked[first]) if seq > first else None

    def _blocker(self, event: LoggedEvent) -> Blocker | None:
        """The earlier event of its partition key `event` must wait for, if any."""
        key = event.event.partitionkey
        if not self.policy.ordered or key is None:
            return None
        return self._first(self.blocked.get(key), event.seq)

    def _held_back(self, batch: Sequence[LoggedEvent]) -> dict[int, Blocker]:
        """The events of the batch that must wait (their index -> what they wait for), if the
        events before them in the batch go through: an event that is first in line for its key
        goes to the handler, and so do the events of its key behind it, as a batch is handled
        in its own order."""
        held: dict[int, Blocker] = {}
        if not self.blocked:
            return held
        after: dict[str, dict[int, float]] = {}  # the blocks as they stand once the batch went through
        for i, event in enumerate(batch):
            key = event.event.partitionkey
            if key is None or key not in self.blocked:
                continue
            nacked = after.setdefault(key, dict(self.blocked[key]))
            blocker = self._first(nacked, event.seq)
            if blocker is None:
                nacked.pop(event.seq, None)
            else:
                held[i] = blocker
                nacked[event.seq] = blocker.due + WAIT_MARGIN
        return held

    def _settle_handled(self, batch: Sequence[LoggedEvent], held: dict[int, Blocker]) -> None:
        """Ack what the handler took and nak what waits, in the batch's order: the log moves a
        group's position past what is settled, so nothing may be settled ahead of an event
        that could be left unsettled."""
        handled: list[LoggedEvent] = []
        for i, event in enumerate(batch):
            blocker = held.get(i)
            if blocker is None:
                handled.append(event)
                continue
            if handled:
                self._ack(handled)
                handled = []
            self._wait(event, blocker)
        if handled:
            self._ack(handled)

    def _one_by_one(self, batch: Sequence[LoggedEvent], *, suspect_events: bool = False) -> None:
        # events without a partition key wait only behind a failure in this batch
        unkeyed: Blocker | None = None
        for event in batch:
            key = event.event.partitionkey
            blocker = unkeyed if key is None and self.policy.ordered else self._blocker(event)
            if blocker is not None:
                self._wait(event, blocker)
                continue
            try:
                self._handle([event])
            except DownstreamPausedError:
                raise  # the system is held back: the flow pauses, no event is to blame
            except INFRASTRUCTURE as exc:
                if not suspect_events:
                    raise
                failed = self._retry_or_bury(event, describe(exc), retryable=True)
            except Exception as exc:
                failed = self._retry_or_bury(event, describe(exc), retryable=self.policy.is_retryable(exc))
            else:
                self._ack([event])
                continue
            if key is None:
                unkeyed = unkeyed or failed
            elif failed is not None and self.policy.ordered:
                self.blocked.setdefault(key, {})[event.seq] = failed.due

    def _retry_or_bury(self, event: LoggedEvent, error: str, *, retryable: bool) -> Blocker | None:
        """Nak a failed event for a later attempt (returning it as a blocker of its key) or, out
        of attempts or not retryable, dead-letter it (returning None)."""
        if not retryable or event.attempt >= self.policy.max_attempts:
            self._dead_letter(event, error)
            return None
        delay = self.policy.backoff(event.attempt, self.rng)
        self._nak(event, delay, error)
        self.stats.retries += 1
        return Blocker(event.seq, self.clock() + delay)  # not before the log has it due

    def _wait(self, event: LoggedEvent, blocker: Blocker) -> None:
        """Nak an event that is not tried, to be due just after its blocker; the wait does not
        count as an attempt."""
        delay = max(0.0, blocker.due - self.clock()) + WAIT_MARGIN
        key = event.event.partitionkey
        of_store = "" if key is None else f" of store {key}"
        self._nak(
            replace(event, attempt=event.attempt - 1),
            delay,
            f"waits for an earlier event{of_store} (seq {blocker.seq})",
        )
        if key is not None and self.policy.ordered:
            self.blocked.setdefault(key, {})[event.seq] = self.clock() + delay

    def _ack(self, events: Sequence[LoggedEvent]) -> None:
        """Ack handled events; those an in-order key waited for are settled: next in line."""
        self.log.ack_events(self.group, events)
        self._settled(events)

    def _settled(self, events: Sequence[LoggedEvent]) -> None:
        for event in events if self.blocked else ():
            key = event.event.partitionkey
            nacked = self.blocked.get(key) if key is not None else None
            if key is not None and nacked is not None:
                nacked.pop(event.seq, None)
                if not nacked:
                    del self.blocked[key]

    def _nak(self, event: LoggedEvent, delay: float, error: str) -> None:
        self.log.nak_event(self.group, event, delay=delay, error=error)
        self.stats.naks += 1
        self.hooks.on_nak(self.group, event, error)

    def _dead_letter(self, event: LoggedEvent, reason: str) -> None:
        log.error(
            "group %s: event %s (seq %d) dead-lettered: %s",
            self.group,
            event.event.id,
            event.seq,
            reason,
            extra=logs.correlation([event.event.id], [event.event.traceparent]),
        )
        self.log.dead_letter(self.group, event, reason=reason)
        self._settled([event])
        self.stats.dead_letters += 1
        self.hooks.on_dead_letter(self.group, event, reason)

    def run_until(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; the batch in hand is finished and settled first."""
        failures = 0
        while not stop.is_set():
            try:
                suspect = self.suspect_after is not None and failures >= self.suspect_after
                handled = self.run_once(suspect_events=suspect)
                failures = 0
            except DownstreamPausedError as exc:
                self.stats.pauses += 1
                self.stats.last_error = describe(exc)
                log.warning("consumer group %s pauses: %s", self.group, exc)
                stop.wait(min(MAX_PAUSE, max(self.idle_wait, exc.retry_after or 0.0)))
                continue
            except Exception as exc:  # the runner must outlive any backend failure
                failures += 1
                self.stats.failures += 1
                self.stats.last_error = describe(exc)
                if isinstance(exc, DownstreamUnavailableError):  # expected now and then: no traceback
                    log.warning("consumer group %s: %s", self.group, exc)
                else:
                    log.exception("consumer group %s failed a batch", self.group)
                with contextlib.suppress(Exception):  # the log may be what is failing
                    self.log.record_failure(self.group, self.stats.last_error)
                delay = self.rng.uniform(0, min(self.max_backoff, 0.1 * 2**failures))
                if isinstance(exc, DownstreamUnavailableError) and exc.retry_after is not None:
                    delay = max(delay, min(MAX_PAUSE, exc.retry_after))
                stop.wait(delay)
                continue
            if handled < self.batch_size:
                self.wake.wait(self.idle_wait)
                self.wake.clear()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run_until, args=(stop,), name=f"consumer-{self.group}", daemon=True
        )
        thread.start()
        return thread
