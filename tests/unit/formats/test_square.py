"""Square orders and refunds become canonical transactions (money in minor units, identities
derived from opaque ids) — or are quarantined with the reason, or recorded and never posted."""

from __future__ import annotations

import io
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.shared_data import sample
from tests.unit.formats.mutations import mutated
from tillflow.formats import square
from tillflow.formats.commerce import derived_sequence
from tillflow.formats.policy import PolicyMaps
from tillflow.formats.records import FormatError, ImportContext, Imported, Parsed, Quarantined, Recorded
from tillflow.formats.safety import CARD_NUMBER_REASON
from tillflow.model import ItemType, LineAction, Store, TenderKind, Transaction

VISA_TEST_NUMBER = "4111-1111-1111-1111"
REFUND_ID = "bP9mAsEMYPUGjjGNaNO5ZDVyLhSZY_69MmgHubkLqx9wGhnmenRUHOaKitE6llfZuxcWYjGxd"


def context(tenders: dict[str, str] | None = None, **policy: Any) -> ImportContext:
    return ImportContext(
        stores={"S057": Store(store_id="S057", currency="USD", timezone="America/Los_Angeles")},
        policy=PolicyMaps.model_validate(
            {"tenders": tenders or {}, "store_aliases": {"057P5VYJ4A5X1": "S057"}, **policy}
        ),
    )


def run(data: bytes | str | Any, ctx: ImportContext | None = None, **settings: Any) -> list[Parsed]:
    raw = (
        data.encode()
        if isinstance(data, str)
        else data
        if isinstance(data, bytes)
        else json.dumps(data).encode()
    )
    return list(square.parse(io.BytesIO(raw), ctx or context(), name="in.json", settings=settings or None))


def load(name: str) -> Any:
    return json.loads(sample("square", name).read_text())


def imported(results: list[Parsed], index: int = 0) -> Transaction:
    found = results[index]
    assert isinstance(found, Imported), found
    return found.transaction


def money(amount: int, currency: str = "USD") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def paid_order(state: str = "COMPLETED") -> dict[str, Any]:
    """create-order-response.json, paid in cash: 61.76 due, 70.00 given, 8.24 back."""
    order: dict[str, Any] = load("create-order-response.json")["order"]
    order["state"] = state
    order["tenders"] = [
        {
            "id": "T1",
            "type": "CASH",
            "amount_money": money(6176),
            "created_at": "2020-01-17T20:49:10Z",
            "cash_details": {"buyer_tendered_money": money(7000), "change_back_money": money(824)},
        }
    ]
    return order


