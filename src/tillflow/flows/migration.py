"""The ERP migration's parallel run, compared: per store-day, what each ERP target accepted.

Under `both` routing every posting goes to the cloud and the legacy ERP; the hub records what
each answered (`PostingOutcome`). A store-day matches when every posting was accepted by every
target it went to, with the same amounts; each posting where they part is listed with what each
side said. The trial balances of the two sides compare account by account.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from tillflow.ports import PostingOutcome, TrialBalanceLine

MISSING = "missing"


@dataclass(frozen=True)
class Difference:
    external_id: str
    answers: dict[str, str]  # target -> its document number, "rejected: <reason>" or "missing"


@dataclass(frozen=True)
class TargetComparison:
    store_id: str
    business_day: date
    accepted: dict[str, int]  # per target
    rejected: dict[str, int]
    amounts: dict[str, dict[str, Decimal]]  # per target: debits accepted per currency
    differences: list[Difference] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        return sorted(set(self.accepted) | set(self.rejected))

    @property
    def parallel(self) -> bool:
        return len(self.targets) > 1

    @property
    def matched(self) -> bool:
        """Every target took every posting, for the same amounts."""
        amounts = [self.amounts.get(t, {}) for t in self.targets]
        return not self.differences and all(a == amounts[0] for a in amounts)


def _answer(outcome: PostingOutcome | None) -> str:
    if outcome is None:
        return MISSING
    return outcome.document_number or "" if outcome.accepted else f"rejected: {outcome.reason}"


def compare_targets(outcomes: Iterable[PostingOutcome]) -> list[TargetComparison]:
    """One comparison per store-day, in store and day order."""
    days: dict[tuple[str, date], dict[str, dict[str, PostingOutcome]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for outcome in outcomes:
        days[(outcome.store_id, outcome.business_day)][outcome.external_id][outcome.target] = outcome
    report = []
    for (store_id, day), postings in sorted(days.items()):
        targets = sorted({t for answers in postings.values() for t in answers})
        accepted: dict[str, int] = dict.fromkeys(targets, 0)
        rejected: dict[str, int] = dict.fromkeys(targets, 0)
        amounts: dict[str, dict[str, Decimal]] = {t: defaultdict(Decimal) for t in targets}
        differences = []
        for external_id, answers in sorted(postings.items()):
            for target, outcome in answers.items():
                if outcome.accepted:
                    accepted[target] += 1
                    for currency, amount in outcome.amounts:
                        amounts[target][currency] += amount
                else:
                    rejected[target] += 1
            agree = len(answers) == len(targets) and all(o.accepted for o in answers.values())
            if len(targets) > 1 and not agree:
                differences.append(Difference(external_id, {t: _answer(answers.get(t)) for t in targets}))
        report.append(
            TargetComparison(
                store_id=store_id,
                business_day=day,
                accepted={t: n for t, n in accepted.items() if n or not rejected[t]},
                rejected={t: n for t, n in rejected.items() if n},
                amounts={t: dict(a) for t, a in amounts.items()},
                differences=differences,
            )
        )
    return report


@dataclass(frozen=True)
class BalanceDifference:
    account: str
    currency: str
    first: Decimal  # net debit (debit - credit) on the first side
    second: Decimal


def compare_balances(
    first: Sequence[TrialBalanceLine], second: Sequence[TrialBalanceLine]
) -> list[BalanceDifference]:
    """The accounts whose net balance differs between two trial balances."""

    def net(lines: Sequence[TrialBalanceLine]) -> dict[tuple[str, str], Decimal]:
        out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for line in lines:
            out[(line.account, line.currency)] += line.debit - line.credit
        return out

    a, b = net(first), net(second)
    return [
        BalanceDifference(account, currency, a.get(key, Decimal(0)), b.get(key, Decimal(0)))
        for key in sorted(set(a) | set(b))
        for account, currency in [key]
        if a.get(key, Decimal(0)) != b.get(key, Decimal(0))
    ]
