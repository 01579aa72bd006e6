"""End-of-day CSV files: one row per invoice line, invoices grouped into transactions.

The UCI Online Retail files (``InvoiceNo, StockCode, Description, Quantity, InvoiceDate,
UnitPrice, CustomerID, Country``, and the Online Retail II names ``Invoice, Price, Customer
ID``) are built in; any other layout is a `ColumnMap` a retailer writes in the config YAML::

    formats:
      csv:
        layouts:
          shop-eod:                      # picked when its columns are all in the header
            invoice: Beleg
            sku: Artikel
            description: Text
            quantity: Menge
            unit_price: Preis
            timestamp: Zeit
            timestamp_formats: ["%d.%m.%Y %H:%M"]
            store_id: S009               # no store column: the whole file is one store
            currency_code: EUR
            tender_code: cash            # mapped through policy.tenders
            delimiter: ";"
            decimal_separator: ","
            encoding: cp1252
            returns: negative_quantity
            codes: {VERSAND: non_stock, RABATT: discount}

How a file becomes transactions, where the files themselves do not say:

- **Layout.** `CsvSettings.layout` names one; otherwise the first layout (the retailer's,
  then the built-in ones) whose columns all appear in the header line is used. Columns match
  by name, so their order is free. Every data row must have as many cells as the header.
  The encoding must be ASCII-compatible (UTF-8, cp1252, latin-1, ...). Descriptions are cut
  to the model's 200 characters.
- **Grouping.** Consecutive rows with the same invoice number are one transaction; only
  the current invoice is held (at most `max_invoice_rows` rows). An invoice number that comes
  back after other invoices cannot be joined to its first part, which has already been
  yielded: the later rows are quarantined as a continuation, naming where the invoice began
  (sort the file by invoice and import it again). The last `recent_invoices` invoice numbers
  are remembered for this check; a continuation further away reaches the hub with the
  identity of its first part and is refused there as a conflict. Memory is therefore the
  current invoice, those numbers (about 3 MB at the default 20,000) and up to 4,096 cell
  values already known to hold no card number, however long the file.
- **Identity.** Sequence = the last run of digits of the invoice number (``C536379`` ->
  536379; UCI numbers cancellations and invoices from one counter, so they never collide);
  business day = the local date of the invoice's latest row time; store and register from
  their columns or fixed (`ColumnMap.store_id`, else `CsvSettings.store_id`, ``ONLINE`` for
  the web shop of the UCI files, whose Country column is a customer attribute, not a store).
  A store column goes through `policy.store_aliases`.
- **Returns.** ``returns: prefix`` (UCI): an invoice whose number starts with
  `return_prefix` (``C``) is a return; its rows must have negative quantities and become
  returned lines with positive amounts (the grand total and tender are negative). In other
  invoices a negative quantity is refused, except that an invoice made only of negative
  rows priced 0 is a stock adjustment (UCI's "damages", "?", "check" rows): `Recorded`
  ``stock-adjustment``, never posted. ``returns: negative_quantity``: each negative row is
  a returned line; an invoice with both signs is an exchange.
- **Codes.** `ColumnMap.codes` maps item codes (without regard to case; a key ending in
  ``*`` matches a prefix) to a kind: ``non_stock`` / ``service`` lines (postage, carriage,
  bank charges, fees, manual lines, samples, gift vouchers), ``discount`` (the row's amount,
  quantity x price, is a basket price modifier when it reduces what the transaction moves;
  in a return, a negative discount row is money credited to the customer and becomes a
  non-stock returned line, since a return's modifiers shrink the refund), ``adjustment``
  (an accounting entry such as UCI's "B Adjust bad debt": its invoice is `Recorded`
  ``adjustment``, and refused if it also holds sales rows) and ``ignore`` (the row is
  dropped; an invoice of only such rows is `Recorded` ``ignored``). Item ids must be
  identifiers; a code from the table is made one by turning other characters into ``_``
  (``BANK CHARGES`` -> ``BANK_CHARGES``), a stock code that is not one is refused.
- **Money.** Quantity x unit price must land exactly on the currency's minor unit: a row
  that does not (UCI's ``PADS`` at 0.001) quarantines its invoice with the numbers; nothing
  is rounded. A line-amount column, when mapped, must equal quantity x unit price; with no
  unit-price column the unit price is derived from it (to 6 decimals). Lines priced 0 stay.
- **Tax.** Without `tax_rate` (UCI: prices include VAT, no breakdown) there are no tax lines
  and totals.tax is 0. With one, one tax line per transaction: inclusive tax is taken out
  of the subtotal, exclusive tax added to it, rounded half up to the minor unit.
- **Tender.** End-of-day files carry no payment detail: one tender for the grand total, of
  the kind `policy.tenders` gives the tender column's code, `tender_code` or
  `CsvSettings.tender` (``card``); a transaction totalling 0 has none.
- **Customer.** Blank (or one of `no_customer`) means none; with `customer_is_number` a
  float-formatted id (UCI's ``17850.0``, and ``0.0`` for none) is read as the integer.
- **Times.** `timestamp_formats` are tried in order (``iso`` = ISO 8601); a time without
  an offset is the store's local time. UCI writes ``2010-12-01 08:26:00`` or, month first,
  ``12/1/2010 8:26``.
- **Bad rows.** A row that cannot be read (cell count, number, date, sign, ...) quarantines
  its whole invoice, naming the row (records counted as a spreadsheet shows them, the header
  being row 1) and the column; other invoices carry on. A cell holding a card number
  quarantines its invoice with `CARD_NUMBER_REASON`, checked before anything could echo it.
  A row without an invoice number, or one the csv reader cannot split (a cell over the csv
  field size limit), may belong to the invoice before it or after it: both are quarantined,
  so that no part of an invoice is imported as the whole. A file that is not text in the
  layout's encoding raises `FormatError` where that shows (possibly after records were
  yielded: the stream is never held whole).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, BinaryIO, Final, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from tillflow.formats.records import (
    FormatError,
    ImportContext,
    Imported,
    Parsed,
    Quarantined,
    Recorded,
    RecordError,
    SourceRef,
    quarantine,
)
from tillflow.formats.safety import CARD_NUMBER_REASON, looks_like_card_number
from tillflow.model import Transaction
from tillflow.model.base import CurrencyCode, Ident
from tillflow.model.money import MINOR_UNITS, minor_unit, round_to_minor

NAME: Final = "csv"

ItemKind = Literal["non_stock", "service", "discount", "adjustment", "ignore"]
MAX_HEADER_BYTES = 65_536
MAX_LINE_CHARS = 1 << 20  # a longer line is split and its pieces refused, never held whole
CLEAN_VALUES = 4096  # cell values remembered as holding no card number
ZERO = Decimal(0)
_SIX_PLACES = Decimal("0.000001")
_IDENT = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_NOT_IDENT = re.compile(r"[^A-Za-z0-9_.\-]+")
_DIGITS = re.compile(r"\d+")
# at most 7 + 3 digits of quantity and 12 + 6 of price: their product stays exact in 28 digits
_QUANTITY = re.compile(r"[+-]?\d{1,7}(?:\.\d{1,3})?")
_MONEY = re.compile(r"[+-]?\d{1,12}(?:\.\d{1,6})?")
_FLOAT_INT = re.compile(r"(\d+)\.0*")
# a card number has at least 13 digits, grouped by spaces or dashes: rows without are passed in C
# (starting only where a digit run starts finds the same rows, with less backtracking)
_THIRTEEN_DIGITS = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12}")


def _folded(value: object) -> object:
    return {str(k).casefold(): v for k, v in value.items()} if isinstance(value, Mapping) else value


class ColumnMap(BaseModel):
    """Where a CSV layout keeps each field (column names), and what its files leave unsaid."""

    # `register` is a BaseModel class method: the field is `register_column`, written `register`
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)

    invoice: str
    sku: str
    quantity: str
    timestamp: str
    unit_price: str | None = None
    line_amount: str | None = None
    description: str | None = None
    customer: str | None = None
    store: str | None = None
    register_column: str | None = Field(default=None, alias="register")
    currency: str | None = None
    tender: str | None = None
    timestamp_formats: tuple[str, ...] = ("iso",)
    store_id: Ident | None = None
    register_id: Ident | None = None
    currency_code: CurrencyCode | None = None
    tender_code: str | None = None
    customer_is_number: bool = False
    no_customer: frozenset[str] = frozenset({""})
    tax_rate: Decimal | None = Field(default=None, ge=0, le=1)
    tax_code: Ident = "VAT"
    prices_include_tax: bool = True
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8-sig"
    decimal_separator: Literal[".", ","] = "."
    thousands_separator: Literal["", ".", ",", " ", "'"] = ""
    returns: Literal["prefix", "negative_quantity"] = "prefix"
    return_prefix: str = "C"
    codes: Annotated[dict[str, ItemKind], BeforeValidator(_folded)] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.unit_price is None and self.line_amount is None:
            raise ValueError("map unit_price or line_amount (or both)")
        for column, fixed in (
            ("store", "store_id"),
            ("register_column", "register_id"),
            ("currency", "currency_code"),
            ("tender", "tender_code"),
        ):
            if getattr(self, column) is not None and getattr(self, fixed) is not None:
                raise ValueError(f"{column} (a column) and {fixed} (a fixed value) exclude each other")
        if self.decimal_separator == self.thousands_separator:
            raise ValueError("decimal_separator and thousands_separator must differ")
        if self.delimiter == self.quotechar or self.delimiter in "\r\n":
            raise ValueError("the delimiter must differ from the quotechar and from line breaks")
        if self.returns == "prefix" and not self.return_prefix:
            raise ValueError("returns: prefix needs a return_prefix")
        if not self.timestamp_formats or any(f != "iso" and "%" not in f for f in self.timestamp_formats):
            raise ValueError("timestamp_formats: strptime formats (with %) or 'iso'")
        try:
            ascii_compatible = codecs.decode(b"Invoice;No,\r\n", self.encoding) == "Invoice;No,\r\n"
        except (LookupError, ValueError, TypeError):
            ascii_compatible = False
        if not ascii_compatible:
            raise ValueError(f"encoding {self.encoding!r} is not a known ASCII-compatible encoding")
        return self

    @property
    def columns(self) -> dict[str, str]:
        """The mapped columns: field -> column name."""
        return {k: v for k, v in self._mapped().items() if v is not None}

    def _mapped(self) -> dict[str, str | None]:
        return {
            "invoice": self.invoice,
            "sku": self.sku,
            "quantity": self.quantity,
            "timestamp": self.timestamp,
            "unit_price": self.unit_price,
            "line_amount": self.line_amount,
            "description": self.description,
            "customer": self.customer,
            "store": self.store,
            "register": self.register_column,
            "currency": self.currency,
            "tender": self.tender,
        }


ONLINE_RETAIL_CODES: Final[Mapping[str, ItemKind]] = {
    "POST": "non_stock",  # postage
    "DOT": "non_stock",  # dotcom postage
    "C2": "non_stock",  # carriage
    "BANK CHARGES": "non_stock",
    "AMAZONFEE": "non_stock",
    "CRUK": "non_stock",  # CRUK commission
    "M": "non_stock",  # manual line
    "S": "non_stock",  # samples
    "PADS": "non_stock",
    "gift_*": "non_stock",  # gift vouchers: gift_0001_10 ... gift_0001_50
    "D": "discount",
    "B": "adjustment",  # adjust bad debt
}
_UCI_TIMES = ("iso", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")
ONLINE_RETAIL: Final = ColumnMap(
    invoice="InvoiceNo",
    sku="StockCode",
    description="Description",
    quantity="Quantity",
    unit_price="UnitPrice",
    timestamp="InvoiceDate",
    customer="CustomerID",
    timestamp_formats=_UCI_TIMES,
    currency_code="GBP",
    customer_is_number=True,
    no_customer=frozenset({"", "0", "nan", "NaN"}),
    codes=dict(ONLINE_RETAIL_CODES),
)
ONLINE_RETAIL_II: Final = ONLINE_RETAIL.model_copy(
    update={"invoice": "Invoice", "unit_price": "Price", "customer": "Customer ID"}
)
BUILT_IN_LAYOUTS: Final[Mapping[str, ColumnMap]] = {
    "online-retail": ONLINE_RETAIL,
    "online-retail-ii": ONLINE_RETAIL_II,
}


class CsvSettings(BaseModel):
    """The `formats.csv` section: extra layouts and the defaults for what files leave out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: str | None = None  # always use this layout; else the first whose columns fit the header
    layouts: dict[str, ColumnMap] = {}  # tried before the built-in ones; a same name replaces one
    store_id: Ident = "ONLINE"
    register_id: Ident = "EOD"
    tender: str = "card"
    max_invoice_rows: int = Field(default=10_000, ge=1)
    recent_invoices: int = Field(default=20_000, ge=0)  # about 3 MB when full

    @model_validator(mode="after")
    def _known_layout(self) -> Self:
        if self.layout is not None and self.layout not in self.all_layouts():
            raise ValueError(f"layout {self.layout!r} is neither built in nor in layouts")
        return self

    def all_layouts(self) -> dict[str, ColumnMap]:
        return {**self.layouts, **{k: v for k, v in BUILT_IN_LAYOUTS.items() if k not in self.layouts}}


