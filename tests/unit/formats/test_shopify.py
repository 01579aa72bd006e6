"""Shopify orders and refunds become canonical transactions of a web store — or are quarantined
with the reason (and the figures, when money does not add up), or recorded and never posted."""

from __future__ import annotations

import copy
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.shared_data import sample
from tests.unit.formats.mutations import mutated
from tillflow.formats import commerce, shopify
from tillflow.formats.policy import PolicyMaps
from tillflow.formats.records import FormatError, ImportContext, Imported, Parsed, Quarantined, Recorded
from tillflow.formats.safety import CARD_NUMBER_REASON
from tillflow.model import ItemType, LineAction, Store, TenderKind, Transaction

# The samples pay through Shopify's test gateway ("bogus") and authorize.net, which no
# built-in map knows: a retailer maps them.
GATEWAYS = {"bogus": "card", "authorize_net": "card"}
VISA_TEST_NUMBER = "4111 1111 1111 1111"


def context(tenders: dict[str, str] | None = None, **policy: Any) -> ImportContext:
    return ImportContext(
        stores={"WEB": Store(store_id="WEB", currency="USD", timezone="America/New_York")},
        policy=PolicyMaps.model_validate({"tenders": GATEWAYS if tenders is None else tenders, **policy}),
    )


def run(data: bytes | str | Any, ctx: ImportContext | None = None, **settings: Any) -> list[Parsed]:
    raw = (
        data.encode() if isinstance(data, str) else data if isinstance(data, bytes) else dumps(data).encode()
    )
    return list(shopify.parse(io.BytesIO(raw), ctx or context(), name="in.json", settings=settings or None))


def load(name: str) -> Any:
    return json.loads(sample("shopify", name).read_text())


def sale_of(results: list[Parsed], index: int = 0) -> Transaction:
    found = results[index]
    assert isinstance(found, Imported), found
    return found.transaction


def paid_order() -> dict[str, Any]:
    """order.json made consistent: paid, its totals those of its three lines (3 x 199.00, 6 % tax)."""
    order: dict[str, Any] = load("order.json")["order"]
    order.update(
        financial_status="paid",
        total_line_items_price="597.00",
        subtotal_price="597.00",
        total_tax="35.82",
        total_price="632.82",
        tax_lines=[{"price": "35.82", "rate": 0.06, "title": "State Tax"}],
    )
    return order


def paid_refund() -> dict[str, Any]:
    """refund.json with its transaction the refund of its two lines and their tax (398.00 + 7.96)."""
    refund: dict[str, Any] = load("refund.json")["refund"]
    refund["transactions"][0]["amount"] = "405.96"
    return refund


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)


class TestTheSamples:
    """Every transaction-bearing sample maps, is recorded, or is quarantined with its reason."""

    def test_order_json_is_only_authorized_so_it_is_recorded_unpaid(self) -> None:
        [result] = run(sample("shopify", "order.json").read_bytes())
        assert isinstance(result, Recorded)
        assert (result.kind, result.source.locator) == ("unpaid", "order 450789469 (#1001)")
        assert "authorized" in result.detail

    def test_order_json_once_paid_is_quarantined_its_lines_add_up_to_597_not_398(self) -> None:
        order = load("order.json")
        order["order"]["financial_status"] = "paid"
        [result] = run(order)
        assert isinstance(result, Quarantined)
        assert result.field == "total_line_items_price"
        assert dict(result.numbers) == {"line_items": "597.00", "total_line_items_price": "398.00"}

    def test_orders_json_has_no_line_items_and_is_quarantined(self) -> None:
        [result] = run(sample("shopify", "orders.json").read_bytes())
        assert isinstance(result, Quarantined)
        assert (result.field, result.reason) == (
            "line_items",
            "missing: an order without lines cannot be posted",
        )

    @pytest.mark.parametrize("tenders", [GATEWAYS, {}])
    def test_refund_json_pays_back_209_of_405_96_and_is_quarantined_with_the_figures(
        self, tenders: dict[str, str]
    ) -> None:
        [result] = run(sample("shopify", "refund.json").read_bytes(), context(tenders))
        assert isinstance(result, Quarantined)  # money is checked before the tender map is asked
        assert result.field == "transactions"
        assert dict(result.numbers) == {
            "lines": "398.00",
            "discounts": "0.00",
            "tax": "7.96",
            "adjustments": "0.00",
            "refund_total": "405.96",
            "transactions": "209.00",
        }

    def test_refund_calculate_is_a_suggestion_recorded_not_posted(self) -> None:
        [result] = run(sample("shopify", "refund_calculate.json").read_bytes())
        assert isinstance(result, Recorded) and result.kind == "suggested-refund"

    @pytest.mark.parametrize(
        ("name", "count"),
        [("transaction.json", 1), ("transactions.json", 1), ("tender_transactions.json", 3)],
    )
    def test_payment_transactions_are_recorded_their_tender_posts_with_the_order(
        self, name: str, count: int
    ) -> None:
        results = run(sample("shopify", name).read_bytes())
        assert [type(r) for r in results] == [Recorded] * count
        assert all(
            isinstance(r, Recorded) and r.kind == "payment" and "450789469" in r.detail for r in results
        )

    @pytest.mark.parametrize(
        "name",
        [
            "customer.json",
            "discount_code.json",
            "gift_card.json",
            "gift_card_adjustment.json",
            "inventory_item.json",
            "inventory_level.json",
            "inventory_levels.json",
            "location.json",
            "price_rule.json",
            "payouts_transactions.json",  # settlements share the "transactions" key, not the shape
        ],
    )
    def test_documents_that_are_not_transactions_are_refused_whole(self, name: str) -> None:
        with pytest.raises(FormatError, match="not a Shopify order, refund or payment transaction"):
            run(sample("shopify", name).read_bytes())


