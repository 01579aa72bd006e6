"""Which posting policy a store has, and which transactions a Z report says are missing."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from tillflow.config import PostingSettings, TillflowConfig
from tillflow.flows.store_day import StorePolicy, missing_transactions
from tillflow.model import DayClose, RegisterClose

DAY = date(2026, 11, 29)


def z(*registers: tuple[str, int, int]) -> DayClose:
    return DayClose(
        store_id="S001",
        business_day=DAY,
        currency="EUR",
        closed_at=datetime(2026, 11, 29, 22, tzinfo=UTC),
        registers=tuple(
            RegisterClose(
                register_id=r, transaction_count=n, last_sequence=last, totals_by_tender={"cash": Decimal(1)}
            )
            for r, n, last in registers
        ),
    )


class TestPolicyFor:
    def test_the_narrowest_scope_wins(self) -> None:
        settings = PostingSettings(
            default=StorePolicy(policy="line"),
            regions={"eu": StorePolicy(policy="aggregated")},
            stores={"S009": StorePolicy(policy="aggregated", per_register=True), "S010": StorePolicy()},
        )
        assert settings.policy_for("S001", "us") == StorePolicy(policy="line")
        assert settings.policy_for("S001", "eu").aggregated
        assert settings.policy_for("S009", "us") == StorePolicy(policy="aggregated", per_register=True)
        assert not settings.policy_for("S010", "eu").aggregated  # a store's own line wins over its region

    def test_an_unknown_policy_fails_at_start_with_its_path(self) -> None:
        with pytest.raises(ValidationError) as caught:
            TillflowConfig(posting={"stores": {"S001": {"policy": "weekly"}}})
        [error] = caught.value.errors()
        assert error["loc"] == ("posting", "stores", "S001", "policy")

    def test_unit_costs_are_exact_non_negative_amounts(self) -> None:
        assert PostingSettings(unit_costs={"GRO-1": "0.62"}).unit_costs == {"GRO-1": Decimal("0.62")}
        with pytest.raises(ValidationError):
            PostingSettings(unit_costs={"GRO-1": "-1"})


class TestMissingTransactions:
    def test_a_complete_register_misses_nothing(self) -> None:
        assert missing_transactions(z(("R01", 3, 3)), {"R01": {1, 2, 3}}) == []

    def test_each_missing_sequence_is_named_by_its_transaction_id(self) -> None:
        gap = missing_transactions(z(("R01", 4, 4), ("R02", 2, 2)), {"R01": {1, 3}})
        assert gap == [
            "S001:R01:2026-11-29:00000002",
            "S001:R01:2026-11-29:00000004",
            "S001:R02:2026-11-29:00000001",
            "S001:R02:2026-11-29:00000002",
        ]

    def test_a_register_that_did_not_start_at_one_counts_back_from_its_last_sequence(self) -> None:
        # the till numbers across days: 3 transactions today, ending at 42
        assert missing_transactions(z(("R01", 3, 42)), {"R01": {40, 42}}) == ["S001:R01:2026-11-29:00000041"]

    def test_transactions_the_z_report_does_not_count_are_not_a_gap(self) -> None:
        assert missing_transactions(z(("R01", 1, 1)), {"R01": {1, 2}, "R09": {1}}) == []

    def test_a_till_that_starts_at_sequence_zero_counts_it(self) -> None:
        assert missing_transactions(z(("R01", 2, 1)), {"R01": {1}}) == ["S001:R01:2026-11-29:00000000"]

    def test_a_z_report_claiming_millions_names_only_the_first_gaps(self) -> None:
        gap = missing_transactions(z(("R01", 5_000_000, 5_000_000)), {}, limit=3)
        assert gap == [f"S001:R01:2026-11-29:{n:08d}" for n in (1, 2, 3)]
