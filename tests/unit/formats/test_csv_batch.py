"""End-of-day CSV import: the UCI Online Retail files, a retailer's own layout, bad rows, streaming.

Expected figures for the real samples are worked out here with a plain `csv` read of the same
file, independently of the parser.
"""

from __future__ import annotations

import csv
import io
import re
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.shared_data import sample
from tillflow.formats import csv_batch
from tillflow.formats.csv_batch import ColumnMap, CsvSettings
from tillflow.formats.policy import PolicyMaps
from tillflow.formats.records import FormatError, ImportContext, Imported, Parsed, Quarantined, Recorded
from tillflow.formats.safety import CARD_NUMBER_REASON
from tillflow.model import ItemType, LineAction, Store, TenderKind, Transaction, TransactionKind

DEDUP = sample("online-retail", "online_retail_dedup_sample_4792rows.csv")
FIRST_100 = sample("online-retail", "online_retail_first_100rows.csv")
UCI_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
VISA_TEST_CARD = "4111 1111 1111 1111"
# the UCI codes that are not stock items, as the built-in layout is documented to treat them
NON_STOCK = {"POST", "DOT", "C2", "BANK CHARGES", "AMAZONFEE", "CRUK", "M", "S", "PADS"}


def parse(
    data: bytes, settings: CsvSettings | None = None, context: ImportContext | None = None
) -> list[Parsed]:
    return list(
        csv_batch.parse(io.BytesIO(data), context or ImportContext(), name="eod.csv", settings=settings)
    )


def parse_file(path: Path, context: ImportContext | None = None) -> list[Parsed]:
    with path.open("rb") as stream:
        return list(csv_batch.parse(stream, context or ImportContext(), name=path.name))


def imported(records: list[Parsed]) -> list[Transaction]:
    return [r.transaction for r in records if isinstance(r, Imported)]


def invoice_of(record: Parsed) -> str:
    found = re.match(r"invoice (\S+), rows", record.source.locator)
    assert found, record.source.locator
    return found.group(1)


def signed(transaction: Transaction, *, stock_only: bool = False) -> Decimal:
    return sum(
        (line.net_amount for line in transaction.lines if not stock_only or line.item_type is ItemType.STOCK),
        Decimal(0),
    )


@dataclass
class PlainInvoice:
    """One invoice as a plain csv read sees it."""

    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum((Decimal(r["Quantity"]) * Decimal(r["UnitPrice"]) for r in self.rows), Decimal(0))

    @property
    def stock_total(self) -> Decimal:
        return sum(
            (
                Decimal(r["Quantity"]) * Decimal(r["UnitPrice"])
                for r in self.rows
                if r["StockCode"].upper() not in NON_STOCK | {"D", "B"}
                and not r["StockCode"].startswith("gift_")
            ),
            Decimal(0),
        )


def plain_invoices(path: Path, names: dict[str, str] | None = None) -> dict[str, PlainInvoice]:
    invoices: dict[str, PlainInvoice] = {}
    with path.open(newline="", encoding="utf-8-sig") as text:
        for row in csv.DictReader(text):
            for theirs, ours in (names or {}).items():
                row[ours] = row.pop(theirs)
            invoices.setdefault(row["InvoiceNo"], PlainInvoice()).rows.append(row)
    return invoices


@pytest.fixture(scope="module")
def dedup() -> list[Parsed]:
    return parse_file(DEDUP)


@pytest.fixture(scope="module")
def dedup_plain() -> dict[str, PlainInvoice]:
    return plain_invoices(DEDUP)


