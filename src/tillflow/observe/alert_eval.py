"""Which alert rules hold, from a snapshot of the hub's figures. Pure: plain values in and out.

Each rule yields one `AlertFiring` per subject it holds for: a store (`store_offline`), a consumer
group (`dead_letters`, `lag`), a latency path (`latency_p99`) or a store-day
(`reconciliation_mismatch`, subject ``S001/2026-11-29``). A count fires above its limit
(`above: 3` fires at 4, not at 3); a duration or a latency fires once it reaches its limit
(`minutes: 5` fires at 5 minutes, not before).

A figure the snapshot lacks (None) could not be read this round: the rules that need it are
left out of `Evaluation.evaluated`, so their open alerts neither fire anew nor clear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from tillflow.observe.alert_rules import (
    AlertRule,
    DeadLettersRule,
    LagRule,
    LatencyRule,
    ReconciliationRule,
    StoreOfflineRule,
)
from tillflow.ports import AlertFiring


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """Where a consumer group stands: events behind the head, dead letters and the oldest's age."""

    lag: int
    dead_letters: int = 0
    oldest_dead_letter_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class StoreDayCheck:
    """A closed store-day's three-way reconciliation, as the rule needs it."""

    store_id: str
    business_day: date
    matched: bool | None  # None: could not be compared (the ERP's trial balance unreadable)
    differences: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        return f"{self.store_id}/{self.business_day.isoformat()}"


@dataclass(frozen=True, slots=True)
class Figures:
    """What the rules are evaluated against; None: not read this round."""

    offline_after_seconds: float = 30.0  # a store silent this long is offline
    # seconds since each configured store's latest heartbeat (stores never heard from absent)
    silence: Mapping[str, float] | None = None
    groups: Mapping[str, GroupFigures] | None = None
    # the p99 in seconds by (path, window in seconds); None inside: no sample in the window
    latency_p99: Mapping[tuple[str, float], float | None] | None = None
    store_days: Sequence[StoreDayCheck] | None = None  # the closed store-days compared


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What holds, and which rules were evaluated: only their open alerts may clear, except for
    the `undecided` (rule, subject) pairs, whose figures could not be judged this round."""

    firing: tuple[AlertFiring, ...]
    evaluated: frozenset[str]
    undecided: frozenset[tuple[str, str]] = frozenset()


def evaluate(rules: Sequence[AlertRule], figures: Figures) -> Evaluation:
    """Every (rule, subject) that holds against `figures`, by rule then subject."""
    firing: list[AlertFiring] = []
    evaluated: set[str] = set()
    undecided: set[tuple[str, str]] = set()
    for rule in rules:
        found = _evaluate_rule(rule, figures)
        if found is None:
            continue
        evaluated.add(rule.name)
        firing += sorted(found, key=lambda f: f.subject)
        if isinstance(rule, ReconciliationRule) and figures.store_days is not None:
            undecided |= {(rule.name, d.subject) for d in figures.store_days if d.matched is None}
    return Evaluation(tuple(firing), frozenset(evaluated), frozenset(undecided))


def latency_windows(rules: Sequence[AlertRule]) -> set[tuple[str, float]]:
    """The (path, window in seconds) pairs whose p99 the latency rules need."""
    return {(r.path, r.window_minutes * 60) for r in rules if isinstance(r, LatencyRule)}


def _evaluate_rule(rule: AlertRule, figures: Figures) -> list[AlertFiring] | None:
    if isinstance(rule, StoreOfflineRule):
        if figures.silence is None:
            return None
        return _offline(rule, figures.silence, figures.offline_after_seconds)
    if isinstance(rule, DeadLettersRule):
        return None if figures.groups is None else _dead_letters(rule, figures.groups)
    if isinstance(rule, LagRule):
        return None if figures.groups is None else _lag(rule, figures.groups)
    if isinstance(rule, LatencyRule):
        return None if figures.latency_p99 is None else _latency(rule, figures.latency_p99)
    if isinstance(rule, ReconciliationRule):
        return None if figures.store_days is None else _mismatched(rule, figures.store_days)
    raise AssertionError(f"unknown rule kind {rule!r}")


def _firing(rule: AlertRule, subject: str, value: float, threshold: float, summary: str) -> AlertFiring:
    return AlertFiring(rule.name, rule.kind, rule.severity, subject, value, threshold, summary)


def _offline(rule: StoreOfflineRule, silence: Mapping[str, float], offline_after: float) -> list[AlertFiring]:
    out = []
    for store_id, seconds in silence.items():
        offline_minutes = (seconds - offline_after) / 60
        if seconds >= offline_after and offline_minutes >= rule.minutes:
            summary = (
                f"store {store_id} offline for {offline_minutes:.1f} min"
                f" (no heartbeat for {seconds:.0f} s; limit {rule.minutes:g} min)"
            )
            out.append(_firing(rule, store_id, offline_minutes, rule.minutes, summary))
    return out


def _groups_of(group: str | None, groups: Mapping[str, GroupFigures]) -> list[tuple[str, GroupFigures]]:
    if group is None:
        return list(groups.items())
    return [(group, groups[group])] if group in groups else []


def _dead_letters(rule: DeadLettersRule, groups: Mapping[str, GroupFigures]) -> list[AlertFiring]:
    out = []
    for name, found in _groups_of(rule.group, groups):
        if rule.above is not None and found.dead_letters > rule.above:
            summary = f"{found.dead_letters} dead letter(s) in {name} (limit {rule.above})"
            out.append(_firing(rule, name, found.dead_letters, rule.above, summary))
            continue
        age = found.oldest_dead_letter_seconds
        if rule.older_than_minutes is not None and found.dead_letters and age is not None:
            minutes = age / 60
            if minutes >= rule.older_than_minutes:
                summary = (
                    f"the oldest dead letter in {name} is {minutes:.1f} min old"
                    f" (limit {rule.older_than_minutes:g} min; {found.dead_letters} in all)"
                )
                out.append(_firing(rule, name, minutes, rule.older_than_minutes, summary))
    return out


def _lag(rule: LagRule, groups: Mapping[str, GroupFigures]) -> list[AlertFiring]:
    out = []
    for name, found in _groups_of(rule.group, groups):
        if found.lag > rule.above:
            summary = f"{name} is {found.lag} event(s) behind (limit {rule.above})"
            out.append(_firing(rule, name, found.lag, rule.above, summary))
    return out


def _latency(rule: LatencyRule, p99: Mapping[tuple[str, float], float | None]) -> list[AlertFiring]:
    found = p99.get((rule.path, rule.window_minutes * 60))
    if found is None or found < rule.above_seconds:
        return []
    summary = (
        f"p99 latency till to {rule.path.replace('_', ' ')} is {found:.1f} s over the last"
        f" {rule.window_minutes:g} min (limit {rule.above_seconds:g} s)"
    )
    return [_firing(rule, rule.path, found, rule.above_seconds, summary)]


def _mismatched(rule: ReconciliationRule, days: Sequence[StoreDayCheck]) -> list[AlertFiring]:
    out = []
    for day in days:
        if day.matched is not False:
            continue
        first = f": {day.differences[0]}" if day.differences else ""
        more = f" (and {len(day.differences) - 1} more)" if len(day.differences) > 1 else ""
        summary = f"store-day {day.subject} does not reconcile{first}{more}"
        out.append(_firing(rule, day.subject, len(day.differences), 0, summary))
    return out
