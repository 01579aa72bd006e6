"""The worker processes of a hub (`--role all`) live and die with it: one per group of flows,
restarted when one dies, and gone when the hub process itself is killed with SIGKILL (a worker
left behind would go on consuming the log with nobody to stop it)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tests.e2e.conftest import hub_process
from tillflow.config import TillflowConfig
from tillflow.sim.pos import demo_stores


def eventually(probe: Callable[[], bool], within: float = 60) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.2)
    return probe()


def workers_of(pid: int) -> list[psutil.Process]:
    """The live worker processes the hub `pid` started (not those dead and not yet reaped)."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "worker" in child.cmdline():
                found.append(child)
        except psutil.Error:  # gone meanwhile
            continue
    return found


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_a_hub_killed_with_sigkill_leaves_no_worker_behind(tmp_path: Path) -> None:
    with hub_process(tmp_path, TillflowConfig(stores=demo_stores(1))) as hub:
        pid = hub.process.proc.pid
        assert eventually(lambda: len(workers_of(pid)) == 1)  # inventory: the one flow here
        workers = workers_of(pid)
        first = workers[0].pid
        os.kill(first, signal.SIGKILL)  # a worker that dies is started again
        assert eventually(lambda: {w.pid for w in workers_of(pid)} - {w.pid for w in workers} != set())
        workers = workers_of(pid)

        os.kill(pid, signal.SIGKILL)
        hub.process.proc.wait()

        assert eventually(
            lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
        )
