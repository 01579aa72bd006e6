"""Three-way reconciliation of a business day, for the CLI and the API: each store-day's Z
report, what the hub accepted and what the ERP posted (its trial balance), with the posting
state of the store-day (pending, posted, failed, dead-lettered) as findings; and the loyalty
liability, the hub's points ledger vs the loyalty platform's."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.flows.liability import LiabilityReconciliation, journal_of_points, reconcile_liability
from tillflow.flows.loyalty import read_statement
from tillflow.flows.posting import FLOW as POSTING_FLOW
from tillflow.flows.posting import journal_id_for, postings_for
from tillflow.flows.reconciliation import StoreDayReconciliation, reconcile_store_day
from tillflow.flows.store_day import originals_of, parse_day
from tillflow.model import Transaction, TransactionKind
from tillflow.ports import CloseState, JournalState, ProgramPoints, TrialBalanceLine
from tillflow.services import Services


@dataclass(frozen=True)
class PostingState:
    """Where a store-day's transactions stand on their way to the ERP."""

    policy: str
    day_close: str  # "none", or the close's state
    transactions: int
    posted: int
    nothing_to_post: int  # moved no money (goods given away at 0, a void of one): no journal
    pending: int
    failed: int
    dead_lettered: int
    journals: tuple[dict[str, Any], ...] = ()  # aggregated: each merged journal and its state

    def findings(self) -> list[str]:
        found = []
        if self.pending:
            found.append(f"{self.pending} transaction(s) not posted yet ({self._waiting()})")
        if self.failed:
            found.append(f"{self.failed} transaction(s) in postings the ERP refused")
        if self.dead_lettered:
            found.append(f"{self.dead_lettered} transaction(s) dead-lettered by the posting flow")
        for journal in self.journals:
            if journal["state"] == JournalState.FAILED:
                found.append(f"journal {journal['journal_id']} refused by the ERP: {journal['reason']}")
        return found

    def _waiting(self) -> str:
        if self.policy != "aggregated":
            return "posting flow behind, or the ERP away"
        if self.day_close == "none":
            return "no day close received"
        return "waiting for the day close" if self.day_close == CloseState.WAITING else "next adjustment"


def read_day(services: Services, store_id: str, business_day: date) -> list[Transaction]:
    """The transactions the hub accepted for a store-day."""
    return parse_day(services.transactions.read_store_day(store_id, business_day))


def dead_lettered(services: Services) -> set[str]:
    """The transactions whose events the posting flow set aside (read once per report)."""
    return {
        d.event.event.subject
        for d in services.event_log.list_dead_letters(group=POSTING_FLOW, limit=100_000)
        if d.event.event.subject is not None
    }


def posting_state(
    services: Services,
    store_id: str,
    business_day: date,
    txs: list[Transaction],
    *,
    originals: dict[str, Transaction],
    dead_letters: set[str],
) -> PostingState:
    config = services.config
    costs = config.posting.unit_costs
    nothing = set()
    for tx in txs:  # what the posting flow gives no journal: neither posted nor pending
        moved = originals.get(tx.voided.transaction_id) if tx.voided is not None else tx
        if moved is not None and not postings_for(moved, config.posting.accounts, costs=costs):
            nothing.add(tx.transaction_id)
    region = next((s.region for s in config.stores if s.store_id == store_id), None)
    policy = config.posting.policy_for(store_id, region)
    close = services.store_days.find_day_close(store_id, business_day)
    ids = {tx.transaction_id for tx in txs}
    dead = ids & dead_letters
    journals: tuple[dict[str, Any], ...] = ()
    if policy.aggregated:
        found = services.store_days.find_journals(store_id, business_day)
        state_of = {tx_id: j.state for j in found for tx_id in j.transaction_ids}
        journals = tuple(
            {
                "journal_id": j.journal_id,
                "adjustment": j.adjustment,
                "register": j.register_id,
                "state": j.state.value,
                "document_number": j.document_number,
                "reason": j.reason,
                "transactions": len(j.transaction_ids),
            }
            for j in found
        )
    else:
        outcomes = services.postings.find_outcomes(business_day, store_id)
        answer: dict[str, JournalState] = {}
        for o in outcomes:  # a parallel run: accepted by one target is posted
            if o.accepted or o.external_id not in answer:
                answer[o.external_id] = JournalState.POSTED if o.accepted else JournalState.FAILED
        state_of = {}
        for tx in txs:
            journal_id = journal_id_for(
                tx.transaction_id, "void" if tx.kind is TransactionKind.VOID else "tx"
            )
            if journal_id in answer:
                state_of[tx.transaction_id] = answer[journal_id]
    counts = Counter(state_of.get(tx_id) for tx_id in ids - dead - nothing)
    return PostingState(
        policy=policy.policy,
        day_close="none" if close is None else close.state.value,
        transactions=len(ids),
        posted=counts[JournalState.POSTED],
        nothing_to_post=len(nothing - dead),
        pending=counts[None] + counts[JournalState.PENDING],
        failed=counts[JournalState.FAILED],
        dead_lettered=len(dead),
        journals=journals,
    )