def sniff(head: bytes) -> bool:
    """Whether the first line of `head` is the header of a built-in layout (a retailer's own
    layouts are not known here: name the format for those)."""
    first, newline, _ = head.partition(b"\n")
    if not newline and len(head) >= 4096:
        return False
    for layout in BUILT_IN_LAYOUTS.values():
        header = _header(first, layout)
        if header is not None and set(layout.columns.values()) <= set(header):
            return True
    return False


def parse(
    stream: BinaryIO, context: ImportContext, *, name: str, settings: CsvSettings | None = None
) -> Iterator[Parsed]:
    """The records of an end-of-day CSV file, one per invoice, in file order. The header is
    read at once (a FormatError if no layout fits it); the rows as the records are taken."""
    settings = settings or CsvSettings()
    line = stream.readline(MAX_HEADER_BYTES + 1)
    if not line.strip():
        raise FormatError(f"{name}: empty input, no CSV header line")
    if len(line) > MAX_HEADER_BYTES:
        raise FormatError(f"{name}: no header line within the first {MAX_HEADER_BYTES} bytes")
    layout, header = _pick_layout(line, settings, name)
    plan = _Plan.build(layout, header, settings, context, name)
    return _records(stream, plan, settings, name)


def _header(line: bytes, layout: ColumnMap) -> list[str] | None:
    try:
        text = line.decode(layout.encoding).lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError:
        return None
    try:
        cells = next(csv.reader([text], delimiter=layout.delimiter, quotechar=layout.quotechar), [])
    except csv.Error:  # a stray carriage return inside the line
        return None
    return [cell.strip() for cell in cells]