class TestTheOnlineRetailSample:
    """4,792 rows, 2,093 invoices of UCI Online Retail (not a contiguous slice of it)."""

    def test_every_invoice_is_one_record_in_file_order(
        self, dedup: list[Parsed], dedup_plain: dict[str, PlainInvoice]
    ) -> None:
        assert len(dedup_plain) == 2093
        assert [invoice_of(r) for r in dedup] == list(dedup_plain)
        assert [r.source.index for r in dedup] == list(range(1, 2094))

    def test_the_outcome_of_each_invoice_follows_from_its_rows(
        self, dedup: list[Parsed], dedup_plain: dict[str, PlainInvoice]
    ) -> None:
        def expected(invoice: str, plain: PlainInvoice) -> str:
            quantities = [Decimal(r["Quantity"]) for r in plain.rows]
            if any(r["StockCode"] == "B" for r in plain.rows):
                return "adjustment"
            if any(Decimal(r["UnitPrice"]) * 100 % 1 for r in plain.rows):
                return "quarantined"  # not on whole pence
            if invoice.startswith("C"):
                return "return"
            if all(q < 0 for q in quantities) and all(Decimal(r["UnitPrice"]) == 0 for r in plain.rows):
                return "stock-adjustment"
            return "sale"

        outcomes = {
            invoice_of(r): (
                r.transaction.kind.value
                if isinstance(r, Imported)
                else r.kind
                if isinstance(r, Recorded)
                else "quarantined"
            )
            for r in dedup
        }
        assert outcomes == {invoice: expected(invoice, plain) for invoice, plain in dedup_plain.items()}
        tally = {kind: list(outcomes.values()).count(kind) for kind in set(outcomes.values())}
        assert tally == {
            "sale": 1585,
            "return": 44,
            "stock-adjustment": 462,
            "adjustment": 1,
            "quarantined": 1,
        }
        assert tally["return"] == len({i for i in dedup_plain if i.startswith("C")})

    def test_each_transaction_totals_its_rows_quantity_times_price(
        self, dedup: list[Parsed], dedup_plain: dict[str, PlainInvoice]
    ) -> None:
        checked = 0
        for record in dedup:
            if not isinstance(record, Imported):
                continue
            plain, t = dedup_plain[invoice_of(record)], record.transaction
            assert t.totals.grand_total == plain.total
            assert signed(t, stock_only=True) == plain.stock_total
            assert sum((tender.amount for tender in t.tenders), Decimal(0)) == plain.total
            assert len(t.lines) + len(t.modifiers) == len(plain.rows)
            checked += 1
        assert checked == 1629

    def test_cancellations_are_returns_with_positive_lines_and_negative_totals(
        self, dedup: list[Parsed]
    ) -> None:
        returns = [r for r in dedup if invoice_of(r).startswith("C")]
        assert len(returns) == 44
        for record in returns:
            assert isinstance(record, Imported)
            t = record.transaction
            assert t.kind is TransactionKind.RETURN
            assert t.totals.grand_total < 0 and all(tender.amount < 0 for tender in t.tenders)
            assert all(line.action is LineAction.RETURN and line.quantity > 0 for line in t.lines)
            assert t.sequence == int(invoice_of(record)[1:])

    def test_the_identity_and_heads_of_an_invoice(self, dedup: list[Parsed]) -> None:
        first = dedup[0]
        assert isinstance(first, Imported)
        t = first.transaction
        assert (t.store_id, t.register_id, t.business_day, t.sequence) == (
            "ONLINE",
            "EOD",
            date(2010, 12, 1),
            536365,
        )
        assert t.currency == "GBP" and t.ended_at == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)
        assert t.customer is not None and t.customer.member_id == "17850"  # written 17850.0
        assert t.totals.tax == 0 and t.taxes == ()
        assert [tender.kind for tender in t.tenders] == [TenderKind.CARD]
        assert first.source.locator == "invoice 536365, rows 2-8"

    def test_non_stock_codes_become_non_stock_lines(self, dedup: list[Parsed]) -> None:
        by_invoice = {invoice_of(r): r for r in dedup}

        def line(invoice: str, sku: str) -> Any:
            record = by_invoice[invoice]
            assert isinstance(record, Imported)
            return next(ln for ln in record.transaction.lines if ln.sku == sku)

        postage = line("536370", "POST")
        assert postage.item_type is ItemType.NON_STOCK and postage.extended_amount == Decimal("54.00")
        assert line("536779", "BANK_CHARGES").item_type is ItemType.NON_STOCK  # "BANK CHARGES" made an id
        assert line("539492", "gift_0001_40").item_type is ItemType.NON_STOCK  # a prefix entry
        assert line("539736", "m").item_type is ItemType.NON_STOCK  # codes match without case
        assert line("538071", "DCGS0076").item_type is ItemType.STOCK  # not in the code table

    def test_a_cancelled_discount_is_credited_back_as_a_non_stock_returned_line(
        self, dedup: list[Parsed]
    ) -> None:
        record = next(r for r in dedup if invoice_of(r) == "C536379")
        assert isinstance(record, Imported)
        (line,) = record.transaction.lines
        assert (line.sku, line.item_type, line.action, line.restock) == (
            "D",
            ItemType.NON_STOCK,
            "return",
            False,
        )
        assert record.transaction.totals.grand_total == Decimal("-27.50")

    def test_stock_adjustments_and_bad_debt_are_recorded_never_imported(self, dedup: list[Parsed]) -> None:
        recorded = {invoice_of(r): r for r in dedup if isinstance(r, Recorded)}
        assert recorded["537032"].kind == "stock-adjustment"
        assert recorded["A563185"].kind == "adjustment" and "11062.06" in recorded["A563185"].detail

    def test_a_price_below_a_penny_quarantines_its_invoice_with_the_numbers(
        self, dedup: list[Parsed]
    ) -> None:
        (refused,) = [r for r in dedup if isinstance(r, Quarantined)]
        assert invoice_of(refused) == "550193" and refused.field == "UnitPrice"
        assert "row 3381" in refused.reason and "not rounded" in refused.reason
        assert refused.numbers == {"quantity": "1", "unit_price": "0.001", "line_amount": "0.001"}

    def test_lines_priced_zero_stay_and_need_no_tender(self, dedup: list[Parsed]) -> None:
        free = [t for t in imported(dedup) if t.totals.grand_total == 0]
        assert len(free) == 155
        assert all(t.tenders == () and all(ln.unit_price == 0 for ln in t.lines) for t in free)

    def test_an_invoice_spanning_two_minutes_keeps_both_times(self, dedup: list[Parsed]) -> None:
        record = next(r for r in dedup if invoice_of(r) == "543777")
        assert isinstance(record, Imported)
        assert record.transaction.started_at == datetime(2011, 2, 11, 16, 19, tzinfo=UTC)
        assert record.transaction.ended_at == datetime(2011, 2, 11, 16, 20, tzinfo=UTC)

    def test_times_without_offset_are_the_stores_local_time(self) -> None:
        london = ImportContext(
            stores={"ONLINE": Store(store_id="ONLINE", timezone="Europe/London", currency="GBP")}
        )
        times = {
            invoice_of(r): r.transaction.ended_at
            for r in parse_file(DEDUP, london)
            if isinstance(r, Imported)
        }
        assert times["536365"].utcoffset() == timedelta(0)  # December: GMT
        june = next(t for i, t in times.items() if t.month == 6)
        assert june.utcoffset() == timedelta(hours=1)  # June: BST


