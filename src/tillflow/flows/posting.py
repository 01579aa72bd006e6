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
- cost of goods sold, when the unit cost of the sku is known (`costs`, sku -> cost of one unit
  in the transaction's currency) and the line is a stock item: debit `cogs`, credit `inventory`,
  quantity × unit cost rounded half up to minor units, per department. A returned line that goes
  back on the shelf (`restock`) reverses it; one that does not posts nothing (the written-off
  goods stay in the cost of sales). Non-stock items and services post no cost.
- rounding: whatever is left within a few minor units; more than that is a bug, and the
  transaction is refused as a poison event.

Amounts on the same account, side and dimensions are summed; zero amounts are dropped. A
post-void posts nothing of its own: `void_journal` reverses the revenue, tax and cost of goods
of what it voids, and books the tenders it paid back.

`postings_for` gives a journal's amounts keyed by (account, side, description, dimensions)
without building the journal: `journal_for` builds its lines from them, and the aggregated
policy merges them straight away (`flows.aggregation.aggregate_transactions`).

Loyalty points under IFRS 15 (`PostingAccounts.loyalty`; None posts a points tender like any
other tender, to the loyalty liability at its face value). Points are a separate performance
obligation: each outstanding point is carried in the contract liability (the loyalty points
tender account, "2400") at its value less the expected breakage, `point_value × (1 − breakage)`.

- points issued P (`points_journal`): debit `deferral_account` (revenue deferred), credit the
  liability, P × v × (1 − b);
- points redeemed (a loyalty points tender of A in `journal_for`): debit the liability
  A × (1 − b), the value it carried, and `deferral_account` the rest, A × b; the first part is
  rounded half up to minor units, the second takes the remainder, so the two make exactly A;
- points expired E (`points_journal`): debit the liability, credit `breakage_account` (breakage
  revenue), E × v × (1 − b).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tillflow.errors import DownstreamRejectedError, FlowError, PoisonEventError
from tillflow.model import (
    MINOR_UNITS,
    ItemType,
    Journal,
    JournalLine,
    LineAction,
    LoggedEvent,
    TenderKind,
    Transaction,
    TransactionKind,
    minor_unit,
    round_to_minor,
)
from tillflow.model.base import CurrencyCode, Ident
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.model.money import Dec
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

Dimensions = tuple[tuple[str, str], ...]  # (name, value) pairs
PostingKey = tuple[str, bool, str, Dimensions]  # account, debit?, description, dimensions (sorted)
Postings = dict[PostingKey, Decimal]  # positive amounts, in the journal's line order
# account, signed amount (debit > 0), description, dimensions (beside the store and register)
_Entry = tuple[str, Decimal, str, Dimensions]
_RETURNED, _RETURN, _VOID = LineAction.RETURN, TransactionKind.RETURN, TransactionKind.VOID
_STOCK, _POINTS = ItemType.STOCK, TenderKind.LOYALTY_POINTS  # (an enum member is slow to look up)
_TENDER_DESCRIPTION: Final = {kind: f"tender {kind.value}" for kind in TenderKind}
_TENDER_DIMENSIONS: Final = {kind: (("tender", kind.value),) for kind in TenderKind}


class LoyaltyAccounting(BaseModel):
    """IFRS 15 treatment of loyalty points (config: `posting.accounts.loyalty`): what a point
    is worth, the share of points expected never to be redeemed, and where the deferred
    revenue and the breakage go. An outstanding point is carried at `carried_value`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    point_value: Dec = Field(gt=0)  # of one point, in `currency` (the program's)
    currency: CurrencyCode = "EUR"
    # what a point is worth in the other currencies stores trade in (issued points are valued
    # in their store's currency); a currency left out issues no IFRS 15 journal
    point_values: dict[CurrencyCode, Dec] = Field(default_factory=dict)
    breakage: Decimal = Field(ge=0, lt=1)  # expected share of points that expire unredeemed
    deferral_account: Ident = "4300"
    breakage_account: Ident = "4310"

    @property
    def carried_share(self) -> Decimal:
        """1 − breakage: the share of a redeemed amount the liability carried."""
        return 1 - self.breakage

    @property
    def carried_value(self) -> Decimal:
        """What one outstanding point is carried at in the liability: v × (1 − b)."""
        return self.point_value * (1 - self.breakage)

    def carried_value_in(self, currency: str) -> Decimal | None:
        """`carried_value` in `currency`; None when a point's value there is not configured."""
        value = self.point_value if currency == self.currency else self.point_values.get(currency)
        return None if value is None else value * (1 - self.breakage)


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
    cogs: Ident = "5000"  # cost of goods sold
    inventory: Ident = "1400"
    loyalty: LoyaltyAccounting | None = None  # None: no IFRS 15 treatment of points

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


def journal_for(
    tx: Transaction, accounts: PostingAccounts, *, costs: Mapping[str, Decimal] | None = None
) -> Journal | None:
    """The journal of a sale, return or exchange; None for a post-void (see `void_journal`) and
    for a transaction that moves no money. `costs` (sku -> unit cost) adds cost of goods sold."""
    postings = postings_for(tx, accounts, costs=costs)
    return _journal(tx, postings, journal_id_for(tx.transaction_id)) if postings else None


def postings_for(
    tx: Transaction, accounts: PostingAccounts, *, costs: Mapping[str, Decimal] | None = None
) -> Postings:
    """The amounts of `journal_for`'s journal, keyed like its lines and in their order (empty
    where it gives None), without building the journal."""
    if tx.kind is _VOID:
        return {}
    return _totals(tx, _postings(tx, accounts, costs), accounts)


def void_journal(void_tx: Transaction, original: Journal, accounts: PostingAccounts) -> Journal:
    """The journal of a post-void, on the void's own business day: the revenue, tax and cost of
    goods of the voided transaction's journal, debit and credit swapped, and the tenders the void
    itself paid back (a split sale refunded to one card credits that card, not the original split)."""
    if void_tx.voided is None:
        raise ValueError(f"{void_tx.transaction_id} is not a post-void")
    voided = void_tx.voided.transaction_id
    if original.source_transactions and voided not in original.source_transactions:
        raise ValueError(f"journal {original.journal_id} is not the journal of {voided}")
    entries = (
        (line.account, line.debit - line.credit, line.description, tuple(line.dimensions.items()))
        for line in original.lines
    )
    postings = _void_totals(void_tx, entries, accounts)
    return _journal(void_tx, postings, journal_id_for(void_tx.transaction_id, prefix="void"))


def void_postings(void_tx: Transaction, original: Postings, accounts: PostingAccounts) -> Postings:
    """The amounts of `void_journal`'s journal, from the amounts of the voided transaction's
    journal (`postings_for`); the caller checks that they are the voided transaction's."""
    if void_tx.voided is None:
        raise ValueError(f"{void_tx.transaction_id} is not a post-void")
    entries = (
        (account, amount if debit else -amount, description, dims)
        for (account, debit, description, dims), amount in original.items()
    )
    return _void_totals(void_tx, entries, accounts)


def points_journal(
    *,
    journal_id: str,
    store_id: str,
    business_day: date,
    currency: str,
    issued: int,
    expired: int,
    loyalty: LoyaltyAccounting,
    accounts: PostingAccounts,
) -> Journal | None:
    """The IFRS 15 journal of points issued and expired (a store's day, say): the revenue
    deferred to the loyalty liability for `issued`, the breakage revenue released for
    `expired`, each at `loyalty.carried_value_in(currency)` a point, rounded half up to minor
    units. A negative count (accruals reversed by returns and post-voids) swaps the sides.
    None when both are zero."""
    if currency not in MINOR_UNITS:
        raise ValueError(f"currency {currency} is not a known ISO 4217 code")
    carried = loyalty.carried_value_in(currency)
    if carried is None:
        raise ValueError(f"currency {currency}: no point value is configured (posting.accounts.loyalty)")
    liability = accounts.tender_account(TenderKind.LOYALTY_POINTS)
    dimensions = {"store": store_id}
    lines: list[JournalLine] = []
    for points, debit, credit, description in (
        (issued, loyalty.deferral_account, liability, "loyalty points issued"),
        (expired, liability, loyalty.breakage_account, "loyalty points expired"),
    ):
        amount = round_to_minor(points * carried, currency)
        if amount < 0:
            amount, debit, credit = -amount, credit, debit
        if amount:
            common = {"currency": currency, "description": description, "dimensions": dimensions}
            lines += [
                JournalLine(account=debit, debit=amount, **common),
                JournalLine(account=credit, credit=amount, **common),
            ]
    if not lines:
        return None
    return Journal(journal_id=journal_id, store_id=store_id, business_day=business_day, lines=tuple(lines))


def _journal(tx: Transaction, postings: Postings, journal_id: str) -> Journal:
    currency = tx.currency
    return Journal(
        journal_id=journal_id,
        store_id=tx.store_id,
        business_day=tx.business_day,
        lines=tuple(_line(key, amount, currency) for key, amount in postings.items()),
        source_transactions=(tx.transaction_id,),
    )


def _void_totals(void_tx: Transaction, original: Iterable[_Entry], accounts: PostingAccounts) -> Postings:
    """A post-void's amounts: the original's entries but tenders and rounding, reversed, and the
    void's own tenders."""
    mirrored = [
        (account, -amount, description, dims)
        for account, amount, description, dims in original
        if description != "rounding" and all(name != "tender" for name, _ in dims)
    ]
    postings = _totals(void_tx, [*mirrored, *_tender_postings(void_tx, accounts)], accounts)
    if not postings:
        raise PoisonEventError(f"post-void {void_tx.transaction_id} reverses nothing")
    return postings


def _totals(tx: Transaction, entries: Iterable[_Entry], accounts: PostingAccounts) -> Postings:
    """`entries` with equal account, side and dimensions summed, zeros dropped, and what is left
    within a few minor units on the rounding account."""
    store, register = tx.store_id, tx.register_id
    totals: Postings = {}
    leftover = ZERO
    for account, amount, description, dims in entries:
        if amount:
            debit = amount > 0
            key = (account, debit, description, _dimensions(store, register, dims))
            totals[key] = totals.get(key, ZERO) + (amount if debit else -amount)
            leftover += amount
    if leftover:
        _check_leftover(tx, totals, leftover)  # within a few minor units: the rounding account takes it
        key = (accounts.rounding, leftover < 0, "rounding", _dimensions(store, register, ()))
        totals[key] = totals.get(key, ZERO) + abs(leftover)
    return totals


@lru_cache(maxsize=4096)
def _dimensions(store: str, register: str, extra: Dimensions) -> Dimensions:
    """A line's dimensions: the store and register, and `extra` (which may override them)."""
    return tuple(sorted({"store": store, "register": register, **dict(extra)}.items()))


def _postings(
    tx: Transaction, accounts: PostingAccounts, costs: Mapping[str, Decimal] | None
) -> Iterator[_Entry]:
    """Every amount of `tx` as (account, signed amount: positive debits, description, dimensions)."""
    revenue, default, returns = accounts.revenue, accounts.revenue_default, accounts.returns
    for line, amount in zip(tx.lines, line_revenues(tx), strict=True):
        dept = line.department
        account = revenue.get(dept, default) if dept else default
        if returns is not None and line.action is _RETURNED:
            account = returns
        if dept:
            yield account, -amount, f"revenue {dept}", (("department", dept),)
        else:
            yield account, -amount, "revenue", ()
    tax_payable, tax_default = accounts.tax_payable, accounts.tax_payable_default
    for tax in tx.taxes:
        code = tax.code
        yield tax_payable.get(code, tax_default), -tax.amount, f"tax {code}", (("tax_code", code),)
    yield from _tender_postings(tx, accounts)
    if costs:
        yield from _cost_postings(tx, accounts, costs)


def _tender_postings(tx: Transaction, accounts: PostingAccounts) -> Iterator[_Entry]:
    loyalty = accounts.loyalty
    for tender in tx.tenders:
        kind = tender.kind
        amount = tender.amount - tender.change
        description, dims = _TENDER_DESCRIPTION[kind], _TENDER_DIMENSIONS[kind]
        if loyalty is not None and kind is _POINTS:
            carried = (amount * loyalty.carried_share).quantize(minor_unit(tx.currency), ROUND_HALF_UP)
            yield accounts.tender_account(kind), carried, description, dims  # the liability released
            yield loyalty.deferral_account, amount - carried, description, dims  # beyond what it carried
        else:
            yield accounts.tender_account(kind), amount, description, dims


def _cost_postings(
    tx: Transaction, accounts: PostingAccounts, costs: Mapping[str, Decimal]
) -> Iterator[_Entry]:
    """Cost of goods sold of the stock lines with a known unit cost; a returned line only when
    it goes back on the shelf."""
    currency = tx.currency
    for line in tx.lines:
        returned = line.action is _RETURNED
        if line.item_type is not _STOCK or (returned and not line.restock):
            continue
        unit_cost = costs.get(line.sku)
        if unit_cost is None:
            continue
        cost = round_to_minor(line.quantity * unit_cost, currency)
        if returned:
            cost = -cost
        dims: Dimensions = (("department", line.department),) if line.department else ()
        yield accounts.cogs, cost, "cogs", dims
        yield accounts.inventory, -cost, "cogs", dims


def line_revenues(tx: Transaction) -> list[Decimal]:
    """Each line's revenue, signed like its net amount: net of its share of the basket modifiers
    and of the inclusive tax on it, in the currency's minor units."""
    lines = tx.lines
    nets = []
    for line in lines:  # LineItem.net_amount, inline: this runs for every line of every transaction
        net = line.extended_amount
        for modifier in line.modifiers:
            net -= modifier.amount
        nets.append(-net if line.action is _RETURNED else net)
    quantum = minor_unit(tx.currency)
    off = sum((m.amount for m in tx.modifiers), ZERO) if tx.modifiers else ZERO
    if off:
        signed = -off if tx.kind is _RETURN else off  # a return's basket discount refunds less
        weights = [max(n if signed > 0 else -n, ZERO) for n in nets]  # the lines going the basket's way
        if not any(weights):
            weights = [abs(n) for n in nets]
        total = sum(weights, ZERO)
        estimates = [signed * w / total for w in weights] if total else [ZERO] * len(nets)
        nets = [n - s for n, s in zip(nets, _allocate(signed, estimates, quantum), strict=True)]
    for tax in tx.taxes:
        if not tax.inclusive or not tax.amount:
            continue
        code, rate = tax.code, tax.rate
        carriers = [i for i, line in enumerate(lines) if code in line.tax_codes] or list(range(len(nets)))
        gross = 1 + rate
        estimates = [nets[i] * rate / gross for i in carriers]
        for i, share in zip(carriers, _allocate(tax.amount, estimates, quantum), strict=True):
            nets[i] -= share
    return nets


def _allocate(amount: Decimal, estimates: Sequence[Decimal], quantum: Decimal) -> list[Decimal]:
    """`amount` in parts close to `estimates`, rounded to `quantum`; the last part with an
    estimate (or the very last, when none has one) takes the remainder, so the parts add up."""
    last = len(estimates) - 1
    while last and not estimates[last]:
        last -= 1
    if not estimates[last]:
        last = len(estimates) - 1
    parts = [e.quantize(quantum, ROUND_HALF_UP) for e in estimates]
    parts[last] = ZERO  # out of the sum: it takes the remainder
    parts[last] = amount - sum(parts, ZERO)
    return parts


def _line(key: PostingKey, amount: Decimal, currency: str) -> JournalLine:
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


def _check_leftover(tx: Transaction, postings: Postings, leftover: Decimal) -> None:
    """Refuse `leftover` (debits less credits) as a poison event when beyond a few minor units."""
    if abs(leftover) > MAX_ROUNDING_UNITS * minor_unit(tx.currency):
        debits = sum((amount for (_, debit, _, _), amount in postings.items() if debit), ZERO)
        credits = sum((amount for (_, debit, _, _), amount in postings.items() if not debit), ZERO)
        raise PoisonEventError(
            f"journal of {tx.transaction_id} does not balance: debits {debits} {tx.currency},"
            f" credits {credits} {tx.currency}, difference {leftover} (at most"
            f" {MAX_ROUNDING_UNITS} minor units go to rounding)"
        )


# --- the flow ---------------------------------------------------------------------------------

FLOW: Final = "posting"


def post_transactions(
    events: Sequence[LoggedEvent],
    *,
    erp: ErpSystem,
    transactions: TransactionStore,
    accounts: PostingAccounts,
    costs: Mapping[str, Decimal] | None = None,
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
        journal = (
            journal_for(tx, accounts, costs=costs)
            if tx.voided is None
            else _reversal(tx, transactions, accounts, costs=costs)
        )
        if journal is not None:
            journals.append(journal)
    if not journals:
        return 0
    answers = erp.post_journals(journals, idempotency_keys=[j.journal_id for j in journals])
    for answer in answers:
        if isinstance(answer, DownstreamRejectedError):
            raise answer
    return len(journals)


def _reversal(
    void: Transaction,
    transactions: TransactionStore,
    accounts: PostingAccounts,
    *,
    costs: Mapping[str, Decimal] | None = None,
) -> Journal | None:
    assert void.voided is not None
    target = void.voided.transaction_id
    stored = transactions.get_transaction(target)
    if stored is None:  # retried: the voided sale may still be on its way from the store
        raise FlowError(f"post-void {void.transaction_id}: the voided transaction {target} has not arrived")
    original = journal_for(
        Transaction.model_validate_json(stored.data, context=TRUSTED_CONTEXT), accounts, costs=costs
    )
    return None if original is None else void_journal(void, original, accounts)
