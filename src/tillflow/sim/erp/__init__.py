"""The reference ERP: a separate process with its own SQLite books (`tillflow sim erp`).

It keeps a chart of accounts and fiscal periods, posts balanced journals and stock movements
exactly once, and fails the ways a real ERP fails: rate limits, maintenance windows, refusals
with a precise reason, and faults injected at runtime.
"""

from __future__ import annotations

from pathlib import Path

from tillflow.sim.erp.app import create_app
from tillflow.sim.erp.settings import DEFAULT_ACCOUNTS, ErpSimSettings, MaintenanceWindow, RateLimit

__all__ = ["DEFAULT_ACCOUNTS", "ErpSimSettings", "MaintenanceWindow", "RateLimit", "create_app", "serve"]


def serve(port: int, db_path: Path, host: str = "127.0.0.1", settings: ErpSimSettings | None = None) -> None:
    """Run the ERP until interrupted."""
    import uvicorn

    uvicorn.run(create_app(db_path, settings or ErpSimSettings()), host=host, port=port, log_level="warning")
