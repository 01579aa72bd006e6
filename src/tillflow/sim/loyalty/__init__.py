"""The reference loyalty SaaS: a separate process with its own SQLite file that behaves like a
real loyalty platform (rules, tiers, a points ledger, holds, idempotency, injected faults), so
the demo and the tests run the loyalty connector against real HTTP and real failure modes."""

from __future__ import annotations

from pathlib import Path

from tillflow.sim.loyalty.app import create_app
from tillflow.sim.loyalty.settings import EarnRate, LoyaltySimSettings, TierRule

__all__ = ["EarnRate", "LoyaltySimSettings", "TierRule", "create_app", "serve"]


def serve(
    port: int, db_path: Path, host: str = "127.0.0.1", settings: LoyaltySimSettings | None = None
) -> None:
    """Serve the platform until interrupted (blocking)."""
    import uvicorn

    uvicorn.run(
        create_app(db_path, settings or LoyaltySimSettings()), host=host, port=port, log_level="warning"
    )
