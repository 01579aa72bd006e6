"""Which prices and promotions a store runs, and when: scopes, targets and effective dating in the
store's local time, across time zones and daylight-saving changes.

The rule under test (tillflow.flows.masterdata): an instant is turned into the store's wall-clock
time and compared, as a naive value, with the naive local boundaries; `to`/`ends` exclusive.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tillflow.flows.masterdata import active_promotions, applies_to, local_time, price_at
from tillflow.model import Product, Store
from tillflow.model.masterdata import Price, Promotion

PARIS = Store(store_id="P01", brand="city", region="fr-idf", timezone="Europe/Paris")
LYON = Store(store_id="L01", brand="hyper", region="fr-ara", timezone="Europe/Paris")
CHICAGO = Store(store_id="C01", brand="city", region="us-mw", currency="USD", timezone="America/Chicago")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def promotion(starts: datetime, ends: datetime, **fields: Any) -> Promotion:
    base: dict[str, Any] = {
        "promotion_id": "PR1",
        "kind": "percent_off",
        "percent": "10",
        "skus": ["SKU1"],
    }
    return Promotion.model_validate({**base, **fields, "starts": starts, "ends": ends})


def price(amount: str, start: datetime, end: datetime | None = None, **scope: str) -> Price:
    return Price(
        sku="SKU1", price=Decimal(amount), currency="EUR", effective_from=start, effective_to=end, **scope
    )


def is_running(promo: Promotion, store: Store, at: datetime) -> bool:
    return active_promotions([promo], store, at) == [promo]


def minutes_running(promo: Promotion, store: Store, since: datetime, *, hours: int = 24) -> int:
    """How many real minutes of the `hours` from `since` the promotion runs."""
    return sum(is_running(promo, store, since + timedelta(minutes=m)) for m in range(hours * 60))


SECOND = timedelta(seconds=1)


class TestLocalTime:
    def test_an_instant_is_read_on_the_store_clock(self) -> None:
        at = utc(2026, 7, 1, 12, 0)

        assert local_time(PARIS, at) == datetime(2026, 7, 1, 14, 0)
        assert local_time(CHICAGO, at) == datetime(2026, 7, 1, 7, 0)

    def test_a_naive_instant_is_refused(self) -> None:
        with pytest.raises(ValueError, match="aware"):
            local_time(PARIS, datetime(2026, 7, 1, 12, 0))


class TestSpringForward:
    """2026-03-29 01:00 UTC: Paris goes from 02:00 CET to 03:00 CEST; 02:00–02:59 never happens.
    Chicago changed on 2026-03-08 (02:00 CST → 03:00 CDT) and is on CDT all that night."""

    NIGHT = promotion(datetime(2026, 3, 29, 1, 0), datetime(2026, 3, 29, 4, 0))

    def test_in_paris_the_window_opens_at_0100_cet_and_closes_at_0400_cest(self) -> None:
        opens, closes = utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0)  # 01:00 +01:00, 04:00 +02:00

        assert not is_running(self.NIGHT, PARIS, opens - SECOND)
        assert is_running(self.NIGHT, PARIS, opens)
        assert is_running(self.NIGHT, PARIS, utc(2026, 3, 29, 0, 59, 59))  # 01:59:59 CET
        assert is_running(self.NIGHT, PARIS, utc(2026, 3, 29, 1, 0))  # the next second is 03:00 CEST
        assert is_running(self.NIGHT, PARIS, closes - SECOND)
        assert not is_running(self.NIGHT, PARIS, closes)

    def test_in_paris_three_wall_clock_hours_last_two_real_hours(self) -> None:
        assert minutes_running(self.NIGHT, PARIS, utc(2026, 3, 28, 12, 0)) == 120

    def test_in_chicago_the_same_local_window_is_other_instants(self) -> None:
        opens, closes = utc(2026, 3, 29, 6, 0), utc(2026, 3, 29, 9, 0)  # 01:00 and 04:00 at -05:00

        assert not is_running(self.NIGHT, CHICAGO, opens - SECOND)
        assert is_running(self.NIGHT, CHICAGO, opens)
        assert is_running(self.NIGHT, CHICAGO, closes - SECOND)
        assert not is_running(self.NIGHT, CHICAGO, closes)
        assert not is_running(self.NIGHT, CHICAGO, utc(2026, 3, 29, 0, 30))  # running in Paris then
        assert minutes_running(self.NIGHT, CHICAGO, utc(2026, 3, 28, 18, 0)) == 180

    def test_on_chicagos_own_change_night_the_window_is_two_real_hours_too(self) -> None:
        night = promotion(datetime(2026, 3, 8, 1, 0), datetime(2026, 3, 8, 4, 0))
        opens, jump, closes = utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 8, 0), utc(2026, 3, 8, 9, 0)

        assert not is_running(night, CHICAGO, opens - SECOND)
        assert local_time(CHICAGO, jump - SECOND) == datetime(2026, 3, 8, 1, 59, 59)
        assert local_time(CHICAGO, jump) == datetime(2026, 3, 8, 3, 0)
        assert is_running(night, CHICAGO, jump)
        assert not is_running(night, CHICAGO, closes)
        assert minutes_running(night, CHICAGO, utc(2026, 3, 7, 18, 0)) == 120

    def test_a_boundary_in_the_gap_takes_effect_when_the_clock_is_past_it(self) -> None:
        from_0230 = promotion(datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 29, 6, 0))

        assert not is_running(from_0230, PARIS, utc(2026, 3, 29, 0, 59, 59))  # 01:59:59 CET
        assert is_running(from_0230, PARIS, utc(2026, 3, 29, 1, 0))  # 03:00 CEST

    def test_a_window_wholly_inside_the_gap_never_runs(self) -> None:
        in_gap = promotion(datetime(2026, 3, 29, 2, 15), datetime(2026, 3, 29, 2, 45))

        assert minutes_running(in_gap, PARIS, utc(2026, 3, 28, 12, 0)) == 0
        # Chicago has no gap that night: it runs there for its thirty minutes
        assert minutes_running(in_gap, CHICAGO, utc(2026, 3, 28, 18, 0)) == 30


class TestFallBack:
    """2026-10-25 01:00 UTC: Paris goes from 03:00 CEST back to 02:00 CET; 02:00–02:59 happens
    twice, and each instant is judged by its own wall-clock time. Chicago changes on 2026-11-01
    07:00 UTC (02:00 CDT → 01:00 CST)."""

    def test_in_paris_three_wall_clock_hours_last_four_real_hours(self) -> None:
        night = promotion(datetime(2026, 10, 25, 1, 0), datetime(2026, 10, 25, 4, 0))
        opens, closes = utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 3, 0)  # 01:00 +02:00, 04:00 +01:00

        assert not is_running(night, PARIS, opens - SECOND)
        assert is_running(night, PARIS, opens)
        assert is_running(night, PARIS, closes - SECOND)
        assert not is_running(night, PARIS, closes)
        assert minutes_running(night, PARIS, utc(2026, 10, 24, 12, 0)) == 240

    def test_a_window_ending_in_the_repeated_hour_runs_on_both_passes(self) -> None:
        until_0230 = promotion(datetime(2026, 10, 25, 0, 0), datetime(2026, 10, 25, 2, 30))

        assert is_running(until_0230, PARIS, utc(2026, 10, 25, 0, 29, 59))  # 02:29:59 CEST
        assert not is_running(until_0230, PARIS, utc(2026, 10, 25, 0, 30))  # 02:30 CEST
        assert not is_running(until_0230, PARIS, utc(2026, 10, 25, 0, 59, 59))  # 02:59:59 CEST
        assert is_running(until_0230, PARIS, utc(2026, 10, 25, 1, 0))  # 02:00 CET, again
        assert is_running(until_0230, PARIS, utc(2026, 10, 25, 1, 29, 59))
        assert not is_running(until_0230, PARIS, utc(2026, 10, 25, 1, 30))  # 02:30 CET
        assert minutes_running(until_0230, PARIS, utc(2026, 10, 24, 12, 0)) == 180  # 2h30 + 30 min

    def test_a_window_starting_in_the_repeated_hour_pauses_on_the_second_pass(self) -> None:
        from_0230 = promotion(datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 6, 0))

        assert not is_running(from_0230, PARIS, utc(2026, 10, 25, 0, 29, 59))
        assert is_running(from_0230, PARIS, utc(2026, 10, 25, 0, 30))  # 02:30 CEST
        assert not is_running(from_0230, PARIS, utc(2026, 10, 25, 1, 0))  # 02:00 CET
        assert is_running(from_0230, PARIS, utc(2026, 10, 25, 1, 30))  # 02:30 CET

    def test_in_chicago_the_repeated_hour_is_0100(self) -> None:
        night = promotion(datetime(2026, 11, 1, 1, 0), datetime(2026, 11, 1, 4, 0))
        opens, closes = utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 10, 0)  # 01:00 -05:00, 04:00 -06:00

        assert not is_running(night, CHICAGO, opens - SECOND)
        assert is_running(night, CHICAGO, opens)
        assert local_time(CHICAGO, utc(2026, 11, 1, 7, 0)) == datetime(2026, 11, 1, 1, 0)  # again
        assert is_running(night, CHICAGO, closes - SECOND)
        assert not is_running(night, CHICAGO, closes)
        assert minutes_running(night, CHICAGO, utc(2026, 10, 31, 18, 0)) == 240

    def test_whole_day_boundaries_are_not_affected(self) -> None:
        sunday = promotion(datetime(2026, 10, 25, 0, 0), datetime(2026, 10, 26, 0, 0))

        assert minutes_running(sunday, PARIS, utc(2026, 10, 24, 20, 0), hours=30) == 25 * 60  # a long day
        assert not is_running(sunday, PARIS, utc(2026, 10, 24, 21, 59, 59))  # Sat 23:59:59 CEST
        assert is_running(sunday, PARIS, utc(2026, 10, 24, 22, 0))
        assert is_running(sunday, PARIS, utc(2026, 10, 25, 22, 59, 59))  # Sun 23:59:59 CET
        assert not is_running(sunday, PARIS, utc(2026, 10, 25, 23, 0))


class TestPriceScopes:
    JAN = datetime(2026, 1, 1)
    AT = utc(2026, 6, 1, 10, 0)

    def test_store_beats_region_beats_all(self) -> None:
        everyone = price("3.00", self.JAN)
        region = price("2.80", self.JAN, region="fr-idf")
        own = price("2.50", self.JAN, store_id="P01")

        assert price_at([own, region, everyone], PARIS, self.AT) == own
        assert price_at([everyone, region], PARIS, self.AT) == region
        assert price_at([everyone, region, own], LYON, self.AT) == everyone

    def test_a_narrower_scope_wins_even_when_it_started_earlier(self) -> None:
        old_own = price("2.50", self.JAN, store_id="P01")
        new_everyone = price("3.20", datetime(2026, 5, 1))

        assert price_at([new_everyone, old_own], PARIS, self.AT) == old_own

    def test_within_a_scope_the_latest_start_wins(self) -> None:
        first = price("3.00", self.JAN)
        second = price("3.10", datetime(2026, 4, 1))
        future = price("3.30", datetime(2026, 7, 1))

        assert price_at([second, first, future], PARIS, self.AT) == second

    def test_expired_and_not_yet_effective_prices_are_ignored(self) -> None:
        expired = price("2.00", self.JAN, datetime(2026, 6, 1, 12, 0), store_id="P01")
        future = price("2.10", datetime(2026, 6, 1, 12, 0, 1), store_id="P01")
        everyone = price("3.00", self.JAN)

        # 2026-06-01 10:00 UTC is 12:00 in Paris: `expired` ended exactly then (exclusive)
        assert price_at([expired, future, everyone], PARIS, self.AT) == everyone
        assert price_at([expired, future, everyone], PARIS, self.AT - SECOND) == expired
        assert price_at([expired, future], PARIS, self.AT) is None

    def test_a_price_change_at_midnight_happens_at_each_stores_midnight(self) -> None:
        old = price("3.00", self.JAN, datetime(2026, 6, 2))
        new = price("3.50", datetime(2026, 6, 2))
        prices = [old, new]

        assert price_at(prices, PARIS, utc(2026, 6, 1, 22, 0)) == new  # 00:00 CEST
        assert price_at(prices, CHICAGO, utc(2026, 6, 1, 22, 0)) == old  # 17:00 CDT
        assert price_at(prices, CHICAGO, utc(2026, 6, 2, 5, 0)) == new  # 00:00 CDT

    def test_the_prices_of_two_skus_are_refused(self) -> None:
        other = Price(sku="SKU2", price=Decimal(1), currency="EUR", effective_from=self.JAN)

        with pytest.raises(ValueError, match="one SKU"):
            price_at([price("3.00", self.JAN), other], PARIS, self.AT)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([{}, {"region": "fr-idf"}, {"region": "fr-ara"}, {"store_id": "P01"}]),
                st.integers(0, 11),
                st.one_of(st.none(), st.integers(1, 12)),
            ),
            max_size=8,
        ),
        st.integers(0, 364),
    )
    def test_no_applicable_effective_price_outranks_the_chosen_one(
        self, rows: list[tuple[dict[str, str], int, int | None]], day: int
    ) -> None:
        prices = [
            price(
                "1.00",
                datetime(2026, 1 + start, 1),
                datetime(2026, 1 + start, 1) + timedelta(days=31 * length) if length else None,
                **scope,
            )
            for scope, start, length in rows
        ]
        at = utc(2026, 1, 1, 12, 0) + timedelta(days=day)
        local = local_time(PARIS, at)
        candidates = [
            p
            for p in prices
            if applies_to(p, PARIS)
            and p.effective_from <= local
            and (p.effective_to is None or local < p.effective_to)
        ]

        def rank(p: Price) -> tuple[int, datetime]:
            return (2 if p.store_id else 1 if p.region else 0, p.effective_from)

        chosen = price_at(prices, PARIS, at)

        if not candidates:
            assert chosen is None
        else:
            assert chosen in candidates
            assert rank(chosen) == max(map(rank, candidates))


class TestPromotionTargets:
    WINDOW = (datetime(2026, 6, 1), datetime(2026, 6, 8))
    AT = utc(2026, 6, 3, 10, 0)

    def targeted(self, **fields: Any) -> Promotion:
        return promotion(*self.WINDOW, **fields)

    def test_no_target_is_every_store(self) -> None:
        promo = self.targeted()

        assert applies_to(promo, PARIS) and applies_to(promo, LYON) and applies_to(promo, CHICAGO)

    def test_a_store_a_region_or_a_brand_is_enough(self) -> None:
        by_store = self.targeted(stores=["L01"])
        by_region = self.targeted(regions=["fr-idf"])
        by_brand = self.targeted(brands=["city"])
        mixed = self.targeted(stores=["L01"], regions=["us-mw"])

        assert [applies_to(by_store, s) for s in (PARIS, LYON, CHICAGO)] == [False, True, False]
        assert [applies_to(by_region, s) for s in (PARIS, LYON, CHICAGO)] == [True, False, False]
        assert [applies_to(by_brand, s) for s in (PARIS, LYON, CHICAGO)] == [True, False, True]
        assert [applies_to(mixed, s) for s in (PARIS, LYON, CHICAGO)] == [False, True, True]

    def test_items_apply_everywhere_and_prices_by_scope(self) -> None:
        item = Product(sku="SKU1", department="DAIRY")
        regional = price("1.00", datetime(2026, 1, 1), region="fr-ara")

        assert applies_to(item, PARIS) and applies_to(item, CHICAGO)
        assert [applies_to(regional, s) for s in (PARIS, LYON)] == [False, True]

    def test_a_sku_or_a_department_picks_the_promotions_naming_it(self) -> None:
        on_sku = self.targeted(promotion_id="A", skus=["SKU1"])
        on_dept = self.targeted(promotion_id="B", skus=[], departments=["DAIRY"])
        on_other = self.targeted(promotion_id="C", skus=["SKU9"], departments=["BAKERY"])
        everything = [on_sku, on_dept, on_other]

        assert active_promotions(everything, PARIS, self.AT) == everything
        assert active_promotions(everything, PARIS, self.AT, sku="SKU1") == [on_sku]
        assert active_promotions(everything, PARIS, self.AT, department="DAIRY") == [on_dept]
        assert active_promotions(everything, PARIS, self.AT, sku="SKU1", department="DAIRY") == [
            on_sku,
            on_dept,
        ]
        assert active_promotions(everything, PARIS, self.AT, sku="SKU7", department="FROZEN") == []

    def test_member_only_promotions_need_a_member(self) -> None:
        members = self.targeted(promotion_id="M", member_only=True)
        everyone = self.targeted(promotion_id="E")
        both = [members, everyone]

        assert active_promotions(both, PARIS, self.AT, member=True) == both
        assert active_promotions(both, PARIS, self.AT, member=False) == [everyone]
        assert active_promotions(both, PARIS, self.AT) == both  # None: not asked

    def test_promotions_of_other_stores_and_times_are_left_out(self) -> None:
        elsewhere = self.targeted(promotion_id="X", stores=["L01"])
        later = promotion(datetime(2026, 6, 10), datetime(2026, 6, 11), promotion_id="Y")

        assert active_promotions([elsewhere, later], PARIS, self.AT) == []
        assert active_promotions([elsewhere], LYON, self.AT) == [elsewhere]