class TestSale:
    def test_a_paid_order_is_a_sale_of_the_web_store(self) -> None:
        sale = sale_of(run({"order": paid_order()}))
        assert (sale.store_id, sale.register_id, str(sale.business_day), sale.sequence) == (
            "WEB",
            "shopify",
            "2008-01-10",
            1001,
        )
        assert [line.sku for line in sale.lines] == ["IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"]
        assert sale.totals.model_dump() == {
            "subtotal": Decimal("597.00"),
            "tax": Decimal("35.82"),
            "grand_total": Decimal("632.82"),
        }
        [tax] = sale.taxes
        assert (tax.code, tax.rate, tax.amount, tax.inclusive) == (
            "State_Tax",
            Decimal("0.06"),
            Decimal("35.82"),
            False,
        )
        assert [(t.kind, t.amount) for t in sale.tenders] == [(TenderKind.CARD, Decimal("632.82"))]
        assert sale.customer is not None and sale.customer.member_id == "207119551"

    def test_no_personal_data_travels_only_the_customer_id(self) -> None:
        out = sale_of(run({"order": paid_order()})).model_dump_json()
        for personal in ("bob.norman", "Norman", "Chestnut", "555-625-1199", "Happy Birthday"):
            assert personal not in out

    def test_the_business_day_is_the_stores_local_date(self) -> None:
        order = paid_order() | {"processed_at": "2008-01-10T23:30:00-05:00", "location_id": 487838322}
        ctx = ImportContext(
            stores={"BER": Store(store_id="BER", currency="USD", timezone="Europe/Berlin")},
            policy=PolicyMaps.model_validate({"tenders": GATEWAYS, "store_aliases": {"487838322": "BER"}}),
        )
        sale = sale_of(run({"order": order}, ctx))
        assert (sale.store_id, str(sale.business_day)) == ("BER", "2008-01-11")

    def test_discounts_allocated_to_lines_are_line_modifiers_the_rest_a_basket_modifier(self) -> None:
        order = paid_order()
        order["discount_applications"] = [{"type": "discount_code", "code": "TENOFF", "title": "Ten off"}]
        order["line_items"][0]["discount_allocations"] = [
            {"amount": "10.00", "discount_application_index": 0}
        ]
        order.update(total_discounts="15.00", total_price="617.82")
        sale = sale_of(run({"order": order}))
        [modifier] = sale.lines[0].modifiers
        assert (modifier.amount, modifier.reason, modifier.promotion_id) == (
            Decimal("10.00"),
            "Ten off",
            "TENOFF",
        )
        assert [m.amount for m in sale.modifiers] == [Decimal("5.00")]
        assert sale.totals.grand_total == Decimal("617.82")

    def test_shipping_is_a_non_stock_line_and_taxes_included_are_inclusive(self) -> None:
        order = paid_order()
        order["shipping_lines"] = [{"title": "Express", "price": "10.00", "code": "EXP"}]
        order.update(taxes_included=True, total_price="607.00")
        sale = sale_of(run({"order": order}))
        shipping = sale.lines[-1]
        assert (shipping.line_no, shipping.sku, shipping.item_type, shipping.extended_amount) == (
            4,
            "SHIPPING",
            ItemType.NON_STOCK,
            Decimal("10.00"),
        )
        assert sale.taxes[0].inclusive and sale.totals.grand_total == Decimal("607.00")

    def test_a_line_without_sku_is_named_by_its_variant(self) -> None:
        order = paid_order()
        order["line_items"][1]["sku"] = ""
        assert sale_of(run({"order": order})).lines[1].sku == "variant-49148385"

    def test_tenders_come_from_embedded_transactions_when_the_order_has_them(self) -> None:
        order = paid_order()
        order["transactions"] = [
            {"id": 1, "kind": "authorization", "status": "success", "amount": "632.82", "gateway": "bogus"},
            {
                "id": 2,
                "kind": "capture",
                "status": "success",
                "amount": "600.00",
                "gateway": "bogus",
                "parent_id": 1,
            },
            {"id": 3, "kind": "sale", "status": "success", "amount": "32.82", "gateway": "gift_card"},
            {"id": 4, "kind": "sale", "status": "failure", "amount": "99.00", "gateway": "bogus"},
        ]
        sale = sale_of(run({"order": order}))
        assert [(t.kind, t.amount) for t in sale.tenders] == [
            (TenderKind.CARD, Decimal("600.00")),
            (TenderKind.GIFT_CARD, Decimal("32.82")),
        ]

    def test_gateways_of_different_kinds_without_transactions_cannot_be_split(self) -> None:
        order = paid_order() | {"payment_gateway_names": ["gift_card", "bogus"]}
        [result] = run({"order": order})
        assert isinstance(result, Quarantined) and result.field == "payment_gateway_names"

    def test_a_total_price_that_does_not_add_up_is_quarantined_with_the_figures(self) -> None:
        [result] = run({"order": paid_order() | {"total_price": "640.00"}})
        assert isinstance(result, Quarantined) and result.field == "total_price"
        assert dict(result.numbers) == {
            "lines": "597.00",
            "discounts": "0.00",
            "tax": "35.82",
            "grand_total": "632.82",
            "total_price": "640.00",
        }

    def test_an_amount_below_the_minor_unit_is_quarantined_at_its_field(self) -> None:
        order = paid_order()
        order["line_items"][2]["price"] = "199.001"
        [result] = run({"order": order})
        assert isinstance(result, Quarantined) and result.field == "line_items[2].price"
        assert "minor unit" in result.reason

    @pytest.mark.parametrize(
        ("changes", "kind"),
        [
            ({"financial_status": "pending"}, "unpaid"),
            ({"financial_status": "voided", "cancelled_at": "2008-01-11T10:00:00-05:00"}, "cancelled"),
            ({"financial_status": "expired"}, "voided"),
            ({"test": True}, "test"),
        ],
    )
    def test_orders_no_money_moved_for_are_recorded(self, changes: dict[str, Any], kind: str) -> None:
        [result] = run({"order": paid_order() | changes})
        assert isinstance(result, Recorded) and result.kind == kind

    def test_a_cancelled_order_that_was_paid_still_posts_its_refund_reverses_it(self) -> None:
        order = paid_order() | {"cancelled_at": "2008-01-11T10:00:00-05:00", "financial_status": "refunded"}
        assert isinstance(run({"order": order})[0], Imported)


