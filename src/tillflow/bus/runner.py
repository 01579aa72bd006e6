"""The consumer runner: feeds a flow's handler with batches from the event log and acks them.

Handlers are plain functions of a batch; retrying, waiting and stopping live here. A handler
that fails leaves the batch unacknowledged; the runner backs off and tries again, so effects
must be idempotent per event (every flow's are).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tillflow.model import LoggedEvent
from tillflow.ports import EventLog

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[LoggedEvent]], object]


@dataclass
class RunnerStats:
    batches: int = 0
    events: int = 0
    failures: int = 0
    last_error: str | None = None


class ConsumerRunner:
    def __init__(
        self,
        log_: EventLog,
        group: str,
        handler: Handler,
        *,
        batch_size: int = 500,
        idle_wait: float = 0.02,
        max_backoff: float = 5.0,
    ) -> None:
        self.log = log_
        self.group = group
        self.handler = handler
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.max_backoff = max_backoff
        self.wake = threading.Event()
        self.stats = RunnerStats()

    def run_once(self) -> int:
        """Handle and ack one batch; returns how many events it held (0: nothing to do)."""
        batch = self.log.fetch_batch(self.group, limit=self.batch_size)
        if not batch:
            return 0
        self.handler(batch)
        self.log.ack_events(self.group, batch)
        self.stats.batches += 1
        self.stats.events += len(batch)
        return len(batch)

    def run_until(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; finishes the batch in hand before returning."""
        failures = 0
        while not stop.is_set():
            try:
                handled = self.run_once()
                failures = 0
            except Exception as exc:  # the runner must survive any handler or backend failure
                failures += 1
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("consumer group %s failed a batch", self.group)
                with contextlib.suppress(Exception):  # the log may be what is failing
                    self.log.record_failure(self.group, self.stats.last_error[:2000])
                stop.wait(random.uniform(0, min(self.max_backoff, 0.1 * 2**failures)))
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
