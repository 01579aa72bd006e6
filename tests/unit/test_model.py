"""The canonical retail model v1: the invariants a record must keep to be constructed at all.

Every transaction test builds on one valid EUR sale (`tx_payload`) and changes just what the story is about,
so a refusal can only come from the invariant under test.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from tillflow.model import (
    CardDetails,
    DayClose,
    Journal,
    JournalLine,
    LineAction,
    Tender,
    TenderKind,
    Transaction,
    TransactionKind,
    round_to_minor,
)

STORE = "S001"
REGISTER = "R01"
DAY = date(2026, 11, 29)
ENDED_AT = "2026-11-29T17:42:05+00:00"
SEQUENCE = 42

# The keys whose values are amounts (or quantities): pydantic carries them as Decimal.
AMOUNT_KEYS = frozenset(
    {
        "quantity",
        "unit_price",
        "extended_amount",
        "amount",
        "change",
        "subtotal",
        "tax",
        "grand_total",
        "taxable_amount",
        "rate",
    }
)


# --- builders ---------------------------------------------------------------------------------------


def item(
    line_no: int = 1,
    *,
    quantity: str = "1",
    unit_price: str = "10.00",
    extended: str | None = None,
    currency: str = "EUR",
    **fields: Any,
) -> dict[str, Any]:
    """A sold line; its extended amount is quantity × unit price rounded to the minor unit unless given."""
    if extended is None:
        extended = str(round_to_minor(Decimal(quantity) * Decimal(unit_price), currency))
    return {
        "line_no": line_no,
        "sku": f"SKU-{line_no}",
        "quantity": quantity,
        "unit_price": unit_price,
        "extended_amount": extended,
        **fields,
    }


def returned(
    line_no: int = 1, *, sold_on: date = date(2026, 11, 28), sold_seq: int = 17, sold_line: int = 2, **kw: Any
) -> dict[str, Any]:
    """A returned line that points at the line it was sold on."""
    original = {
        "transaction": {
            "store_id": STORE,
            "register_id": REGISTER,
            "business_day": sold_on.isoformat(),
            "sequence": sold_seq,
        },
        "line_no": sold_line,
    }
    return item(line_no, action="return", original=original, **kw)


def modifier(amount: str, reason: str = "promotion") -> dict[str, Any]:
    return {"amount": amount, "reason": reason}


def tax(code: str, rate: str, taxable: str, amount: str, *, inclusive: bool) -> dict[str, Any]:
    return {"code": code, "rate": rate, "taxable_amount": taxable, "amount": amount, "inclusive": inclusive}


def cash(amount: str, change: str = "0") -> dict[str, Any]:
    return {"kind": "cash", "amount": amount, "change": change}


def card(amount: str, last4: str = "4242", auth_code: str = "A1B2C3") -> dict[str, Any]:
    return {
        "kind": "card",
        "amount": amount,
        "card": {"last4": last4, "auth_code": auth_code, "scheme": "visa"},
    }


def _net(line: dict[str, Any]) -> Decimal:
    net = Decimal(line["extended_amount"]) - sum(
        (Decimal(m["amount"]) for m in line.get("modifiers", ())), Decimal(0)
    )
    return -net if line.get("action") == "return" else net


def tx_payload(
    *lines: dict[str, Any],
    currency: str = "EUR",
    kind: str = "sale",
    modifiers: tuple[dict[str, Any], ...] = (),
    taxes: tuple[dict[str, Any], ...] = (),
    tenders: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The JSON-ready payload of a consistent transaction.

    Totals follow from the lines, modifiers and taxes; it is paid exactly in cash unless `tenders`
    are given. `fields` override anything (e.g. `totals=...` to make it inconsistent).
    """
    lines = lines or (item(),)
    basket_sign = -1 if kind == "return" else 1
    subtotal = sum((_net(line) for line in lines), Decimal(0)) - basket_sign * sum(
        (Decimal(m["amount"]) for m in modifiers), Decimal(0)
    )
    tax_total = sum((Decimal(t["amount"]) for t in taxes), Decimal(0))
    exclusive = sum((Decimal(t["amount"]) for t in taxes if not t["inclusive"]), Decimal(0))
    grand_total = subtotal + exclusive
    payload: dict[str, Any] = {
        "store_id": STORE,
        "register_id": REGISTER,
        "business_day": DAY.isoformat(),
        "sequence": SEQUENCE,
        "kind": kind,
        "currency": currency,
        "ended_at": ENDED_AT,
        "lines": list(lines),
        "modifiers": list(modifiers),
        "taxes": list(taxes),
        "tenders": tenders if tenders is not None else [cash(str(grand_total))],
        "totals": {"subtotal": str(subtotal), "tax": str(tax_total), "grand_total": str(grand_total)},
    }
    payload.update(fields)
    return payload


