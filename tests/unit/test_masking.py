"""Masking what a log line must not show: customer identifiers and card data."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tillflow.observe.masking import (
    FULLY_MASKED,
    luhn_valid,
    mask_identifier,
    mask_mapping,
    mask_pan,
    mask_text,
)

VISA = "4111111111111111"  # a test card number (Luhn-valid)
AMEX = "378282246310005"  # 15 digits


def luhn_digit(body: str) -> str:
    """The check digit that makes `body` + digit pass the Luhn check."""
    return next(str(d) for d in range(10) if luhn_valid(body + str(d)))


card_numbers = (
    st.integers(min_value=12, max_value=18)
    .flatmap(lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n))
    .map(lambda body: body + luhn_digit(body))
)


class TestLuhn:
    def test_known_card_numbers_pass(self) -> None:
        assert luhn_valid(VISA)
        assert luhn_valid(AMEX)

    def test_a_changed_digit_fails(self) -> None:
        assert not luhn_valid("4111111111111112")

    def test_what_is_not_digits_fails(self) -> None:
        assert not luhn_valid("")
        assert not luhn_valid("4111-1111")

    @given(card_numbers, st.integers(min_value=0, max_value=18), st.integers(min_value=1, max_value=9))
    def test_any_single_digit_change_is_caught(self, number: str, at: int, delta: int) -> None:
        at %= len(number)
        changed = number[:at] + str((int(number[at]) + delta) % 10) + number[at + 1 :]

        assert not luhn_valid(changed)


class TestCardNumbersInText:
    def test_sixteen_digits_keep_first_six_and_last_four(self) -> None:
        assert mask_text(f"paid with {VISA} today") == "paid with 411111…1111 today"

    def test_fewer_than_sixteen_keep_only_the_last_four(self) -> None:
        assert mask_text(f"amex {AMEX}") == "amex ****0005"

    def test_spaces_and_dashes_between_digits_are_seen_through(self) -> None:
        assert mask_text("4111 1111 1111 1111 and 4111-1111-1111-1111") == "411111…1111 and 411111…1111"

    def test_numbers_failing_luhn_are_left_alone(self) -> None:
        text = "order 4111111111111112, sequence 0000000000001"

        assert mask_text(text) == text

    def test_a_longer_run_of_digits_is_not_a_card_number(self) -> None:
        text = "id 41111111111111110000000"

        assert mask_text(text) == text

    @given(card_numbers, st.text(alphabet="abc ,.:", max_size=10), st.text(alphabet="abc ,.:", max_size=10))
    def test_no_card_number_survives_in_any_text(self, number: str, before: str, after: str) -> None:
        masked = mask_text(f"{before}{number}{after}")

        assert number not in masked
        assert masked.endswith(f"{number[-4:]}{after}")
        assert masked == f"{before}{mask_pan(number)}{after}"


class TestRecords:
    def test_customer_identifiers_keep_only_a_short_hash(self) -> None:
        record = {"member_id": "M-000123", "email": "ann@example.com", "phone": "+4915112345678"}

        masked = mask_mapping(record)

        assert masked == {k: mask_identifier(v) for k, v in record.items()}
        assert all(v.startswith("h:") and len(v) == 10 for v in masked.values())
        assert "M-000123" not in str(masked)

    def test_the_same_member_hashes_the_same_and_others_differently(self) -> None:
        assert mask_identifier("M-1") == mask_identifier("M-1") != mask_identifier("M-2")

    def test_card_secrets_are_masked_whole(self) -> None:
        masked = mask_mapping({"card_number": VISA, "CVV": "123", "pan": None, "amount": "9.99"})

        assert masked == {"card_number": FULLY_MASKED, "CVV": FULLY_MASKED, "pan": None, "amount": "9.99"}

    def test_nested_values_are_masked_too(self) -> None:
        record = {
            "event": f"refused {VISA}",
            "tenders": [{"kind": "gift_card", "reference": VISA}],
            "customer": {"member_id": "M-7", "program": "default"},
            "member_ids": ["M-1", "M-2"],
            "count": 3,
        }

        masked = mask_mapping(record)

        assert masked["event"] == "refused 411111…1111"
        assert masked["tenders"] == [{"kind": "gift_card", "reference": "411111…1111"}]
        assert masked["customer"] == {"member_id": mask_identifier("M-7"), "program": "default"}
        assert masked["member_ids"] == [mask_identifier("M-1"), mask_identifier("M-2")]
        assert masked["count"] == 3

    def test_a_card_number_given_as_an_integer_is_masked(self) -> None:
        assert mask_mapping({"note": int(VISA)}) == {"note": "411111…1111"}

    @given(st.dictionaries(st.sampled_from(["member_id", "customer_id", "loyalty_id"]), st.text(min_size=1)))
    def test_no_identifier_value_is_kept(self, record: dict[str, str]) -> None:
        masked = mask_mapping(record)

        assert all(masked[k] == mask_identifier(v) for k, v in record.items())