class TestTheOnlineRetailIIHeader:
    def test_the_first_rows_of_the_original_file_import_whole(self) -> None:
        records = parse_file(FIRST_100)
        plain = plain_invoices(FIRST_100, {"Invoice": "InvoiceNo", "Price": "UnitPrice"})
        assert len(plain) == 14 and all(isinstance(r, Imported) for r in records)
        totals = {invoice_of(r): r.transaction.totals.grand_total for r in records if isinstance(r, Imported)}
        assert totals == {invoice: p.total for invoice, p in plain.items()}
        first = imported(records)[0]
        assert first.ended_at == datetime(
            2010, 12, 1, 8, 26, tzinfo=UTC
        )  # written 12/1/2010 08:26, month first
        assert first.customer is not None and first.customer.member_id == "17850"

    def test_both_samples_are_sniffed_and_other_inputs_are_not(self) -> None:
        assert csv_batch.sniff(DEDUP.read_bytes()[:4096])
        assert csv_batch.sniff(FIRST_100.read_bytes()[:4096])  # with its byte order mark
        assert not csv_batch.sniff(UCI_HEADER.replace(",", ";").encode())  # not the built-in delimiter
        assert not csv_batch.sniff(b'<?xml version="1.0"?><POSLog/>')
        assert not csv_batch.sniff(b'{"orders": []}')
        assert not csv_batch.sniff(b"InvoiceNo,StockCode,Amount\n1,2,3\n")


