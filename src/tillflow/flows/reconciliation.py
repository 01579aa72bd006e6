"""Three-way reconciliation of a store-day, pure part: the tills' Z report, the transactions the
hub accepted and the ERP's trial balance, compared figure by figure.

- registers: per register, the Z report's transaction count and last sequence against the hub's;
  the sequences the Z report implies (last − count + 1 … last) that the hub lacks are `missing`,
  hub transactions outside them (or of a register the Z report does not list) are `unknown`.
  Both are named by transaction id (``S001:R01:2026-11-29:00000042``).
- tenders: per register and per tender kind, the Z total against the hub's (amount less change,
  signed as in the transaction; post-voids included); `tenders` holds the store-day's totals.
- tax codes: the tax the hub's transactions carry per code (signed as in the transaction: a
  return's and a post-void's tax is negative), with the account it is posted to.
- accounts: per account and currency, the net (debits − credits) of the journals the posting flow
  makes for the hub's transactions against the ERP's trial balance. Several tender kinds or tax
  codes may share an account (gift card and store credit, every tax code on the default), so the
  ERP is compared per account, never per tender kind or tax code; each row's label says what
  posts there.

Differences are hub − Z (tenders, counts) and ERP − hub (accounts). The store-day is matched
when nothing differs: a Z report and a trial balance are both present, every register, tender
and account agrees to the minor unit, no sequence is missing and the caller has no posting notes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import islice
from typing import Any, Literal

from tillflow.errors import FlowError
from tillflow.flows.posting import PostingAccounts, journal_for, void_journal
from tillflow.model import MINOR_UNITS, DayClose, Journal, TenderKind, Transaction, minor_unit, transaction_id
from tillflow.ports import TrialBalanceLine

ZERO = Decimal(0)
MAX_IDS_IN_TEXT = 10  # a difference text names at most this many transaction ids
MAX_MISSING_LISTED = 1000  # a register lists at most this many missing ids (all are counted)
_TENDER_ORDER = {kind.value: i for i, kind in enumerate(TenderKind)}

Status = Literal["matched", "mismatched"]


@dataclass(frozen=True, slots=True)
class TenderComparison:
    """One tender kind: the Z total against the hub's (difference = hub − Z; None without a Z)."""

    kind: str
    account: str  # where the posting flow posts it; the ERP is compared per account
    z: Decimal | None
    hub: Decimal
    difference: Decimal | None
    register_id: str | None = None  # None: the store-day's total over every register


@dataclass(frozen=True, slots=True)
class RegisterComparison:
    """One register: the Z report's count and last sequence against the hub's, the sequences the
    hub lacks (`missing`) and the hub transactions the Z report does not know (`unknown`)."""

    register_id: str
    on_z_report: bool
    z_count: int | None  # None without a Z report
    hub_count: int
    z_last_sequence: int | None
    hub_last_sequence: int | None
    missing: tuple[str, ...]  # the first MAX_MISSING_LISTED
    missing_count: int
    unknown: tuple[str, ...]
    tenders: tuple[TenderComparison, ...]


@dataclass(frozen=True, slots=True)
class TaxComparison:
    """The tax of one code in the hub's transactions (sales positive) and its account."""

    code: str
    account: str
    hub: Decimal


@dataclass(frozen=True, slots=True)
class AccountComparison:
    """One account and currency: the hub's expected net against the ERP's (difference = ERP − hub;
    None when the ERP could not be asked). `label` names what posts there."""

    account: str
    currency: str
    label: str
    hub: Decimal
    erp: Decimal | None
    difference: Decimal | None

    @property
    def matched(self) -> bool:
        return self.difference == ZERO


@dataclass(frozen=True, slots=True)
class StoreDayReconciliation:
    """A store-day's three-way comparison; `differences` is empty iff `status` is matched."""

    store_id: str
    business_day: date
    currency: str | None
    status: Status
    z_report: bool  # a Z report was given
    trial_balance: bool  # the ERP's trial balance was read
    transaction_count: int  # hub transactions of the store-day
    registers: tuple[RegisterComparison, ...]
    tenders: tuple[TenderComparison, ...]
    taxes: tuple[TaxComparison, ...]
    accounts: tuple[AccountComparison, ...]
    notes: tuple[str, ...]  # the caller's posting notes
    differences: tuple[str, ...]

    @property
    def matched(self) -> bool:
        return self.status == "matched"


