"""ARTS POSLog: import of versions 2.x and 6.0 (NCR ACS, ROQQIO and other tills), export as 6.0.

`parse` streams: each `<Transaction>` directly under `<POSLog>` becomes one record as soon as it
has been read, and is then dropped, so a large file is read in constant memory. A retail
transaction becomes an `Imported` canonical transaction, or a `Quarantined` one when it cannot be
mapped or its money does not add up (with the figures); control transactions (sign-on/off,
no-sale), training, cancelled and suspended ones become `Recorded`. The mapping decisions are
in `tillflow.formats.poslog_read.TransactionReader`; the safety rules of XML reading in
`tillflow.formats.xmlsafe`.

`export` writes canonical transactions as POSLog 6.0 that `parse` reads back unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Final

from tillflow.formats import poslog_write
from tillflow.formats.poslog_fields import ARTS_NS
from tillflow.formats.poslog_read import TransactionReader
from tillflow.formats.records import ImportContext, Parsed
from tillflow.formats.settings import PoslogSettings
from tillflow.formats.xmlsafe import iter_records
from tillflow.model import Transaction

NAME: Final = "poslog"

# The first element, after an optional BOM, XML declaration, comments, processing instructions
# and document type declaration (which `parse` refuses, but with a clearer message than "unknown
# format"), is a POSLog element with or without a prefix.
_MISC = rb"(?:\s|<\?.*?\?>|<!--.*?-->)*"
_ROOT = re.compile(
    rb"\A"
    + _MISC
    + rb"(?:<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>"
    + _MISC
    + rb")?<(?:[A-Za-z_][\w.\-]*:)?POSLog[\s/>]",
    re.S,
)


def sniff(head: bytes) -> bool:
    """True when the first bytes open a POSLog document."""
    head = head[:4096]
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        head = head.decode("utf-16", errors="ignore").encode("utf-8", errors="ignore")
    elif head[:3] == b"\xef\xbb\xbf":
        head = head[3:]
    return _ROOT.match(head) is not None


def parse(
    stream: BinaryIO | bytes,
    context: ImportContext,
    *,
    name: str,
    settings: PoslogSettings | None = None,
) -> Iterator[Parsed]:
    """The records of a POSLog input, in input order; FormatError when it cannot be read at all
    (not XML, not POSLog, a DTD, too large). Records before such an error have been yielded."""
    settings = settings or PoslogSettings()
    reader = TransactionReader(context, settings, name)
    records = iter_records(
        stream, root="POSLog", record="Transaction", namespace=ARTS_NS, max_bytes=settings.max_bytes
    )
    for index, element in records:
        yield reader.read(index, element)


def export(transactions: Iterable[Transaction]) -> bytes:
    """Canonical transactions as one POSLog 6.0 document (UTF-8)."""
    return poslog_write.export(transactions)
