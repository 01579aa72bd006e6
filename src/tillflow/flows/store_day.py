"""Posting policy per store, and the `aggregated` policy's flow: day close, late sales.

- `line`: one journal per transaction, posted as its event arrives (`posting.post_transactions`).
- `aggregated`: the store's transactions of a business day wait for its day close (the Z
  report, `POST /v1/day-closes`). The closer posts the day once every transaction the Z report
  counts is in (per register: the `transaction_count` sequences up to `last_sequence`), or,
  when the grace has passed, what is there, with the gap flagged by transaction identity. The
  day is merged into as few journals as the ERP's lines limit allows (per register when the
  store posts per register), with a merge log.
- A transaction that arrives after its day was posted goes into an adjustment journal with
  every other transaction of that day not yet posted: a posted journal is never reopened.

Every merged journal is recorded with its transactions before it is posted (pending), then
settled posted (with the ERP's document number) or failed (with its reason); a crash between
the two posts the recorded journal again, under the same id, which the ERP answers as a repeat.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import islice
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tillflow.errors import DownstreamRejectedError, PoisonEventError
from tillflow.flows import posting
from tillflow.flows.aggregation import aggregate_transactions
from tillflow.model import DayClose, Journal, LoggedEvent, Transaction
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.model.transaction import TRUSTED_CONTEXT, TransactionKind, transaction_id
from tillflow.ports import (
    CloseState,
    DayCloseRecord,
    DayJournal,
    ErpSystem,
    JournalState,
    PostingReceipt,
    StoreDays,
    StoredTransaction,
    TransactionStore,
)

PolicyName = Literal["line", "aggregated"]
MAX_GAP_LISTED = 1000  # missing transactions a day close records by name


class StorePolicy(BaseModel):
    """How one store's sales are posted (config: `posting.default`, `.regions`, `.stores`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: PolicyName = "line"
    per_register: bool = False  # aggregated: one journal per register and day

    @property
    def aggregated(self) -> bool:
        return self.policy == "aggregated"


def missing_transactions(
    close: DayClose, sequences: Mapping[str, set[int]], *, limit: int = MAX_GAP_LISTED
) -> list[str]:
    """The identities of the transactions a Z report counts that are not in `sequences`
    (register -> the sequences the hub has for the day), at most `limit` of them (a Z report
    may claim millions)."""
    gap = (
        transaction_id(close.store_id, register.register_id, close.business_day, seq)
        for register in close.registers
        for seq in register.expected_sequences()
        if seq not in sequences.get(register.register_id, ())
    )
    return list(islice(gap, limit))


def _parse(data: bytes) -> Transaction:
    return Transaction.model_validate_json(data, context=TRUSTED_CONTEXT)