def _pick_layout(line: bytes, settings: CsvSettings, name: str) -> tuple[ColumnMap, list[str]]:
    layouts = settings.all_layouts()
    chosen = {settings.layout: layouts[settings.layout]} if settings.layout else layouts
    missing: list[str] = []
    for layout_name, layout in chosen.items():
        header = _header(line, layout)
        absent = [c for c in layout.columns.values() if header is None or c not in header]
        if not absent:
            return layout, header or []
        missing.append(f"{layout_name} (missing {', '.join(absent)})")
    raise FormatError(f"{name}: the header line fits no CSV layout: {'; '.join(missing)}")


@dataclass(frozen=True, slots=True)
class _Plan:
    """A layout bound to one file's header: column positions and the fixed values."""

    layout: ColumnMap
    context: ImportContext
    width: int
    names: tuple[str, ...]  # the header, for naming the cell a card number sits in
    at: Mapping[str, int]  # field -> cell index, for the mapped fields
    exact_codes: Mapping[str, ItemKind]
    prefix_codes: tuple[tuple[str, ItemKind], ...]
    store_id: str
    register_id: str
    tender_code: str
    number: Callable[[str, re.Pattern[str], int, str | None], Decimal]
    clean: set[str] = field(default_factory=set)  # cell values known to hold no card number

    @classmethod
    def build(
        cls, layout: ColumnMap, header: list[str], settings: CsvSettings, context: ImportContext, name: str
    ) -> _Plan:
        at: dict[str, int] = {}
        for fld, column in layout.columns.items():
            if header.count(column) > 1:
                raise FormatError(
                    f"{name}: column {column!r} appears {header.count(column)} times in the header"
                )
            at[fld] = header.index(column)
        prefixes = tuple((k[:-1], v) for k, v in layout.codes.items() if k.endswith("*"))
        return cls(
            layout=layout,
            context=context,
            width=len(header),
            names=tuple(header),
            at=at,
            exact_codes={k: v for k, v in layout.codes.items() if not k.endswith("*")},
            prefix_codes=tuple(sorted(prefixes, key=lambda p: -len(p[0]))),
            store_id=layout.store_id or settings.store_id,
            register_id=layout.register_id or settings.register_id,
            tender_code=layout.tender_code or settings.tender,
            number=_number_reader(layout),
        )

    def kind_of(self, sku: str) -> ItemKind | None:
        folded = sku.casefold()
        kind = self.exact_codes.get(folded)
        if kind is None:
            for prefix, prefixed in self.prefix_codes:
                if folded.startswith(prefix):
                    return prefixed
        return kind

    def column(self, fld: str) -> str:
        return self.layout.columns.get(fld, fld)

    def card_field(self, cells: list[str]) -> str | None:
        """The column of the first cell holding a card number (a GTIN item code is not one).
        Values found clean are remembered (dates repeat within an invoice, descriptions
        across the file); only a value clean in any column is, so no card can hide there."""
        clean = self.clean
        for cell in cells:
            if len(cell) < 13 or cell in clean:
                continue
            if _THIRTEEN_DIGITS.search(cell) is None or not looks_like_card_number(cell):
                if len(clean) >= CLEAN_VALUES:
                    clean.clear()
                clean.add(cell)
                continue
            sku_at = self.at["sku"]
            for i, suspect in enumerate(cells):
                if looks_like_card_number(suspect, item_identifier=i == sku_at):
                    return self.names[i] if i < len(self.names) else f"cell {i + 1}"
            return None  # only a GTIN in the item column
        return None


