"""The `aggregated` posting policy, pure part: a store-day's transaction journals merged into
as few ERP journals as the ERP's lines-per-journal limit allows, with a merge log.

- Lines of the same account, currency and dimensions are netted into one line (a sale's
  revenue credit and a return's debit on the same department make one net line); the
  register dimension is dropped unless the store posts per register.
- A store-day whose merged journal would exceed `max_lines` is split by transactions: each
  part holds whole transactions, so each part balances per currency on its own (every
  transaction's journal does), and no line is ever cut in two.
- The merge log maps every line of every merged journal to the transactions whose amounts
  it carries, for drill-down from the ledger to the till.
- Journal ids are stable for the same store, day, register and part: `day.S001.2026-11-29.1`
  (an adjustment: `adj.S001.2026-11-29.2.1`), so posting them again is a repeat.

`aggregate_store_day` merges journals already built; `aggregate_transactions` merges the
transactions' amounts (`posting.postings_for`) without building a journal per transaction (the
fast path of a store-day of tens of thousands of transactions), and gives the same merged
journals and merge log: both feed the one merge below.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import NamedTuple

from tillflow.errors import FlowError, PoisonEventError
from tillflow.flows.posting import (
    Dimensions,
    PostingAccounts,
    PostingKey,
    journal_id_for,
    postings_for,
    void_postings,
)
from tillflow.model import Journal, JournalLine, Transaction

ZERO = Decimal(0)
_Key = tuple[str, str, str, Dimensions]  # account, currency, description, dimensions


@dataclass(frozen=True)
class MergedLine:
    """One line of a merged journal and the transactions whose amounts it carries."""

    journal_id: str
    line_no: int  # 1-based, in the journal's order
    account: str
    transaction_ids: tuple[str, ...]


@dataclass(frozen=True)
class StoreDayPosting:
    journals: tuple[Journal, ...]
    merge_log: tuple[MergedLine, ...]


class _Source(NamedTuple):
    """One transaction's journal, as the merge reads it."""

    transactions: tuple[str, ...]
    amounts: list[tuple[int, Decimal]]  # (merged-line key number, debit - credit), in line order
    named: str | tuple[str, str]  # the journal id, or the transaction id and prefix it follows from


class _Keys:
    """The merged-line keys met so far, numbered: the merge then hashes small ints, not tuples."""

    def __init__(self) -> None:
        self.keys: list[_Key] = []
        self._numbers: dict[_Key, int] = {}

    def number(self, key: _Key) -> int:
        found = self._numbers.get(key)
        if found is None:
            found = self._numbers[key] = len(self.keys)
            self.keys.append(key)
        return found


def merged_journal_id(
    store_id: str, business_day: date, part: int, *, register: str | None = None, adjustment: int = 0
) -> str:
    """`day.S001.2026-11-29.1`, `day.S001.2026-11-29.R01.1`, `adj.S001.2026-11-29.2.1`."""
    head = "day" if not adjustment else "adj"
    middle = [store_id, business_day.isoformat(), *([register] if register else [])]
    if adjustment:
        middle.append(str(adjustment))
    return ".".join([head, *middle, str(part)])


def aggregate_store_day(
    journals: Sequence[Journal],
    *,
    store_id: str,
    business_day: date,
    max_lines: int,
    register: str | None = None,
    adjustment: int = 0,
) -> StoreDayPosting:
    """The merged journals of one store-day (of one register, when it posts per register;
    adjustment N for transactions that arrived after the day was posted)."""
    keys = _Keys()
    keep_register = register is not None
    sources = (
        _Source(
            journal.source_transactions,
            [
                (keys.number(_key(line, keep_register=keep_register)), line.debit - line.credit)
                for line in journal.lines
            ],
            journal.journal_id,
        )
        for journal in sorted(journals, key=lambda j: j.source_transactions)
    )
    return _aggregate(
        sources,
        keys,
        store_id=store_id,
        business_day=business_day,
        max_lines=max_lines,
        register=register,
        adjustment=adjustment,
    )


def aggregate_transactions(
    transactions: Sequence[Transaction],
    *,
    accounts: PostingAccounts,
    costs: Mapping[str, Decimal] | None = None,
    originals: Mapping[str, Transaction] | None = None,
    store_id: str,
    business_day: date,
    max_lines: int,
    register: str | None = None,
    adjustment: int = 0,
) -> StoreDayPosting:
    """`aggregate_store_day` of the transactions' journals (`journal_for`, with `costs`; a
    post-void's `void_journal` of its original's), without building them. `originals` holds the
    transactions the post-voids in `transactions` void, by transaction id; one missing is a
    `FlowError` (retried: the voided sale may still be on its way). A post-void of a transaction
    that posted nothing posts nothing."""
    keys = _Keys()
    ids = [tx.transaction_id for tx in transactions]
    # in transaction id order, as `aggregate_store_day` sorts the journals (no pair allocated
    # per transaction: a store-day of tens of thousands would otherwise set off a full collection)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    sources = _transaction_sources(
        ((ids[i], transactions[i]) for i in order),
        keys,
        accounts=accounts,
        costs=costs,
        originals=originals or {},
        keep_register=register is not None,
    )
    return _aggregate(
        sources,
        keys,
        store_id=store_id,
        business_day=business_day,
        max_lines=max_lines,
        register=register,
        adjustment=adjustment,
    )