def reconcile(
    services: Services, business_day: date, store_id: str | None = None
) -> list[tuple[StoreDayReconciliation, PostingState]]:
    """Every store-day of `business_day` (or one store's) that has transactions or a day close."""
    if store_id is not None:
        stores = [store_id]
    else:
        closed = {r.close.store_id for r in services.store_days.list_day_closes(business_day=business_day)}
        stores = sorted(set(services.transactions.list_store_days(business_day)) | closed)
    erp = services.erp()
    dead = dead_lettered(services)
    results = []
    for store in stores:
        txs = read_day(services, store, business_day)
        originals = originals_of(services.transactions, txs)
        state = posting_state(services, store, business_day, txs, originals=originals, dead_letters=dead)
        notes = state.findings()
        trial_balance: list[TrialBalanceLine] | None = None
        if erp is None:
            notes.append("no ERP is configured")
        else:
            try:
                trial_balance = erp.trial_balance(store, business_day)
            except DownstreamUnavailableError as exc:  # the comparison says it could not be read
                notes.append(f"ERP away: {exc}")
        points = services.loyalty_book.find_points_journals(store_id=store, business_day=business_day)
        notes += [
            f"points journal {p.journal_id} {p.state}"
            + (f": {p.reason}" if p.state is JournalState.FAILED else "")
            for p in points
            if p.state is not JournalState.POSTED
        ]
        close = services.store_days.find_day_close(store, business_day)
        rec = reconcile_store_day(
            store_id=store,
            business_day=business_day,
            day_close=None if close is None else close.close,
            transactions=txs,
            originals=originals,
            trial_balance=trial_balance,
            accounts=services.config.posting.accounts,
            costs=services.config.posting.unit_costs,
            posting_notes=notes,
            extra_journals=[
                j for p in points if (j := journal_of_points(p, services.config.posting.accounts)) is not None
            ],
        )
        results.append((rec, state))
    return results


def reconcile_loyalty(services: Services) -> list[LiabilityReconciliation]:
    """Each loyalty program's liability: the hub's ledger (brought up to date with the
    platform's own moves first) vs the platform's outstanding points. Empty without a loyalty
    platform."""
    platform = services.loyalty()
    if platform is None:
        return []
    book = services.loyalty_book
    out = []
    sagas = book.list_redemptions(limit=1_000_000)
    for program in services.config.hub.loyalty_programs:
        notes: list[str] = []
        points: ProgramPoints | None = None
        try:
            read_statement(program, loyalty=platform, book=book, now=datetime.now(UTC))
            points = platform.outstanding(program)
            # an expiry the platform settled while it was being read comes in now
            read_statement(program, loyalty=platform, book=book, now=datetime.now(UTC))
        except DownstreamUnavailableError as exc:
            notes.append(f"loyalty platform away: {exc}")
        except DownstreamRejectedError as exc:
            notes.append(f"loyalty platform refused: {exc.reason}")
        out.append(
            reconcile_liability(
                program,
                moves=book.points_by_kind().get(program, {}),
                platform=points,
                sagas=[s for s in sagas if s.program == program],
                accounting=services.config.posting.accounts.loyalty,
                notes=notes,
            )
        )
    return out