@dataclass(slots=True)
class _Invoice:
    """The rows of the invoice being read, and what is already known to be wrong with it."""

    invoice: str
    first_row: int
    last_row: int = 0
    rows: list[tuple[int, list[str]]] = field(default_factory=list)
    card_field: str | None = None
    broken: tuple[str, str] | None = None  # (field, reason) of an unreadable row beside it
    overflow: bool = False
    began_at: int | None = None  # the first row of an earlier run of this invoice number

    def taint(self, fault: tuple[str, str]) -> None:
        """Refuse this invoice for an unreadable row that may belong to it."""
        if fault[1] == CARD_NUMBER_REASON:
            self.card_field = self.card_field or fault[0]
        else:
            self.broken = self.broken or fault


def _lines(stream: BinaryIO, encoding: str, name: str) -> Iterator[str]:
    """The text lines of `stream` (decoded as they are read), each at most MAX_LINE_CHARS."""
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")
    try:
        while line := text.readline(MAX_LINE_CHARS):
            yield line
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: not {encoding} text ({exc.reason}) after the last row read") from None
    finally:
        text.detach()  # the caller owns the stream: do not let the wrapper close it


def _records(stream: BinaryIO, plan: _Plan, settings: CsvSettings, name: str) -> Iterator[Parsed]:
    """Group the rows into invoices. A row that cannot be read, or has no invoice number, may
    belong to the invoice before it or the one after: both are refused, so that no part of
    an invoice is imported as if it were the whole."""
    layout = plan.layout
    lines = _lines(stream, layout.encoding, name)
    rows = csv.reader(lines, delimiter=layout.delimiter, quotechar=layout.quotechar)
    invoice_at, limit, window = plan.at["invoice"], settings.max_invoice_rows, settings.recent_invoices
    card_field = plan.card_field
    recent: OrderedDict[str, int] = OrderedDict()
    current = _Invoice("", 0)  # a sentinel: rows without an invoice number never join it
    fault: tuple[str, str] | None = None  # an unreadable row, waiting for the next invoice
    index, row_no = 0, 1
    while True:  # the loop is entered again after a row the csv reader cannot split
        try:
            for cells in rows:
                row_no += 1
                invoice = cells[invoice_at].strip() if len(cells) > invoice_at else ""
                if not invoice:
                    if any(cell.strip() for cell in cells):  # else a blank line or empty cells
                        card = card_field(cells)
                        fault = (card, CARD_NUMBER_REASON) if card else (layout.invoice, _no_invoice(row_no))
                        current.taint(fault)
                    continue
                if invoice != current.invoice:
                    if current.rows:
                        index += 1
                        yield _finish(current, plan, SourceRef(name, index, ""))
                    current = _Invoice(invoice, row_no, began_at=recent.get(invoice))
                    if window and current.began_at is None:
                        recent[invoice] = row_no
                        if len(recent) > window:
                            recent.popitem(last=False)
                if fault is not None:
                    current.taint(fault)
                    fault = None
                current.last_row = row_no
                if current.card_field is None:
                    current.card_field = card_field(cells)
                if len(current.rows) < limit:
                    current.rows.append((row_no, cells))
                else:
                    current.overflow = True
            break
        except csv.Error as exc:
            row_no += 1
            fault = ("row", f"row {row_no} cannot be read as CSV ({exc}) and may belong to this invoice")
            current.taint(fault)
    if current.rows:
        yield _finish(current, plan, SourceRef(name, index + 1, ""))
    elif fault is not None:  # unreadable rows and no invoice to refuse with them
        yield Quarantined(SourceRef(name, index + 1, f"rows 2-{row_no}"), *fault)


