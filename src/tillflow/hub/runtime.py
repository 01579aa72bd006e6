"""How the hub runs: roles, the worker process, and graceful stops.

- role `all` (embedded default): this process serves the API; the flow consumers run in a
  child worker process, so ingest and flows use separate cores. The child is restarted if
  it dies.
- role `api`: the API only (distributed: N of these behind a load balancer).
- role `worker`: the flow consumers only, until SIGTERM or SIGINT (or, for a worker the
  role `all` process started, until that process is gone: a hub killed with SIGKILL leaves
  no worker behind).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Sequence

from tillflow.observe.metrics import start_publisher
from tillflow.services import Services

log = logging.getLogger(__name__)
SUPERVISOR_PID = "TILLFLOW_SUPERVISOR_PID"  # set by the process that started this worker


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running hub process.

    Batches allocate thousands of short-lived objects; with the default threshold the cyclic
    collector runs every 700 allocations and rescans everything loaded at start, which
    doubles the cost of parsing. Objects alive after start-up are frozen out of collection
    and the youngest generation is collected less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run_worker(services: Services, flows: Collection[str] | None = None) -> None:
    """Run the flow consumers (of `flows`, or all) until SIGTERM/SIGINT; the batch in hand is
    finished and acked."""
    stop = threading.Event()
    # A handler only notes the signal: it runs between two bytecodes of the main thread, and
    # setting the event there could re-enter the event's lock when a second signal arrives while
    # the first one's `set` holds it (a worker told twice to stop would then hang forever).
    signalled: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: signalled.append(signum))
    runners = services.consumers(flows)
    threads = [r.start(stop) for r in runners]
    publisher = start_publisher(services, stop)
    supervisor = os.environ.get(SUPERVISOR_PID)
    while not signalled:
        time.sleep(0.2)
        if not all(t.is_alive() for t in threads):
            log.error("a consumer thread stopped; exiting so the supervisor restarts the worker")
            break
        if supervisor is not None and str(os.getppid()) != supervisor:
            log.error("the hub process that started this worker is gone; exiting")
            break
    stop.set()
    for runner in runners:
        runner.wake.set()
    for thread in threads:
        thread.join(timeout=30)
    if publisher is not None:
        publisher.join(timeout=10)
    services.close()


class WorkerSupervisor:
    """Keeps `tillflow hub --role worker` children running beside the API process: one per
    group of flows (each child's own arguments in `groups`); a child that dies is restarted."""

    def __init__(self, argv: Sequence[str], groups: Sequence[Sequence[str]] = ((),)) -> None:
        base = [sys.executable, "-m", "tillflow.cli", "hub", "--role", "worker", *argv]
        self.argvs = [[*base, *group] for group in groups]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(self.argvs)
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self.procs = [self._spawn(argv) for argv in self.argvs]
        self._thread.start()

    @staticmethod
    def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        """A worker that exits when this process is gone (even killed with SIGKILL)."""
        return subprocess.Popen(argv, env={**os.environ, SUPERVISOR_PID: str(os.getpid())})

    def alive(self) -> bool:
        return all(proc is not None and proc.poll() is None for proc in self.procs)

    def _watch(self) -> None:
        backoff = 0.5
        while not self._stop.wait(0.5):
            with self._lock:
                dead = [
                    i for i, proc in enumerate(self.procs) if proc is not None and proc.poll() is not None
                ]
            if not dead:
                continue
            for i in dead:
                log.error("worker process %d exited; restarting in %.1fs", i, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, 30)
            with self._lock:
                if self._stop.is_set():
                    return
                for i in dead:
                    self.restarts += 1
                    self.procs[i] = self._spawn(self.argvs[i])

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            procs = list(self.procs)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for proc in procs:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)  # all at once: each finishes its batch in hand
        for proc in procs:
            if proc is not None:
                stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (finish the batch in hand, then exit); SIGKILL after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