class TestTheSamples:
    @pytest.mark.parametrize("name", ["create-order-response.json", "calculate-order-response.json"])
    def test_open_orders_without_payment_are_recorded_unpaid(self, name: str) -> None:
        [result] = run(sample("square", name).read_bytes())
        assert isinstance(result, Recorded) and result.kind == "unpaid"

    def test_search_orders_holds_three_orders_without_state_all_quarantined(self) -> None:
        results = run(sample("square", "search-orders-response.json").read_bytes())
        assert [(type(r), getattr(r, "field", None)) for r in results] == [(Quarantined, "state")] * 3
        assert [r.source.index for r in results] == [1, 2, 3]

    def test_a_payment_is_recorded_its_tender_posts_with_its_order(self) -> None:
        [result] = run(sample("square", "create-payment-response.json").read_bytes())
        assert isinstance(result, Recorded) and result.kind == "payment"
        assert "pRsjRTgFWATl7so6DxdKBJa7ssbZY" in result.detail

    def test_the_completed_refund_names_a_placeholder_destination_and_is_quarantined(self) -> None:
        [result] = run(sample("square", "get-payment-refund-response.json").read_bytes())
        assert isinstance(result, Quarantined)
        assert result.field == "destination_type" and "'destination_type2'" in result.reason
        assert result.source.locator == f"refund {REFUND_ID}"

    def test_the_completed_refund_once_its_destination_is_mapped_is_a_money_only_return(self) -> None:
        [result] = run(
            sample("square", "get-payment-refund-response.json").read_bytes(),
            context({"destination_type2": "card"}),
        )
        refund = imported([result])
        created = datetime.fromisoformat("2021-10-13T19:59:05.073Z")
        assert (refund.kind.value, refund.store_id, str(refund.business_day), refund.sequence) == (
            "return",
            "L88917AVBK2S5",
            "2021-10-13",
            derived_sequence(created, REFUND_ID),  # the store is not configured: the clock as sent
        )
        [line] = refund.lines
        assert (line.sku, line.action, line.item_type, line.extended_amount, line.restock, line.original) == (
            "REFUND",
            LineAction.RETURN,
            ItemType.NON_STOCK,
            Decimal("5.55"),
            False,
            None,
        )
        assert [(t.kind, t.amount) for t in refund.tenders] == [(TenderKind.CARD, Decimal("-5.55"))]
        assert refund.totals.grand_total == Decimal("-5.55") and not refund.taxes

    def test_a_pending_refund_is_recorded(self) -> None:
        [result] = run(sample("square", "refund-payment-response.json").read_bytes())
        assert isinstance(result, Recorded) and result.kind == "pending"

    @pytest.mark.parametrize(
        ("name", "why"),
        [
            ("accumulate-loyalty-points-response.json", "not a Square order"),
            ("batch-change-inventory-response.json", "not a Square order"),
            ("calculate-loyalty-points-response.json", "not a Square order"),
            ("create-gift-card-activity-response.json", "not a Square order"),
            ("create-loyalty-account-response.json", "not a Square order"),
            ("list-cash-drawer-shift-events-response.json", "not a Square order"),
            ("redeem-loyalty-reward-response.json", "not a Square order"),
            ("retrieve-cash-drawer-shift-response.json", "not a Square order"),
            ("retrieve-inventory-changes-response.json", "not a Square order"),
            ("search-loyalty-events-response.json", "not a Square order"),
            ("accumulate-loyalty-points-request.json", "an API request"),
            ("batch-change-inventory-request.json", "an API request"),
            ("create-order-request.json", "an API request"),
            ("create-payment-request.json", "an API request"),
            ("refund-payment-request.json", "an API request"),
        ],
    )
    def test_documents_that_are_not_records_are_refused_whole(self, name: str, why: str) -> None:
        with pytest.raises(FormatError, match=why):
            run(sample("square", name).read_bytes())