# A retailer's own layout, as written in the config YAML.
SHOP_LAYOUT = """
invoice: Beleg
sku: Artikel
description: Text
quantity: Menge
unit_price: Preis
timestamp: Zeit
timestamp_formats: ["%d.%m.%Y %H:%M"]
store_id: S009
currency_code: EUR
tender_code: Bar
delimiter: ";"
decimal_separator: ","
thousands_separator: "."
encoding: cp1252
returns: negative_quantity
tax_rate: "0.19"
tax_code: "1"
codes: {versand: non_stock, RABATT: discount}
"""
SHOP_FILE = (
    "Zeit;Beleg;Artikel;Text;Menge;Preis;Filiale\n"
    "03.02.2024 10:15;R-1001;4006381333931;Stift € grün;2;1.234,50;9\n"
    "03.02.2024 10:15;R-1001;VERSAND;Versand;1;4,90;9\n"
    "03.02.2024 10:15;R-1001;RABATT;Rabatt;1;-10,00;9\n"
    "03.02.2024 10:20;R-1002;BLOCK-7;Block;-3;2,50;9\n"
    "03.02.2024 10:31;R-1003;BLOCK-7;Block;-1;2,50;9\n"
    "03.02.2024 10:31;R-1003;HEFT;Heft;2;0,99;9\n"
)


def shop_context() -> ImportContext:
    policy = PolicyMaps.model_validate({"tenders": {"Bar": "cash"}, "tax_codes": {"1": "VAT19"}})
    store = Store(store_id="S009", timezone="Europe/Berlin", currency="EUR")
    return ImportContext(stores={"S009": store}, policy=policy)


