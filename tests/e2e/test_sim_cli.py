"""`tillflow sim loyalty|erp`: the reference services start from the command line as processes
of their own, each with its SQLite file in --data-dir, and answer over HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import ServiceProcess, free_port


@pytest.mark.parametrize(("service", "db_file"), [("loyalty", "loyalty.db"), ("erp", "erp.db")])
def test_a_reference_service_runs_from_the_cli_with_its_own_sqlite_file(
    service: str, db_file: str, tmp_path: Path
) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "tillflow.cli",
        "sim",
        service,
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
    ]
    process = ServiceProcess(f"tillflow sim {service}", argv, port, tmp_path / f"{service}.log")
    process.start()
    try:
        state = httpx.get(f"{process.url}/admin/state", timeout=5)
        assert state.status_code == 200 and isinstance(state.json(), dict)
        assert (tmp_path / db_file).exists()
    finally:
        process.stop()


def test_bad_settings_stop_the_start_with_the_reason(tmp_path: Path) -> None:
    settings = tmp_path / "erp.yaml"
    settings.write_text("max_lines_per_journal: lots\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tillflow.cli",
            "sim",
            "erp",
            "--settings",
            str(settings),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"max_lines_per_journal" in done.stderr
