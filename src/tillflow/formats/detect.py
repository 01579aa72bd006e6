"""Which format an input is in, and one way to parse any of them.

Every format module exposes `NAME`, `sniff(head)` and `parse(stream, context, *, name,
settings)`. Detection asks each, most specific first, with the first 4 KiB of the input; a
caller that knows better names the format.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, BinaryIO

from tillflow.formats import csv_batch, poslog, shopify, square
from tillflow.formats.records import FormatError, ImportContext, Parsed

HEAD_BYTES = 4096
FORMATS: Mapping[str, ModuleType] = {m.NAME: m for m in (poslog, shopify, square, csv_batch)}


def detect(head: bytes, name: str = "input") -> str:
    """The name of the format `head` (an input's first bytes) is in."""
    for fmt, module in FORMATS.items():
        if module.sniff(head):
            return fmt
    raise FormatError(
        f"{name}: not a format tillflow reads ({', '.join(FORMATS)}); name one with --format if it is"
    )


def parse_input(
    stream: BinaryIO,
    context: ImportContext,
    *,
    name: str,
    fmt: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[str, Iterator[Parsed]]:
    """The format of `stream` (detected unless `fmt` names it) and its parsed records.
    `stream` must be seekable when the format is detected (its head is read, then rewound)."""
    if fmt is None:
        head = stream.read(HEAD_BYTES)
        stream.seek(0)
        fmt = detect(head, name)
    module = FORMATS.get(fmt)
    if module is None:
        raise FormatError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    records: Iterator[Parsed] = module.parse(stream, context, name=name, settings=(settings or {}).get(fmt))
    return fmt, records