class TestARetailersOwnLayout:
    def shop(self) -> list[Parsed]:
        layout = ColumnMap.model_validate(yaml.safe_load(SHOP_LAYOUT))
        settings = CsvSettings(layouts={"shop": layout})
        return parse(SHOP_FILE.encode("cp1252"), settings, shop_context())

    def test_the_layout_is_picked_by_its_header_and_imports_every_invoice(self) -> None:
        records = self.shop()
        assert [type(r) for r in records] == [Imported, Imported, Imported]
        kinds = [t.kind for t in imported(records)]
        assert kinds == [TransactionKind.SALE, TransactionKind.RETURN, TransactionKind.EXCHANGE]

    def test_european_numbers_a_discount_tax_and_the_fixed_store_and_tender(self) -> None:
        sale = imported(self.shop())[0]
        assert (sale.store_id, sale.register_id, sale.sequence, sale.currency) == ("S009", "EOD", 1001, "EUR")
        goods, postage = sale.lines
        assert goods.sku == "4006381333931" and goods.description == "Stift € grün"
        assert goods.unit_price == Decimal("1234.50") and goods.extended_amount == Decimal("2469.00")
        assert postage.item_type is ItemType.NON_STOCK
        assert [m.amount for m in sale.modifiers] == [Decimal("10.00")]
        assert sale.totals.grand_total == Decimal("2463.90")  # 2469.00 + 4.90 - 10.00
        (tax,) = sale.taxes
        assert (tax.code, tax.inclusive, tax.amount) == (
            "VAT19",
            True,
            Decimal("393.40"),
        )  # 2463.90 x 19/119 = 393.397
        assert tax.taxable_amount + tax.amount == sale.totals.grand_total
        assert [(t.kind, t.amount) for t in sale.tenders] == [(TenderKind.CASH, Decimal("2463.90"))]
        assert sale.ended_at == datetime(2024, 2, 3, 9, 15, tzinfo=UTC)  # Berlin local time

    def test_negative_rows_are_returned_lines(self) -> None:
        _, refund, exchange = imported(self.shop())
        assert refund.totals.grand_total == Decimal("-7.50") and refund.lines[0].action is LineAction.RETURN
        assert [ln.action for ln in exchange.lines] == [LineAction.RETURN, LineAction.SALE]
        assert exchange.totals.grand_total == Decimal("-0.52")

    def test_exclusive_tax_is_added_to_the_total(self) -> None:
        layout = ColumnMap.model_validate({**yaml.safe_load(SHOP_LAYOUT), "prices_include_tax": False})
        sale = imported(
            parse(SHOP_FILE.encode("cp1252"), CsvSettings(layouts={"shop": layout}), shop_context())
        )[0]
        assert sale.totals.subtotal == Decimal("2463.90") and sale.totals.tax == Decimal("468.14")
        assert sale.totals.grand_total == Decimal("2932.04") == sale.tenders[0].amount

    def test_a_store_column_goes_through_the_store_aliases(self) -> None:
        data = yaml.safe_load(SHOP_LAYOUT) | {"store": "Filiale"}
        del data["store_id"]
        context = ImportContext(
            policy=PolicyMaps.model_validate({"store_aliases": {"9": "S009"}, "tenders": {"Bar": "cash"}})
        )
        settings = CsvSettings(layouts={"shop": ColumnMap.model_validate(data)})
        records = parse(SHOP_FILE.encode("cp1252"), settings, context)
        assert {t.store_id for t in imported(records)} == {"S009"}

    def test_a_line_amount_column_must_agree_with_quantity_times_price(self) -> None:
        layout = ColumnMap(
            invoice="No", sku="Sku", quantity="Qty", unit_price="Price", line_amount="Amount", timestamp="At"
        )
        data = (
            "No,Sku,Qty,Price,Amount,At\n"
            "1,A,3,1.10,3.30,2024-01-02T10:00:00+01:00\n"
            "2,A,3,1.10,3.31,2024-01-02T10:00\n"
        )
        good, bad = parse(data.encode(), CsvSettings(layouts={"x": layout}))
        assert isinstance(good, Imported) and good.transaction.ended_at.utcoffset() == timedelta(hours=1)
        assert isinstance(bad, Quarantined) and bad.field == "Amount"
        assert bad.numbers == {"quantity": "3", "unit_price": "1.10", "line_amount": "3.31"}

    def test_without_a_unit_price_column_the_price_is_derived_from_the_amount(self) -> None:
        layout = ColumnMap(invoice="No", sku="Sku", quantity="Qty", line_amount="Amount", timestamp="At")
        (record,) = parse(
            b"No,Sku,Qty,Amount,At\n7,A,3,10.00,2024-01-02 10:00\n", CsvSettings(layouts={"x": layout})
        )
        assert isinstance(record, Imported)
        line = record.transaction.lines[0]
        assert line.extended_amount == Decimal("10.00") and line.unit_price == Decimal("3.333333")

    def test_a_forced_layout_that_does_not_fit_is_a_format_error_naming_the_missing_columns(self) -> None:
        with pytest.raises(FormatError, match=r"online-retail-ii \(missing Invoice, Price, Customer ID\)"):
            parse(DEDUP.read_bytes(), CsvSettings(layout="online-retail-ii"))
        with pytest.raises(FormatError, match="fits no CSV layout"):
            parse(b"a,b,c\n1,2,3\n")
        with pytest.raises(FormatError, match="empty input"):
            parse(b"")
        with pytest.raises(FormatError, match="fits no CSV layout"):
            parse(b"\r\x00")  # a header the csv reader cannot split
        assert not csv_batch.sniff(b"\r\x00")

    def test_bad_layouts_are_refused_when_the_config_is_read(self) -> None:
        base = {"invoice": "I", "sku": "S", "quantity": "Q", "unit_price": "P", "timestamp": "T"}
        for wrong in (
            {"store": "Shop", "store_id": "S1"},
            {"encoding": "utf-16"},
            {"encoding": "no-such-codec"},
            {"decimal_separator": ",", "thousands_separator": ","},
            {"timestamp_formats": ["dd.mm.yyyy"]},
            {"codes": {"X": "freebie"}},
            {"colour": "blue"},
        ):
            with pytest.raises(ValidationError):
                ColumnMap.model_validate(base | wrong)
        with pytest.raises(ValidationError):
            ColumnMap.model_validate({k: v for k, v in base.items() if k != "unit_price"})
        with pytest.raises(ValidationError, match="neither built in"):
            CsvSettings(layout="nope")
        assert ColumnMap.model_validate(base | {"register": "Kasse"}).columns["register"] == "Kasse"


def uci(*rows: str) -> bytes:
    return (UCI_HEADER + "".join(r + "\n" for r in rows)).encode()


def row(invoice: str, code: str = "85123A", qty: str = "6", price: str = "2.55", desc: str = "HEART") -> str:
    return f"{invoice},{code},{desc},{qty},2010-12-01 08:26:00,{price},17850.0,United Kingdom"