def _no_invoice(row_no: int) -> str:
    return f"row {row_no} has no invoice number and may belong to this invoice"


def _finish(invoice: _Invoice, plan: _Plan, at: SourceRef) -> Parsed:
    rows = f"rows {invoice.first_row}-{invoice.last_row}"
    column = plan.layout.invoice
    if invoice.card_field is not None:
        return Quarantined(SourceRef(at.name, at.index, rows), invoice.card_field, CARD_NUMBER_REASON)
    source = SourceRef(at.name, at.index, f"invoice {invoice.invoice}, {rows}")
    if invoice.broken is not None:
        return Quarantined(source, *invoice.broken)
    if invoice.overflow:
        limit = len(invoice.rows)
        return Quarantined(source, column, f"invoice {invoice.invoice} has more than {limit} rows")
    if invoice.began_at is not None:
        reason = (
            f"invoice {invoice.invoice} continues at {rows} after other invoices (it began at row"
            f" {invoice.began_at}): sort the file by invoice to import it whole"
        )
        return Quarantined(source, column, reason)
    try:
        return _Builder(plan, invoice, source).build()
    except (RecordError, ValidationError) as exc:
        return quarantine(source, exc)
    except ArithmeticError:  # decimal overflow: sums beyond 28 digits
        return Quarantined(source, column, f"invoice {invoice.invoice}: amounts too large to add up exactly")


