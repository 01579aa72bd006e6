"""Which alert rules hold, from plain figures: each kind fires at its limit's edge and not short
of it, names its subject, and sits a round out when its figures could not be read."""

from __future__ import annotations

from datetime import date

from tillflow.observe.alert_eval import Figures, GroupFigures, StoreDayCheck, evaluate, latency_windows
from tillflow.observe.alert_rules import (
    AlertRule,
    DeadLettersRule,
    LagRule,
    LatencyRule,
    ReconciliationRule,
    StoreOfflineRule,
)

OFFLINE = StoreOfflineRule(name="offline", kind="store_offline", minutes=5, severity="critical")
DEAD = DeadLettersRule(name="dead", kind="dead_letters", above=2)
OLD_DEAD = DeadLettersRule(name="old-dead", kind="dead_letters", older_than_minutes=60)
LAG = LagRule(name="lag", kind="lag", above=100)
LATENCY = LatencyRule(name="slow", kind="latency_p99", path="erp_posted", above_seconds=30, window_minutes=5)
DAY = date(2026, 11, 29)
BOOKS = ReconciliationRule(name="books", kind="reconciliation_mismatch")


def subjects(rules: list[AlertRule], figures: Figures) -> list[tuple[str, str]]:
    return [(f.rule, f.subject) for f in evaluate(rules, figures).firing]


class TestStoreOffline:
    def test_fires_once_offline_for_the_minutes_and_not_a_second_before(self) -> None:
        # offline after 30 s of silence, then 5 minutes more: 330 s of silence
        figures = Figures(offline_after_seconds=30, silence={"S001": 330.0, "S002": 329.0})

        [firing] = evaluate([OFFLINE], figures).firing

        assert (firing.subject, firing.value, firing.threshold) == ("S001", 5.0, 5.0)
        assert (firing.kind, firing.severity) == ("store_offline", "critical")
        assert "S001" in firing.summary and "330 s" in firing.summary

    def test_a_store_never_heard_from_is_not_offline(self) -> None:
        assert subjects([OFFLINE], Figures(silence={})) == []

    def test_store_health_not_read_leaves_the_rule_out(self) -> None:
        result = evaluate([OFFLINE], Figures(silence=None))
        assert result.firing == () and result.evaluated == frozenset()


class TestDeadLetters:
    def test_fires_above_the_count_and_not_at_it(self) -> None:
        groups = {
            "inventory": GroupFigures(lag=0, dead_letters=3),
            "posting": GroupFigures(lag=0, dead_letters=2),
        }

        [firing] = evaluate([DEAD], Figures(groups=groups)).firing

        assert (firing.subject, firing.value, firing.threshold) == ("inventory", 3, 2)

    def test_fires_once_the_oldest_reaches_the_age(self) -> None:
        groups = {
            "inventory": GroupFigures(lag=0, dead_letters=1, oldest_dead_letter_seconds=3600.0),
            "posting": GroupFigures(lag=0, dead_letters=1, oldest_dead_letter_seconds=3599.0),
        }

        [firing] = evaluate([OLD_DEAD], Figures(groups=groups)).firing

        assert (firing.subject, firing.value, firing.threshold) == ("inventory", 60.0, 60)

    def test_a_rule_for_one_group_watches_that_group_only(self) -> None:
        rule = DeadLettersRule(name="posting-dead", kind="dead_letters", group="posting", above=0)
        groups = {
            "inventory": GroupFigures(lag=0, dead_letters=9),
            "posting": GroupFigures(lag=0, dead_letters=1),
        }

        assert subjects([rule], Figures(groups=groups)) == [("posting-dead", "posting")]

    def test_above_zero_fires_on_the_first_dead_letter(self) -> None:
        rule = DeadLettersRule(name="any", kind="dead_letters", above=0)
        assert subjects([rule], Figures(groups={"g": GroupFigures(lag=0, dead_letters=0)})) == []
        assert subjects([rule], Figures(groups={"g": GroupFigures(lag=0, dead_letters=1)})) == [("any", "g")]


class TestLag:
    def test_fires_above_the_limit_and_not_at_it(self) -> None:
        groups = {"inventory": GroupFigures(lag=101), "posting": GroupFigures(lag=100)}

        [firing] = evaluate([LAG], Figures(groups=groups)).firing

        assert (firing.subject, firing.value, firing.threshold) == ("inventory", 101, 100)


class TestLatency:
    def test_fires_once_the_p99_reaches_the_limit(self) -> None:
        at_limit = Figures(latency_p99={("erp_posted", 300.0): 30.0})
        just_under = Figures(latency_p99={("erp_posted", 300.0): 29.99})

        assert subjects([LATENCY], at_limit) == [("slow", "erp_posted")]
        assert subjects([LATENCY], just_under) == []

    def test_no_sample_in_the_window_does_not_fire_but_is_evaluated(self) -> None:
        result = evaluate([LATENCY], Figures(latency_p99={("erp_posted", 300.0): None}))
        assert result.firing == () and result.evaluated == {"slow"}

    def test_the_windows_the_rules_need(self) -> None:
        other = LatencyRule(name="pts", kind="latency_p99", path="loyalty_accrued", above_seconds=9)
        assert latency_windows([LATENCY, other, LAG]) == {("erp_posted", 300.0), ("loyalty_accrued", 300.0)}


class TestReconciliation:
    def test_a_mismatched_store_day_fires_with_its_first_difference(self) -> None:
        days = [
            StoreDayCheck(
                "S001", date(2026, 11, 29), matched=False, differences=("cash: hub 10.00, Z 12.00", "x")
            ),
            StoreDayCheck("S002", DAY, matched=True),
        ]

        [firing] = evaluate([BOOKS], Figures(store_days=days)).firing

        assert (firing.subject, firing.value, firing.threshold) == ("S001/2026-11-29", 2, 0)
        assert "cash: hub 10.00, Z 12.00" in firing.summary and "1 more" in firing.summary

    def test_a_store_day_that_could_not_be_compared_is_left_undecided(self) -> None:
        days = [StoreDayCheck("S001", DAY, matched=None, differences=("posting: ERP away",))]

        result = evaluate([BOOKS], Figures(store_days=days))

        assert result.firing == () and result.undecided == {("books", "S001/2026-11-29")}

    def test_not_compared_this_round_leaves_the_rule_out(self) -> None:
        assert evaluate([BOOKS], Figures(store_days=None)).evaluated == frozenset()


class TestEvaluation:
    def test_only_the_rules_whose_figures_were_read_are_evaluated(self) -> None:
        figures = Figures(groups={"inventory": GroupFigures(lag=0)}, silence=None)

        result = evaluate([OFFLINE, DEAD, LAG, LATENCY, BOOKS], figures)

        assert result.evaluated == {"dead", "lag"}