def _transaction_sources(
    transactions: Iterable[tuple[str, Transaction]],
    keys: _Keys,
    *,
    accounts: PostingAccounts,
    costs: Mapping[str, Decimal] | None,
    originals: Mapping[str, Transaction],
    keep_register: bool,
) -> Iterator[_Source]:
    numbers: dict[str, dict[PostingKey, int]] = {}  # currency -> a journal line's key -> its merged line's
    for tx_id, tx in transactions:
        if tx.voided is None:
            postings = postings_for(tx, accounts, costs=costs)
            prefix = "tx"
        else:
            voided = tx.voided.transaction_id
            original = originals.get(voided)
            if original is None:  # retried: the voided sale may still be on its way from the store
                raise FlowError(f"post-void {tx_id}: the voided transaction {voided} has not arrived")
            postings = postings_for(original, accounts, costs=costs)
            if postings:  # else the void reverses nothing and posts nothing, like its original
                if original.transaction_id != voided:
                    raise ValueError(
                        f"journal {journal_id_for(original.transaction_id)} is not the journal of {voided}"
                    )
                postings = void_postings(tx, postings, accounts)
            prefix = "void"
        if not postings:
            continue
        currency = tx.currency
        known = numbers.get(currency)
        if known is None:
            known = numbers[currency] = {}
        amounts = []
        for posting, amount in postings.items():
            number = known.get(posting)
            account, debit, description, dims = posting
            if number is None:
                merged = dims if keep_register else tuple(d for d in dims if d[0] != "register")
                number = known[posting] = keys.number((account, currency, description, merged))
            # the same arithmetic as a built line's debit - credit, to the same digits
            amounts.append((number, amount - ZERO if debit else ZERO - amount))
        yield _Source((tx_id,), amounts, (tx_id, prefix))


def _aggregate(
    sources: Iterable[_Source],
    keys: _Keys,
    *,
    store_id: str,
    business_day: date,
    max_lines: int,
    register: str | None,
    adjustment: int,
) -> StoreDayPosting:
    """The sources, in order, merged in parts of whole journals of at most `max_lines` lines;
    a part is netted as its journals come (its net lines are kept, not the journals)."""
    if max_lines < 2:
        raise ValueError("a journal has at least two lines")
    merged: list[Journal] = []
    log: list[MergedLine] = []

    def part(number: int) -> _Part:
        journal_id = merged_journal_id(
            store_id, business_day, number, register=register, adjustment=adjustment
        )
        return _Part(number, journal_id)

    def close(done: _Part) -> None:
        journal, lines = done.merged(keys.keys, store_id, business_day)
        if journal is not None:
            merged.append(journal)
            log.extend(lines)

    current = part(1)
    for source in sources:
        own = {number for number, _ in source.amounts}
        if len(own) > max_lines:
            named = source.named
            journal_id = named if isinstance(named, str) else journal_id_for(*named)
            raise PoisonEventError(
                f"journal {journal_id} alone needs {len(own)} lines; the ERP takes {max_lines}"
            )
        net = current.net
        if current.transactions and len(net) + len(own - net.keys()) > max_lines:
            close(current)
            current = part(current.number + 1)
        current.add(source)
    if current.transactions:
        close(current)
    return StoreDayPosting(tuple(merged), tuple(log))


def _key(line: JournalLine, *, keep_register: bool) -> _Key:
    dims = {k: v for k, v in line.dimensions.items() if keep_register or k != "register"}
    return (line.account, line.currency, line.description, tuple(sorted(dims.items())))


class _Part:
    """The journals of one merged journal, netted as they come."""

    def __init__(self, number: int, journal_id: str) -> None:
        self.number, self.journal_id = number, journal_id
        self.net: dict[int, Decimal] = {}  # debit - credit by key number, in the order keys came
        self.sources: dict[int, list[str]] = {}  # the transactions behind each key
        self.transactions: list[str] = []

    def add(self, source: _Source) -> None:
        net, sources, transactions = self.net, self.sources, source.transactions
        for number, amount in source.amounts:
            net[number] = net.get(number, ZERO) + amount
            seen = sources.get(number)
            if seen is None:
                seen = sources[number] = []
            for tx_id in transactions:
                if not seen or seen[-1] != tx_id:
                    seen.append(tx_id)
        self.transactions += transactions

    def merged(
        self, keys: Sequence[_Key], store_id: str, business_day: date
    ) -> tuple[Journal | None, list[MergedLine]]:
        """The merged journal and its merge log; None when every line nets to zero."""
        journal_id = self.journal_id
        lines: list[JournalLine] = []
        log: list[MergedLine] = []
        for number, amount in self.net.items():
            if not amount:
                continue  # a sale and its void on one account: nothing left to post there
            account, currency, description, dims = keys[number]
            lines.append(
                JournalLine.model_construct(  # from validated lines: amounts already in minor units
                    account=account,
                    debit=amount if amount > 0 else ZERO,
                    credit=-amount if amount < 0 else ZERO,
                    currency=currency,
                    description=description,
                    dimensions=dict(dims),
                )
            )
            log.append(MergedLine(journal_id, len(lines), account, tuple(self.sources[number])))
        if not lines:
            return None, []
        journal = Journal(
            journal_id=journal_id,
            store_id=store_id,
            business_day=business_day,
            lines=tuple(lines),
            source_transactions=tuple(self.transactions),
        )
        return journal, log
