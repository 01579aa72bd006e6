"""Posting flow, pure part: one balanced ERP journal per transaction (the `line` posting policy).

What is posted where, for a sale (a return or a refund flips each side):

- revenue: credit, per department (`revenue`, else `revenue_default`), net of line and basket
  price modifiers and of inclusive tax. Basket modifiers are spread over the lines pro rata,
  inclusive tax over the lines carrying its code at its rate; the last line takes the remainder,
  so every share is in the currency's minor units. With a `returns` account, returned lines
  debit it instead of their department's revenue account.
- tax payable: credit, per tax code (`tax_payable`, else `tax_payable_default`), inclusive or not.
- tender clearing: debit, per tender kind, amount less change (`tender`; a rounding tender goes
  to `rounding`). A gift card or loyalty points tender reduces a liability.
- rounding: whatever is left within a few minor units; more than that is a bug, and the
  transaction is refused as a poison event.

Amounts on the same account, side and dimensions are summed; zero amounts are dropped. A
post-void posts nothing of its own: `void_journal` reverses the revenue and tax of what it
voids, and books the tenders it paid back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tillflow.errors import DownstreamRejectedError, FlowError, PoisonEventError
from tillflow.model import (
    Journal,
    JournalLine,
    LineAction,
    LoggedEvent,
    TenderKind,
    Transaction,
    TransactionKind,
    minor_unit,
)
from tillflow.model.base import Ident
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.model.transaction import TRUSTED_CONTEXT
from tillflow.ports import ErpSystem, TransactionStore

ZERO = Decimal(0)
MAX_ROUNDING_UNITS: Final = 5  # a larger difference between debits and credits is a bug
_MAX_ID = 64

# The reference ERP's retail chart: sales by department of the demo traffic, tender clearing.
DEFAULT_REVENUE: Final = {
    "GROCERY": "4000",
    "PRODUCE": "4010",
    "BAKERY": "4020",
    "DELI": "4030",
    "HOUSEHOLD": "4040",
    "APPAREL": "4050",
    "SUNDRY": "4060",
    "SERVICES": "4070",
}
DEFAULT_TENDER: Final = {
    TenderKind.CASH: "1000",  # cash in tills
    TenderKind.CARD: "1100",  # card clearing
    TenderKind.GIFT_CARD: "2300",  # gift card liability
    TenderKind.STORE_CREDIT: "2300",  # stored value owed to the customer, like a gift card
    TenderKind.VOUCHER: "1150",  # other tender clearing
    TenderKind.LOYALTY_POINTS: "2400",  # loyalty contract liability
}

_Key = tuple[str, bool, str, tuple[tuple[str, str], ...]]  # account, debit?, description, dimensions
_Entry = tuple[
    str, Decimal, str, dict[str, str]
]  # account, signed amount (debit > 0), description, dimensions


class PostingAccounts(BaseModel):
    """Where a transaction's amounts go in the chart of accounts (config: `posting.accounts`).

    The defaults post the demo to the reference ERP without any configuration. Tender kinds
    left out of `tender` keep their default account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    revenue: dict[Ident, Ident] = Field(default_factory=lambda: dict(DEFAULT_REVENUE))
    revenue_default: Ident = "4090"
    tax_payable: dict[Ident, Ident] = Field(default_factory=dict)
    tax_payable_default: Ident = "2200"
    tender: dict[TenderKind, Ident] = Field(default_factory=lambda: dict(DEFAULT_TENDER))
    rounding: Ident = "6900"
    returns: Ident | None = None  # None: a return reverses the revenue account itself

    @field_validator("tender")
    @classmethod
    def _every_tender_kind(cls, value: dict[TenderKind, str]) -> dict[TenderKind, str]:
        return {**DEFAULT_TENDER, **value}

    def tender_account(self, kind: TenderKind) -> str:
        return self.tender.get(kind, self.rounding)  # only the rounding tender is not in the map


def journal_id_for(transaction_id: str, prefix: str = "tx") -> str:
    """A stable journal id: ``tx.S001.R01.2026-11-29.00000042``; a digest of the transaction id
    where that would not be a valid, unambiguous id (too long, a dot in the store or register)."""
    parts = transaction_id.split(":")
    readable = ".".join((prefix, *parts))
    if len(parts) == 4 and "." not in parts[0] + parts[1] and len(readable) <= _MAX_ID:
        return readable
    return f"{prefix}.sha256.{hashlib.sha256(transaction_id.encode()).hexdigest()[:40]}"


