"""`python -m tillflow.sim.erp --port P --db FILE [--settings JSON]`: the ERP without the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from tillflow.sim.erp import ErpSimSettings, serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tillflow.sim.erp", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True, help="the SQLite file of the books")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--settings", default="{}", help="ErpSimSettings as JSON")
    args = parser.parse_args()
    serve(args.port, args.db, host=args.host, settings=ErpSimSettings.model_validate_json(args.settings))


if __name__ == "__main__":
    main()
