"""Master data from the command line: `tillflow masterdata import FILE --kind items|prices|promotions`
and `tillflow masterdata status` (`tillflow products import FILE` is `masterdata import --kind items`).

Import reads JSON (a list, or JSON lines) or CSV with a header (the record's field names; list
fields — gtins, skus, departments, stores, regions, brands — separated by `;` or spaces;
conversions as `G=0.001;EA=0.5`; empty cells take the defaults), all with the one reader of
`tillflow.formats.products`. Each row is validated with the canonical model; refused rows go to
the quarantine report with the row, field and reason, the rest load through the same store code
as the batch APIs (every change versioned). They work on the hub's state store (`--config` /
`--data-dir`, as the other operations).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from tillflow.ops import ConfigOpt, DataDirOpt, JsonOpt, _day, emit, err, opened

masterdata_app = typer.Typer(
    help="Master data to the stores: items, prices, promotions; versions and acks.", no_args_is_help=True
)
CHUNK = 1000  # records per commit
EXIT_OK, EXIT_USAGE, EXIT_PARTIAL = 0, 2, 3
KINDS = ("items", "prices", "promotions")
FileArg = Annotated[Path, typer.Argument(help="a CSV (with a header) or JSON (list or lines) file")]
FormatOpt = Annotated[str | None, typer.Option("--format", help="csv or json (default: detected)")]
ReportOpt = Annotated[
    Path, typer.Option("--report", help="the quarantine report (CSV), written when a row is refused")
]


@masterdata_app.command("import")
def masterdata_import(
    file: FileArg,
    kind: Annotated[str, typer.Option("--kind", help="items, prices or promotions")],
    fmt: FormatOpt = None,
    report: ReportOpt = Path("quarantine.csv"),
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load items, prices or promotions (create or replace by key; every change gets a version).
    Refused rows go to the quarantine report. Exit 3 when some were refused."""
    if kind not in KINDS:
        err.print(f"[red]--kind is items, prices or promotions, not {kind}[/red]")
        raise typer.Exit(EXIT_USAGE)
    import_records(file, kind, fmt, report, config, data_dir, as_json)


def import_records(
    file: Path,
    kind: str,
    fmt: str | None,
    report: Path,
    config: Path | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """The import of one file of `kind` (one of KINDS); always ends with `typer.Exit`."""
    if fmt not in (None, "csv", "json"):
        err.print(f"[red]--format is csv or json, not {fmt}[/red]")
        raise typer.Exit(EXIT_USAGE)
    if not file.is_file():
        err.print(f"[red]no such file: {file}[/red]")
        raise typer.Exit(EXIT_USAGE)
    # imported here: every process of the hub starts through the command line, none needs them
    from pydantic import BaseModel

    from tillflow.errors import FormatError
    from tillflow.formats.products import RecordFormat, parse_records
    from tillflow.formats.records import Quarantined
    from tillflow.importer import QuarantineReport
    from tillflow.model import Product
    from tillflow.model.masterdata import Price, Promotion
    from tillflow.ports import MasterOutcome

    models: dict[str, type[BaseModel]] = {"items": Product, "prices": Price, "promotions": Promotion}
    try:
        parsed = parse_records(
            file.read_bytes(), name=file.name, model=models[kind], fmt=cast(RecordFormat | None, fmt)
        )
    except FormatError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    quarantine = QuarantineReport(report)
    counts: Counter[str] = Counter()
    try:
        with opened(config, data_dir) as services:
            master = services.masterdata
            recorders: dict[str, Callable[..., list[MasterOutcome]]] = {
                "items": master.record_items,
                "prices": master.record_prices,
                "promotions": master.record_promotions,
            }
            store = recorders[kind]
            pending: list[Any] = []

            def flush() -> None:
                counts.update(o.value for o in store(pending, at=datetime.now(UTC)))
                pending.clear()

            for record in parsed:
                counts["read"] += 1
                if isinstance(record, Quarantined):
                    src = record.source
                    quarantine.add(src.name, src.index, src.locator, "parse", record.field, record.reason, {})
                    counts["quarantined"] += 1
                    continue
                pending.append(record)
                if len(pending) >= CHUNK:
                    flush()
            if pending:
                flush()
            version = master.read_head()
    finally:
        quarantine.close()
    row = {k: counts.get(k, 0) for k in ("read", "created", "updated", "unchanged", "quarantined")}
    emit(
        [{"file": file.name, "kind": kind, **row, "version": version}], as_json, "tillflow masterdata import"
    )
    if quarantine.rows:
        err.print(f"{quarantine.rows} refused rows: see the quarantine report {quarantine.path}")
    raise typer.Exit(EXIT_PARTIAL if counts["quarantined"] else EXIT_OK)


@masterdata_app.command("status")
def masterdata_status(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Per configured store: the version it acknowledged, the latest that concerns it, how far behind."""
    with opened(config, data_dir) as services:
        states = services.masterdata.read_sync(services.config.stores)
        head = services.masterdata.read_head()
    rows = [
        {
            "store": s.store_id,
            "acked": s.acked_version,
            "acked_at": None if s.acked_at is None else s.acked_at.isoformat(timespec="seconds"),
            "latest": s.latest_version,
            "behind": s.behind,
        }
        for s in states
    ]
    emit(rows, as_json, f"master data per store (latest version {head})")


@masterdata_app.command("compliance")
def masterdata_compliance(
    day: Annotated[str, typer.Option("--day", help="business day, YYYY-MM-DD")],
    store: Annotated[str | None, typer.Option("--store", help="only this store")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What departs from the promotion calendar: each deviation of the day (unauthorised
    discounts, promotions not applied), per store, and the stores whose day reaches
    `hub.compliance_alert_deviations`. Exits 1 when there is any deviation."""
    from tillflow.flows.compliance import alerting, summarise

    business_day = _day(day)
    with opened(config, data_dir) as services:
        found = services.deviations.find_deviations(business_day, store)
        threshold = services.config.hub.compliance_alert_deviations
    alerts = [d.store_id for d in alerting(summarise(found), threshold)]
    rows = [
        {
            "store": d.store_id,
            "transaction": d.transaction_id,
            "line": "basket" if d.line_no is None else d.line_no,
            "kind": d.kind.value,
            "promotion": d.promotion_id or "-",
            "expected": format(d.expected, "f"),
            "actual": format(d.actual, "f"),
        }
        for d in found
    ]
    title = f"promotion compliance {business_day}: {len(rows)} deviation(s)"
    if alerts:
        title += f"; alert (≥ {threshold} in a store-day): {', '.join(alerts)}"
    emit(rows, as_json, title)
    if rows:
        raise typer.Exit(1)