def journal_for(tx: Transaction, accounts: PostingAccounts) -> Journal | None:
    """The journal of a sale, return or exchange; None for a post-void (see `void_journal`) and
    for a transaction that moves no money."""
    if tx.kind is TransactionKind.VOID:
        return None
    return _assemble(tx, _postings(tx, accounts), accounts, journal_id_for(tx.transaction_id))


def void_journal(void_tx: Transaction, original: Journal, accounts: PostingAccounts) -> Journal:
    """The journal of a post-void, on the void's own business day: the revenue and tax of the
    voided transaction's journal, debit and credit swapped, and the tenders the void itself
    paid back (a split sale refunded to one card credits that card, not the original split)."""
    if void_tx.voided is None:
        raise ValueError(f"{void_tx.transaction_id} is not a post-void")
    voided = void_tx.voided.transaction_id
    if original.source_transactions and voided not in original.source_transactions:
        raise ValueError(f"journal {original.journal_id} is not the journal of {voided}")
    mirrored = [
        (line.account, line.credit - line.debit, line.description, dict(line.dimensions))
        for line in original.lines
        if "tender" not in line.dimensions and line.description != "rounding"
    ]
    entries = [*mirrored, *_tender_postings(void_tx, accounts)]
    journal = _assemble(void_tx, entries, accounts, journal_id_for(void_tx.transaction_id, prefix="void"))
    if journal is None:
        raise PoisonEventError(f"post-void {void_tx.transaction_id} reverses nothing")
    return journal


def _assemble(
    tx: Transaction, entries: Iterable[_Entry], accounts: PostingAccounts, journal_id: str
) -> Journal | None:
    """The journal of `entries`: equal account, side and dimensions summed, zeros dropped,
    what is left within a few minor units to the rounding account."""
    base = {"store": tx.store_id, "register": tx.register_id}
    totals: dict[_Key, Decimal] = {}
    for account, amount, description, dims in entries:
        if amount:
            key = (account, amount > 0, description, tuple(sorted({**base, **dims}.items())))
            totals[key] = totals.get(key, ZERO) + abs(amount)
    lines = [_line(key, amount, tx.currency) for key, amount in totals.items()]
    if not lines:
        return None
    leftover = _leftover(tx, lines)
    if leftover:  # within a few minor units: the rounding account takes it
        key = (accounts.rounding, leftover < 0, "rounding", tuple(sorted(base.items())))
        lines.append(_line(key, abs(leftover), tx.currency))
    return Journal(
        journal_id=journal_id,
        store_id=tx.store_id,
        business_day=tx.business_day,
        lines=tuple(lines),
        source_transactions=(tx.transaction_id,),
    )


def _postings(tx: Transaction, accounts: PostingAccounts) -> Iterator[_Entry]:
    """Every amount of `tx` as (account, signed amount: positive debits, description, dimensions)."""
    for line, revenue in zip(tx.lines, line_revenues(tx), strict=True):
        dept = line.department
        account = accounts.revenue.get(dept, accounts.revenue_default) if dept else accounts.revenue_default
        if line.action is LineAction.RETURN and accounts.returns is not None:
            account = accounts.returns
        yield account, -revenue, f"revenue {dept or ''}".strip(), {"department": dept} if dept else {}
    for tax in tx.taxes:
        account = accounts.tax_payable.get(tax.code, accounts.tax_payable_default)
        yield account, -tax.amount, f"tax {tax.code}", {"tax_code": tax.code}
    yield from _tender_postings(tx, accounts)


def _tender_postings(tx: Transaction, accounts: PostingAccounts) -> Iterator[_Entry]:
    for tender in tx.tenders:
        kind = tender.kind
        yield (
            accounts.tender_account(kind),
            tender.amount - tender.change,
            f"tender {kind.value}",
            {"tender": kind.value},
        )