class TestRefund:
    def test_a_refund_inside_its_order_links_each_line_to_the_sale(self) -> None:
        order = paid_order() | {"refunds": [paid_refund()]}
        sale_result, refund_result = run({"order": order})
        sale = sale_of([sale_result])
        refund = sale_of([refund_result])
        assert (refund.kind.value, refund.register_id, refund.sequence, str(refund.business_day)) == (
            "return",
            "shopify-refunds",
            509562969,
            "2016-06-20",
        )
        assert [(line.sku, line.action) for line in refund.lines] == [
            ("IPOD2008BLACK", LineAction.RETURN),
            ("IPOD2008GREEN", LineAction.RETURN),
        ]
        assert [line.original.line_no for line in refund.lines if line.original] == [3, 1]
        assert all(line.original and line.original.transaction == sale.ref for line in refund.lines)
        assert all(line.restock for line in refund.lines)  # the legacy "restock": true
        assert refund.totals.model_dump() == {
            "subtotal": Decimal("-398.00"),
            "tax": Decimal("-7.96"),
            "grand_total": Decimal("-405.96"),
        }
        assert [(t.kind, t.amount) for t in refund.tenders] == [(TenderKind.CARD, Decimal("-405.96"))]

    def test_a_refund_read_after_its_order_in_ndjson_links_too(self) -> None:
        lines = "\n".join([dumps({"order": paid_order()}), dumps(paid_refund())])
        refund = sale_of(run(lines), 1)
        assert [line.original.line_no for line in refund.lines if line.original] == [3, 1]

    def test_a_refund_alone_is_a_return_without_links(self) -> None:
        refund = sale_of(run({"refund": paid_refund()}))
        assert all(line.original is None for line in refund.lines) and refund.store_id == "WEB"

    def test_no_restock_means_the_goods_do_not_go_back_on_the_shelf(self) -> None:
        refund = paid_refund()
        for rli in refund["refund_line_items"]:
            rli["restock_type"] = "no_restock"
        assert [line.restock for line in sale_of(run({"refund": refund})).lines] == [False, False]

    def test_subtotal_and_total_tax_give_the_lines_discount_and_tax(self) -> None:
        refund = paid_refund()
        refund["refund_line_items"][0].update(subtotal="189.00", total_tax="3.78", restock_type="return")
        refund["transactions"][0]["amount"] = "395.76"  # 189.00 + 3.78 + 199.00 + 3.98
        result = sale_of(run({"refund": refund}))
        assert [m.amount for m in result.lines[0].modifiers] == [Decimal("10.00")]
        assert result.totals.tax == Decimal("-7.76")

    def test_a_shipping_refund_is_a_returned_shipping_line(self) -> None:
        refund = paid_refund()
        refund["order_adjustments"] = [{"kind": "shipping_refund", "amount": "-5.00", "tax_amount": "0.00"}]
        refund["transactions"][0]["amount"] = "410.96"
        result = sale_of(run({"refund": refund}))
        shipping = result.lines[-1]
        assert (shipping.sku, shipping.extended_amount, shipping.restock) == (
            "SHIPPING",
            Decimal("5.00"),
            False,
        )

    def test_less_paid_back_than_calculated_is_a_basket_modifier(self) -> None:
        refund = paid_refund()
        refund["order_adjustments"] = [{"kind": "refund_discrepancy", "amount": "5.96", "tax_amount": "0.00"}]
        refund["transactions"][0]["amount"] = "400.00"
        result = sale_of(run({"refund": refund}))
        assert [m.amount for m in result.modifiers] == [Decimal("5.96")]
        assert result.totals.grand_total == Decimal("-400.00")

    def test_a_refund_of_a_line_the_order_does_not_have_is_quarantined(self) -> None:
        refund = paid_refund()
        refund["refund_line_items"][0]["line_item_id"] = 1
        order = paid_order() | {"refunds": [refund]}
        assert isinstance(run({"order": order})[1], Quarantined)

    def test_the_tax_of_part_of_a_line_must_be_stated(self) -> None:
        refund = paid_refund()
        refund["refund_line_items"][0]["line_item"]["quantity"] = 2
        [result] = run({"refund": refund})
        assert isinstance(result, Quarantined) and result.field == "refund_line_items[0].total_tax"

    def test_refunds_of_an_order_never_posted_are_recorded_too(self) -> None:
        order = paid_order() | {"financial_status": "authorized", "refunds": [paid_refund()]}
        assert [type(r) for r in run({"order": order})] == [Recorded, Recorded]