def reconcile_store_day(
    *,
    store_id: str,
    business_day: date,
    day_close: DayClose | None,
    transactions: Sequence[Transaction],
    originals: Mapping[str, Transaction],
    trial_balance: Sequence[TrialBalanceLine] | None,
    accounts: PostingAccounts,
    costs: Mapping[str, Decimal] | None = None,
    posting_notes: Sequence[str] = (),
    extra_journals: Sequence[Journal] = (),
) -> StoreDayReconciliation:
    """Compare the Z report, the hub's transactions (with `originals`: voided transaction id ->
    sale, for the post-voids' journals) and the ERP's trial balance of one store-day.

    `costs` (sku -> unit cost) is passed to `journal_for`, as the posting flow does;
    `posting_notes` are the caller's findings (postings pending, journals rejected): each is
    listed and makes the day mismatched; `extra_journals` are journals the hub posts for the
    store-day beside the transactions' own (the loyalty points journal), in the expected ledger."""
    differences: list[str] = []
    txs = _of_the_day(store_id, business_day, transactions, differences)
    currency = _currency(day_close, txs, trial_balance)
    if day_close is None:
        differences.append("no Z report for the store-day: registers and tenders are not compared")
    else:
        if (day_close.store_id, day_close.business_day) != (store_id, business_day):
            differences.append(
                f"the Z report is of {day_close.store_id} {day_close.business_day.isoformat()},"
                f" not of {store_id} {business_day.isoformat()}"
            )
        for tx in txs:
            if tx.currency != day_close.currency:
                differences.append(
                    f"{tx.transaction_id} is in {tx.currency}, the Z report in {day_close.currency}"
                )
    registers = _registers(store_id, business_day, day_close, txs, accounts, currency, differences)
    tenders = _store_tenders(registers, accounts, day_close is not None)
    journals = [*_journals(txs, originals, accounts, costs, differences), *extra_journals]
    account_rows = _accounts(journals, trial_balance, accounts, differences)
    if trial_balance is None:
        differences.append("the ERP's trial balance could not be read: accounts are not compared")
    differences.extend(f"posting: {note}" for note in posting_notes)
    return StoreDayReconciliation(
        store_id=store_id,
        business_day=business_day,
        currency=currency,
        status="mismatched" if differences else "matched",
        z_report=day_close is not None,
        trial_balance=trial_balance is not None,
        transaction_count=len(txs),
        registers=registers,
        tenders=tenders,
        taxes=_taxes(txs, accounts),
        accounts=account_rows,
        notes=tuple(posting_notes),
        differences=tuple(differences),
    )


def format_amount(amount: Decimal, currency: str | None) -> str:
    """`amount` in the currency's minor units when that loses nothing (``12.30``), never ``-0``."""
    if not amount:
        amount = ZERO
    if currency in MINOR_UNITS:
        quantum = minor_unit(currency)
        if amount == amount.quantize(quantum):
            return str(amount.quantize(quantum))
    return str(amount)