def build(*lines: dict[str, Any], **kw: Any) -> Transaction:
    return Transaction.model_validate(tx_payload(*lines, **kw))


def refused(payload: dict[str, Any], match: str | None) -> ValidationError:
    """Assert that `payload` is refused (with a message matching `match`, if given); return the error."""
    with pytest.raises(ValidationError, match=match) as info:
        Transaction.model_validate(payload)
    return info.value


def full_sale_payload() -> dict[str, Any]:
    """A sale using every optional part: customer, line and basket modifiers, a tax line, a card."""
    line = item(1, quantity="2", unit_price="10.00", modifiers=[modifier("2.00")])  # 20.00 - 2.00
    return tx_payload(
        line,
        modifiers=(modifier("1.00", "coupon"),),  # 17.00
        taxes=(tax("VAT20", "0.20", "14.17", "2.83", inclusive=True),),
        tenders=[card("17.00")],
        customer={"member_id": "M-1"},
    )


def with_json_integers(value: Any) -> Any:
    """`value` with every whole amount written as a JSON integer instead of a string."""
    if isinstance(value, dict):
        return {
            k: int(v)
            if k in AMOUNT_KEYS and isinstance(v, str) and v.lstrip("-").isdigit()
            else with_json_integers(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [with_json_integers(v) for v in value]
    return value


# --- transactions -----------------------------------------------------------------------------------


class TestValidSale:
    def test_a_valid_sale_constructs_with_a_store_register_day_sequence_id(self) -> None:
        tx = build(item(1, quantity="2", unit_price="4.25"), item(2, unit_price="4.00"))

        assert tx.transaction_id == "S001:R01:2026-11-29:00000042"
        assert tx.ref.transaction_id == tx.transaction_id
        assert tx.kind is TransactionKind.SALE
        assert tx.totals.grand_total == Decimal("12.50")
        assert [line.net_amount for line in tx.lines] == [Decimal("8.50"), Decimal("4.00")]

    def test_every_optional_part_fits_together(self) -> None:
        tx = Transaction.model_validate(full_sale_payload())

        assert tx.lines[0].net_amount == Decimal("18.00")
        assert tx.totals.subtotal == Decimal("17.00")
        assert tx.totals.grand_total == Decimal("17.00")  # inclusive VAT is already in the price
        assert tx.tenders[0].card == CardDetails(last4="4242", auth_code="A1B2C3", scheme="visa")
        assert tx.customer is not None and tx.customer.member_id == "M-1"

    def test_a_sale_without_lines_is_refused(self) -> None:
        payload = tx_payload()
        payload.update(lines=[], totals={"subtotal": "0", "tax": "0", "grand_total": "0"}, tenders=[])
        refused(payload, "a sale has at least one line")


class TestTransactionInvariants:
    def test_tenders_minus_change_must_equal_grand_total(self) -> None:
        paid_with_change = tx_payload(item(unit_price="12.50"), tenders=[cash("20.00", change="7.50")])
        assert Transaction.model_validate(paid_with_change).totals.grand_total == Decimal("12.50")

        short_change = tx_payload(item(unit_price="12.50"), tenders=[cash("20.00", change="5.00")])
        refused(short_change, r"tenders - change 15\.00 != totals\.grand_total 12\.50")

    def test_split_tenders_add_up_to_the_grand_total(self) -> None:
        tx = build(item(unit_price="30.00"), tenders=[card("25.00"), cash("10.00", change="5.00")])
        assert sum(t.amount - t.change for t in tx.tenders) == tx.totals.grand_total == Decimal("30.00")

    def test_lines_minus_modifiers_plus_exclusive_tax_must_equal_grand_total(self) -> None:
        payload = tx_payload(
            item(unit_price="10.00"),
            totals={"subtotal": "10.00", "tax": "0", "grand_total": "11.00"},
            tenders=[cash("11.00")],  # paid what the totals claim: only the line sum is wrong
        )
        refused(payload, r"totals\.grand_total 11\.00 != lines - modifiers \+ exclusive tax 10\.00")

    def test_subtotal_must_equal_lines_minus_modifiers(self) -> None:
        payload = tx_payload(
            item(unit_price="10.00", modifiers=[modifier("1.00")]),
            modifiers=(modifier("0.50"),),
            totals={"subtotal": "10.00", "tax": "0", "grand_total": "10.00"},  # forgets both reductions
            tenders=[cash("10.00")],
        )
        refused(payload, r"totals\.subtotal 10\.00 != lines - modifiers 8\.50")

    def test_line_and_basket_modifiers_reduce_the_total(self) -> None:
        tx = build(item(unit_price="10.00", modifiers=[modifier("1.00")]), modifiers=(modifier("0.50"),))
        assert tx.totals.subtotal == tx.totals.grand_total == Decimal("8.50")

    def test_tax_total_must_equal_the_sum_of_tax_lines(self) -> None:
        payload = tx_payload(
            item(unit_price="12.00"),
            taxes=(tax("VAT20", "0.20", "10.00", "2.00", inclusive=True),),
            totals={"subtotal": "12.00", "tax": "0", "grand_total": "12.00"},
        )
        refused(payload, r"totals\.tax 0 != sum of tax lines 2\.00")


class TestTax:
    def test_inclusive_tax_is_in_the_price_and_does_not_add_to_the_grand_total(self) -> None:
        tx = build(item(unit_price="12.00"), taxes=(tax("VAT20", "0.20", "10.00", "2.00", inclusive=True),))

        assert tx.totals.tax == Decimal("2.00")
        assert tx.totals.grand_total == tx.totals.subtotal == Decimal("12.00")

    def test_exclusive_tax_adds_to_the_grand_total_us_style(self) -> None:
        # Two items at 9.99 in New York City: 8.875 % sales tax on 19.98 is 1.773225 -> 1.77.
        tx = build(
            item(1, quantity="2", unit_price="9.99", currency="USD"),
            currency="USD",
            taxes=(tax("NY-NYC", "0.08875", "19.98", "1.77", inclusive=False),),
            tenders=[card("21.75")],
        )

        assert tx.totals.subtotal == Decimal("19.98")
        assert tx.totals.tax == Decimal("1.77")
        assert tx.totals.grand_total == Decimal("21.75")

    def test_inclusive_tax_added_on_top_is_refused(self) -> None:
        payload = tx_payload(
            item(unit_price="12.00"),
            taxes=(tax("VAT20", "0.20", "10.00", "2.00", inclusive=True),),
            totals={"subtotal": "12.00", "tax": "2.00", "grand_total": "14.00"},
            tenders=[cash("14.00")],
        )
        refused(payload, r"totals\.grand_total 14\.00 != lines - modifiers \+ exclusive tax 12\.00")

    def test_exclusive_tax_left_out_of_the_grand_total_is_refused(self) -> None:
        payload = tx_payload(
            item(unit_price="19.98", currency="USD"),
            currency="USD",
            taxes=(tax("NY-NYC", "0.08875", "19.98", "1.77", inclusive=False),),
            totals={"subtotal": "19.98", "tax": "1.77", "grand_total": "19.98"},
            tenders=[card("19.98")],
        )
        refused(payload, r"totals\.grand_total 19\.98 != lines - modifiers \+ exclusive tax 21\.75")


class TestMoney:
    @pytest.mark.parametrize(
        ("currency", "amount"),
        [("EUR", "1.234"), ("USD", "0.001"), ("JPY", "10.5"), ("KWD", "1.2345")],
    )
    def test_amounts_below_the_minor_unit_are_refused(self, currency: str, amount: str) -> None:
        payload = tx_payload(item(unit_price=amount, extended=amount, currency=currency), currency=currency)
        refused(payload, rf"totals\.subtotal {amount} has digits below the {currency} minor unit")

    def test_a_tender_below_the_minor_unit_is_refused_even_when_the_sums_agree(self) -> None:
        payload = tx_payload(item(unit_price="12.50"), tenders=[cash("20.005", change="7.505")])
        refused(payload, r"tenders\[0\]\.amount 20\.005 has digits below the EUR minor unit")

    @pytest.mark.parametrize(
        ("currency", "amount"),
        [("KWD", "1.234"), ("JPY", "1000"), ("EUR", "12.50"), ("EUR", "12.500"), ("EUR", "12")],
    )
    def test_amounts_in_minor_units_are_accepted(self, currency: str, amount: str) -> None:
        tx = build(item(unit_price=amount, extended=amount, currency=currency), currency=currency)
        assert tx.totals.grand_total == Decimal(amount)

    def test_kwd_carries_three_decimals_through_the_totals(self) -> None:
        tx = build(item(quantity="3", unit_price="1.234", currency="KWD"), currency="KWD")
        assert tx.totals.grand_total == Decimal("3.702")

    def test_an_unknown_currency_is_refused(self) -> None:
        payload = tx_payload(item(unit_price="10.00"), currency="XXX")
        refused(payload, "currency XXX is not a known ISO 4217 code")

    @pytest.mark.parametrize("currency", ["eur", "EURO", "E1R", ""])
    def test_a_malformed_currency_code_is_refused(self, currency: str) -> None:
        error = refused(tx_payload(currency=currency), "String should match pattern")
        assert [e["loc"] for e in error.errors()] == [("currency",)]

    @pytest.mark.parametrize("amount", [12.5, 12.0])
    def test_a_python_float_amount_is_refused(self, amount: float) -> None:
        payload = tx_payload(item(unit_price="12.50"))
        payload["tenders"][0]["amount"] = amount
        error = refused(payload, "binary floats are not exact")
        assert [e["loc"] for e in error.errors()] == [("tenders", 0, "amount")]

        with pytest.raises(ValidationError, match="binary floats are not exact"):
            Tender(kind=TenderKind.CASH, amount=amount)  # type: ignore[arg-type]

    def test_a_json_number_with_a_fraction_is_refused(self) -> None:
        payload = tx_payload(item(unit_price="12.50"))
        payload["tenders"][0]["amount"] = 12.5
        raw = json.dumps(payload)
        assert '"amount": 12.5,' in raw  # a JSON number, not a string

        with pytest.raises(ValidationError, match="binary floats are not exact") as info:
            Transaction.model_validate_json(raw)
        assert [e["loc"] for e in info.value.errors()] == [("tenders", 0, "amount")]

    def test_json_decimal_strings_are_accepted_exactly(self) -> None:
        tx = Transaction.model_validate_json(json.dumps(tx_payload(item(quantity="3", unit_price="0.10"))))
        assert tx.totals.grand_total == Decimal("0.30")  # 3 x 0.1 would not be 0.3 in binary floating point

    def test_json_integers_are_accepted(self) -> None:
        payload = with_json_integers(
            tx_payload(item(quantity="2", unit_price="500", currency="JPY"), currency="JPY")
        )
        assert payload["totals"]["grand_total"] == 1000  # really a JSON integer

        tx = Transaction.model_validate_json(json.dumps(payload))
        assert tx.totals.grand_total == Decimal(1000)
        assert isinstance(tx.lines[0].quantity, Decimal)

    def test_python_decimals_and_integers_are_accepted(self) -> None:
        tender = Tender(kind=TenderKind.CASH, amount=Decimal("12.50"), change=1)  # type: ignore[arg-type]
        assert (tender.amount, tender.change) == (Decimal("12.50"), Decimal(1))

    @pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "sNaN"])
    def test_non_finite_amounts_are_refused(self, amount: str) -> None:
        payload = tx_payload(item(unit_price="12.50"))
        payload["tenders"][0]["amount"] = amount
        error = refused(payload, "Input should be a finite number")
        assert [e["loc"] for e in error.errors()] == [("tenders", 0, "amount")]