class TestBadRows:
    def test_a_bad_number_quarantines_only_its_invoice_naming_row_and_column(self) -> None:
        records = parse(uci(row("1"), row("2"), row("2", qty="six"), row("3")))
        assert [type(r) for r in records] == [Imported, Quarantined, Imported]
        bad = records[1]
        assert isinstance(bad, Quarantined) and bad.field == "Quantity"
        assert bad.reason == "row 4: Quantity 'six' is not a number"
        assert bad.source.locator == "invoice 2, rows 3-4"

    @pytest.mark.parametrize(
        ("bad_row", "column", "reason"),
        [
            (
                "2,85123A,HEART,6,yesterday,2.55,17850.0,UK",
                "InvoiceDate",
                "row 3: InvoiceDate 'yesterday' is not a time",
            ),
            ("2,85123A,HEART,6", "InvoiceDate", "row 3 has 4 cells, the header has 8"),
            ("2,85123A,HEART,WITH,COMMA,6,2010-12-01 08:26:00,2.55,1,UK", "row", "row 3 has 10 cells"),
            (row("2", price="1e3"), "UnitPrice", "row 3: UnitPrice '1e3' is not a number"),
            (row("2", qty="0"), "Quantity", "row 3: Quantity is 0"),
            (row("2", qty="1.5555"), "Quantity", "not a number"),
            (row("2", price="-2.55"), "UnitPrice", "row 3: UnitPrice is negative"),
            (row("2", qty="-6", price="2.55"), "Quantity", "negative in an invoice that is not a return"),
            (row("C2", qty="6"), "Quantity", "row 3: Quantity 6 is positive in a return"),
            (row("2", code="BAD CODE"), "StockCode", "row 3: StockCode 'BAD CODE' is not an item id"),
            (row("X"), "InvoiceNo", "invoice 'X' has no number of at most 10 digits"),
            (
                row("2", code="B", price="5"),
                "StockCode",
                "accounting adjustment; the invoice has other rows",
            ),
        ],
    )
    def test_each_kind_of_bad_row_names_its_column(self, bad_row: str, column: str, reason: str) -> None:
        invoice = bad_row.split(",")[0]
        records = parse(uci(row("1"), bad_row, row(invoice), row("3")))
        assert [type(r) for r in records] == [Imported, Quarantined, Imported]
        bad = records[1]
        assert isinstance(bad, Quarantined) and bad.field == column and reason in bad.reason

    def test_rows_of_one_invoice_must_agree_on_the_customer(self) -> None:
        other = row("2").replace("17850.0", "12583.0")
        (record,) = parse(uci(row("2"), other))
        assert isinstance(record, Quarantined) and record.field == "CustomerID"
        assert "row 3: CustomerID '12583.0' differs from row 2 ('17850.0')" in record.reason

    def test_an_invoice_that_comes_back_later_is_quarantined_as_a_continuation(self) -> None:
        records = parse(uci(row("1"), row("2"), row("1", code="71053")))
        assert [type(r) for r in records] == [Imported, Imported, Quarantined]
        assert isinstance(records[2], Quarantined) and records[2].field == "InvoiceNo"
        assert "invoice 1 continues at rows 4-4 after other invoices (it began at row 2)" in records[2].reason

    def test_an_invoice_longer_than_the_bound_is_quarantined_without_holding_it(self) -> None:
        records = parse(uci(*[row("1")] * 5, row("2")), CsvSettings(max_invoice_rows=3))
        assert [type(r) for r in records] == [Quarantined, Imported]
        assert records[0].reason == "invoice 1 has more than 3 rows" and records[0].source.locator.endswith(
            "2-6"
        )

    def test_a_row_without_invoice_number_refuses_the_invoices_on_both_sides(self) -> None:
        records = parse(uci(row("1"), row("2"), row(""), "", ",,,,,,,", row("3"), row("4")))
        assert [type(r) for r in records] == [Imported, Quarantined, Quarantined, Imported]
        assert [r.source.locator for r in records[1:3]] == ["invoice 2, rows 3-3", "invoice 3, rows 7-7"]
        assert (
            records[1].reason
            == records[2].reason
            == "row 4 has no invoice number and may belong to this invoice"
        )

    def test_a_row_without_invoice_number_inside_an_invoice_refuses_that_invoice_only(self) -> None:
        records = parse(uci(row("1"), row("1"), row(""), row("1"), row("2")))
        assert [type(r) for r in records] == [Quarantined, Imported]
        assert records[0].source.locator == "invoice 1, rows 2-5"

    def test_unreadable_rows_alone_are_still_reported(self) -> None:
        (record,) = parse(uci(row(""), row("")))
        assert isinstance(record, Quarantined) and record.reason.startswith("row 3 has no invoice number")

    def test_a_field_too_large_for_the_csv_reader_refuses_its_invoice_and_the_rest_goes_on(self) -> None:
        huge = row("2", desc='"' + "x" * 200_000 + '"')
        records = parse(uci(row("1"), row("2"), huge, row("2"), row("3")))
        assert [type(r) for r in records] == [Imported, Quarantined, Imported]
        assert records[1].field == "row" and "row 4 cannot be read as CSV" in records[1].reason

    def test_text_that_is_not_in_the_layouts_encoding_is_a_format_error(self) -> None:
        data = uci(row("1")) + row("2", desc="GR\xdcN").encode("latin-1") + b"\n"
        with pytest.raises(FormatError, match="not utf-8-sig text"):
            parse(data)

    def test_the_callers_stream_is_left_open(self) -> None:
        stream = io.BytesIO(uci(row("1")))
        assert len(list(csv_batch.parse(stream, ImportContext(), name="x"))) == 1
        assert not stream.closed