class TestSale:
    def test_a_completed_order_is_a_sale_in_major_units(self) -> None:
        sale = imported(run({"order": paid_order()}))
        assert (sale.store_id, sale.register_id, str(sale.business_day)) == ("S057", "square", "2020-01-17")
        assert [(line.sku, line.quantity, line.unit_price, line.extended_amount) for line in sale.lines] == [
            ("catalog_object_id2", Decimal(1), Decimal("15.99"), Decimal("15.99")),
            (
                "BEMYCSMIJL46OCDV4KYIKXIB",
                Decimal(2),
                Decimal("22.50"),
                Decimal("45.00"),
            ),  # 22.00 + 0.50 "Well"
        ]
        assert [[(m.reason, m.amount) for m in line.modifiers] for line in sale.lines] == [
            [("Membership Discount", Decimal("0.08")), ("Labor Day Sale", Decimal("0.79"))],
            [
                ("Membership Discount", Decimal("0.22")),
                ("Labor Day Sale", Decimal("2.24")),
                ("Sale - $1.00 off", Decimal("1.00")),
            ],
        ]
        [tax] = sale.taxes
        assert (tax.code, tax.rate, tax.taxable_amount, tax.amount, tax.inclusive) == (
            "State_Sales_Tax",
            Decimal("0.09"),
            Decimal("56.66"),
            Decimal("5.10"),
            False,
        )
        assert sale.totals.model_dump() == {
            "subtotal": Decimal("56.66"),
            "tax": Decimal("5.10"),
            "grand_total": Decimal("61.76"),
        }
        assert [(t.kind, t.amount, t.change) for t in sale.tenders] == [
            (TenderKind.CASH, Decimal("70.00"), Decimal("8.24"))
        ]
        assert sale.customer is not None and sale.customer.member_id == "customer_id4"

    def test_the_identity_is_derived_from_the_creation_time_and_the_square_id(self) -> None:
        sale = imported(run({"order": paid_order()}))
        local = datetime.fromisoformat("2020-01-17T12:47:53.293-08:00")  # the store's clock
        assert sale.sequence == derived_sequence(local, "CAISENgvlJ6jLWAzERDzjyHVybY")
        assert sale.sequence // 100_000 == 12 * 3600 + 47 * 60 + 53
        assert "CAISENgvlJ6jLWAzERDzjyHVybY" in run({"order": paid_order()})[0].source.locator

    def test_a_paid_open_order_and_its_completed_version_are_the_same_transaction(self) -> None:
        first = imported(run({"order": paid_order("OPEN")}))
        later = imported(run({"order": paid_order() | {"closed_at": "2020-01-18T09:00:00Z"}}))
        assert first == later

    @pytest.mark.parametrize(("state", "kind"), [("DRAFT", "draft"), ("CANCELED", "cancelled")])
    def test_drafts_and_cancelled_orders_are_recorded(self, state: str, kind: str) -> None:
        [result] = run({"order": paid_order(state)})
        assert isinstance(result, Recorded) and result.kind == kind

    def test_a_return_order_is_recorded_its_refund_posts_the_money(self) -> None:
        order = paid_order() | {"returns": [{"source_order_id": "X", "return_line_items": []}]}
        [result] = run({"order": order})
        assert isinstance(result, Recorded) and result.kind == "return-order"

    def test_a_total_that_does_not_add_up_is_quarantined_with_the_figures(self) -> None:
        order = paid_order() | {"total_money": money(6200)}
        order["tenders"][0]["amount_money"] = money(6200)
        order["tenders"][0]["cash_details"]["change_back_money"] = money(800)
        [result] = run({"order": order})
        assert isinstance(result, Quarantined) and result.field == "total_money"
        assert dict(result.numbers) == {
            "lines": "60.99",
            "discounts": "4.33",
            "tax": "5.10",
            "rounding": "0.00",
            "grand_total": "61.76",
            "total_money": "62.00",
        }

    def test_a_line_total_that_does_not_add_up_is_quarantined_at_the_line(self) -> None:
        order = paid_order()
        order["line_items"][1]["total_money"] = money(4529)
        [result] = run({"order": order})
        assert isinstance(result, Quarantined) and result.field == "line_items[1].total_money"
        assert result.numbers["computed"] == "45.28" and result.numbers["total_money"] == "45.29"

    def test_a_money_in_another_currency_is_quarantined(self) -> None:
        order = paid_order()
        order["line_items"][0]["base_price_money"]["currency"] = "TWD"
        [result] = run({"order": order})
        assert isinstance(result, Quarantined) and result.field == "line_items[0].base_price_money.currency"

    def test_tenders_that_do_not_cover_the_total_are_quarantined(self) -> None:
        order = paid_order()
        order["tenders"][0].update(amount_money=money(6000), cash_details={})
        [result] = run({"order": order})
        assert isinstance(result, Quarantined) and result.field == "tenders"
        assert dict(result.numbers) == {"tenders": "60.00", "total_money": "61.76"}

    def test_minor_units_follow_the_currency(self) -> None:
        order = {
            "id": "JP1",
            "location_id": "TOKYO",
            "state": "COMPLETED",
            "created_at": "2024-03-01T10:00:00+09:00",
            "line_items": [{"name": "Tea", "quantity": "3", "base_price_money": money(450, "JPY")}],
            "total_money": money(1350, "JPY"),
            "tenders": [{"type": "CARD", "amount_money": money(1350, "JPY")}],
        }
        sale = imported(run({"order": order}))
        assert (sale.currency, sale.lines[0].unit_price, sale.totals.grand_total) == (
            "JPY",
            Decimal(450),
            Decimal(1350),
        )
        assert sale.store_id == "TOKYO"  # no alias: the location id as sent

    def test_inclusive_tax_is_inside_the_prices(self) -> None:
        order = paid_order()
        order["taxes"][0]["type"] = "INCLUSIVE"
        for line in order["line_items"]:
            line["total_money"]["amount"] -= line["total_tax_money"]["amount"]
        order["total_money"] = money(5666)
        order["tenders"][0].update(amount_money=money(5666), cash_details={})
        sale = imported(run({"order": order}))
        assert sale.taxes[0].inclusive and sale.totals.grand_total == Decimal("56.66")

    def test_tip_service_charge_rounding_and_voided_cards(self) -> None:
        order = paid_order()
        order["service_charges"] = [{"uid": "sc", "name": "Delivery", "applied_money": money(300)}]
        order["total_service_charge_money"] = money(300)
        order["total_tip_money"] = money(200)
        order["rounding_adjustment"] = {"name": "cash rounding", "amount_money": money(-1)}
        order["total_money"] = money(6675)  # 61.76 + 3.00 + 2.00 - 0.01
        order["tenders"] = [
            {"type": "CARD", "amount_money": money(9999), "card_details": {"status": "VOIDED"}},
            {"type": "CASH", "amount_money": money(6675)},
        ]
        sale = imported(run({"order": order}))
        assert [(line.sku, line.item_type) for line in sale.lines[2:]] == [
            ("SERVICE-CHARGE", ItemType.SERVICE),
            ("TIP", ItemType.SERVICE),
        ]
        assert [(t.kind, t.amount) for t in sale.tenders] == [
            (TenderKind.CASH, Decimal("66.75")),
            (TenderKind.ROUNDING, Decimal("0.01")),
        ]
        assert sale.totals.grand_total == Decimal("66.76")