class TestLineAmounts:
    def test_a_weighed_quantity_is_priced_at_quantity_times_unit_price_rounded(self) -> None:
        # 1.235 kg of apples at 2.99/kg = 3.69265 -> 3.69
        tx = build(item(quantity="1.235", uom="KG", unit_price="2.99", extended="3.69"))

        line = tx.lines[0]
        assert line.quantity == Decimal("1.235")
        assert line.uom == "KG"
        assert (
            line.extended_amount == round_to_minor(line.quantity * line.unit_price, "EUR") == Decimal("3.69")
        )
        assert tx.totals.grand_total == Decimal("3.69")

    def test_weighed_rounding_is_half_up(self) -> None:
        # 1.5 kg at 0.99/kg = 1.485 -> 1.49 (half up), not 1.48 (half even)
        tx = build(item(quantity="1.5", uom="KG", unit_price="0.99", extended="1.49"))
        assert tx.totals.grand_total == Decimal("1.49")

    @pytest.mark.parametrize("extended", ["3.68", "3.71", "36.93"])
    def test_a_weighed_extended_amount_off_by_a_minor_unit_or_more_is_refused(self, extended: str) -> None:
        payload = tx_payload(item(quantity="1.235", uom="KG", unit_price="2.99", extended=extended))
        refused(payload, rf"lines\[0\]\.extended_amount {extended} != quantity 1\.235 x unit_price 2\.99")

    def test_an_extended_amount_far_from_quantity_times_unit_price_is_refused(self) -> None:
        payload = tx_payload(item(quantity="3", unit_price="2.00", extended="5.00"))
        refused(payload, r"lines\[0\]\.extended_amount 5\.00 != quantity 3 x unit_price 2\.00")

    def test_duplicate_line_numbers_are_refused(self) -> None:
        payload = tx_payload(
            item(1, unit_price="1.00"), item(2, unit_price="2.00"), item(1, unit_price="3.00")
        )
        refused(payload, "line_no 1 appears twice")

    @pytest.mark.parametrize("quantity", ["0", "-1"])
    def test_a_line_quantity_must_be_positive(self, quantity: str) -> None:
        error = refused(tx_payload(item(quantity=quantity, extended="0.00")), "greater than 0")
        assert [e["loc"] for e in error.errors()] == [("lines", 0, "quantity")]