class TestPolicy:
    def test_the_retailers_tender_map_decides_the_kind(self) -> None:
        sale = sale_of(run({"order": paid_order()}, context({"authorize_net": "voucher"})))
        assert [t.kind for t in sale.tenders] == [TenderKind.VOUCHER]

    def test_an_unmapped_gateway_is_quarantined_naming_it(self) -> None:
        [result] = run({"order": paid_order()}, context({}))
        assert isinstance(result, Quarantined)
        assert result.field == "gateway" and "'authorize_net'" in result.reason

    def test_settings_name_the_store_register_and_skus(self) -> None:
        order = paid_order()
        order["shipping_lines"] = [{"title": "Express", "price": "10.00"}]
        order["total_price"] = "642.82"
        sale = sale_of(run({"order": order}, store_id="ONLINE", register_id="web1", shipping_sku="FREIGHT"))
        assert (sale.store_id, sale.register_id, sale.lines[-1].sku) == ("ONLINE", "web1", "FREIGHT")


class TestCardNumbers:
    def test_a_card_number_in_a_note_attribute_quarantines_the_order_and_never_shows(self) -> None:
        order = paid_order()
        order["note_attributes"][0]["value"] = f"card {VISA_TEST_NUMBER} exp 12/29"
        results = run({"order": order})
        [result] = results
        assert isinstance(result, Quarantined)
        assert (result.field, result.reason) == ("note_attributes[0].value", CARD_NUMBER_REASON)
        assert "4111" not in repr(results)

    def test_a_card_number_in_an_embedded_refund_quarantines_that_refund_only(self) -> None:
        refund = paid_refund() | {"note": VISA_TEST_NUMBER.replace(" ", "")}
        sale_result, refund_result = run({"order": paid_order() | {"refunds": [refund]}})
        assert isinstance(sale_result, Imported)
        assert isinstance(refund_result, Quarantined) and refund_result.field == "note"

    def test_shopify_ids_are_not_mistaken_for_cards(self) -> None:
        order = paid_order() | {
            "id": 5923423423423,
            "admin_graphql_api_id": "gid://shopify/Order/5923423423423",
        }
        assert isinstance(run({"order": order})[0], Imported)  # 13 digits, Maestro prefix, Luhn-valid


