"""Stock from the command line: `tillflow products import FILE`, `tillflow inventory alerts`,
`tillflow inventory status --day D` and `tillflow inventory retry BATCH`.

They work on the hub's state store (`--config` / `--data-dir`, as the other operations).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from tillflow.errors import FormatError
from tillflow.model import Product
from tillflow.ops import ConfigOpt, DataDirOpt, JsonOpt, _day, emit, err, opened, out

products_app = typer.Typer(help="The product master: import products.", no_args_is_help=True)
inventory_app = typer.Typer(
    help="Stock: alerts, goods movements sent to the ERP per store-day.", no_args_is_help=True
)
CHUNK = 1000  # products per commit
EXIT_OK, EXIT_USAGE, EXIT_PARTIAL = 0, 2, 3


@products_app.command("import")
def products_import(
    file: Annotated[Path, typer.Argument(help="a CSV (with a header) or JSON (list or lines) file")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv or json (default: detected)")] = None,
    report: Annotated[
        Path, typer.Option("--report", help="the quarantine report (CSV), written when a row is refused")
    ] = Path("quarantine.csv"),
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load products into the master (create or replace by SKU); refused rows go to the
    quarantine report with the row, field and reason. Exit 3 when some were refused."""
    if fmt not in (None, "csv", "json"):
        err.print(f"[red]--format is csv or json, not {fmt}[/red]")
        raise typer.Exit(EXIT_USAGE)
    if not file.is_file():
        err.print(f"[red]no such file: {file}[/red]")
        raise typer.Exit(EXIT_USAGE)
    # imported here: every process of the hub starts through the command line, none needs them
    from tillflow.formats.products import ProductFormat, parse_products
    from tillflow.formats.records import Quarantined
    from tillflow.importer import QuarantineReport

    quarantine = QuarantineReport(report)
    counts: Counter[str] = Counter()
    try:
        with opened(config, data_dir) as services, file.open("rb") as stream:
            pending: list[Product] = []

            def flush() -> None:
                changes = services.products.record_products(pending, at=datetime.now(UTC))
                counts.update(c.value for c in changes)
                pending.clear()

            for parsed in parse_products(stream, name=file.name, fmt=cast(ProductFormat | None, fmt)):
                counts["read"] += 1
                if isinstance(parsed, Quarantined):
                    counts["quarantined"] += 1
                    src = parsed.source
                    quarantine.add(src.name, src.index, src.locator, "parse", parsed.field, parsed.reason, {})
                    continue
                pending.append(parsed)
                if len(pending) >= CHUNK:
                    flush()
            if pending:
                flush()
    except FormatError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    finally:
        quarantine.close()
    row = {k: counts.get(k, 0) for k in ("read", "created", "updated", "unchanged", "quarantined")}
    emit([{"file": file.name, **row}], as_json, "tillflow products import")
    if quarantine.rows:
        err.print(f"{quarantine.rows} refused rows: see the quarantine report {quarantine.path}")
    raise typer.Exit(EXIT_PARTIAL if counts["quarantined"] else EXIT_OK)


@inventory_app.command("alerts")
def inventory_alerts(
    store: Annotated[str | None, typer.Option("--store", help="only this store")] = None,
    all_: Annotated[bool, typer.Option("--all", help="cleared alerts too")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stock alerts (open ones; `--all` for cleared ones too), newest first."""
    with opened(config, data_dir) as services:
        alerts = services.stock.list_alerts(store_id=store, include_cleared=all_)
    rows = [
        {
            "store": a.store_id,
            "sku": a.sku,
            "kind": a.kind.value,
            "quantity": str(a.quantity),
            "uom": a.uom,
            "cause": a.transaction_id,
            "at": a.at.isoformat(),
            "cleared_by": a.cleared_by,
            "detail": a.detail,
        }
        for a in alerts
    ]
    emit(rows, as_json, "stock alerts")


@inventory_app.command("status")
def inventory_status(
    day: Annotated[str, typer.Option("--day", help="business day, YYYY-MM-DD")],
    store: Annotated[str | None, typer.Option("--store", help="only this store")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per store-day: the goods-movement batches sent to the ERP and their state."""
    business_day = _day(day)
    with opened(config, data_dir) as services:
        batches = services.goods_movements.find_batches(business_day=business_day, store_id=store)
    rows: list[dict[str, Any]] = []
    for b in batches:
        row = asdict(b)
        row.update(
            business_day=b.business_day.isoformat(),
            state=b.state.value,
            recorded_at=None if b.recorded_at is None else b.recorded_at.isoformat(),
            settled_at=None if b.settled_at is None else b.settled_at.isoformat(),
        )
        rows.append(row)
    emit(rows, as_json, f"goods movements of {business_day}")


@inventory_app.command("retry")
def inventory_retry(
    batch: Annotated[str, typer.Argument(help="a refused batch id, gm.<store>.<day>.<n>")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Post a refused goods-movement batch again (after the ERP's cause is fixed)."""
    with opened(config, data_dir) as services:
        done = services.goods_movements.retry_batch(batch)
    if not done:
        err.print(f"[red]{batch} is not a refused batch[/red]")
        raise typer.Exit(1)
    out.print(f"{batch} is pending again: the inventory consumer posts it on its next tick")