class TestReturns:
    def test_a_return_has_a_negative_grand_total_and_links_each_line_to_its_sale(self) -> None:
        tx = build(
            returned(1, unit_price="12.50", sold_line=2),
            returned(2, quantity="2", unit_price="3.00", sold_line=5),
            kind="return",
        )

        assert tx.kind is TransactionKind.RETURN
        assert all(line.action is LineAction.RETURN for line in tx.lines)
        assert [line.net_amount for line in tx.lines] == [Decimal("-12.50"), Decimal("-6.00")]
        assert tx.totals.grand_total == Decimal("-18.50")
        assert tx.tenders[0].amount == Decimal("-18.50")  # the refund
        refs = [line.original for line in tx.lines]
        assert all(ref is not None for ref in refs)
        assert [(ref.transaction.transaction_id, ref.line_no) for ref in refs if ref] == [
            ("S001:R01:2026-11-28:00000017", 2),
            ("S001:R01:2026-11-28:00000017", 5),
        ]

    def test_a_basket_modifier_on_a_return_reduces_the_refund(self) -> None:
        tx = build(returned(unit_price="20.00"), kind="return", modifiers=(modifier("2.00"),))
        assert tx.totals.grand_total == Decimal("-18.00")

    def test_a_positive_grand_total_on_a_return_is_refused(self) -> None:
        payload = tx_payload(
            returned(unit_price="12.50"),
            kind="return",
            totals={"subtotal": "12.50", "tax": "0", "grand_total": "12.50"},
            tenders=[cash("12.50")],
        )
        refused(payload, r"totals\.subtotal 12\.50 != lines - modifiers -12\.50")

    def test_a_sale_with_a_returned_line_is_refused(self) -> None:
        refused(
            tx_payload(item(1), returned(2), kind="sale"), "a sale has no returned lines; use kind=exchange"
        )

    def test_a_return_with_a_sold_line_is_refused(self) -> None:
        refused(tx_payload(returned(1), item(2), kind="return"), "a return has only returned lines")

    def test_an_exchange_nets_sold_against_returned_lines(self) -> None:
        tx = build(item(1, unit_price="20.00"), returned(2, unit_price="12.50"), kind="exchange")
        assert tx.totals.grand_total == Decimal("7.50")


