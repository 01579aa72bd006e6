"""The loyalty liability (pure): the hub's points ledger valued under IFRS 15 and compared with
the loyalty platform's own ledger.

Every outstanding point is a performance obligation still owed to a member. It is carried at
point value × (1 − expected breakage) (`LoyaltyAccounting.carried_value`). The hub's figure
comes from its ledger of the moves it caused (accruals, returns, voids, redemptions, refunds)
and the platform's own moves read from its statement (welcome bonuses, expiry); the platform's
figure is what its members hold. They agree when no move was lost, doubled or made behind the
hub's back.

The ledger also feeds the posting flow: `PointsJournalPoster` posts the IFRS 15 journal of the
points each store-day's transactions issued (revenue deferred to the liability).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from tillflow.errors import DownstreamRejectedError
from tillflow.flows.posting import LoyaltyAccounting, PostingAccounts, points_journal
from tillflow.model import Journal, round_to_minor
from tillflow.ports import (
    ErpSystem,
    JournalState,
    LoyaltyBook,
    PointsEntry,
    PointsJournal,
    ProgramPoints,
    Redemption,
    RedemptionState,
)

KINDS = ("bonus", "accrual", "reversal", "redemption", "refund", "expiry")


@dataclass(frozen=True)
class LiabilityReconciliation:
    program: str
    hub_points: int
    platform_points: int | None  # None: the platform could not be read
    held: int | None  # points reserved by open holds on the platform (still outstanding)
    as_of: datetime | None  # the platform's clock
    moves: tuple[tuple[str, int], ...]  # the hub's ledger by kind
    sagas: tuple[tuple[str, int], ...]  # redemption sagas by state
    conflicts: tuple[str, ...]  # saga steps that came too late
    currency: str | None
    carried_value: Decimal | None  # of a point; None without `posting.accounts.loyalty`
    liability: Decimal | None  # hub_points × carried_value, to minor units
    platform_liability: Decimal | None
    notes: tuple[str, ...] = field(default=())

    @property
    def difference(self) -> int | None:
        """platform − hub, in points."""
        return None if self.platform_points is None else self.platform_points - self.hub_points

    @property
    def status(self) -> Literal["matched", "mismatched"]:
        return "matched" if self.difference == 0 else "mismatched"

    @property
    def differences(self) -> list[str]:
        found = []
        if self.platform_points is None:
            found.append("the platform's outstanding points could not be read")
        elif self.difference:
            found.append(
                f"the platform holds {self.platform_points} points, the hub's ledger {self.hub_points}"
                f" ({self.difference:+d}): a move the hub did not record, or one the platform did not make"
            )
        return found


def reconcile_liability(
    program: str,
    *,
    moves: Mapping[str, int],
    platform: ProgramPoints | None,
    sagas: Sequence[Redemption],
    accounting: LoyaltyAccounting | None,
    notes: Sequence[str] = (),
) -> LiabilityReconciliation:
    """Compare the hub's ledger of `program` (its points by kind of move) with what the platform
    says its members hold, and value both."""
    hub_points = sum(moves.values())
    by_state: dict[str, int] = {}
    for saga in sagas:
        by_state[saga.state.value] = by_state.get(saga.state.value, 0) + 1

    def value(points: int | None) -> Decimal | None:
        if accounting is None or points is None:
            return None
        return round_to_minor(points * accounting.carried_value, accounting.currency)

    return LiabilityReconciliation(
        program=program,
        hub_points=hub_points,
        platform_points=None if platform is None else platform.outstanding,
        held=None if platform is None else platform.held,
        as_of=None if platform is None else platform.as_of,
        moves=tuple((kind, moves.get(kind, 0)) for kind in (*KINDS, *sorted(set(moves) - set(KINDS)))),
        sagas=tuple((s.value, by_state.get(s.value, 0)) for s in RedemptionState),
        conflicts=tuple(
            f"{saga.hold_id}: {line}" for saga in sagas if saga.conflict for line in saga.conflict.split("\n")
        ),
        currency=None if accounting is None else accounting.currency,
        carried_value=None if accounting is None else accounting.carried_value,
        liability=value(hub_points),
        platform_liability=value(None if platform is None else platform.outstanding),
        notes=tuple(notes),
    )


def liability_dict(rec: LiabilityReconciliation) -> dict[str, Any]:
    """The reconciliation as JSON-ready values (amounts as strings)."""

    def text(amount: Decimal | None) -> str | None:
        return None if amount is None else format(amount, "f")

    return {
        "program": rec.program,
        "status": rec.status,
        "hub_points": rec.hub_points,
        "platform_points": rec.platform_points,
        "difference": rec.difference,
        "held": rec.held,
        "as_of": None if rec.as_of is None else rec.as_of.isoformat(),
        "moves": dict(rec.moves),
        "sagas": dict(rec.sagas),
        "conflicts": list(rec.conflicts),
        "currency": rec.currency,
        "carried_value": text(rec.carried_value),
        "liability": text(rec.liability),
        "platform_liability": text(rec.platform_liability),
        "differences": rec.differences,
        "notes": list(rec.notes),
    }


ISSUING_KINDS = ("accrual", "reversal")


def journal_of_points(recorded: PointsJournal, accounts: PostingAccounts) -> Journal | None:
    """The journal a recorded points journal posts (None: it nets to nothing, or the chart has
    no IFRS 15 settings)."""
    if accounts.loyalty is None:
        return None
    return points_journal(
        journal_id=recorded.journal_id,
        store_id=recorded.store_id,
        business_day=recorded.business_day,
        currency=recorded.currency,
        issued=recorded.points,
        expired=0,
        loyalty=accounts.loyalty,
        accounts=accounts,
    )  # the moves a store's transactions make to points issued


class PointsJournalPoster:
    """Posts the IFRS 15 journals of the points each store-day's transactions issued, net of
    those returns and post-voids took back, as the hub's points ledger records them: at most
    every `every` seconds, the moves not yet journaled become `pts.<store>.<day>.<n>`, recorded
    with their moves before they are posted (a crash in between posts the recorded journal
    again under the same id, which the ERP answers as a repeat). A refused journal is kept
    failed with the ERP's reason (the reconciliation shows it)."""

    def __init__(
        self,
        *,
        book: LoyaltyBook,
        erp: ErpSystem,
        loyalty: LoyaltyAccounting,
        accounts: PostingAccounts,
        currency_of: Callable[[str], str],
        clock: Callable[[], datetime],
        every: float = 60.0,
    ) -> None:
        self.book = book
        self.erp = erp
        self.loyalty = loyalty
        self.accounts = accounts
        self.currency_of = currency_of
        self.clock = clock
        self.every = timedelta(seconds=every)
        self._last: datetime | None = None

    def post_due(self) -> int:
        """Journal what is due and post every pending journal; how many were posted."""
        now = self.clock()
        if self._last is None or now - self._last >= self.every:
            self._last = now
            self._record(now)
        pending = self.book.find_points_journals(state=JournalState.PENDING)
        journals = [(p, self.journal_of(p)) for p in pending]
        for p, journal in journals:
            if journal is None:  # nets to nothing: no journal to post
                self.book.settle_points_journal(
                    p.journal_id, state=JournalState.POSTED, document_number=None, reason="nothing to post"
                )
        posting = [(p, j) for p, j in journals if j is not None]
        if not posting:
            return 0
        answers = self.erp.post_journals(
            [j for _, j in posting], idempotency_keys=[p.journal_id for p, _ in posting]
        )
        for (p, _), answer in zip(posting, answers, strict=True):
            if isinstance(answer, DownstreamRejectedError):
                self.book.settle_points_journal(
                    p.journal_id, state=JournalState.FAILED, document_number=None, reason=answer.reason
                )
            else:
                self.book.settle_points_journal(
                    p.journal_id,
                    state=JournalState.POSTED,
                    document_number=answer.document_number,
                    reason=None,
                )
        return sum(1 for a in answers if not isinstance(a, DownstreamRejectedError))

    def journal_of(self, recorded: PointsJournal) -> Journal | None:
        return journal_of_points(recorded, self.accounts)

    def _record(self, now: datetime) -> None:
        by_day: dict[tuple[str, date], list[PointsEntry]] = defaultdict(list)
        for entry in self.book.unjournaled_entries(ISSUING_KINDS):
            if entry.store_id is not None and entry.business_day is not None:
                by_day[(entry.store_id, entry.business_day)].append(entry)
        recorded = []
        for (store_id, day), entries in sorted(by_day.items()):
            currency = self.currency_of(store_id)
            if self.loyalty.carried_value_in(currency) is None:
                continue  # no value of a point in this currency: nothing to journal
            n = len(self.book.find_points_journals(store_id=store_id, business_day=day)) + 1
            journal = PointsJournal(
                journal_id=f"pts.{store_id}.{day.isoformat()}.{n}",
                store_id=store_id,
                business_day=day,
                currency=currency,
                points=sum(e.points for e in entries),
            )
            recorded.append((journal, [e.entry_key for e in entries]))
        self.book.record_points_journals(recorded, at=now)
