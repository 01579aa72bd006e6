"""The one reader of master data rows (items, prices, promotions) from CSV and JSON: plain bytes in,
validated records or quarantine entries out, in input order."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest

from tillflow.errors import FormatError
from tillflow.formats.products import parse_products, parse_records
from tillflow.formats.records import Quarantined
from tillflow.model import Product, UnitOfMeasure
from tillflow.model.masterdata import Price, Promotion

KG = UnitOfMeasure.KILOGRAM

ITEMS_CSV = b"""sku,uom,gtins,conversions
CHE-1,KG,4012345678901,G=0.001
APP-1,EA,40123456;40123457,kg=5 LB=2.27
BAD-1,EA,,KG
"""


class TestItems:
    def test_a_csv_reads_unit_conversions_and_gtins(self) -> None:
        cheese, apples, bad = parse_records(ITEMS_CSV, name="items.csv", model=Product)

        assert isinstance(cheese, Product) and isinstance(apples, Product)
        assert cheese.conversions == {UnitOfMeasure.GRAM: Decimal("0.001")}
        assert apples.conversions == {KG: Decimal(5), UnitOfMeasure.POUND: Decimal("2.27")}
        assert apples.gtins == ("40123456", "40123457")
        assert isinstance(bad, Quarantined)
        assert (bad.source.index, bad.source.locator, bad.field) == (3, "line 4", "conversions")

    def test_json_lines_and_a_json_list_read_alike(self) -> None:
        lines = b'{"sku": "A", "conversions": {"G": "0.001"}}\nnot json\n{"sku": "B", "color": "red"}\n'
        listed = b'[{"sku": "A", "conversions": {"G": "0.001"}}, 7, {"sku": "B", "color": "red"}]'

        first, broken, unknown = parse_products(io.BytesIO(lines), name="items.jsonl")
        same, not_a_record, refused = parse_records(listed, name="items.json", model=Product)

        assert first == same == Product(sku="A", conversions={UnitOfMeasure.GRAM: Decimal("0.001")})
        assert isinstance(broken, Quarantined) and (broken.field, broken.source.locator) == ("$", "line 2")
        assert isinstance(not_a_record, Quarantined) and not_a_record.source.locator == "[1]"
        assert isinstance(unknown, Quarantined) and isinstance(refused, Quarantined)
        assert unknown.field == refused.field == "color"

    def test_more_cells_than_columns_refuses_the_row_only(self) -> None:
        good, extra = parse_records(b"sku,uom\nA,KG\nB,KG,surplus\n", name="m.csv", model=Product)

        assert good == Product(sku="A", uom=KG)
        assert isinstance(extra, Quarantined)
        assert (extra.field, extra.reason) == ("$", "more cells than columns")


class TestOtherKinds:
    def test_a_csv_of_promotions_splits_its_list_fields(self) -> None:
        data = (
            b"promotion_id,kind,percent,skus,regions,member_only,starts,ends\n"
            b"P1,percent_off,10,A;B C,eu,true,2026-03-01T00:00:00,2026-04-01T00:00:00\n"
        )

        [promotion] = parse_records(data, name="promotions.csv", model=Promotion)

        assert isinstance(promotion, Promotion)
        assert (promotion.skus, promotion.regions, promotion.member_only) == (("A", "B", "C"), ("eu",), True)

    def test_a_price_row_is_validated_with_the_price_model(self) -> None:
        data = (
            b"sku,price,currency,effective_from\n"
            b"A,1.50,EUR,2026-03-01T00:00:00\n"
            b"A,-1,EUR,2026-03-01T00:00:00\n"
        )

        price, negative = parse_records(data, name="prices.csv", model=Price)

        assert isinstance(price, Price) and price.price == Decimal("1.50")
        assert isinstance(negative, Quarantined) and negative.field == "price"


class TestWholeInputErrors:
    """Raised when the reader is called, before any record is read or stored."""

    @pytest.mark.parametrize(
        ("data", "model", "message"),
        [
            (b"sku,price,effective_from\nA,1.00,2026-03-01T00:00:00\n", Price, "no currency column"),
            (b"description,uom\nCheese,KG\n", Product, "no sku column"),
            (b"sku,colour\nA,red\n", Product, "unknown columns colour"),
            (b"sku\n\xff\xfe\n", Product, "not UTF-8"),
            (b'[{"sku": "A"},', Product, "not JSON"),
        ],
    )
    def test_an_unreadable_input_is_refused_as_a_whole(
        self, data: bytes, model: type[Product | Price], message: str
    ) -> None:
        with pytest.raises(FormatError, match=message):
            parse_records(data, name="input", model=model)