class TestCardNumbers:
    def test_a_card_number_in_a_description_quarantines_its_invoice_and_is_never_echoed(self) -> None:
        records = parse(uci(row("1"), row("2"), row("2", desc=f"paid {VISA_TEST_CARD}", qty="x"), row("3")))
        assert [type(r) for r in records] == [Imported, Quarantined, Imported]
        bad = records[1]
        assert (
            isinstance(bad, Quarantined) and bad.field == "Description" and bad.reason == CARD_NUMBER_REASON
        )
        digits = VISA_TEST_CARD.replace(" ", "")
        assert all(digits not in repr(r).replace(" ", "") for r in records)

    def test_a_card_number_as_invoice_number_is_kept_out_of_the_locator(self) -> None:
        records = parse(uci(row("4111111111111111"), row("3")))
        assert isinstance(records[0], Quarantined) and records[0].source.locator == "rows 2-2"
        assert records[0].field == "InvoiceNo" and "4111111111111111" not in repr(records)

    def test_a_card_number_in_a_row_without_invoice_is_refused_as_one(self) -> None:
        (record,) = parse(uci(row("", desc=VISA_TEST_CARD)))
        assert isinstance(record, Quarantined) and record.reason == CARD_NUMBER_REASON
        first, second = parse(uci(row("1"), row("", desc=VISA_TEST_CARD), row("2")))
        assert first.reason == second.reason == CARD_NUMBER_REASON and first.field == "Description"

    def test_a_gtin_item_code_is_not_a_card_number_but_the_same_digits_elsewhere_are(self) -> None:
        ean = "4006381333924"  # passes both the Luhn and the GS1 check, and starts like a Visa card
        (record,) = parse(uci(row("1", code=ean)))
        assert isinstance(record, Imported) and record.transaction.lines[0].sku == ean
        (record,) = parse(uci(row("1", desc=ean)))
        assert isinstance(record, Quarantined) and record.reason == CARD_NUMBER_REASON


class TestCodesConfigured:
    def test_ignored_codes_are_dropped_and_an_invoice_of_only_them_is_recorded(self) -> None:
        layout = csv_batch.ONLINE_RETAIL.model_copy(update={"codes": {"post": "ignore", "d": "discount"}})
        settings = CsvSettings(layouts={"uci": layout})
        records = parse(uci(row("1"), row("1", code="POST", price="18"), row("2", code="POST")), settings)
        assert isinstance(records[0], Imported) and records[0].transaction.totals.grand_total == Decimal(
            "15.30"
        )
        assert isinstance(records[1], Recorded) and records[1].kind == "ignored"

    def test_a_discount_in_a_sale_is_a_basket_modifier(self) -> None:
        (record,) = parse(uci(row("1"), row("1", code="D", qty="-1", price="3.30")))
        assert isinstance(record, Imported)
        t = record.transaction
        assert [m.amount for m in t.modifiers] == [Decimal("3.30")] and t.totals.grand_total == Decimal(
            "12.00"
        )

    def test_a_service_code(self) -> None:
        layout = csv_batch.ONLINE_RETAIL.model_copy(update={"codes": {"fit*": "service"}})
        (record,) = parse(uci(row("1", code="FITTING")), CsvSettings(layouts={"uci": layout}))
        assert isinstance(record, Imported) and record.transaction.lines[0].item_type is ItemType.SERVICE


