"""Policy maps (configured, overridable per brand, region and store) and the card-number finder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tillflow.formats.policy import PolicyMaps
from tillflow.formats.records import ImportContext, RecordError
from tillflow.formats.safety import first_card_number_field, gs1_ok, looks_like_card_number, luhn_ok
from tillflow.model import Store, TenderKind

STORES = {
    "S009": Store(store_id="S009", brand="fresh", region="north", timezone="America/New_York"),
    "S010": Store(store_id="S010", brand="fresh", region="south"),
    "S011": Store(store_id="S011", brand="outlet", region="north"),
}


def context(policy: dict[str, object]) -> ImportContext:
    return ImportContext(stores=STORES, policy=PolicyMaps.model_validate(policy))


class TestPolicyMaps:
    def test_the_narrowest_scope_wins_brand_then_region_then_store(self) -> None:
        ctx = context(
            {
                "tenders": {"12": "card"},
                "overrides": [  # listed broadest last on purpose: rank, not order, decides
                    {"store": "S009", "tenders": {"12": "voucher"}},
                    {"region": "north", "tenders": {"12": "store_credit"}},
                    {"brand": "fresh", "tenders": {"12": "gift_card"}},
                ],
            }
        )
        assert ctx.tender_kind("S009", ["12"], "tender") is TenderKind.VOUCHER  # its own
        assert ctx.tender_kind("S010", ["12"], "tender") is TenderKind.GIFT_CARD  # brand only
        assert ctx.tender_kind("S011", ["12"], "tender") is TenderKind.STORE_CREDIT  # region beats nothing
        assert ctx.tender_kind("S999", ["12"], "tender") is TenderKind.CARD  # unknown store: the base map

    def test_tender_codes_match_without_case_and_the_first_mapped_code_wins(self) -> None:
        ctx = context({"tenders": {"TenderType12": "gift_card"}})
        assert ctx.tender_kind("S009", ["12", "tendertype12", "CreditDebit"], "t") is TenderKind.GIFT_CARD
        assert ctx.tender_kind("S009", [None, "CASH"], "t") is TenderKind.CASH  # the built-in map

    def test_an_unmapped_tender_is_a_record_error_naming_the_codes(self) -> None:
        with pytest.raises(RecordError) as caught:
            context({}).tender_kind("S009", ["77", "Check"], "LineItem[3].Tender")
        assert caught.value.field == "LineItem[3].Tender"
        assert "'77', 'Check'" in caught.value.reason and "policy.tenders" in caught.value.reason

    def test_a_retailer_may_override_a_built_in_tender(self) -> None:
        assert context({"tenders": {"Coupon": "store_credit"}}).tender_kind("S009", ["coupon"], "t") is (
            TenderKind.STORE_CREDIT
        )

    def test_store_aliases_tax_codes_and_departments_resolve(self) -> None:
        ctx = context(
            {
                "store_aliases": {"9": "S009"},
                "tax_codes": {"1": "VAT19"},
                "departments": {"6": "produce"},
                "overrides": [{"store": "S009", "departments": {"6": "fresh-produce"}}],
            }
        )
        store = ctx.store_id(" 9 ")
        assert store == "S009" and ctx.store_id("42") == "42"
        assert ctx.resolved(store).tax_code("1") == "VAT19" and ctx.resolved(store).tax_code("2") == "2"
        assert ctx.resolved(store).department("6") == "fresh-produce"
        assert ctx.resolved("S010").department("6") == "produce"

    def test_an_override_names_exactly_one_scope(self) -> None:
        with pytest.raises(ValidationError, match="exactly one of brand, region or store"):
            PolicyMaps.model_validate({"overrides": [{"brand": "a", "store": "S1", "tenders": {}}]})
        with pytest.raises(ValidationError):
            PolicyMaps.model_validate({"tenders": {"12": "cheque"}})  # not a canonical tender kind

    def test_till_times_without_an_offset_are_the_stores_local_time(self) -> None:
        ctx = context({})
        local = ctx.local_time("S009", datetime(2017, 10, 1, 2, 1, 31))
        assert local.utcoffset() == timedelta(hours=-4)  # New York in October
        sent = datetime(2017, 10, 1, 2, 1, 31, tzinfo=UTC)
        assert ctx.local_time("S009", sent) is sent
        assert ctx.local_time("S999", datetime(2017, 1, 1)).utcoffset() == timedelta(0)  # the default


class TestCardNumbers:
    @pytest.mark.parametrize(
        "text",
        [
            "4111111111111111",  # Visa test number
            "card 4111 1111 1111 1111 swiped",
            "5500-0000-0000-0004",  # Mastercard
            "378282246310005",  # American Express
            "6011111111111117",  # Discover
            "2223000048400011",  # Mastercard 2-series
        ],
    )
    def test_card_numbers_are_found_however_they_are_written(self, text: str) -> None:
        assert looks_like_card_number(text)

    @pytest.mark.parametrize(
        "text",
        [
            "4111111111111112",  # fails Luhn
            "0000000000000040000066677",  # a 25-digit loyalty id
            "00000000067591",  # an NCR GTIN, no network prefix
            "8718824914435",  # an EAN-13 of a garment
            "1234567890123",  # no network starts with 1
            "41111111111111111111",  # 20 digits: too long to be a card
            "2017-10-01T02:01:31",
        ],
    )
    def test_other_numbers_are_not_cards(self, text: str) -> None:
        assert not looks_like_card_number(text)

    def test_a_valid_gtin_in_an_item_field_is_an_article_even_if_it_passes_luhn(self) -> None:
        gtin = next(
            f"40{n:010d}{c}"
            for n in range(10_000)
            for c in "0123456789"
            if gs1_ok(f"40{n:010d}{c}") and luhn_ok(f"40{n:010d}{c}")
        )  # a German EAN-13 that is also Luhn-valid and starts like a Visa
        assert looks_like_card_number(gtin)  # in a description it would be refused
        assert not looks_like_card_number(gtin, item_identifier=True)
        pairs = [("LineItem.Sale.ItemID", gtin), ("LineItem.Sale.Description", "gift for 4111111111111111")]
        assert first_card_number_field(pairs, frozenset({"ItemID"})) == "LineItem.Sale.Description"
        assert first_card_number_field(pairs[:1], frozenset({"ItemID"})) is None
