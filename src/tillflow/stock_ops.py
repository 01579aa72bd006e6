"""Stock from the command line: `tillflow products import FILE` (an alias of `tillflow masterdata
import FILE --kind items`), `tillflow inventory alerts`, `tillflow inventory status --day D` and
`tillflow inventory retry BATCH`.

They work on the hub's state store (`--config` / `--data-dir`, as the other operations).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from tillflow.masterdata_ops import FileArg, FormatOpt, ReportOpt, import_records
from tillflow.ops import ConfigOpt, DataDirOpt, JsonOpt, _day, emit, err, opened, out

products_app = typer.Typer(help="The product master: import products.", no_args_is_help=True)
inventory_app = typer.Typer(
    help="Stock: alerts, goods movements sent to the ERP per store-day.", no_args_is_help=True
)


@products_app.command("import")
def products_import(
    file: FileArg,
    fmt: FormatOpt = None,
    report: ReportOpt = Path("quarantine.csv"),
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load products into the master (create or replace by SKU; every change gets a version):
    `masterdata import --kind items` under its former name. Refused rows go to the quarantine
    report with the row, field and reason. Exit 3 when some were refused."""
    import_records(file, "items", fmt, report, config, data_dir, as_json)


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
