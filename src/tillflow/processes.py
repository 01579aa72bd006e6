"""Child processes the demo and the benchmarks run: the hub, and the reference loyalty
platform and ERP, each a real process on a free loopback port with its own log file."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tillflow.hub.runtime import stop_process


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChildProcess:
    """A `python -m tillflow.cli ...` child, ready once `ready_path` answers 200."""

    name = "process"
    ready_path = "/healthz"

    def __init__(self, args: list[str], log_path: Path, url: str) -> None:
        self.url = url
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tillflow.cli", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the {self.name} was not ready within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class HubProcess(ChildProcess):
    """A `tillflow hub` child process with its own config file and data directory."""

    name = "hub"
    ready_path = "/readyz"

    def __init__(self, config_path: Path, log_path: Path, url: str) -> None:
        super().__init__(["hub", "--config", str(config_path)], log_path, url)


class ReferenceService(ChildProcess):
    """`tillflow sim erp|loyalty`: a reference downstream system with its own SQLite file in
    `data_dir`, optionally configured by a settings file."""

    def __init__(self, kind: str, data_dir: Path, *, settings_path: Path | None = None) -> None:
        self.name = f"reference {kind}"
        port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["sim", kind, "--port", str(port), "--data-dir", str(data_dir)]
        if settings_path is not None:
            args += ["--settings", str(settings_path)]
        super().__init__(args, data_dir / f"{kind}.log", f"http://127.0.0.1:{port}")

    def state(self) -> dict[str, object]:
        """What the service holds now (its `/admin/state`)."""
        answer = httpx.get(f"{self.url}/admin/state", timeout=30.0)
        answer.raise_for_status()
        state: dict[str, object] = answer.json()
        return state
