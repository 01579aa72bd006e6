"""ERP postings routed per store or region to the cloud ERP, the legacy ERP, or both.

A retailer moving ERPs moves stores over in waves, and runs some in parallel first: under
`both`, each posting goes to the primary target and then the other, and what each answered is
recorded (`PostingLog`) so `tillflow erp compare` can show where they disagree. The flow acts
on the primary's answer: its rejection dead-letters the posting; the other side's rejection
is recorded, not raised. Either side away (`DownstreamUnavailableError`) fails the posting as
a whole, to be retried: every write is idempotent by its key, so the side that had it already
answers with the same document.

Every routed posting's outcome is recorded, parallel or not: that is the hub's posting state.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

from tillflow.connectors.settings import ErpRouting, ErpTarget
from tillflow.errors import DownstreamRejectedError
from tillflow.model import InventoryMovement, Journal
from tillflow.ports import ErpSystem, PostingLog, PostingOutcome, PostingReceipt, TrialBalanceLine

__all__ = ["RoutedErp"]


class RoutedErp:
    """`ErpSystem` over one or two ERP targets, per the routing."""

    def __init__(
        self,
        targets: Mapping[ErpTarget, ErpSystem],
        routing: ErpRouting,
        *,
        regions: Mapping[str, str],
        postings: PostingLog,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.targets = dict(targets)
        self.routing = routing
        self.regions = dict(regions)  # store id -> region
        self.postings = postings
        self.now = now

    def route(self, store_id: str) -> list[ErpTarget]:
        """The targets of a store's postings, the one whose answer counts first."""
        route = self.routing.route(store_id, self.regions.get(store_id))
        if route != "both":
            return [route]
        primary = self.routing.primary
        return [primary, "legacy" if primary == "cloud" else "cloud"]

    def post_journal(self, journal: Journal, *, idempotency_key: str) -> PostingReceipt:
        [answer] = self.post_journals([journal], idempotency_keys=[idempotency_key])
        if isinstance(answer, DownstreamRejectedError):
            raise answer
        return answer

    def post_journals(
        self, journals: Sequence[Journal], *, idempotency_keys: Sequence[str]
    ) -> list[PostingReceipt | DownstreamRejectedError]:
        """Each target gets its journals in one call; the answer of each journal is its primary
        target's. Every target's answers are recorded before an outage of a later one fails
        the call."""
        keys = list(idempotency_keys)
        routes = [self.route(j.store_id) for j in journals]
        answers: dict[tuple[int, str], PostingReceipt | DownstreamRejectedError] = {}
        targets = sorted({t for route in routes for t in route}, key=lambda t: t != self.routing.primary)
        for target in targets:
            mine = [i for i, route in enumerate(routes) if target in route]
            got = self.targets[target].post_journals(
                [journals[i] for i in mine], idempotency_keys=[keys[i] for i in mine]
            )
            answers.update(((i, target), answer) for i, answer in zip(mine, got, strict=True))
            self.postings.record_outcomes(
                [_journal_outcome(journals[i], target, answers[(i, target)]) for i in mine], at=self.now()
            )
        return [answers[(i, route[0])] for i, route in enumerate(routes)]

    def post_movements(
        self,
        store_id: str,
        business_day: date,
        movements: Sequence[InventoryMovement],
        *,
        batch_id: str,
        idempotency_key: str,
    ) -> PostingReceipt:
        targets = self.route(store_id)
        answers: dict[str, PostingReceipt | DownstreamRejectedError] = {}
        for target in targets:
            try:
                answers[target] = self.targets[target].post_movements(
                    store_id, business_day, movements, batch_id=batch_id, idempotency_key=idempotency_key
                )
            except DownstreamRejectedError as exc:
                answers[target] = exc
            outcome = _outcome(
                batch_id, store_id, business_day, "movements", target, answers[target], lines=len(movements)
            )
            self.postings.record_outcomes([outcome], at=self.now())
        first = answers[targets[0]]
        if isinstance(first, DownstreamRejectedError):
            raise first
        return first

    def posting_status(self, external_id: str) -> PostingReceipt | None:
        order = sorted(self.targets, key=lambda t: t != self.routing.primary)
        for target in order:
            found = self.targets[target].posting_status(external_id)
            if found is not None:
                return found
        return None

    def trial_balance(self, store_id: str, business_day: date) -> list[TrialBalanceLine]:
        return self.targets[self.route(store_id)[0]].trial_balance(store_id, business_day)


def _outcome(
    external_id: str,
    store_id: str,
    business_day: date,
    kind: str,
    target: str,
    answer: PostingReceipt | DownstreamRejectedError,
    *,
    lines: int,
    amounts: tuple[tuple[str, Decimal], ...] = (),
    transaction_ids: tuple[str, ...] = (),
) -> PostingOutcome:
    refused = answer if isinstance(answer, DownstreamRejectedError) else None
    return PostingOutcome(
        external_id=external_id,
        target=target,
        store_id=store_id,
        business_day=business_day,
        kind=kind,
        accepted=refused is None,
        document_number=None if isinstance(answer, DownstreamRejectedError) else answer.document_number,
        reason=None if refused is None else refused.reason,
        lines=lines,
        amounts=amounts,
        transaction_ids=transaction_ids,
    )


def _journal_outcome(
    journal: Journal, target: str, answer: PostingReceipt | DownstreamRejectedError
) -> PostingOutcome:
    debits: dict[str, Decimal] = defaultdict(Decimal)
    for line in journal.lines:
        debits[line.currency] += line.debit
    return _outcome(
        journal.journal_id,
        journal.store_id,
        journal.business_day,
        "journal",
        target,
        answer,
        lines=len(journal.lines),
        amounts=tuple(sorted(debits.items())),
        transaction_ids=journal.source_transactions,
    )
