"""Real data posted through the reference ERP (its own process) under both posting policies: the
NCR POSLog file and the UCI Online Retail samples, parsed as `tillflow import` parses them, give
in the ERP, store-day by store-day, a trial balance equal to what the file itself says, to the cent.

What the file says is read here with `xml.etree` and `csv`, never with the parsers nor with the
journal builder (`journal_for`): per store-day, the tenders (net of change, per tender account),
the tax and what the customers paid (grand totals). The ERP's books must show

- on each tender clearing account: debits less credits = the file's tenders of that account;
- on the tax payable account(s): credits less debits = the file's tax;
- on the revenue accounts: credits less debits = what was paid less the tax;
- nothing on any other account (no rounding), and debits = credits per currency;

and the same figures again from the parsed canonical transactions' amounts (tenders less change,
tax lines). The `line` and the `aggregated` ERP books are equal, store-day by store-day.

The samples, as they are (see each folder's SOURCE.txt):

- NCR ACS 2.1 `POSLog.xml`: store "9" (configured as S009, USD), one business day, 42 retail
  transactions on six registers and 9 control transactions (sign-on/off, no-sale) that are
  never posted; register 34's sign-off and sign-on (103, 104) sit between its sales.
- UCI Online Retail, `online_retail_dedup_sample_4792rows.csv`: the web shop (ONLINE, GBP),
  2,093 invoices over 285 business days, NOT a contiguous slice of the original: invoice
  numbers have holes. The file's rules: an invoice starting with C is a cancellation (negative
  quantities: it pays back); "B Adjust bad debt" (invoice A563185) is an accounting entry, not a
  sale; a row that is not on whole pence (PADS at 0.001) cannot be posted to the cent; an
  invoice of only negative quantities priced 0 is a stock adjustment that moves no money.
  Prices include VAT without a breakdown: no tax.
- `online_retail_first_100rows.csv`: the first 98 rows of the original, 14 invoices of one day
  numbered without a hole (Online Retail II column names).

The Z report of each store-day is the one `tillflow.sim.pos.z_reports` prints from the
transactions (count and last sequence per register, tender totals). The three-way
reconciliation must find every tender and account in agreement and no posting left over; its
register comparison flags exactly the sequences a till's count cannot account for (the holes
between a store-day's posted sequences), and a store-day without such a hole is matched.

The UCI sample holds 155 invoices of goods priced 0: sales that move no money. The posting flow
posts no journal for them, and the reconciliation counts them as having nothing to post.
"""

from __future__ import annotations

import csv
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.test_downstream_faults import Hub, erp_connector
from tests.integration.test_sim_erp import start as start_erp
from tests.shared_data import sample
from tillflow.config import TillflowConfig
from tillflow.flows.reconciliation import StoreDayReconciliation
from tillflow.formats.detect import parse_input
from tillflow.formats.policy import PolicyMaps
from tillflow.formats.records import Imported, Parsed, Quarantined, Recorded
from tillflow.model import Store, TenderKind, Transaction, transaction_id
from tillflow.model.money import minor_unit
from tillflow.ports import CloseState, DayCloseRecord, TrialBalanceLine
from tillflow.reconciling import PostingState, reconcile
from tillflow.sim.pos import z_reports

ARTS = "{http://www.nrf-arts.org/IXRetail/namespace/}"
NCR_POSLOG = sample("poslog", "ncr-acs-2.1", "POSLog.xml")
ONLINE_RETAIL = sample("online-retail", "online_retail_dedup_sample_4792rows.csv")
ONLINE_RETAIL_FIRST_100 = sample("online-retail", "online_retail_first_100rows.csv")

# the stores of the samples, as a retailer configures them (the parsers need them: currency, zone)
CONFIG = TillflowConfig(
    stores=[
        Store(store_id="S009", timezone="America/New_York", currency="USD"),
        Store(store_id="ONLINE", timezone="Europe/London", currency="GBP"),
    ],
    policy=PolicyMaps(store_aliases={"9": "S009"}),
)
ACCOUNTS = CONFIG.posting.accounts
REVENUE_ACCOUNTS = frozenset(
    {*ACCOUNTS.revenue.values(), ACCOUNTS.revenue_default, *([ACCOUNTS.returns] if ACCOUNTS.returns else [])}
)
TAX_ACCOUNTS = frozenset({*ACCOUNTS.tax_payable.values(), ACCOUNTS.tax_payable_default})
TENDER_ACCOUNTS = frozenset(ACCOUNTS.tender.values())
# where the retailer's chart sends NCR's tender types (card and cash clearing)
NCR_TENDER_ACCOUNTS = {
    "CreditDebit": ACCOUNTS.tender_account(TenderKind.CARD),
    "Cash": ACCOUNTS.tender_account(TenderKind.CASH),
}
# an end-of-day file carries no payment detail: one card tender per invoice (csv_batch's default)
ONLINE_TENDER_ACCOUNT = ACCOUNTS.tender_account(TenderKind.CARD)
GRACE = 1.0  # seconds a day close waits for the sequences its Z report counts and the hub lacks
ZERO = Decimal(0)

