"""The consumer runner: feeds a flow's handler with batches from the event log and settles them.

Handlers are plain functions of a batch; retrying, dead-lettering, waiting and stopping live
here. What a failure means depends on what failed:

- the infrastructure (state store, event log, network: `StorageError`, `EventLogError`,
  `OSError`): nothing is settled; the runner backs off and tries the same batch again,
  without counting attempts against the events — unless the same batch keeps failing
  (`SUSPECT_AFTER` times): then its events are tried one by one and counted, so a record the
  database itself rejects ends in dead letters instead of stalling the flow;
- the event itself, for good (`PoisonEventError`, `ValueError` — a body that cannot be
  decoded or a record no retry will fix): it goes to dead letters at once;
- anything else: the batch is split and each event tried alone; the one that fails is
  nak'ed with exponential backoff and full jitter, and dead-lettered after `max_attempts`.
  With `ordered`, events of the same partition key (the store) behind a failed one in the
  batch wait with it (without counting an attempt). Order is kept within a batch; events
  of that store in later batches are not held back yet.

The rest of the batch always proceeds. Effects must be idempotent per event (every flow's
are), since delivery is at least once.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from tillflow.errors import EventLogError, PoisonEventError, StorageError
from tillflow.model import LoggedEvent
from tillflow.ports import EventLog

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[LoggedEvent]], object]
INFRASTRUCTURE: tuple[type[BaseException], ...] = (StorageError, EventLogError, OSError)
PERMANENT: tuple[type[BaseException], ...] = (PoisonEventError, ValueError)
SUSPECT_AFTER = 5  # consecutive outage failures of a batch before its events are suspected


@dataclass(frozen=True)
class RetryPolicy:
    """How a flow retries an event that failed: up to `max_attempts` deliveries, waiting a
    random time in [0, min(max_delay, base_delay * 2^(attempt-1))] between them."""

    max_attempts: int = 10
    base_delay: float = 2.0
    max_delay: float = 600.0
    ordered: bool = True

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1)))


@dataclass
class RunnerStats:
    """What one runner did since it started (its process's view; the log holds the rest)."""

    batches: int = 0
    events: int = 0
    redeliveries: int = 0
    naks: int = 0
    dead_letters: int = 0
    failures: int = 0
    last_error: str | None = None
    handle_seconds: float = 0.0


@dataclass
class RunnerHooks:
    """Callbacks for metrics; each gets the group and what happened."""

    on_batch: Callable[[str, int, float], None] = field(default=lambda group, size, seconds: None)
    on_nak: Callable[[str, LoggedEvent, str], None] = field(default=lambda group, event, error: None)
    on_dead_letter: Callable[[str, LoggedEvent, str], None] = field(default=lambda group, event, reason: None)


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
        seed: int | None = None,
    ) -> None:
        """`suspect_after`: consecutive outage failures of one batch before its events are tried
        one by one and counted; None for a consumer whose every failure is an outage (a relay
        to a broker), which must wait for the outage to end instead."""
        self.log = log_
        self.group = group
        self.handler = handler
        self.policy = policy or RetryPolicy()
        self.hooks = hooks or RunnerHooks()
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.max_backoff = max_backoff
        self.suspect_after = suspect_after
        self.rng = random.Random(seed)
        self.wake = threading.Event()
        self.stats = RunnerStats()

    def run_once(self, *, suspect_events: bool = False) -> int:
        """Handle and settle one batch; returns how many events it held (0: nothing to do).
        Raises only for infrastructure failures, leaving the batch unsettled. With
        `suspect_events` (the same batch failed repeatedly as an outage), an event whose own
        handling fails with an infrastructure error is retried and counted like any other
        failing event, so a record the database rejects cannot stall the flow forever."""
        batch = self.log.fetch_batch(self.group, limit=self.batch_size)
        if not batch:
            return 0
        started = time.perf_counter()
        try:
            self.handler(batch)
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
            self.log.ack_events(self.group, batch)
        seconds = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.events += len(batch)
        self.stats.redeliveries += sum(1 for e in batch if e.redelivered)
        self.stats.handle_seconds += seconds
        self.hooks.on_batch(self.group, len(batch), seconds)
        return len(batch)

    def _one_by_one(self, batch: Sequence[LoggedEvent], *, suspect_events: bool = False) -> None:
        waiting: dict[str | None, float] = {}  # partition key -> delay of its failed event
        for event in batch:
            key = event.event.partitionkey
            if self.policy.ordered and key in waiting:
                # held back, not tried: the wait does not count as an attempt
                self._nak(
                    replace(event, attempt=event.attempt - 1), waiting[key], "waits for an earlier event"
                )
                continue
            try:
                self.handler([event])
            except INFRASTRUCTURE as exc:
                if not suspect_events:
                    raise
                delay = self.policy.backoff(event.attempt, self.rng)
                if event.attempt >= self.policy.max_attempts:
                    self._dead_letter(event, describe(exc))
                else:
                    self._nak(event, delay, describe(exc))
                    waiting[key] = delay
            except Exception as exc:
                error = describe(exc)
                if isinstance(exc, PERMANENT) or event.attempt >= self.policy.max_attempts:
                    self._dead_letter(event, error)
                else:
                    delay = self.policy.backoff(event.attempt, self.rng)
                    self._nak(event, delay, error)
                    waiting[key] = delay
            else:
                self.log.ack_events(self.group, [event])

    def _nak(self, event: LoggedEvent, delay: float, error: str) -> None:
        self.log.nak_event(self.group, event, delay=delay, error=error)
        self.stats.naks += 1
        self.hooks.on_nak(self.group, event, error)

    def _dead_letter(self, event: LoggedEvent, reason: str) -> None:
        log.error(
            "group %s: event %s (seq %d) dead-lettered: %s", self.group, event.event.id, event.seq, reason
        )
        self.log.dead_letter(self.group, event, reason=reason)
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
            except Exception as exc:  # the runner must outlive any backend failure
                failures += 1
                self.stats.failures += 1
                self.stats.last_error = describe(exc)
                log.exception("consumer group %s failed a batch", self.group)
                with contextlib.suppress(Exception):  # the log may be what is failing
                    self.log.record_failure(self.group, self.stats.last_error)
                stop.wait(self.rng.uniform(0, min(self.max_backoff, 0.1 * 2**failures)))
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