def as_dict(rec: StoreDayReconciliation) -> dict[str, Any]:
    """The reconciliation as JSON-ready values: amounts as decimal strings, the day in ISO 8601."""

    def money(amount: Decimal | None, currency: str | None = rec.currency) -> str | None:
        return None if amount is None else format_amount(amount, currency)

    def tender(t: TenderComparison) -> dict[str, Any]:
        return {
            "kind": t.kind,
            "register_id": t.register_id,
            "account": t.account,
            "z": money(t.z),
            "hub": money(t.hub),
            "difference": money(t.difference),
        }

    return {
        "store_id": rec.store_id,
        "business_day": rec.business_day.isoformat(),
        "currency": rec.currency,
        "status": rec.status,
        "z_report": rec.z_report,
        "trial_balance": rec.trial_balance,
        "transaction_count": rec.transaction_count,
        "registers": [
            {
                "register_id": r.register_id,
                "on_z_report": r.on_z_report,
                "z_count": r.z_count,
                "hub_count": r.hub_count,
                "z_last_sequence": r.z_last_sequence,
                "hub_last_sequence": r.hub_last_sequence,
                "missing": list(r.missing),
                "missing_count": r.missing_count,
                "unknown": list(r.unknown),
                "tenders": [tender(t) for t in r.tenders],
            }
            for r in rec.registers
        ],
        "tenders": [tender(t) for t in rec.tenders],
        "taxes": [{"code": t.code, "account": t.account, "hub": money(t.hub)} for t in rec.taxes],
        "accounts": [
            {
                "account": a.account,
                "currency": a.currency,
                "label": a.label,
                "hub": money(a.hub, a.currency),
                "erp": money(a.erp, a.currency),
                "difference": money(a.difference, a.currency),
            }
            for a in rec.accounts
        ],
        "notes": list(rec.notes),
        "differences": list(rec.differences),
    }


# --- the sections -------------------------------------------------------------------------------


def _of_the_day(
    store_id: str, business_day: date, transactions: Sequence[Transaction], differences: list[str]
) -> list[Transaction]:
    """The store-day's transactions, each once; others are named and left out."""
    seen: dict[str, Transaction] = {}
    for tx in transactions:
        tid = tx.transaction_id
        if tx.store_id != store_id or tx.business_day != business_day:
            differences.append(f"{tid} is not of {store_id} {business_day.isoformat()}: left out")
        elif tid not in seen:
            seen[tid] = tx
        elif seen[tid] != tx:
            differences.append(f"{tid} was given twice with different content: the first is compared")
    return list(seen.values())


def _currency(
    day_close: DayClose | None, txs: Sequence[Transaction], trial_balance: Sequence[TrialBalanceLine] | None
) -> str | None:
    if day_close is not None:
        return day_close.currency
    found = Counter(tx.currency for tx in txs) or Counter(line.currency for line in trial_balance or ())
    return found.most_common(1)[0][0] if found else None


def _registers(
    store_id: str,
    business_day: date,
    day_close: DayClose | None,
    txs: Sequence[Transaction],
    accounts: PostingAccounts,
    currency: str | None,
    differences: list[str],
) -> tuple[RegisterComparison, ...]:
    hub: dict[str, dict[int, Transaction]] = defaultdict(dict)
    for tx in txs:
        hub[tx.register_id][tx.sequence] = tx
    closes = {r.register_id: r for r in day_close.registers} if day_close is not None else {}
    rows = []
    for register_id in sorted(closes.keys() | hub.keys()):
        seqs = hub.get(register_id, {})
        close = closes.get(register_id)

        def ids(sequences: Iterable[int], register: str = register_id) -> tuple[str, ...]:
            return tuple(transaction_id(store_id, register, business_day, s) for s in sorted(sequences))

        hub_tenders = _tender_totals(seqs.values())
        if close is not None:
            first = close.last_sequence - close.transaction_count + 1
            if first < 0:
                differences.append(
                    f"register {register_id}: the Z report counts {close.transaction_count} transactions"
                    f" up to sequence {close.last_sequence}, more than the sequences allow"
                )
            expected = close.expected_sequences()
            inside = sum(1 for s in seqs if s in expected)
            gaps = (s for s in expected if s not in seqs)  # lazy: a Z report may claim millions
            z_tenders: dict[str, Decimal] | None = {k.value: v for k, v in close.totals_by_tender.items()}
            row = RegisterComparison(
                register_id=register_id,
                on_z_report=True,
                z_count=close.transaction_count,
                hub_count=len(seqs),
                z_last_sequence=close.last_sequence,
                hub_last_sequence=max(seqs, default=None),
                missing=ids(islice(gaps, MAX_MISSING_LISTED)),
                missing_count=len(expected) - inside,
                unknown=ids(s for s in seqs if s not in expected),
                tenders=_compare_tenders(z_tenders, hub_tenders, accounts, register_id),
            )
        else:
            no_z = day_close is None
            row = RegisterComparison(
                register_id=register_id,
                on_z_report=False,
                z_count=None if no_z else 0,
                hub_count=len(seqs),
                z_last_sequence=None,
                hub_last_sequence=max(seqs, default=None),
                missing=(),
                missing_count=0,
                unknown=() if no_z else ids(seqs),
                tenders=_compare_tenders(None if no_z else {}, hub_tenders, accounts, register_id),
            )
        rows.append(row)
        if day_close is not None:
            differences.extend(_register_differences(row, currency))
    return tuple(rows)