class TestVoids:
    @staticmethod
    def void_payload(**fields: Any) -> dict[str, Any]:
        """A post-void of sale 41: no lines, amounts mirroring the voided sale as a refund."""
        payload = tx_payload(
            kind="void",
            lines=[],
            totals={"subtotal": "-12.50", "tax": "0", "grand_total": "-12.50"},
            tenders=[cash("-12.50")],
            voided={
                "store_id": STORE,
                "register_id": REGISTER,
                "business_day": DAY.isoformat(),
                "sequence": 41,
            },
        )
        payload.update(fields)
        return payload

    def test_a_void_names_the_transaction_it_voids_and_carries_no_lines(self) -> None:
        tx = Transaction.model_validate(self.void_payload())

        assert tx.kind is TransactionKind.VOID
        assert tx.lines == ()
        assert tx.voided is not None
        assert tx.voided.transaction_id == "S001:R01:2026-11-29:00000041"

    def test_a_void_without_voided_is_refused(self) -> None:
        refused(self.void_payload(voided=None), "a void names the transaction it voids in `voided`")

    def test_a_void_with_lines_is_refused(self) -> None:
        refused(self.void_payload(lines=[item()]), "a post-void carries no lines")

    def test_a_void_of_another_stores_transaction_is_refused(self) -> None:
        other = {"store_id": "S002", "register_id": REGISTER, "business_day": DAY.isoformat(), "sequence": 41}
        refused(self.void_payload(voided=other), "a void may only void a transaction of its own store")

    def test_a_void_must_still_be_paid_back_in_full(self) -> None:
        refused(
            self.void_payload(tenders=[cash("-10.00")]), r"tenders - change -10\.00 != totals\.grand_total"
        )

    def test_voided_on_a_sale_is_refused(self) -> None:
        voided = self.void_payload()["voided"]
        refused(tx_payload(voided=voided), "`voided` is only for kind=void")


