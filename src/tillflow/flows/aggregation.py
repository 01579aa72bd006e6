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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from tillflow.errors import PoisonEventError
from tillflow.model import Journal, JournalLine

ZERO = Decimal(0)
_Key = tuple[str, str, str, tuple[tuple[str, str], ...]]  # account, currency, description, dimensions


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
    if max_lines < 2:
        raise ValueError("a journal has at least two lines")
    parts: list[list[Journal]] = []
    keys: set[_Key] = set()
    for journal in sorted(journals, key=lambda j: j.source_transactions):
        own = {_key(line, keep_register=register is not None) for line in journal.lines}
        if len(own) > max_lines:
            raise PoisonEventError(
                f"journal {journal.journal_id} alone needs {len(own)} lines; the ERP takes {max_lines}"
            )
        if not parts or len(keys | own) > max_lines:
            parts.append([])
            keys = set()
        parts[-1].append(journal)
        keys |= own
    merged: list[Journal] = []
    log: list[MergedLine] = []
    for n, part in enumerate(parts, start=1):
        journal_id = merged_journal_id(store_id, business_day, n, register=register, adjustment=adjustment)
        one, lines = _merge(part, journal_id, store_id, business_day, keep_register=register is not None)
        if one is not None:
            merged.append(one)
            log += lines
    return StoreDayPosting(tuple(merged), tuple(log))


def _key(line: JournalLine, *, keep_register: bool) -> _Key:
    dims = {k: v for k, v in line.dimensions.items() if keep_register or k != "register"}
    return (line.account, line.currency, line.description, tuple(sorted(dims.items())))


def _merge(
    part: Sequence[Journal], journal_id: str, store_id: str, business_day: date, *, keep_register: bool
) -> tuple[Journal | None, list[MergedLine]]:
    net: dict[_Key, Decimal] = defaultdict(Decimal)  # debit - credit
    sources: dict[_Key, list[str]] = defaultdict(list)
    for journal in part:
        for line in journal.lines:
            key = _key(line, keep_register=keep_register)
            net[key] += line.debit - line.credit
            for tx_id in journal.source_transactions:
                if tx_id not in sources[key][-1:]:
                    sources[key].append(tx_id)
    lines: list[JournalLine] = []
    log: list[MergedLine] = []
    for key, amount in net.items():
        if not amount:
            continue  # a sale and its void on one account: nothing left to post there
        account, currency, description, dims = key
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
        log.append(MergedLine(journal_id, len(lines), account, tuple(sources[key])))
    if not lines:
        return None, []
    transactions = tuple(tx for journal in part for tx in journal.source_transactions)
    journal = Journal(
        journal_id=journal_id,
        store_id=store_id,
        business_day=business_day,
        lines=tuple(lines),
        source_transactions=transactions,
    )
    return journal, log