def line_revenues(tx: Transaction) -> list[Decimal]:
    """Each line's revenue, signed like its net amount: net of its share of the basket modifiers
    and of the inclusive tax on it, in the currency's minor units."""
    quantum = minor_unit(tx.currency)
    nets = [line.net_amount for line in tx.lines]
    off = sum((m.amount for m in tx.modifiers), ZERO)
    if off:
        signed = -off if tx.kind is TransactionKind.RETURN else off  # a return's basket discount refunds less
        weights = [max(n if signed > 0 else -n, ZERO) for n in nets]  # the lines going the basket's way
        if not any(weights):
            weights = [abs(n) for n in nets]
        total = sum(weights, ZERO)
        estimates = [signed * w / total for w in weights] if total else [ZERO] * len(nets)
        nets = [n - s for n, s in zip(nets, _allocate(signed, estimates, quantum), strict=True)]
    for tax in tx.taxes:
        if not tax.inclusive or not tax.amount:
            continue
        carriers = [i for i, line in enumerate(tx.lines) if tax.code in line.tax_codes] or list(
            range(len(nets))
        )
        estimates = [nets[i] * tax.rate / (1 + tax.rate) for i in carriers]
        for i, share in zip(carriers, _allocate(tax.amount, estimates, quantum), strict=True):
            nets[i] -= share
    return nets


def _allocate(amount: Decimal, estimates: Sequence[Decimal], quantum: Decimal) -> list[Decimal]:
    """`amount` in parts close to `estimates`, rounded to `quantum`; the last part with an
    estimate (or the very last, when none has one) takes the remainder, so the parts add up."""
    last = max((i for i, e in enumerate(estimates) if e), default=len(estimates) - 1)
    parts = [ZERO if i == last else e.quantize(quantum, ROUND_HALF_UP) for i, e in enumerate(estimates)]
    parts[last] = amount - sum(parts, ZERO)
    return parts


def _line(key: _Key, amount: Decimal, currency: str) -> JournalLine:
    """A journal line from amounts of a validated transaction (in its currency's minor units:
    the allocations are quantized to them), so the line's own checks are not run again; the
    journal still checks that it balances."""
    account, debit, description, dims = key
    return JournalLine.model_construct(
        account=account,
        debit=amount if debit else ZERO,
        credit=ZERO if debit else amount,
        currency=currency,
        description=description,
        dimensions=dict(dims),
    )


def _leftover(tx: Transaction, lines: Sequence[JournalLine]) -> Decimal:
    """Debits less credits; refused as a poison event when beyond a few minor units."""
    debits = sum((line.debit for line in lines), ZERO)
    credits = sum((line.credit for line in lines), ZERO)
    leftover = debits - credits
    if abs(leftover) > MAX_ROUNDING_UNITS * minor_unit(tx.currency):
        raise PoisonEventError(
            f"journal of {tx.transaction_id} does not balance: debits {debits} {tx.currency},"
            f" credits {credits} {tx.currency}, difference {leftover} (at most"
            f" {MAX_ROUNDING_UNITS} minor units go to rounding)"
        )
    return leftover


# --- the flow ---------------------------------------------------------------------------------

FLOW: Final = "posting"


def post_transactions(
    events: Sequence[LoggedEvent],
    *,
    erp: ErpSystem,
    transactions: TransactionStore,
    accounts: PostingAccounts,
) -> int:
    """Handler of the posting consumer group: each transaction's journal, posted once (the
    journal id is the ERP's idempotency key, so a redelivered event answers with the document
    already posted). The batch's journals go in one call; a journal the ERP refused is raised
    (the runner then settles the batch event by event: the refused one goes to dead letters
    with the ERP's reason, the others answer as repeats). Returns how many journals it posted."""
    journals = []
    for event in events:
        if event.event.type != TRANSACTION_COMPLETED:
            continue
        tx = Transaction.model_validate_json(event.event.data, context=TRUSTED_CONTEXT)
        journal = journal_for(tx, accounts) if tx.voided is None else _reversal(tx, transactions, accounts)
        if journal is not None:
            journals.append(journal)
    if not journals:
        return 0
    answers = erp.post_journals(journals, idempotency_keys=[j.journal_id for j in journals])
    for answer in answers:
        if isinstance(answer, DownstreamRejectedError):
            raise answer
    return len(journals)


def _reversal(void: Transaction, transactions: TransactionStore, accounts: PostingAccounts) -> Journal | None:
    assert void.voided is not None
    target = void.voided.transaction_id
    stored = transactions.get_transaction(target)
    if stored is None:  # retried: the voided sale may still be on its way from the store
        raise FlowError(f"post-void {void.transaction_id}: the voided transaction {target} has not arrived")
    original = journal_for(Transaction.model_validate_json(stored.data, context=TRUSTED_CONTEXT), accounts)
    return None if original is None else void_journal(void, original, accounts)