class TestInput:
    def test_an_ndjson_line_that_is_not_json_is_quarantined_and_the_rest_goes_on(self) -> None:
        text = "\n".join([dumps({"order": paid_order()}), "{not json", "", dumps({"refund": paid_refund()})])
        results = run(text)
        assert [type(r) for r in results] == [Imported, Quarantined, Imported]
        assert results[1].source.locator == "line 2"

    def test_a_later_record_that_is_not_a_transaction_is_quarantined(self) -> None:
        text = "\n".join([dumps({"order": paid_order()}), dumps(load("customer.json"))])
        assert [type(r) for r in run(text)] == [Imported, Quarantined]

    @pytest.mark.parametrize("data", [b"", b"   \n", b"\xff\xfe{", b"[" * 100_000, b"{\n", b"<xml/>"])
    def test_an_unreadable_input_is_a_format_error(self, data: bytes) -> None:
        with pytest.raises(FormatError):
            run(data)

    def test_an_over_long_ndjson_line_is_quarantined_a_whole_document_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(commerce, "MAX_DOCUMENT_BYTES", 20_000)
        order = dumps({"order": paid_order()})
        results = run("\n".join([order, " " * 30_000 + "{}", order]))
        assert [type(r) for r in results] == [Imported, Quarantined, Imported]
        assert "longer than" in results[1].reason
        with pytest.raises(FormatError, match="larger than"):
            run(json.dumps({"orders": [paid_order()] * 10}, indent=2))

    def test_ndjson_is_read_a_record_at_a_time(self) -> None:
        stream = io.BytesIO("\n".join([dumps({"order": paid_order()})] * 50).encode())
        first = next(shopify.parse(stream, context(), name="bulk.ndjson"))
        assert isinstance(first, Imported)
        assert stream.tell() < len(stream.getvalue()) / 10  # the rest is still unread

    def test_sniff_knows_orders_and_refunds_but_not_square_xml_or_csv(self) -> None:
        assert shopify.sniff(sample("shopify", "order.json").read_bytes()[:4096])
        assert shopify.sniff(sample("shopify", "refund.json").read_bytes()[:4096])
        assert shopify.sniff(sample("shopify", "tender_transactions.json").read_bytes()[:4096])
        assert not shopify.sniff(sample("square", "create-order-response.json").read_bytes()[:4096])
        assert not shopify.sniff(b'<?xml version="1.0"?><POSLog/>')
        assert not shopify.sniff(b"order_number,financial_status\n1,paid\n")


SAMPLES = [
    load(name)
    for name in ("order.json", "orders.json", "refund.json", "transactions.json", "refund_calculate.json")
]
PAID = {"order": paid_order() | {"refunds": [paid_refund()]}}


def survives(data: bytes) -> None:
    """Only FormatError escapes; every record is a result, none a mapping accident."""
    try:
        results = run(data)
    except FormatError:
        return
    for result in results:
        assert isinstance(result, Imported | Quarantined | Recorded)
        if isinstance(result, Quarantined):
            assert not result.reason.startswith("could not be mapped"), result


class TestFuzzing:
    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2000))
    def test_arbitrary_bytes(self, data: bytes) -> None:
        survives(data)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from([*SAMPLES, PAID]).flatmap(mutated))
    def test_mutated_samples(self, data: bytes) -> None:
        survives(data)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.sampled_from([*SAMPLES, PAID]).flatmap(mutated), min_size=2, max_size=4))
    def test_mutated_ndjson(self, documents: list[bytes]) -> None:
        survives(b"\n".join(json.dumps(json.loads(d)).encode() for d in documents))

    def test_the_consistent_sample_survives_unharmed(self) -> None:
        assert [type(r) for r in run(copy.deepcopy(PAID))] == [Imported, Imported]