StoreDay = tuple[str, date]
Books = dict[tuple[str, str], Decimal]  # (account, currency) -> debits less credits


# -- what the file says -----------------------------------------------------------------------


@dataclass
class SourceDay:
    """One store-day as its source file states it."""

    currency: str
    transactions: int = 0  # the retail transactions (invoices) that move or may move money
    tenders: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # per account
    tax: Decimal = ZERO
    paid: Decimal = ZERO  # grand totals: what the customers paid, less what they were paid back

    @property
    def tendered(self) -> Decimal:
        return sum(self.tenders.values(), ZERO)


def ncr_source(path: Path) -> dict[StoreDay, SourceDay]:
    """Per store-day of an NCR POSLog file: the retail transactions' TransactionGrandAmount and
    TransactionTaxAmount, and the amounts of their tender line items (a change line is a
    negative tender of its own) by TenderType; voided line items left out."""
    days: dict[StoreDay, SourceDay] = {}
    for tx in ET.parse(path).getroot().iter(ARTS + "Transaction"):
        retail = tx.find(ARTS + "RetailTransaction")
        if retail is None:
            continue  # a control transaction: sign-on/off, no-sale
        key = (
            CONFIG.policy.store_aliases.get(_text(tx, "RetailStoreID"), _text(tx, "RetailStoreID")),
            date.fromisoformat(_text(tx, "BusinessDayDate")),
        )
        day = days.setdefault(key, SourceDay(currency=_text(tx, "CurrencyCode")))
        day.transactions += 1
        totals = {t.get("TotalType"): Decimal(t.text or "") for t in retail.findall(ARTS + "Total")}
        day.paid += totals["TransactionGrandAmount"]
        day.tax += totals["TransactionTaxAmount"]
        for item in retail.findall(ARTS + "LineItem"):
            tender = item.find(ARTS + "Tender")
            if tender is None or item.get("VoidFlag") == "true":
                continue
            day.tenders[NCR_TENDER_ACCOUNTS[tender.get("TenderType", "")]] += Decimal(_text(tender, "Amount"))
    return days