@dataclass(slots=True)
class _Amount:
    """One priced row: its signed quantity and amount as the file has them."""

    row: int
    cells: list[str]
    sku: str
    kind: ItemKind | None
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


class _Builder:
    """One invoice's rows into one canonical transaction (or a Recorded, or a RecordError)."""

    def __init__(self, plan: _Plan, invoice: _Invoice, source: SourceRef) -> None:
        self.plan, self.layout, self.invoice, self.source = plan, plan.layout, invoice, source
        self.rows = invoice.rows

    def build(self) -> Imported | Recorded:
        plan, layout = self.plan, self.layout
        for row_no, cells in self.rows:
            if len(cells) != plan.width:
                absent = [c for f, c in layout.columns.items() if plan.at[f] >= len(cells)]
                where = absent[0] if absent else "row"
                raise RecordError(where, f"row {row_no} has {len(cells)} cells, the header has {plan.width}")
        store_id = plan.context.store_id(self._agreed("store")) if layout.store else plan.store_id
        currency = self._agreed("currency").upper() if layout.currency else layout.currency_code
        currency = plan.context.currency(store_id, currency)
        if currency not in MINOR_UNITS:
            raise RecordError(
                layout.currency or "currency", f"currency {currency!r} is not a known ISO 4217 code"
            )
        started, ended = self._times(store_id)
        priced, adjustments, ignored = self._priced(currency)
        if adjustments:
            return self._adjustment(adjustments, priced)
        if not priced:
            detail = f"invoice {self.invoice.invoice}: {ignored} row(s) of codes configured to be ignored"
            return Recorded(self.source, "ignored", detail)
        if layout.returns == "prefix":
            is_return = self.invoice.invoice.startswith(layout.return_prefix)
            stock_adjustment = self._check_signs(priced, is_return)
            if stock_adjustment is not None:
                return stock_adjustment
        head: dict[str, Any] = {
            "store_id": store_id,
            "register_id": self._agreed("register") if layout.register_column else plan.register_id,
            "business_day": ended.date(),
            "sequence": self._sequence(),
            "currency": currency,
            "ended_at": ended,
        }
        if started != ended:
            head["started_at"] = started
        customer = self._customer()
        if customer is not None:
            head["customer"] = {"member_id": customer}
        self._fill_lines(head, priced)
        self._close(head, store_id, currency)
        return Imported(self.source, Transaction.model_validate(head))

    def _agreed(self, fld: str) -> str:
        """The invoice's value of a per-invoice column: every row must say the same."""
        i = self.plan.at[fld]
        first_no, first = self.rows[0]
        value = first[i].strip()
        for row_no, cells in self.rows:
            if cells[i].strip() != value:
                column = self.plan.column(fld)
                raise RecordError(
                    column,
                    f"row {row_no}: {column} {cells[i].strip()!r} differs from row {first_no} ({value!r})",
                )
        return value

    def _customer(self) -> str | None:
        layout = self.layout
        if layout.customer is None:
            return None
        value = self._agreed("customer")
        if layout.customer_is_number and (whole := _FLOAT_INT.fullmatch(value)):
            value = whole.group(1)
        return None if value in layout.no_customer else value

    def _times(self, store_id: str) -> tuple[datetime, datetime]:
        """The earliest and latest row time of the invoice, in the store's time zone when the
        file gives no offset."""
        i, column = self.plan.at["timestamp"], self.layout.timestamp
        local = self.plan.context.local_time
        last_text, last = "", None
        times: list[datetime] = []
        for row_no, cells in self.rows:
            text = cells[i].strip()
            if text != last_text or last is None:
                parsed = _timestamp(text, self.layout.timestamp_formats)
                if parsed is None:
                    expected = " or ".join(self.layout.timestamp_formats)
                    raise RecordError(
                        column, f"row {row_no}: {column} {text[:40]!r} is not a time ({expected})"
                    )
                last_text, last = text, local(store_id, parsed)
            times.append(last)
        return min(times), max(times)

    def _priced(self, currency: str) -> tuple[list[_Amount], list[_Amount], int]:
        """The invoice's rows with their numbers: (lines and discounts, adjustments, ignored count)."""
        plan, layout = self.plan, self.layout
        at, quantum = plan.at, minor_unit(currency)
        sku_at, qty_at = at["sku"], at["quantity"]
        price_at, amount_at = at.get("unit_price"), at.get("line_amount")
        number = plan.number
        priced: list[_Amount] = []
        adjustments: list[_Amount] = []
        ignored = 0
        for row_no, cells in self.rows:
            sku = cells[sku_at].strip()
            kind = plan.kind_of(sku)
            if kind == "ignore":
                ignored += 1
                continue
            if not sku:
                raise RecordError(layout.sku, f"row {row_no}: {layout.sku} is empty")
            quantity = number(cells[qty_at], _QUANTITY, row_no, layout.quantity)
            if not quantity:
                raise RecordError(layout.quantity, f"row {row_no}: {layout.quantity} is 0")
            price = None if price_at is None else number(cells[price_at], _MONEY, row_no, layout.unit_price)
            amount = quantity * price if price is not None else ZERO
            if amount_at is not None:
                stated = number(cells[amount_at], _MONEY, row_no, layout.line_amount)
                if price is not None and stated != amount:
                    raise RecordError(
                        str(layout.line_amount),
                        f"row {row_no}: {layout.line_amount} is not {layout.quantity} x {layout.unit_price}",
                        {"quantity": str(quantity), "unit_price": str(price), "line_amount": str(stated)},
                    )
                amount = stated
            if price is None:
                price = abs(amount / quantity).quantize(_SIX_PLACES)
            entry = _Amount(row_no, cells, sku, kind, quantity, price, amount)
            if kind == "adjustment":
                adjustments.append(entry)
                continue
            if kind != "discount" and (price < 0 or (amount < 0 and quantity > 0) or (amount > 0 > quantity)):
                column = str(layout.unit_price or layout.line_amount)
                raise RecordError(
                    column, f"row {row_no}: {column} is negative for {layout.quantity} {quantity}"
                )
            if amount != amount.quantize(quantum):
                raise RecordError(
                    str(layout.unit_price or layout.line_amount),
                    f"row {row_no}: {layout.quantity} x {layout.unit_price} = {amount} is not a whole number"
                    f" of {currency} minor units ({quantum}); it is not rounded",
                    {"quantity": str(quantity), "unit_price": str(price), "line_amount": str(amount)},
                )
            priced.append(entry)
        return priced, adjustments, ignored

    def _adjustment(self, adjustments: list[_Amount], priced: list[_Amount]) -> Recorded:
        if priced:
            row = adjustments[0]
            raise RecordError(
                self.layout.sku,
                f"row {row.row}: code {row.sku!r} is an accounting adjustment; the invoice has other rows",
            )
        codes = ", ".join(sorted({a.sku for a in adjustments}))
        total = sum((a.amount for a in adjustments), ZERO)
        detail = (
            f"invoice {self.invoice.invoice}: accounting adjustment ({codes}) of {total}, not a till sale"
        )
        return Recorded(self.source, "adjustment", detail)

    def _check_signs(self, priced: list[_Amount], is_return: bool) -> Recorded | None:
        """Under the prefix rule: a return's rows are negative, a sale's positive; an invoice
        of only negative rows priced 0 outside returns is a stock adjustment."""
        layout = self.layout
        goods = [p for p in priced if p.kind != "discount"]
        negative = [p for p in goods if p.quantity < 0]
        if is_return:
            if len(negative) < len(goods):
                row = next(p for p in goods if p.quantity > 0)
                raise RecordError(
                    layout.quantity,
                    f"row {row.row}: {layout.quantity} {row.quantity} is positive in a return"
                    f" ({layout.return_prefix!r} invoice)",
                )
            return None
        if not negative:
            return None
        if len(negative) == len(goods) == len(priced) and not any(p.amount for p in priced):
            detail = (
                f"invoice {self.invoice.invoice}: {len(priced)} row(s) of negative quantity priced 0,"
                f" no {layout.return_prefix!r} prefix: a stock adjustment, not a sale or return"
            )
            return Recorded(self.source, "stock-adjustment", detail)
        row = negative[0]
        raise RecordError(
            layout.quantity,
            f"row {row.row}: {layout.quantity} {row.quantity} is negative in an invoice that is not a return"
            f" (no {layout.return_prefix!r} prefix)",
        )

    def _sequence(self) -> int:
        runs = _DIGITS.findall(self.invoice.invoice)
        if not runs or len(runs[-1].lstrip("0")) > 10:
            raise RecordError(
                self.layout.invoice, f"invoice {self.invoice.invoice!r} has no number of at most 10 digits"
            )
        return int(runs[-1])

    def _fill_lines(self, head: dict[str, Any], priced: list[_Amount]) -> None:
        layout = self.layout
        goods = [p for p in priced if p.kind != "discount"]
        discounts = [p for p in priced if p.kind == "discount"]
        if layout.returns == "prefix":
            returning = self.invoice.invoice.startswith(layout.return_prefix)
            kind = "return" if returning else "sale"
        else:
            signs = {p.quantity < 0 for p in goods}
            if not signs:
                signs = {sum((p.amount for p in discounts), ZERO) < 0}
            kind = "exchange" if len(signs) == 2 else "return" if signs == {True} else "sale"
        lines: list[dict[str, Any]] = []
        modifiers: list[dict[str, Any]] = []
        description_at = self.plan.at.get("description")
        for entry in priced:
            description = "" if description_at is None else entry.cells[description_at].strip()[:200]
            if entry.kind == "discount":
                reduces = entry.amount <= 0 if kind != "return" else entry.amount >= 0
                if reduces:
                    modifiers.append(
                        {
                            "amount": abs(entry.amount),
                            "reason": description[:64] or "discount",
                            "promotion_id": _NOT_IDENT.sub("_", entry.sku)[:64],
                        }
                    )
                    continue
                if kind != "return":
                    raise RecordError(
                        layout.quantity,
                        f"row {entry.row}: discount {entry.sku!r} adds {entry.amount} to a sale",
                    )
            lines.append(self._line(entry, len(lines) + 1, description))
        head["kind"] = kind
        head["lines"] = lines
        head["modifiers"] = modifiers

    def _line(self, entry: _Amount, line_no: int, description: str) -> dict[str, Any]:
        kind = entry.kind
        if kind is None:
            if not _IDENT.fullmatch(entry.sku):
                raise RecordError(
                    self.layout.sku,
                    f"row {entry.row}: {self.layout.sku} {entry.sku[:70]!r} is not an item id"
                    " (letters, digits, _ . -, at most 64)",
                )
            sku = entry.sku
        else:
            sku = _NOT_IDENT.sub("_", entry.sku)[:64]
        line: dict[str, Any] = {
            "line_no": line_no,
            "sku": sku,
            "description": description,
            "quantity": abs(entry.quantity),
            "unit_price": abs(entry.unit_price),
            "extended_amount": abs(entry.amount),
        }
        if entry.quantity < 0 or (kind == "discount" and entry.amount < 0):
            line["action"] = "return"
        if kind is not None:
            line["item_type"] = "service" if kind == "service" else "non_stock"
            if "action" in line:
                line["restock"] = False
        return line

    def _close(self, head: dict[str, Any], store_id: str, currency: str) -> None:
        """Totals, tax and the one tender of the transaction in `head`."""
        subtotal = ZERO
        for line in head["lines"]:
            subtotal += (
                -line["extended_amount"] if line.get("action") == "return" else line["extended_amount"]
            )
        reductions = sum((m["amount"] for m in head["modifiers"]), ZERO)
        subtotal += reductions if head["kind"] == "return" else -reductions
        tax = ZERO
        layout = self.layout
        if layout.tax_rate is not None:
            rate = layout.tax_rate
            if layout.prices_include_tax:
                tax = round_to_minor(subtotal * rate / (1 + rate), currency) + ZERO
                taxable = subtotal - tax
            else:
                tax, taxable = round_to_minor(subtotal * rate, currency) + ZERO, subtotal
            code = self.plan.context.resolved(store_id).tax_code(layout.tax_code)
            head["taxes"] = [
                {
                    "code": code,
                    "rate": rate,
                    "taxable_amount": taxable,
                    "amount": tax,
                    "inclusive": layout.prices_include_tax,
                }
            ]
        grand = subtotal if layout.prices_include_tax else subtotal + tax
        if grand:
            code = self._agreed("tender") if layout.tender else self.plan.tender_code
            kind = self.plan.context.tender_kind(store_id, [code], layout.tender or "tender")
            head["tenders"] = [{"kind": kind, "amount": grand}]
        head["totals"] = {"subtotal": subtotal, "tax": tax, "grand_total": grand}


def _timestamp(text: str, formats: tuple[str, ...]) -> datetime | None:
    for fmt in formats:
        try:
            return datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _number_reader(layout: ColumnMap) -> Callable[[str, re.Pattern[str], int, str | None], Decimal]:
    """A reader of the layout's numbers: exact decimals, refused with the row and column."""
    thousands, comma = layout.thousands_separator, layout.decimal_separator == ","

    def read(text: str, shape: re.Pattern[str], row_no: int, column: str | None) -> Decimal:
        plain = text.strip()
        if thousands:
            plain = plain.replace(thousands, "")
        if comma:
            plain = plain.replace(",", ".")
        if not shape.fullmatch(plain):
            raise RecordError(str(column), f"row {row_no}: {column} {text.strip()[:40]!r} is not a number")
        return Decimal(plain)

    return read
