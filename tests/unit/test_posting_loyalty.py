"""Loyalty points under IFRS 15: a point outstanding is carried in the contract liability at its
value less the expected breakage; a redemption releases that carried value, issue and expiry
move it in and out (`points_journal`)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.test_posting_journals import build, item, tender
from tillflow.flows.posting import (
    LoyaltyAccounting,
    PostingAccounts,
    journal_for,
    points_journal,
    void_journal,
)
from tillflow.model import Journal
from tillflow.sim.erp.settings import DEFAULT_ACCOUNTS

D = Decimal
DAY = date(2026, 11, 29)
LIABILITY, DEFERRED, BREAKAGE, CARD, GROCERY = "2400", "4300", "4310", "1100", "4000"
LOYALTY = LoyaltyAccounting(point_value=D("0.01"), breakage=D("0.20"))
IFRS15 = PostingAccounts(loyalty=LOYALTY)


def entries(journal: Journal) -> list[tuple[str, str, Decimal]]:
    return [
        (line.account, "debit", line.debit) if line.debit else (line.account, "credit", line.credit)
        for line in journal.lines
    ]


def posted(*tenders: dict[str, Any], accounts: PostingAccounts = IFRS15, amount: str = "8.00") -> Journal:
    journal = journal_for(build(item(1, amount), tenders=list(tenders)), accounts)
    assert journal is not None
    return journal


def balance(journal: Journal) -> Decimal:
    return sum((line.debit - line.credit for line in journal.lines), D(0))


def points(**fields: Any) -> Journal | None:
    arguments: dict[str, Any] = {
        "journal_id": "pts.S001.2026-11-29",
        "store_id": "S001",
        "business_day": DAY,
        "currency": "EUR",
        "issued": 0,
        "expired": 0,
        "loyalty": LOYALTY,
        "accounts": IFRS15,
        **fields,
    }
    return points_journal(**arguments)


class TestRedemption:
    def test_without_ifrs_15_a_points_tender_debits_the_liability_at_face_value(self) -> None:
        journal = posted(tender("loyalty_points", "3.00"), tender("card", "5.00"), accounts=PostingAccounts())

        assert entries(journal)[1] == (LIABILITY, "debit", D("3.00"))
        assert DEFERRED not in {line.account for line in journal.lines}

    def test_a_points_tender_releases_the_carried_value_and_defers_the_rest(self) -> None:
        journal = posted(tender("loyalty_points", "3.00"), tender("card", "5.00"))

        assert entries(journal) == [
            (GROCERY, "credit", D("8.00")),
            (LIABILITY, "debit", D("2.40")),  # 3.00 x (1 - 0.20): what the liability carried
            (DEFERRED, "debit", D("0.60")),  # the rest
            (CARD, "debit", D("5.00")),
        ]
        assert [line.dimensions for line in journal.lines[1:3]] == [
            {"store": "S001", "register": "R01", "tender": "loyalty_points"}
        ] * 2
        assert balance(journal) == 0

    def test_the_carried_part_is_rounded_half_up_and_the_rest_takes_the_remainder(self) -> None:
        accounts = PostingAccounts(loyalty=LoyaltyAccounting(point_value=D("0.01"), breakage=D("0.5")))

        journal = posted(tender("loyalty_points", "0.05"), tender("card", "7.95"), accounts=accounts)

        # 0.05 x 0.5 = 0.025: 0.03 released (half up), 0.02 deferred; together the 0.05 tendered
        assert entries(journal)[1:3] == [(LIABILITY, "debit", D("0.03")), (DEFERRED, "debit", D("0.02"))]
        assert balance(journal) == 0

    def test_no_breakage_releases_the_whole_tender_from_the_liability(self) -> None:
        accounts = PostingAccounts(loyalty=LoyaltyAccounting(point_value=D("0.01"), breakage=D("0")))

        journal = posted(tender("loyalty_points", "3.00"), tender("card", "5.00"), accounts=accounts)

        assert entries(journal)[1:] == [(LIABILITY, "debit", D("3.00")), (CARD, "debit", D("5.00"))]

    def test_a_refund_to_points_credits_both_parts(self) -> None:
        tx = build(
            item(1, "3.00", action="return"), kind="return", tenders=[tender("loyalty_points", "-3.00")]
        )

        journal = journal_for(tx, IFRS15)

        assert journal is not None
        assert entries(journal) == [
            (GROCERY, "debit", D("3.00")),
            (LIABILITY, "credit", D("2.40")),
            (DEFERRED, "credit", D("0.60")),
        ]

    def test_a_post_void_books_the_points_it_paid_back_the_same_way(self) -> None:
        original = build(item(1, "8.00"), tenders=[tender("loyalty_points", "3.00"), tender("card", "5.00")])
        void = build(
            kind="void",
            sequence=43,
            voided=original.ref.model_dump(),
            tenders=[tender("loyalty_points", "-3.00"), tender("card", "-5.00")],
            totals={"subtotal": "-8.00", "tax": "0", "grand_total": "-8.00"},
        )
        sold = journal_for(original, IFRS15)
        assert sold is not None

        reversal = void_journal(void, sold, IFRS15)

        assert entries(reversal) == [
            (GROCERY, "debit", D("8.00")),
            (LIABILITY, "credit", D("2.40")),
            (DEFERRED, "credit", D("0.60")),
            (CARD, "credit", D("5.00")),
        ]


class TestIssueAndExpiry:
    def test_points_issued_defer_their_carried_value_to_the_liability(self) -> None:
        journal = points(issued=1000)  # 1000 x 0.01 x 0.80

        assert journal is not None
        assert entries(journal) == [(DEFERRED, "debit", D("8.00")), (LIABILITY, "credit", D("8.00"))]
        assert all(line.description == "loyalty points issued" for line in journal.lines)
        assert all(line.dimensions == {"store": "S001"} for line in journal.lines)
        assert (journal.journal_id, journal.store_id, journal.business_day) == (
            "pts.S001.2026-11-29",
            "S001",
            DAY,
        )

    def test_points_expired_release_their_carried_value_as_breakage_revenue(self) -> None:
        journal = points(expired=250)

        assert journal is not None
        assert entries(journal) == [(LIABILITY, "debit", D("2.00")), (BREAKAGE, "credit", D("2.00"))]

    def test_issue_and_expiry_of_one_day_make_one_balanced_journal(self) -> None:
        journal = points(issued=1000, expired=250)

        assert journal is not None
        assert entries(journal) == [
            (DEFERRED, "debit", D("8.00")),
            (LIABILITY, "credit", D("8.00")),
            (LIABILITY, "debit", D("2.00")),
            (BREAKAGE, "credit", D("2.00")),
        ]
        assert balance(journal) == 0

    def test_amounts_are_rounded_half_up_to_minor_units(self) -> None:
        def debit(count: int, value: str, breakage: str, currency: str = "EUR") -> Decimal:
            loyalty = LoyaltyAccounting(point_value=D(value), breakage=D(breakage), currency=currency)
            journal = points(issued=count, loyalty=loyalty, currency=currency)
            assert journal is not None
            return journal.lines[0].debit

        assert debit(333, "0.01", "0.15") == D("2.83")  # 333 x 0.0085 = 2.8305
        assert debit(1, "0.05", "0.5") == D("0.03")  # 0.025: half a cent up
        assert debit(5, "1", "0.5", currency="JPY") == D("3")  # 2.5 yen up

    def test_a_store_trading_in_another_currency_values_points_there(self) -> None:
        loyalty = LoyaltyAccounting(point_value=D("0.01"), breakage=D("0.2"), point_values={"JPY": D("1")})

        journal = points(issued=1001, loyalty=loyalty, currency="JPY")

        assert journal is not None
        assert entries(journal) == [(DEFERRED, "debit", D("801")), (LIABILITY, "credit", D("801"))]
        with pytest.raises(ValueError, match="currency SEK: no point value is configured"):
            points(issued=10, loyalty=loyalty, currency="SEK")

    def test_accruals_reversed_swap_the_sides(self) -> None:
        journal = points(issued=-1000)

        assert journal is not None
        assert entries(journal) == [(LIABILITY, "debit", D("8.00")), (DEFERRED, "credit", D("8.00"))]

    def test_nothing_issued_or_expired_posts_nothing(self) -> None:
        assert points() is None
        assert (
            points(issued=0, expired=0, loyalty=LoyaltyAccounting(point_value=D("0.001"), breakage=D("0")))
            is None
        )

    def test_an_unknown_currency_is_refused(self) -> None:
        with pytest.raises(ValueError, match="XTS is not a known ISO 4217 code"):
            points(issued=1000, currency="XTS")

    def test_an_amount_below_a_minor_unit_posts_nothing(self) -> None:
        assert points(issued=1, loyalty=LoyaltyAccounting(point_value=D("0.004"), breakage=D("0"))) is None


class TestSettings:
    def test_the_deferral_and_breakage_accounts_are_in_the_reference_chart(self) -> None:
        assert DEFAULT_ACCOUNTS[LOYALTY.deferral_account] == "Revenue deferred to loyalty points (IFRS 15)"
        assert DEFAULT_ACCOUNTS[LOYALTY.breakage_account] == "Loyalty breakage revenue"
        assert PostingAccounts().loyalty is None

    def test_loyalty_accounting_reads_from_config(self) -> None:
        accounts = PostingAccounts.model_validate(
            {"loyalty": {"point_value": "0.01", "breakage": "0.2", "breakage_account": "4390"}}
        )

        assert accounts.loyalty == LoyaltyAccounting(
            point_value=D("0.01"), breakage=D("0.2"), breakage_account="4390"
        )
        assert accounts.loyalty.carried_value == D("0.008")

    @pytest.mark.parametrize(
        "config",
        [
            {"point_value": "0", "breakage": "0.2"},
            {"point_value": "-0.01", "breakage": "0.2"},
            {"point_value": 0.01, "breakage": "0.2"},  # a binary float is not a money amount
            {"point_value": "0.01", "breakage": "1"},
            {"point_value": "0.01", "breakage": "-0.1"},
            {"point_value": "0.01"},
            {"point_value": "0.01", "breakage": "0.2", "deferal_account": "4300"},
            {"point_value": "0.01", "breakage": "0.2", "deferral_account": "43 00"},
        ],
        ids=str,
    )
    def test_a_bad_loyalty_setting_is_refused(self, config: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            LoyaltyAccounting.model_validate(config)