class GeneratedCsv(io.RawIOBase):
    """A CSV file of `invoices` invoices of 20 rows each, made as it is read. With `adjustments`,
    all but every tenth invoice are stock adjustments (negative, priced 0): read, grouped and
    checked row by row like the others, but recorded rather than built into a transaction."""

    def __init__(self, invoices: int, *, adjustments: bool = False) -> None:
        self._chunks = self._make(invoices, adjustments)
        self._pending = b""
        self.exhausted = False

    @staticmethod
    def _make(invoices: int, adjustments: bool) -> Iterator[bytes]:
        yield UCI_HEADER.encode()
        for n in range(invoices):
            invoice = f"C{600000 + n}" if n % 10 == 9 else str(600000 + n)
            adjustment = adjustments and n % 10 not in (0, 9)
            sign = "-" if invoice.startswith("C") or adjustment else ""
            day, customer = 1 + n % 28, 12000 + n % 500
            rows = []
            for i in range(20):
                price = "0.0" if adjustment else f"{i % 7}.{(n + i) % 100:02d}"
                at = f"2011-02-{day:02d} 10:{i:02d}:00"
                item = f"{20000 + i},ITEM {i} OF ORDER {n}"
                rows.append(f"{invoice},{item},{sign}{1 + i % 4},{at},{price},{customer}.0,UK\n")
            yield "".join(rows).encode()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.exhausted = True
                return 0
            self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class TestStreaming:
    def test_the_first_transaction_comes_before_the_input_is_read(self) -> None:
        source = GeneratedCsv(invoices=10_000)
        records = csv_batch.parse(io.BufferedReader(source), ImportContext(), name="big.csv")
        first = next(records)
        assert isinstance(first, Imported) and first.transaction.sequence == 600000
        assert not source.exhausted

    def test_memory_stays_flat_however_long_the_input(self) -> None:
        """Traced (not timed): once the window of recent invoice numbers is full, reading on
        takes no more memory than the first rows did."""
        source = GeneratedCsv(invoices=2_500, adjustments=True)  # 50,000 rows
        settings = CsvSettings(recent_invoices=200)
        kinds = {"sale": 0, "return": 0, "stock-adjustment": 0}
        tracemalloc.start()
        try:
            for n, record in enumerate(
                csv_batch.parse(io.BufferedReader(source), ImportContext(), name="big.csv", settings=settings)
            ):
                assert not isinstance(record, Quarantined), record
                kinds[record.transaction.kind.value if isinstance(record, Imported) else record.kind] += 1
                if n == 500:  # 10,000 rows read
                    _, early = tracemalloc.get_traced_memory()
                    tracemalloc.reset_peak()
            _, late = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert source.exhausted and kinds == {"sale": 250, "return": 250, "stock-adjustment": 2000}
        assert early < 8 * 2**20, f"peak traced memory {early / 2**20:.1f} MiB over the first 10,000 rows"
        assert late < early + 128 * 2**10, (
            f"{late / 2**20:.2f} MiB later against {early / 2**20:.2f} MiB early"
        )


SAMPLE_LINES = DEDUP.read_bytes().splitlines(keepends=True)[:40]


class TestFuzzing:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=600))
    def test_arbitrary_bytes_give_records_or_a_format_error(self, data: bytes) -> None:
        self.check(data)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_after_a_real_header(self, data: bytes) -> None:
        self.check(UCI_HEADER.encode() + data)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.tuples(
                st.integers(min_value=1, max_value=len(SAMPLE_LINES) - 1),
                st.integers(min_value=0, max_value=120),
                st.text(alphabet='0123456789,.-C"\n\r ;xé', max_size=8) | st.just(VISA_TEST_CARD),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def test_mutated_sample_rows_give_records_or_a_format_error(
        self, edits: list[tuple[int, int, str]]
    ) -> None:
        lines = [line.decode() for line in SAMPLE_LINES]
        for line_no, at, text in edits:
            line = lines[line_no]
            lines[line_no] = line[:at] + text + line[at + len(text) :]
        records = self.check("".join(lines).encode())
        for record in records:
            if isinstance(record, Imported):  # whatever got through still adds up
                t = record.transaction
                assert sum((tender.amount for tender in t.tenders), Decimal(0)) == t.totals.grand_total

    @staticmethod
    def check(data: bytes) -> list[Parsed]:
        try:
            records = parse(data)
        except FormatError:
            return []
        assert all(isinstance(r, Imported | Quarantined | Recorded) for r in records)
        return records
