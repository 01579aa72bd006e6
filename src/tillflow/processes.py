"""Child processes the demo and the benchmarks run: the hub, the stores' edge agents, and the
reference loyalty platform and ERP, each a real process on a free loopback port with its own log
file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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

    def __init__(
        self, args: list[str], log_path: Path, url: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.url = url
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tillflow.cli", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
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


class EdgeAgentProcess(ChildProcess):
    """`tillflow edge` for some stores: their tills' local API, forwarding to `hub_url` with each
    store's key (from `keys`, put in the agent's environment)."""

    name = "edge agent"

    def __init__(
        self, keys: Mapping[str, str], hub_url: str, data_dir: Path, *, options: tuple[str, ...] = ()
    ) -> None:
        from tillflow.edge.agent import key_variable

        port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILLFLOW_")}
        env |= {key_variable(store): key for store, key in keys.items()}
        args = ["edge", *(arg for store in keys for arg in ("--store", store))]
        args += ["--hub", hub_url, "--data-dir", str(data_dir), "--port", str(port), *options]
        super().__init__(args, data_dir / "edge.log", f"http://127.0.0.1:{port}", env)
        self.stores = tuple(keys)

    def status(self) -> dict[str, Any]:
        """Per store: the outbox and the link (`GET /v1/edge/status`)."""
        answer = httpx.get(f"{self.url}/v1/edge/status", timeout=30.0)
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()["stores"]
        return found


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
