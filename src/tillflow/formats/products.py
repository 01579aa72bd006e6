"""The master data's input formats, one reader for every kind (items — the product master's
products —, prices, promotions): JSON (a list of records, or JSON lines) and CSV.

CSV has a header row: the columns are the model's field names, every required field among them
(for products: sku, description, department, item_type, uom, gtins, tax_code, cost,
cost_currency and conversions; sku is required). List fields — gtins, skus, departments, stores,
regions, brands — are separated by spaces or semicolons; conversions read ``G=0.001;EA=0.5``
(sold unit = stock units per sold unit). Empty cells take the defaults. Each record is
validated with its canonical model; a refused one is quarantined with its field and reason,
the others go through.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from tillflow.errors import FormatError
from tillflow.formats.records import Quarantined, RecordError, SourceRef, quarantine
from tillflow.model import Product

RecordFormat = Literal["csv", "json"]
M = TypeVar("M", bound=BaseModel)
LISTS = frozenset({"gtins", "skus", "departments", "stores", "regions", "brands"})
_SEPARATORS = re.compile(r"[;\s]+")


def detect_format(name: str, head: bytes) -> RecordFormat:
    """JSON when the name says so or the text starts with `[` or `{`; CSV otherwise."""
    if name.lower().endswith((".json", ".jsonl", ".ndjson")):
        return "json"
    return "json" if head.lstrip()[:1] in (b"[", b"{") else "csv"


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A row ``{"withdraw": KEY}`` (of prices or promotions), passed on as it is: the hub judges
    it, and refuses one that carries anything else."""

    record: dict[str, Any]


def parse_sourced(
    data: bytes,
    *,
    name: str,
    model: type[M],
    fmt: RecordFormat | None = None,
    withdrawals: bool = False,
) -> Iterator[tuple[SourceRef, M | Withdrawal | Quarantined]]:
    """Each record of the input, in order, with its place in the input: a validated `model`, its
    quarantine entry or (with `withdrawals`, a JSON row naming `withdraw`) a `Withdrawal`.
    Raises FormatError, before yielding anything, when the input as a whole cannot be read."""
    fmt = fmt or detect_format(name, data[:64])
    records = _json_records(data, name) if fmt == "json" else _csv_records(data, name, model)
    return _validated(records, model, withdrawals)


def parse_records(
    data: bytes, *, name: str, model: type[M], fmt: RecordFormat | None = None
) -> Iterator[M | Quarantined]:
    """Each record of the input, in order, as a validated `model` or its quarantine entry.
    Raises FormatError, before yielding anything, when the input as a whole cannot be read."""
    return _records(parse_sourced(data, name=name, model=model, fmt=fmt))


def _records(sourced: Iterator[tuple[SourceRef, M | Withdrawal | Quarantined]]) -> Iterator[M | Quarantined]:
    for _, record in sourced:
        assert not isinstance(record, Withdrawal)  # only read with `withdrawals`
        yield record


def parse_products(
    stream: IO[bytes], *, name: str, fmt: RecordFormat | None = None
) -> Iterator[Product | Quarantined]:
    """`parse_records` for products (the items of the master data)."""
    return parse_records(stream.read(), name=name, model=Product, fmt=fmt)


def _validated(
    records: Iterator[tuple[SourceRef, Any]], model: type[M], withdrawals: bool
) -> Iterator[tuple[SourceRef, M | Withdrawal | Quarantined]]:
    for source, record in records:
        if withdrawals and isinstance(record, dict) and "withdraw" in record:
            yield source, Withdrawal(record)
            continue
        try:
            if isinstance(record, RecordError):
                raise record
            yield source, model.model_validate(record)
        except (ValidationError, RecordError) as exc:
            yield source, quarantine(source, exc)


def _json_records(data: bytes, name: str) -> Iterator[tuple[SourceRef, Any]]:
    text = data.strip()
    if text.startswith(b"["):
        try:
            records = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise FormatError(f"{name}: not JSON: {exc}") from exc
        return ((SourceRef(name, i, f"[{i - 1}]"), r) for i, r in enumerate(records, 1))
    return _json_lines(text, name)


def _json_lines(text: bytes, name: str) -> Iterator[tuple[SourceRef, Any]]:
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield SourceRef(name, i, f"line {i}"), orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield SourceRef(name, i, f"line {i}"), RecordError("$", f"not JSON: {exc}")


def _csv_records(data: bytes, name: str, model: type[BaseModel]) -> Iterator[tuple[SourceRef, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: not UTF-8 text: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or ()]
    columns = tuple(model.model_fields)
    missing = [c for c, f in model.model_fields.items() if f.is_required() and c not in header]
    if missing:
        raise FormatError(
            f"{name}: the CSV header has no {', '.join(missing)} column (columns: {', '.join(columns)})"
        )
    unknown = [h for h in header if h not in columns]
    if unknown:
        raise FormatError(f"{name}: unknown columns {', '.join(unknown)} (known: {', '.join(columns)})")
    return _csv_rows(reader, name)


def _csv_rows(reader: csv.DictReader[str], name: str) -> Iterator[tuple[SourceRef, Any]]:
    for i, row in enumerate(reader, 1):
        source = SourceRef(name, i, f"line {reader.line_num}")
        try:
            yield source, _csv_record(row)
        except RecordError as exc:
            yield source, exc


def _csv_record(row: dict[str | Any, str | Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:
            raise RecordError("$", "more cells than columns")
        cell = (value or "").strip()
        if not cell:
            continue
        column = key.strip()
        if column in LISTS:
            record[column] = [v for v in _SEPARATORS.split(cell) if v]
        elif column == "conversions":
            record[column] = _conversions(cell)
        else:
            record[column] = cell
    return record


def _conversions(cell: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _SEPARATORS.split(cell):
        if not part:
            continue
        unit, sep, factor = part.partition("=")
        if not sep or not unit.strip() or not factor.strip():
            raise RecordError("conversions", f"{part!r} is not UNIT=FACTOR (e.g. G=0.001)")
        out[unit.strip().upper()] = factor.strip()
    return out