class TestTenders:
    def test_card_details_keep_only_last4_and_auth_code(self) -> None:
        tx = build(item(unit_price="12.50"), tenders=[card("12.50", last4="0005", auth_code="123ABC")])

        details = tx.tenders[0].card
        assert details is not None
        assert (details.last4, details.auth_code) == ("0005", "123ABC")
        assert set(CardDetails.model_fields) == {"last4", "auth_code", "scheme"}

    def test_card_details_on_a_cash_tender_are_refused(self) -> None:
        tender = {**cash("12.50"), "card": {"last4": "4242", "auth_code": "A1"}}
        refused(
            tx_payload(item(unit_price="12.50"), tenders=[tender]), "card details belong to card tenders only"
        )

    def test_a_full_card_number_is_refused(self) -> None:
        tender = card("12.50")
        tender["card"]["pan"] = "4242424242424242"
        error = refused(
            tx_payload(item(unit_price="12.50"), tenders=[tender]), "Extra inputs are not permitted"
        )
        assert [(e["type"], e["loc"]) for e in error.errors()] == [
            ("extra_forbidden", ("tenders", 0, "card", "pan"))
        ]

    @pytest.mark.parametrize("last4", ["4242424242424242", "424", "42a2", ""])
    def test_last4_is_exactly_four_digits(self, last4: str) -> None:
        error = refused(tx_payload(item(unit_price="12.50"), tenders=[card("12.50", last4=last4)]), "pattern")
        assert [e["loc"] for e in error.errors()] == [("tenders", 0, "card", "last4")]


