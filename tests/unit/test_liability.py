"""The loyalty liability: the hub's points ledger valued under IFRS 15 and compared with the
platform's outstanding points, and how the reports show it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tillflow.flows.liability import liability_dict, reconcile_liability
from tillflow.flows.posting import LoyaltyAccounting
from tillflow.ports import ProgramPoints, Redemption, RedemptionState
from tillflow.reports import render_csv, render_html, render_table

AS_OF = datetime(2026, 11, 29, 21, tzinfo=UTC)
ACCOUNTING = LoyaltyAccounting(point_value=Decimal("0.01"), breakage=Decimal("0.2"))
MOVES = {"bonus": 3000, "accrual": 457, "reversal": -31, "redemption": -600, "refund": 100, "expiry": -5}


def saga(hold_id: str, state: RedemptionState, conflict: str | None = None) -> Redemption:
    return Redemption(
        hold_id=hold_id,
        program="default",
        member_id="M0001",
        store_id="S001",
        points=100,
        state=state,
        created_at=AS_OF,
        expires_at=AS_OF + timedelta(minutes=5),
        updated_at=AS_OF,
        conflict=conflict,
    )


SAGAS = [
    saga("H1", RedemptionState.COMMITTED),
    saga("H2", RedemptionState.EXPIRED, "S001:R01:2026-11-29:00000009 tendered hold H2 after it was expired"),
    saga("H3", RedemptionState.RELEASED),
]


def platform(points: int, held: int = 0) -> ProgramPoints:
    return ProgramPoints(program="default", outstanding=points, held=held, members=3, as_of=AS_OF)


class TestLiability:
    def test_equal_points_match_and_are_carried_at_value_times_one_minus_breakage(self) -> None:
        rec = reconcile_liability(
            "default", moves=MOVES, platform=platform(2921, held=100), sagas=SAGAS, accounting=ACCOUNTING
        )

        assert (rec.hub_points, rec.platform_points, rec.difference, rec.status) == (2921, 2921, 0, "matched")
        assert rec.liability == rec.platform_liability == Decimal("23.37")  # 2,921 x 0.01 x 0.8 = 23.368
        assert rec.differences == []
        assert dict(rec.sagas) == {"held": 0, "committed": 1, "released": 1, "expired": 1, "refunded": 0}
        assert rec.conflicts == ("H2: S001:R01:2026-11-29:00000009 tendered hold H2 after it was expired",)

    def test_a_move_the_hub_did_not_record_is_a_mismatch_naming_the_difference(self) -> None:
        rec = reconcile_liability("default", moves=MOVES, platform=platform(2941), sagas=[], accounting=None)

        assert rec.status == "mismatched" and rec.difference == 20
        assert rec.differences == [
            "the platform holds 2941 points, the hub's ledger 2921 (+20): a move the hub did not record,"
            " or one the platform did not make"
        ]
        assert rec.liability is None  # no IFRS 15 settings: points only

    def test_an_unreadable_platform_is_a_mismatch(self) -> None:
        rec = reconcile_liability(
            "default", moves=MOVES, platform=None, sagas=[], accounting=ACCOUNTING, notes=["platform away"]
        )

        assert rec.status == "mismatched"
        assert liability_dict(rec)["differences"] == ["the platform's outstanding points could not be read"]
        assert liability_dict(rec)["liability"] == "23.37"


class TestReports:
    def test_the_table_csv_and_html_show_the_liability(self) -> None:
        rec = reconcile_liability(
            "default", moves=MOVES, platform=platform(2921), sagas=SAGAS, accounting=ACCOUNTING
        )

        table = render_table([], [rec])
        rows = list(csv.reader(io.StringIO(render_csv([], [rec]))))
        page = render_html([], title="Reconciliation", liabilities=[rec])

        assert "Loyalty liability (as of 2026-11-29T21:00:00+00:00)" in table
        assert "redemption -600" in table and "tendered hold H2 after it was expired" in table
        assert ["", "2026-11-29", "loyalty", "default points", "", "", "2921", "2921", "0", "matched"] in rows
        assert [
            "",
            "2026-11-29",
            "loyalty",
            "default liability",
            "",
            "",
            "23.37",
            "23.37",
            "0.00",
            "matched",
        ] in rows
        assert ["", "2026-11-29", "loyalty_move", "default expiry", "", "", "-5", "", "", "info"] in rows
        assert '<h2 id="loyalty">Loyalty liability</h2>' in page and "23.37" in page