def parse_day(stored: Iterable[StoredTransaction]) -> list[Transaction]:
    """A whole day's transactions, parsed with the cyclic collector paused: tens of thousands
    of new objects, none of them cyclic garbage, would otherwise set off collection after
    collection over the growing list (four times the parsing itself)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [_parse(s.data) for s in stored]
    finally:
        if was_enabled:
            gc.enable()


def originals_of(transactions: TransactionStore, txs: Iterable[Transaction]) -> dict[str, Transaction]:
    """The sales the post-voids among `txs` cancel, by id: from `txs`, else from the store (a
    void's sale may be on another day); a sale not received yet is left out."""
    have = {tx.transaction_id: tx for tx in txs}
    originals: dict[str, Transaction] = {}
    for tx in have.values():
        if tx.kind is TransactionKind.VOID and tx.voided is not None:
            target = tx.voided.transaction_id
            found = have.get(target)
            if found is None:
                stored = transactions.get_transaction(target)
                found = None if stored is None else _parse(stored.data)
            if found is not None:
                originals[target] = found
    return originals


@dataclass
class StoreDayPoster:
    """The posting consumer's handler and its closer, for every posting policy."""

    erp: ErpSystem
    transactions: TransactionStore
    days: StoreDays
    accounts: posting.PostingAccounts
    policy_of: Callable[[str], StorePolicy]
    max_lines: int
    costs: Mapping[str, Decimal] = field(default_factory=dict)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    # --- the consumer's handler ---------------------------------------------------------------

    def handle(self, events: Sequence[LoggedEvent]) -> int:
        """Line-policy transactions are posted at once; those of an aggregated store wait for
        its day close, unless their day is already posted: then they go into an adjustment."""
        line: list[LoggedEvent] = []
        late: dict[tuple[str, date], list[str]] = defaultdict(list)
        closes: dict[tuple[str, date], DayCloseRecord | None] = {}
        for event in events:
            if event.event.type != TRANSACTION_COMPLETED:
                continue
            tx = _parse(event.event.data)
            if not self.policy_of(tx.store_id).aggregated:
                line.append(event)
                continue
            day = (tx.store_id, tx.business_day)
            if day not in closes:
                closes[day] = self.days.find_day_close(*day)
            close = closes[day]
            if close is not None and close.state is not CloseState.WAITING:
                late[day].append(tx.transaction_id)
        posted = posting.post_transactions(
            line, erp=self.erp, transactions=self.transactions, accounts=self.accounts, costs=self.costs
        )
        for (store_id, business_day), ids in late.items():
            posted += self._post_late(store_id, business_day, ids)
        return posted

    def _post_late(self, store_id: str, business_day: date, ids: Sequence[str]) -> int:
        """Post what is left of a posted day as its next adjustment. A transaction in an
        adjustment the ERP refused (a replayed dead letter) posts that adjustment again; one the
        ERP refuses now raises its reason, so its event goes to dead letters with it. One in a
        refused day journal waits for that day close to be retried."""
        journals = {j.journal_id: j for j in self.days.find_journals(store_id, business_day)}
        members = self.days.find_memberships(ids)
        refused = {
            journal_id
            for journal_id in members.values()
            if journals[journal_id].adjustment and journals[journal_id].state is JournalState.FAILED
        }
        if refused:
            self.days.retry_failed(store_id, business_day, sorted(refused))
        posted = self._settle_recorded(store_id, business_day)
        if any(tx_id not in members for tx_id in ids):
            adjustment = 1 + max((j.adjustment for j in journals.values()), default=0)
            posted += self._post_rest(store_id, business_day, adjustment)
        journals = {j.journal_id: j for j in self.days.find_journals(store_id, business_day)}
        for tx_id, journal_id in self.days.find_memberships(ids).items():
            found = journals[journal_id]
            if found.adjustment and found.state is JournalState.FAILED:
                raise DownstreamRejectedError("erp", f"{tx_id} is in journal {journal_id}: {found.reason}")
        return posted

    # --- the closer ---------------------------------------------------------------------------

    def close_days(self) -> int:
        """Post every waiting day close whose day is complete or whose grace has passed;
        returns how many journals it posted. Called by the posting consumer between batches."""
        posted = 0
        now = self.clock()
        for record in self.days.list_day_closes(state=CloseState.WAITING):
            close = record.close
            store_id, business_day = close.store_id, close.business_day
            gap = missing_transactions(close, self.transactions.list_sequences(store_id, business_day))
            if not self.policy_of(store_id).aggregated:  # posted line by line: the Z is kept to reconcile
                self.days.settle_day_close(store_id, business_day, state=CloseState.POSTED, gap=gap, at=now)
                continue
            if gap and now < record.deadline:
                continue  # still waiting for the rest of the day
            try:
                posted += self._settle_recorded(store_id, business_day)
                if not self.days.find_journals(store_id, business_day):
                    posted += self._post_rest(store_id, business_day, 0)
            except PoisonEventError as exc:  # a transaction no journal can carry: the day fails
                self.days.settle_day_close(
                    store_id, business_day, state=CloseState.FAILED, gap=gap, reason=str(exc), at=now
                )
                continue
            failed = [  # the day journal's: a refused adjustment is its late sales' dead letter
                j
                for j in self.days.find_journals(store_id, business_day)
                if not j.adjustment and j.state is JournalState.FAILED
            ]
            state = CloseState.FAILED if failed else CloseState.POSTED
            reason = "; ".join(f"{j.journal_id}: {j.reason}" for j in failed) or None
            self.days.settle_day_close(store_id, business_day, state=state, gap=gap, reason=reason, at=now)
        return posted

    # --- shared ---------------------------------------------------------------------------------

    def _post_rest(self, store_id: str, business_day: date, adjustment: int) -> int:
        """Record and post the merged journals of the day's transactions not yet in a journal."""
        stored = self.transactions.read_store_day(store_id, business_day)
        members = self.days.find_memberships([s.transaction_id for s in stored])
        rest = parse_day(s for s in stored if s.transaction_id not in members)
        originals = originals_of(self.transactions, rest)
        # a post-void whose sale has not come waits for it: the sale's adjustment takes both
        rest = [tx for tx in rest if tx.voided is None or tx.voided.transaction_id in originals]
        if not rest:
            return 0
        per_register = self.policy_of(store_id).per_register
        groups: dict[str | None, list[Transaction]] = defaultdict(list)
        for tx in rest:
            groups[tx.register_id if per_register else None].append(tx)
        journals: list[Journal] = []
        records: list[DayJournal] = []
        for register, txs in groups.items():
            merged = aggregate_transactions(
                txs,
                accounts=self.accounts,
                costs=self.costs,
                originals=originals,
                store_id=store_id,
                business_day=business_day,
                max_lines=self.max_lines,
                register=register,
                adjustment=adjustment,
            ).journals
            journals += merged
            records += [
                DayJournal(j.journal_id, store_id, business_day, register, adjustment, j.source_transactions)
                for j in merged
            ]
        self.days.record_journals(records, at=self.clock())
        return self._post(journals)

    def _settle_recorded(self, store_id: str, business_day: date) -> int:
        """Post again the journals recorded but never answered (a crash between the two)."""
        pending = [
            j for j in self.days.find_journals(store_id, business_day) if j.state is JournalState.PENDING
        ]
        if not pending:
            return 0
        stored = {s.transaction_id: s for s in self.transactions.read_store_day(store_id, business_day)}
        rebuilt: list[Journal] = []
        for record in pending:
            txs = parse_day(stored[tx_id] for tx_id in record.transaction_ids)
            parts = aggregate_transactions(
                txs,
                accounts=self.accounts,
                costs=self.costs,
                originals=originals_of(self.transactions, txs),
                store_id=store_id,
                business_day=business_day,
                max_lines=self.max_lines,
                register=record.register_id,
                adjustment=record.adjustment,
            ).journals
            # the record's transactions were one part when recorded: merged alone they fit one journal
            rebuilt += [j.model_copy(update={"journal_id": record.journal_id}) for j in parts]
        return self._post(rebuilt)

    def _post(self, journals: Sequence[Journal]) -> int:
        if not journals:
            return 0
        answers = self.erp.post_journals(journals, idempotency_keys=[j.journal_id for j in journals])
        at = self.clock()
        for journal, answer in zip(journals, answers, strict=True):
            if isinstance(answer, PostingReceipt):
                self.days.settle_journal(
                    journal.journal_id,
                    state=JournalState.POSTED,
                    document_number=answer.document_number,
                    reason=None,
                    at=at,
                )
            else:
                self.days.settle_journal(
                    journal.journal_id,
                    state=JournalState.FAILED,
                    document_number=None,
                    reason=answer.reason,
                    at=at,
                )
        return sum(1 for a in answers if isinstance(a, PostingReceipt))
