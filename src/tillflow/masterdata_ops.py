"""Master data from the command line: `tillflow masterdata import FILE --kind items|prices|promotions`
and `tillflow masterdata status`.

Import reads JSON (a list, or JSON lines) or CSV with a header (the record's field names; list
fields — gtins, skus, departments, stores, regions, brands — separated by `;` or spaces; empty
cells take the defaults). Each row is validated with the canonical model; refused rows go to the
quarantine report with the row, field and reason, the rest load through the same store code as
the batch APIs (every change versioned). They work on the hub's state store (`--config` /
`--data-dir`, as the other operations).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from tillflow.ops import ConfigOpt, DataDirOpt, JsonOpt, _day, emit, err, opened

masterdata_app = typer.Typer(
    help="Master data to the stores: items, prices, promotions; versions and acks.", no_args_is_help=True
)
CHUNK = 1000  # records per commit
EXIT_OK, EXIT_USAGE, EXIT_PARTIAL = 0, 2, 3
KINDS = ("items", "prices", "promotions")
LISTS = frozenset({"gtins", "skus", "departments", "stores", "regions", "brands"})
_SEPARATORS = re.compile(r"[;\s]+")


def read_rows(data: bytes, name: str, fmt: str | None) -> Iterator[tuple[int, str, Any]]:
    """(position, locator, raw record) of each record; a record that cannot be read is a
    ValueError in place of the record. Raises ValueError when the input is unreadable."""
    if fmt is None:
        lowered = name.lower()
        fmt = "json" if lowered.endswith((".json", ".jsonl", ".ndjson")) else "csv"
        if data.lstrip()[:1] in (b"[", b"{"):
            fmt = "json"
    if fmt == "json":
        text = data.strip()
        if text.startswith(b"["):
            try:
                records = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{name}: not JSON: {exc}") from exc
            for i, record in enumerate(records, 1):
                yield i, f"[{i - 1}]", record
            return
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield i, f"line {i}", orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield i, f"line {i}", ValueError(f"not JSON: {exc}")
        return
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text: {exc}") from exc
    for i, row in enumerate(reader, 1):
        if None in row:
            yield i, f"line {reader.line_num}", ValueError("more cells than columns")
            continue
        fields: dict[str, Any] = {}
        for key, value in row.items():
            cell = (value or "").strip()
            if cell:
                column = key.strip()
                fields[column] = [v for v in _SEPARATORS.split(cell) if v] if column in LISTS else cell
        yield i, f"line {reader.line_num}", fields


@masterdata_app.command("import")
def masterdata_import(
    file: Annotated[Path, typer.Argument(help="a CSV (with a header) or JSON (list or lines) file")],
    kind: Annotated[str, typer.Option("--kind", help="items, prices or promotions")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv or json (default: detected)")] = None,
    report: Annotated[
        Path, typer.Option("--report", help="the quarantine report (CSV), written when a row is refused")
    ] = Path("quarantine.csv"),
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load items, prices or promotions (create or replace by key; every change gets a version).
    Refused rows go to the quarantine report. Exit 3 when some were refused."""
    if kind not in KINDS:
        err.print(f"[red]--kind is items, prices or promotions, not {kind}[/red]")
        raise typer.Exit(EXIT_USAGE)
    if fmt not in (None, "csv", "json"):
        err.print(f"[red]--format is csv or json, not {fmt}[/red]")
        raise typer.Exit(EXIT_USAGE)
    if not file.is_file():
        err.print(f"[red]no such file: {file}[/red]")
        raise typer.Exit(EXIT_USAGE)
    # imported here: every process of the hub starts through the command line, none needs them
    from pydantic import BaseModel, ValidationError

    from tillflow.formats.records import field_path
    from tillflow.importer import QuarantineReport
    from tillflow.model import Product
    from tillflow.model.masterdata import Price, Promotion
    from tillflow.ports import MasterOutcome

    models: dict[str, type[BaseModel]] = {"items": Product, "prices": Price, "promotions": Promotion}
    model = models[kind]
    quarantine = QuarantineReport(report)
    counts: Counter[str] = Counter()
    try:
        rows = list(read_rows(file.read_bytes(), file.name, fmt))
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
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

            for index, locator, raw in rows:
                counts["read"] += 1
                try:
                    if isinstance(raw, ValueError):
                        raise raw
                    pending.append(model.model_validate(raw))
                except ValidationError as exc:
                    first = exc.errors(include_url=False, include_input=False)[0]
                    reason = str(first["msg"]).removeprefix("Value error, ")
                    quarantine.add(file.name, index, locator, "parse", field_path(first["loc"]), reason, {})
                    counts["quarantined"] += 1
                except ValueError as exc:
                    quarantine.add(file.name, index, locator, "parse", "$", str(exc), {})
                    counts["quarantined"] += 1
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
    discounts, promotions not applied), per store. Exits 1 when there is any."""
    business_day = _day(day)
    with opened(config, data_dir) as services:
        found = services.deviations.find_deviations(business_day, store)
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
    emit(rows, as_json, f"promotion compliance {business_day}: {len(rows)} deviation(s)")
    if rows:
        raise typer.Exit(1)