def ncr_control_sequences(path: Path) -> dict[StoreDay, dict[str, set[int]]]:
    """Per store-day and register, the sequence numbers of the file's control transactions."""
    found: dict[StoreDay, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for tx in ET.parse(path).getroot().iter(ARTS + "Transaction"):
        if tx.find(ARTS + "ControlTransaction") is not None:
            store = _text(tx, "RetailStoreID")
            day = date.fromisoformat(_text(tx, "BusinessDayDate"))
            register = found[CONFIG.policy.store_aliases.get(store, store), day][_text(tx, "WorkstationID")]
            register.add(int(_text(tx, "SequenceNumber")))
    return found


def _text(element: ET.Element, tag: str) -> str:
    text = element.findtext(ARTS + tag)
    assert text is not None, f"no {tag} in {element.tag}"
    return text.strip()


@dataclass(frozen=True)
class CsvInvoice:
    number: str
    day: date  # of its latest row (the shop's local time, as written)
    rows: tuple[dict[str, str], ...]
    total: Decimal  # quantity x unit price, summed: negative for a cancellation

    @property
    def bad_debt(self) -> bool:
        return any(row["StockCode"] == "B" for row in self.rows)

    @property
    def sub_penny(self) -> bool:
        return any((Decimal(r["Quantity"]) * self.price(r)) % Decimal("0.01") for r in self.rows)

    @property
    def stock_adjustment(self) -> bool:
        return all(Decimal(r["Quantity"]) < 0 and self.price(r) == 0 for r in self.rows)

    @staticmethod
    def price(row: dict[str, str]) -> Decimal:
        return Decimal(row["UnitPrice"] if "UnitPrice" in row else row["Price"])


def csv_invoices(path: Path) -> list[CsvInvoice]:
    """Every invoice of a UCI Online Retail file (either column naming), read with `csv`."""
    rows: dict[str, list[dict[str, str]]] = {}
    with path.open(newline="", encoding="utf-8-sig") as text:
        for row in csv.DictReader(text):
            rows.setdefault(row["InvoiceNo"] if "InvoiceNo" in row else row["Invoice"], []).append(row)

    def when(row: dict[str, str]) -> datetime:
        for fmt in ("%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M"):
            try:
                return datetime.strptime(row["InvoiceDate"], fmt)
            except ValueError:
                pass
        raise AssertionError(f"unexpected InvoiceDate {row['InvoiceDate']!r}")

    return [
        CsvInvoice(
            number,
            max(when(r) for r in its_rows).date(),
            tuple(its_rows),
            sum((Decimal(r["Quantity"]) * CsvInvoice.price(r) for r in its_rows), ZERO),
        )
        for number, its_rows in rows.items()
    ]


def online_retail_source(path: Path) -> dict[StoreDay, SourceDay]:
    """Per business day of the web shop: the sum of quantity x unit price of its invoices,
    cancellations (C...) included with their negative quantities. Left out, by the file's own
    rules: the bad-debt adjustment (not a sale) and an invoice with a row below the penny
    (no ERP books it to the cent); stock adjustments move no money and are not counted."""
    days: dict[StoreDay, SourceDay] = {}
    for invoice in csv_invoices(path):
        if invoice.bad_debt or invoice.sub_penny or invoice.stock_adjustment:
            continue
        day = days.setdefault(("ONLINE", invoice.day), SourceDay(currency="GBP"))
        day.transactions += 1
        day.paid += invoice.total
        if invoice.total:
            day.tenders[ONLINE_TENDER_ACCOUNT] += invoice.total
    return days


# -- the parsed transactions and their own amounts -------------------------------------------


def parse_file(path: Path) -> list[Parsed]:
    """The records of `path`, detected and parsed as `tillflow import` does with CONFIG."""
    with path.open("rb") as stream:
        _, records = parse_input(
            stream, CONFIG.import_context(), name=path.name, settings=CONFIG.imports.by_format()
        )
        return list(records)


def canonical_days(txs: list[Transaction]) -> dict[StoreDay, SourceDay]:
    """The same figures from the canonical transactions' amounts (tenders less change, tax lines)."""
    days: dict[StoreDay, SourceDay] = {}
    for tx in txs:
        day = days.setdefault((tx.store_id, tx.business_day), SourceDay(currency=tx.currency))
        day.transactions += 1
        day.paid += tx.totals.grand_total
        day.tax += sum((t.amount for t in tx.taxes), ZERO)
        for tender in tx.tenders:
            day.tenders[ACCOUNTS.tender_account(tender.kind)] += tender.amount - tender.change
    return days


# -- posting through the reference ERP ---------------------------------------------------------


@dataclass
class PolicyRun:
    """What one posting policy left: the ERP's trial balance, the day close and the three-way
    reconciliation of every store-day."""

    trial_balances: dict[StoreDay, list[TrialBalanceLine]]
    closes: dict[StoreDay, DayCloseRecord]
    reconciled: dict[StoreDay, tuple[StoreDayReconciliation, PostingState]]
    dead_letters: int
    journals_posted: int


@dataclass
class Posted:
    name: str
    records: list[Parsed]
    txs: list[Transaction]
    source: dict[StoreDay, SourceDay]
    runs: dict[str, PolicyRun]


def wait_for_closes(hub: Hub, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while hub.services.store_days.list_day_closes(state=CloseState.WAITING):
        if time.monotonic() > deadline:
            waiting = hub.services.store_days.list_day_closes(state=CloseState.WAITING)
            raise AssertionError(f"{len(waiting)} day closes still waiting, first {waiting[0]}")
        time.sleep(0.2)


def post_with_policy(tmp: Path, policy: str, txs: list[Transaction]) -> PolicyRun:
    """Accept `txs` into a fresh hub posting to a fresh reference ERP under `policy`; send each
    store-day's Z report; return once every day close is settled and the flow has caught up."""
    (tmp / policy).mkdir()
    erp = start_erp(tmp / policy)
    try:
        hub = Hub(
            tmp / policy,
            {"erp": erp_connector(erp)},
            stores=CONFIG.stores,
            policy=CONFIG.policy,
            posting={"default": {"policy": policy}, "day_close_grace": GRACE},
        )
        try:
            for start in range(0, len(txs), 500):  # the importer's batches
                hub.accept(txs[start : start + 500])
            hub.run("posting")
            hub.settled("posting", timeout=300)
            for report in z_reports(txs, closed_at=datetime.now(UTC)):
                hub.services.store_days.record_day_close(
                    report, received_at=datetime.now(UTC), grace=timedelta(seconds=GRACE)
                )
            wait_for_closes(hub, timeout=300)
            hub.settled("posting", timeout=300)
            erp_system = hub.services.erp()
            assert erp_system is not None
            days = sorted({(tx.store_id, tx.business_day) for tx in txs})
            closes = {}
            for store, day in days:
                found = hub.services.store_days.find_day_close(store, day)
                assert found is not None
                closes[store, day] = found
            reconciled = {}
            for store, day in days:
                [result] = reconcile(hub.services, day, store)
                reconciled[store, day] = result
            return PolicyRun(
                trial_balances={d: erp_system.trial_balance(*d) for d in days},
                closes=closes,
                reconciled=reconciled,
                dead_letters=hub.services.event_log.read_groups()["posting"].dead_letters,
                journals_posted=erp.state()["journals_posted"],
            )
        finally:
            hub.close()
    finally:
        erp.stop()


SOURCES: dict[str, tuple[Path, Callable[[Path], dict[StoreDay, SourceDay]]]] = {
    "ncr-poslog": (NCR_POSLOG, ncr_source),
    "online-retail-sample": (ONLINE_RETAIL, online_retail_source),
    "online-retail-first-100": (ONLINE_RETAIL_FIRST_100, online_retail_source),
}
# (transactions, store-days) of each sample
EXPECTED_COUNTS = {
    "ncr-poslog": (42, 1),
    "online-retail-sample": (1629, 285),
    "online-retail-first-100": (14, 1),
}


@pytest.fixture(scope="module", params=list(SOURCES))
def posted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Posted]:
    """A sample file parsed, then posted under each policy (its own hub and ERP each)."""
    name: str = request.param
    path, read_source = SOURCES[name]
    records = parse_file(path)
    txs = [r.transaction for r in records if isinstance(r, Imported)]
    tmp = tmp_path_factory.mktemp(name)
    runs = {policy: post_with_policy(tmp, policy, txs) for policy in ("line", "aggregated")}
    yield Posted(name, records, txs, read_source(path), runs)


# -- reading the books -----------------------------------------------------------------------


def books(lines: list[TrialBalanceLine]) -> Books:
    return {(b.account, b.currency): b.debit - b.credit for b in lines if b.debit - b.credit}


def net_debit(lines: list[TrialBalanceLine], accounts: frozenset[str] | set[str], currency: str) -> Decimal:
    return sum((b.debit - b.credit for b in lines if b.account in accounts and b.currency == currency), ZERO)


def holes(txs: list[Transaction]) -> dict[StoreDay, dict[str, tuple[set[str], set[str]]]]:
    """Per store-day and register, what the Z report of `z_reports` (count, last sequence)
    cannot account for: the sequences it implies that the hub lacks (missing) and the hub's
    sequences below them (unknown)."""
    sequences: dict[StoreDay, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for tx in txs:
        sequences[tx.store_id, tx.business_day][tx.register_id].add(tx.sequence)
    found: dict[StoreDay, dict[str, tuple[set[str], set[str]]]] = {}
    for (store, day), registers in sequences.items():
        found[store, day] = {}
        for register, seqs in registers.items():
            first = max(seqs) - len(seqs) + 1
            missing = {transaction_id(store, register, day, s) for s in range(first, max(seqs) + 1)} - {
                transaction_id(store, register, day, s) for s in seqs
            }
            unknown = {transaction_id(store, register, day, s) for s in seqs if s < first}
            found[store, day][register] = (missing, unknown)
    return found


# -- the stories -------------------------------------------------------------------------------


class TestTheSourceFiles:
    """The parsers take every transaction the file's own rules make a sale or a return, and
    refuse or set aside exactly the rest; their amounts already equal the file's."""

    def test_every_retail_transaction_of_the_file_is_a_canonical_transaction(self, posted: Posted) -> None:
        counts = Counter((tx.store_id, tx.business_day) for tx in posted.txs)
        assert counts == {day: s.transactions for day, s in posted.source.items()}
        assert (len(posted.txs), len(counts)) == EXPECTED_COUNTS[posted.name]

    def test_what_the_parsers_set_aside_is_what_the_file_rules_out(self, posted: Posted) -> None:
        if posted.name == "ncr-poslog":
            assert all(isinstance(r, Imported | Recorded) for r in posted.records)
            recorded = {r.source.locator for r in posted.records if isinstance(r, Recorded)}
            controls = ncr_control_sequences(NCR_POSLOG)
            assert recorded == {
                f"store 9 register {register} sequence {seq}"
                for registers in controls.values()
                for register, seqs in registers.items()
                for seq in seqs
            }
            return
        path = SOURCES[posted.name][0]
        invoices = {i.number: i for i in csv_invoices(path)}
        set_aside = {
            r.source.locator.split(",")[0].removeprefix("invoice ")
            for r in posted.records
            if not isinstance(r, Imported)
        }
        assert set_aside == {
            n for n, i in invoices.items() if i.bad_debt or i.sub_penny or i.stock_adjustment
        }
        quarantined = [r for r in posted.records if isinstance(r, Quarantined)]
        assert {r.source.locator.split(",")[0].removeprefix("invoice ") for r in quarantined} == {
            n for n, i in invoices.items() if i.sub_penny
        }

    def test_the_canonical_amounts_equal_the_files(self, posted: Posted) -> None:
        canonical = canonical_days(posted.txs)
        assert canonical.keys() == posted.source.keys()
        for day, source in posted.source.items():
            mine = canonical[day]
            assert (mine.currency, mine.paid, mine.tax) == (source.currency, source.paid, source.tax), day
            assert _nonzero(mine.tenders) == _nonzero(source.tenders), day
            assert mine.tendered == mine.paid, day


@pytest.mark.parametrize("policy", ["line", "aggregated"])
class TestTheErpBooks:
    """Each store-day's trial balance in the ERP, against the file (both policies)."""

    def test_every_transaction_posted_and_nothing_dead_lettered(
        self, posted: Posted, policy: str, request: pytest.FixtureRequest
    ) -> None:
        run = posted.runs[policy]
        assert run.dead_letters == 0
        assert all(c.state is CloseState.POSTED for c in run.closes.values())
        assert run.journals_posted > 0
        no_money = Counter((tx.store_id, tx.business_day) for tx in posted.txs if not tx.tenders)
        for day, (_, state) in run.reconciled.items():
            assert (state.failed, state.dead_lettered, state.pending) == (0, 0, 0), (day, state)
            assert state.transactions == posted.source[day].transactions, day
            # goods given away at 0 move no money: nothing to post, everything else posted
            assert state.nothing_to_post == no_money[day], (day, state)
            assert state.posted + state.nothing_to_post == state.transactions, (day, state)

    def test_the_trial_balance_balances_per_currency(self, posted: Posted, policy: str) -> None:
        for day, lines in posted.runs[policy].trial_balances.items():
            for currency in {b.currency for b in lines}:
                debits = sum((b.debit for b in lines if b.currency == currency), ZERO)
                credits = sum((b.credit for b in lines if b.currency == currency), ZERO)
                assert debits == credits, (day, currency, debits, credits)

    def test_tender_accounts_equal_the_files_tenders(self, posted: Posted, policy: str) -> None:
        canonical = canonical_days(posted.txs)
        for day, source in posted.source.items():
            lines = posted.runs[policy].trial_balances[day]
            for account in TENDER_ACCOUNTS:
                erp = net_debit(lines, {account}, source.currency)
                assert erp == source.tenders.get(account, ZERO), (day, account)
                assert erp == canonical[day].tenders.get(account, ZERO), (day, account)

    def test_tax_payable_equals_the_files_tax(self, posted: Posted, policy: str) -> None:
        canonical = canonical_days(posted.txs)
        for day, source in posted.source.items():
            erp_credit = -net_debit(posted.runs[policy].trial_balances[day], TAX_ACCOUNTS, source.currency)
            assert erp_credit == source.tax == canonical[day].tax, day

    def test_revenue_equals_what_was_paid_net_of_tax(self, posted: Posted, policy: str) -> None:
        canonical = canonical_days(posted.txs)
        for day, source in posted.source.items():
            lines = posted.runs[policy].trial_balances[day]
            revenue = -net_debit(lines, REVENUE_ACCOUNTS, source.currency)
            assert revenue == source.paid - source.tax, day
            assert revenue == canonical[day].tendered - canonical[day].tax, day

    def test_nothing_is_booked_beside_tenders_tax_and_revenue(self, posted: Posted, policy: str) -> None:
        known = TENDER_ACCOUNTS | TAX_ACCOUNTS | REVENUE_ACCOUNTS
        for day, lines in posted.runs[policy].trial_balances.items():
            other = {(b.account, b.debit, b.credit) for b in lines if b.account not in known}
            assert other == set(), day  # no rounding: the files add up to the cent
            currency = posted.source[day].currency
            assert all(b.currency == currency for b in lines), day
            quantum = minor_unit(currency)
            assert all(b.debit == b.debit.quantize(quantum) for b in lines), day
            assert all(b.credit == b.credit.quantize(quantum) for b in lines), day

    def test_the_three_way_reconciliation_agrees_on_every_amount(
        self, posted: Posted, policy: str, request: pytest.FixtureRequest
    ) -> None:
        expected_holes = holes(posted.txs)
        reconciled = posted.runs[policy].reconciled
        for day, (rec, _) in reconciled.items():
            assert rec.z_report and rec.trial_balance, day
            assert [a for a in rec.accounts if not a.matched] == [], day
            assert [t for t in rec.tenders if t.difference] == [], day
            registers = {r.register_id: r for r in rec.registers}
            assert registers.keys() == expected_holes[day].keys(), day
            for register_id, (missing, unknown) in expected_holes[day].items():
                row = registers[register_id]
                assert (row.z_count, row.z_last_sequence) == (row.hub_count, row.hub_last_sequence)
                assert [t for t in row.tenders if t.difference] == [], (day, register_id)
                assert (set(row.missing), row.missing_count, set(row.unknown)) == (
                    missing,
                    len(missing),
                    unknown,
                ), (day, register_id)
        for day, (rec, _) in reconciled.items():
            assert rec.notes == (), (day, rec.notes)
            without_holes = not any(m or u for m, u in expected_holes[day].values())
            assert rec.matched == without_holes, (day, rec.differences)

    def test_the_day_close_flags_exactly_the_sequences_it_counts_and_lacks(
        self, posted: Posted, policy: str
    ) -> None:
        expected_holes = holes(posted.txs)
        for day, close in posted.runs[policy].closes.items():
            missing = set().union(*(m for m, _ in expected_holes[day].values()))
            assert set(close.gap) == missing, day


class TestBothPolicies:
    def test_line_and_aggregated_post_the_same_books(self, posted: Posted) -> None:
        line, aggregated = posted.runs["line"], posted.runs["aggregated"]
        assert line.trial_balances.keys() == aggregated.trial_balances.keys()
        for day in line.trial_balances:
            assert books(line.trial_balances[day]) == books(aggregated.trial_balances[day]), day

    def test_aggregated_posts_fewer_journals(self, posted: Posted) -> None:
        assert posted.runs["aggregated"].journals_posted <= len(posted.source)
        assert posted.runs["aggregated"].journals_posted < posted.runs["line"].journals_posted


class TestWhatIsNotMatchedAndWhy:
    """Where the reconciliation is not matched, the reason is the till's numbering, not money."""

    @pytest.mark.parametrize("posted", ["ncr-poslog"], indirect=True)
    def test_ncr_the_only_holes_are_the_tills_sign_off_and_sign_on(self, posted: Posted) -> None:
        controls = ncr_control_sequences(NCR_POSLOG)
        between: dict[tuple[StoreDay, str], set[int]] = {}
        for (store, day), registers in holes(posted.txs).items():
            for register, (missing, _) in registers.items():
                seqs = {tx.sequence for tx in posted.txs if tx.register_id == register}
                if gaps := set(range(min(seqs), max(seqs) + 1)) - seqs:
                    between[(store, day), register] = gaps
                assert missing <= {transaction_id(store, register, day, s) for s in gaps}
        # register 34 signed off and on again between sales 102 and 105; no other register has a hole
        assert between == {(("S009", date(2017, 10, 1)), "34"): {103, 104}}
        assert between[("S009", date(2017, 10, 1)), "34"] <= controls["S009", date(2017, 10, 1)]["34"]
        unmatched = [d for d, (rec, _) in posted.runs["aggregated"].reconciled.items() if not rec.matched]
        assert unmatched == [("S009", date(2017, 10, 1))]

    @pytest.mark.parametrize("posted", ["online-retail-first-100"], indirect=True)
    def test_the_first_hundred_rows_reconcile_matched(self, posted: Posted) -> None:
        for policy, run in posted.runs.items():
            for day, (rec, _) in run.reconciled.items():
                assert rec.matched, (policy, day, rec.differences)


def _nonzero(amounts: dict[str, Decimal]) -> dict[str, Decimal]:
    return {k: v for k, v in amounts.items() if v}