class TestIdentityAndShape:
    @pytest.mark.parametrize(
        "field", ["store_id", "register_id", "business_day", "sequence", "kind", "currency"]
    )
    def test_identity_fields_are_required(self, field: str) -> None:
        payload = tx_payload()
        del payload[field]
        error = refused(payload, "Field required")
        assert [(e["type"], e["loc"]) for e in error.errors()] == [("missing", (field,))]

    @pytest.mark.parametrize("store_id", ["S:001", "S 001", "S/001", "", "S" * 65])
    def test_identifiers_are_plain_so_the_transaction_id_stays_parseable(self, store_id: str) -> None:
        error = refused(tx_payload(store_id=store_id), None)
        assert [e["loc"] for e in error.errors()] == [("store_id",)]

    def test_a_negative_sequence_is_refused(self) -> None:
        error = refused(tx_payload(sequence=-1), "greater than or equal to 0")
        assert [e["loc"] for e in error.errors()] == [("sequence",)]

    @pytest.mark.parametrize(
        ("where", "pick"),
        [
            ("transaction", lambda p: p),
            ("line", lambda p: p["lines"][0]),
            ("line modifier", lambda p: p["lines"][0]["modifiers"][0]),
            ("basket modifier", lambda p: p["modifiers"][0]),
            ("tax line", lambda p: p["taxes"][0]),
            ("tender", lambda p: p["tenders"][0]),
            ("card details", lambda p: p["tenders"][0]["card"]),
            ("totals", lambda p: p["totals"]),
            ("customer", lambda p: p["customer"]),
        ],
    )
    def test_extra_fields_are_forbidden_everywhere(self, where: str, pick: Any) -> None:
        payload = full_sale_payload()
        Transaction.model_validate(payload)  # valid as it is
        pick(payload)["surprise"] = "x"

        error = refused(payload, "Extra inputs are not permitted")
        assert [(e["type"], e["loc"][-1]) for e in error.errors()] == [("extra_forbidden", "surprise")], where


class TestImmutability:
    def test_a_transaction_cannot_be_changed_after_construction(self) -> None:
        tx = Transaction.model_validate(full_sale_payload())

        with pytest.raises(ValidationError, match="frozen"):
            tx.sequence = 43  # type: ignore[misc]
        with pytest.raises(ValidationError, match="frozen"):
            tx.totals.grand_total = Decimal("0")  # type: ignore[misc]
        with pytest.raises(ValidationError, match="frozen"):
            tx.lines[0].quantity = Decimal("100")  # type: ignore[misc]
        assert isinstance(tx.lines, tuple)
        assert tx.sequence == SEQUENCE

    def test_equal_transactions_are_equal_and_hash_alike(self) -> None:
        first = Transaction.model_validate(full_sale_payload())
        second = Transaction.model_validate(full_sale_payload())
        assert first == second
        assert hash(first) == hash(second)
        assert len({first, second}) == 1


# --- ledger and day close ---------------------------------------------------------------------------


def jline(account: str, currency: str = "EUR", *, debit: str = "0", credit: str = "0") -> dict[str, Any]:
    return {"account": account, "currency": currency, "debit": debit, "credit": credit}


def journal(*lines: dict[str, Any]) -> dict[str, Any]:
    return {
        "journal_id": "J-2026-11-29-S001",
        "store_id": STORE,
        "business_day": DAY.isoformat(),
        "lines": lines,
    }


