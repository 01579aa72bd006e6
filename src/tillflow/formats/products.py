"""The product master's input formats: JSON (a list of products, or JSON lines) and CSV.

CSV has a header row with the columns sku, description, department, item_type, uom, gtins
(separated by spaces or semicolons), tax_code, cost, cost_currency and conversions
(``G=0.001;EA=0.5``: sold unit = stock units per sold unit). Empty cells take the defaults.
Each record is validated with the canonical `Product`; a refused one is quarantined with its
field and reason, the others go through.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import IO, Any, Literal

import orjson
from pydantic import ValidationError

from tillflow.errors import FormatError
from tillflow.formats.records import Quarantined, RecordError, SourceRef, quarantine
from tillflow.model import Product

ProductFormat = Literal["csv", "json"]
COLUMNS = (
    "sku",
    "description",
    "department",
    "item_type",
    "uom",
    "gtins",
    "tax_code",
    "cost",
    "cost_currency",
    "conversions",
)
_SEPARATORS = re.compile(r"[;\s]+")


def detect_format(name: str, head: bytes) -> ProductFormat:
    """JSON when the name says so or the text starts with `[` or `{`; CSV otherwise."""
    if name.lower().endswith((".json", ".jsonl", ".ndjson")):
        return "json"
    return "json" if head.lstrip()[:1] in (b"[", b"{") else "csv"


def parse_products(
    stream: IO[bytes], *, name: str, fmt: ProductFormat | None = None
) -> Iterator[Product | Quarantined]:
    """Each record of the input as a validated Product or its quarantine entry. Raises
    FormatError when the input as a whole cannot be read."""
    data = stream.read()
    fmt = fmt or detect_format(name, data[:64])
    records = _json_records(data, name) if fmt == "json" else _csv_records(data, name)
    for source, record in records:
        try:
            if isinstance(record, RecordError):
                raise record
            yield Product.model_validate(record)
        except (ValidationError, RecordError) as exc:
            yield quarantine(source, exc)


def _json_records(data: bytes, name: str) -> Iterator[tuple[SourceRef, Any]]:
    text = data.strip()
    if text.startswith(b"["):
        try:
            records = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise FormatError(f"{name}: not JSON: {exc}") from exc
        for i, record in enumerate(records, 1):
            yield SourceRef(name, i, f"[{i - 1}]"), record
        return
    for i, line in enumerate(text.splitlines(), 1):  # JSON lines
        if not line.strip():
            continue
        try:
            yield SourceRef(name, i, f"line {i}"), orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield SourceRef(name, i, f"line {i}"), RecordError("$", f"not JSON: {exc}")


def _csv_records(data: bytes, name: str) -> Iterator[tuple[SourceRef, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: not UTF-8 text: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or ()]
    if "sku" not in header:
        raise FormatError(f"{name}: the CSV header has no sku column (columns: {', '.join(COLUMNS)})")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise FormatError(f"{name}: unknown columns {', '.join(unknown)} (known: {', '.join(COLUMNS)})")
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
        if column == "gtins":
            record["gtins"] = [g for g in _SEPARATORS.split(cell) if g]
        elif column == "conversions":
            record["conversions"] = _conversions(cell)
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