class TestPolicy:
    def test_the_retailers_tender_map_decides_the_kind(self) -> None:
        order = paid_order()
        order["tenders"][0].update(type="OTHER", cash_details={}, amount_money=money(6176))
        assert isinstance(run({"order": order})[0], Quarantined)  # OTHER has no built-in kind
        sale = imported(run({"order": order}, context({"OTHER": "voucher"})))
        assert [t.kind for t in sale.tenders] == [TenderKind.VOUCHER]

    def test_tax_names_map_through_the_policy(self) -> None:
        sale = imported(run({"order": paid_order()}, context(tax_codes={"State Sales Tax": "US-CA"})))
        assert sale.taxes[0].code == "US-CA" and sale.lines[0].tax_codes == ("US-CA",)


class TestCardNumbers:
    def test_a_card_number_in_a_line_note_quarantines_the_order_and_never_shows(self) -> None:
        order = paid_order()
        order["line_items"][0]["note"] = f"paid with {VISA_TEST_NUMBER}"
        results = run({"order": order})
        [result] = results
        assert isinstance(result, Quarantined)
        assert (result.field, result.reason) == ("line_items[0].note", CARD_NUMBER_REASON)
        assert "4111" not in repr(results)

    def test_a_card_number_in_a_refund_reason_quarantines_the_refund(self) -> None:
        refund = load("get-payment-refund-response.json")
        refund["refund"]["reason"] = VISA_TEST_NUMBER
        [result] = run(refund, context({"destination_type2": "card"}))
        assert isinstance(result, Quarantined) and result.field == "reason"


class TestInput:
    def test_ndjson_streams_orders_and_refunds_and_quarantines_a_bad_line(self) -> None:
        refund = load("get-payment-refund-response.json")["refund"]
        text = "\n".join([json.dumps({"order": paid_order()}), "oops", json.dumps(refund)])
        results = run(text, context({"destination_type2": "card"}))
        assert [type(r) for r in results] == [Imported, Quarantined, Imported]

    def test_a_later_record_that_is_not_ours_is_quarantined(self) -> None:
        text = "\n".join(
            [json.dumps({"order": paid_order()}), json.dumps(load("create-loyalty-account-response.json"))]
        )
        assert [type(r) for r in run(text)] == [Imported, Quarantined]

    @pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b'"order"', b"{}", b'{"errors": []}'])
    def test_an_unreadable_input_is_a_format_error(self, data: bytes) -> None:
        with pytest.raises(FormatError):
            run(data)

    def test_sniff_knows_square_money_but_not_shopify(self) -> None:
        assert square.sniff(sample("square", "create-order-response.json").read_bytes()[:4096])
        assert square.sniff(sample("square", "get-payment-refund-response.json").read_bytes()[:4096])
        assert square.sniff(sample("square", "search-orders-response.json").read_bytes()[:4096])
        assert not square.sniff(sample("shopify", "order.json").read_bytes()[:4096])
        assert not square.sniff(b"amount_money,total_money\n")


SAMPLES = [
    load(name)
    for name in (
        "create-order-response.json",
        "search-orders-response.json",
        "create-payment-response.json",
        "get-payment-refund-response.json",
        "calculate-order-response.json",
    )
]
PAID = {"order": paid_order()}
LENIENT = context({"destination_type2": "card"})


def survives(data: bytes) -> None:
    """Only FormatError escapes; every record is a result, none a mapping accident."""
    try:
        results = list(square.parse(io.BytesIO(data), LENIENT, name="fuzz"))
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

    def test_the_paid_sample_survives_unharmed(self) -> None:
        assert isinstance(run(PAID)[0], Imported)