class TestJournal:
    def test_a_line_that_moves_nothing_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="not zero"):
            JournalLine.model_validate(jline("cash", debit="0"))

    def test_a_journal_balanced_in_each_of_two_currencies_is_accepted(self) -> None:
        entry = Journal.model_validate(
            journal(
                jline("cash", debit="12.50"),
                jline("sales", credit="10.42"),
                jline("vat", credit="2.08"),
                jline("cash", "USD", debit="5.00"),
                jline("sales", "USD", credit="5.00"),
            )
        )
        assert len(entry.lines) == 5

    def test_an_unbalanced_journal_is_refused(self) -> None:
        with pytest.raises(
            ValidationError, match=r"journal does not balance: debit - credit = \{'EUR': Decimal\('0\.01'\)\}"
        ):
            Journal.model_validate(journal(jline("cash", debit="12.50"), jline("sales", credit="12.49")))

    def test_a_journal_must_balance_per_currency_not_overall(self) -> None:
        with pytest.raises(ValidationError, match="journal does not balance") as info:
            Journal.model_validate(
                journal(jline("cash", "EUR", debit="10.00"), jline("sales", "USD", credit="10.00"))
            )
        assert "'EUR'" in str(info.value) and "'USD'" in str(info.value)

    def test_a_line_that_is_both_debit_and_credit_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="a debit or a credit, not both"):
            JournalLine.model_validate(jline("cash", debit="1.00", credit="1.00"))
        with pytest.raises(ValidationError, match="a debit or a credit, not both"):
            Journal.model_validate(
                journal(
                    jline("cash", debit="1.00", credit="1.00"),
                    jline("x", debit="1.00"),
                    jline("y", credit="1.00"),
                )
            )

    def test_a_negative_debit_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="greater than or equal to 0"):
            JournalLine.model_validate(jline("cash", debit="-1.00"))

    def test_a_line_below_the_minor_unit_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="has digits below the EUR minor unit"):
            JournalLine.model_validate(jline("cash", debit="1.001"))

    def test_a_line_in_an_unknown_currency_is_refused_as_a_validation_error(self) -> None:
        with pytest.raises(ValidationError):
            JournalLine.model_validate(jline("cash", "XXX", debit="1.00"))

    def test_a_journal_has_at_least_two_lines(self) -> None:
        with pytest.raises(ValidationError, match="at least 2 items") as info:
            Journal.model_validate(journal(jline("cash", debit="1.00")))
        assert [e["loc"] for e in info.value.errors()] == [("lines",)]


class TestDayClose:
    @staticmethod
    def day_close(*registers: dict[str, Any]) -> dict[str, Any]:
        return {
            "store_id": STORE,
            "business_day": DAY.isoformat(),
            "currency": "EUR",
            "closed_at": datetime(2026, 11, 29, 22, 0, tzinfo=UTC).isoformat(),
            "registers": list(registers),
        }

    def test_a_day_close_with_a_register_is_accepted(self) -> None:
        close = DayClose.model_validate(
            self.day_close(
                {
                    "register_id": REGISTER,
                    "transaction_count": 42,
                    "last_sequence": 42,
                    "totals_by_tender": {"cash": "512.30", "card": "1830.05"},
                }
            )
        )
        assert close.registers[0].totals_by_tender[TenderKind.CARD] == Decimal("1830.05")

    def test_a_day_close_needs_at_least_one_register(self) -> None:
        with pytest.raises(ValidationError, match="at least 1 item") as info:
            DayClose.model_validate(self.day_close())
        assert [e["loc"] for e in info.value.errors()] == [("registers",)]


class TestBounds:
    """Values a database column or an event extension could not hold are refused up front."""

    def test_a_sequence_beyond_ten_digits_is_refused(self) -> None:
        error = refused(tx_payload(item(1), sequence=10**10), None)
        assert [e["loc"] for e in error.errors()] == [("sequence",)]

    def test_an_amount_beyond_eighteen_digits_is_refused(self) -> None:
        error = refused(
            tx_payload(item(1, unit_price="1" * 19 + ".00", extended_amount="1" * 19 + ".00")), None
        )
        assert ("lines", 0, "unit_price") in [e["loc"] for e in error.errors()]

    def test_a_till_time_without_an_offset_is_refused(self) -> None:
        error = refused(tx_payload(item(1), ended_at="2026-11-29T10:15:00"), "timezone")
        assert [e["loc"] for e in error.errors()] == [("ended_at",)]

    def test_day_close_totals_are_in_minor_units(self) -> None:
        with pytest.raises(ValidationError, match=r"totals_by_tender\.cash 1\.005"):
            DayClose.model_validate(
                TestDayClose.day_close(
                    {
                        "register_id": REGISTER,
                        "transaction_count": 1,
                        "last_sequence": 1,
                        "totals_by_tender": {"cash": "1.005"},
                    }
                )
            )