def _register_differences(row: RegisterComparison, currency: str | None) -> Iterable[str]:
    name = f"register {row.register_id}"
    if not row.on_z_report:
        yield f"{name} is not on the Z report; the hub has {row.hub_count} transactions of it"
    if row.on_z_report and row.z_count != row.hub_count:
        diff = row.hub_count - (row.z_count or 0)
        yield (
            f"{name}: Z report counts {row.z_count} transactions, hub has {row.hub_count} (hub − Z {diff:+d})"
        )
    if row.on_z_report and row.z_last_sequence != row.hub_last_sequence:
        hub_last = "none" if row.hub_last_sequence is None else str(row.hub_last_sequence)
        yield f"{name}: Z report's last sequence is {row.z_last_sequence}, hub's is {hub_last}"
    if row.missing_count:
        missing = _some(row.missing, row.missing_count)
        yield f"{name}: {_count(row.missing_count)} missing at the hub: {missing}"
    if row.unknown and row.on_z_report:
        unknown = _count(row.unknown, "hub transaction")
        yield f"{name}: {unknown} the Z report does not know: {_some(row.unknown, len(row.unknown))}"
    for t in row.tenders:
        if t.difference:
            yield (
                f"{name} tender {t.kind}: Z {_money(t.z, currency)}, hub {_money(t.hub, currency)}"
                f" (hub − Z {_money(t.difference, currency, sign=True)})"
            )


