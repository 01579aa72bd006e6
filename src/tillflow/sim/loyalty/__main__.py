"""`python -m tillflow.sim.loyalty --port P --db FILE [--settings JSON]`: the platform alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from tillflow.sim.loyalty import LoyaltySimSettings, serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tillflow.sim.loyalty")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True, help="the SQLite file (created when missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--settings", default="{}", help="LoyaltySimSettings as JSON")
    args = parser.parse_args()
    serve(args.port, args.db, args.host, LoyaltySimSettings.model_validate_json(args.settings))


if __name__ == "__main__":
    main()