def _tender_totals(txs: Iterable[Transaction]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for tx in txs:
        for tender in tx.tenders:
            totals[tender.kind.value] += tender.amount - tender.change
    return totals


def _compare_tenders(
    z: Mapping[str, Decimal] | None,
    hub: Mapping[str, Decimal],
    accounts: PostingAccounts,
    register_id: str | None,
) -> tuple[TenderComparison, ...]:
    rows = []
    for kind in sorted((z or {}).keys() | hub.keys(), key=lambda k: _TENDER_ORDER.get(k, len(_TENDER_ORDER))):
        hub_total = hub.get(kind, ZERO)
        z_total = None if z is None else z.get(kind, ZERO)
        rows.append(
            TenderComparison(
                kind=kind,
                account=accounts.tender_account(TenderKind(kind)),
                z=z_total,
                hub=hub_total,
                difference=None if z_total is None else hub_total - z_total,
                register_id=register_id,
            )
        )
    return tuple(rows)


def _store_tenders(
    registers: Sequence[RegisterComparison], accounts: PostingAccounts, z_present: bool
) -> tuple[TenderComparison, ...]:
    z: dict[str, Decimal] = defaultdict(Decimal)
    hub: dict[str, Decimal] = defaultdict(Decimal)
    for register in registers:
        for t in register.tenders:
            hub[t.kind] += t.hub
            z[t.kind] += t.z or ZERO
    return _compare_tenders(z if z_present else None, hub, accounts, None)


def _taxes(txs: Iterable[Transaction], accounts: PostingAccounts) -> tuple[TaxComparison, ...]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for tx in txs:
        for tax in tx.taxes:
            totals[tax.code] += tax.amount
    return tuple(
        TaxComparison(code, accounts.tax_payable.get(code, accounts.tax_payable_default), total)
        for code, total in sorted(totals.items())
    )


def _journals(
    txs: Sequence[Transaction],
    originals: Mapping[str, Transaction],
    accounts: PostingAccounts,
    costs: Mapping[str, Decimal] | None,
    differences: list[str],
) -> list[Journal]:
    """The journals the posting flow makes for `txs` (a post-void's from its voided sale's)."""
    by_id = {tx.transaction_id: tx for tx in txs}
    journals = []
    for tx in txs:
        try:
            if tx.voided is None:
                journal = journal_for(tx, accounts, costs=costs)
            else:
                voided = tx.voided.transaction_id
                original = originals.get(voided) or by_id.get(voided)
                if original is None:
                    differences.append(
                        f"post-void {tx.transaction_id}: the voided transaction {voided} was not found,"
                        " so its reversal is not in the hub's expected ledger"
                    )
                    continue
                sale = journal_for(original, accounts, costs=costs)
                journal = None if sale is None else void_journal(tx, sale, accounts)
        except (FlowError, ValueError) as exc:
            differences.append(f"{tx.transaction_id}: its journal cannot be made: {exc}")
            continue
        if journal is not None:
            journals.append(journal)
    return journals


def _accounts(
    journals: Sequence[Journal],
    trial_balance: Sequence[TrialBalanceLine] | None,
    accounts: PostingAccounts,
    differences: list[str],
) -> tuple[AccountComparison, ...]:
    hub: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    labels: dict[str, set[str]] = defaultdict(set)
    for journal in journals:
        for line in journal.lines:
            hub[line.account, line.currency] += line.debit - line.credit
            labels[line.account].add(line.description or "(no description)")
    erp: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for tb in trial_balance or ():
        erp[tb.account, tb.currency] += tb.debit - tb.credit
    for kind in TenderKind:  # every kind sharing an account is named, posted today or not
        account = accounts.tender_account(kind)
        if account in labels or any(a == account for a, _ in erp):
            labels[account].add(f"tender {kind.value}")
    rows = []
    for account, currency in sorted(hub.keys() | erp.keys()):
        names = labels.get(account, set())
        if "cogs" in names and account in (accounts.cogs, accounts.inventory):  # both sides say "cogs"
            names = names - {"cogs"} | {"cost of goods sold" if account == accounts.cogs else "inventory"}
        label = ", ".join(sorted(names)) or _config_label(account, accounts)
        expected = hub.get((account, currency), ZERO)
        posted = None if trial_balance is None else erp.get((account, currency), ZERO)
        row = AccountComparison(
            account=account,
            currency=currency,
            label=label,
            hub=expected,
            erp=posted,
            difference=None if posted is None else posted - expected,
        )
        rows.append(row)
        if row.difference:
            diff = _money(row.difference, currency, sign=True)
            differences.append(
                f"account {account} ({label}) {currency}: hub expects {_money(expected, currency)},"
                f" ERP has {_money(posted, currency)} (ERP − hub {diff})"
            )
    return tuple(rows)


def _config_label(account: str, accounts: PostingAccounts) -> str:
    """What the posting accounts send to `account`, for an account only the ERP shows."""
    names = [f"revenue {dept}" for dept, a in accounts.revenue.items() if a == account]
    names += [f"tax {code}" for code, a in accounts.tax_payable.items() if a == account]
    if account == accounts.revenue_default:
        names.append("revenue (other departments)")
    if account == accounts.tax_payable_default:
        names.append("tax (other codes)")
    if account == accounts.rounding:
        names.append("rounding")
    if account == accounts.returns:
        names.append("returns")
    if account == accounts.cogs:
        names.append("cost of goods sold")
    if account == accounts.inventory:
        names.append("inventory")
    if accounts.loyalty is not None and account == accounts.loyalty.deferral_account:
        names.append("loyalty points deferred revenue")
    if accounts.loyalty is not None and account == accounts.loyalty.breakage_account:
        names.append("loyalty points breakage")
    return ", ".join(names) or "not posted by tillflow"


def _money(amount: Decimal | None, currency: str | None, *, sign: bool = False) -> str:
    if amount is None:
        return "none"
    text = format_amount(amount, currency)
    return f"+{text}" if sign and amount > 0 else text


def _count(ids: Sequence[str] | int, noun: str = "transaction") -> str:
    n = ids if isinstance(ids, int) else len(ids)
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _some(ids: Sequence[str], total: int) -> str:
    shown = ", ".join(ids[:MAX_IDS_IN_TEXT])
    return shown if total <= MAX_IDS_IN_TEXT else f"{shown} and {total - MAX_IDS_IN_TEXT} more"
