"""Three-way reconciliation of a store-day: the tills' Z report, the hub's transactions, the ERP.

Each story starts from a day of demo POS traffic, the Z report the tills would print for it and
the trial balance the ERP would hold after posting the hub's own journals, then breaks one of
them and reads what the reconciliation says.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest

from tillflow.flows.posting import (
    LoyaltyAccounting,
    PostingAccounts,
    journal_for,
    points_journal,
    void_journal,
)
from tillflow.flows.reconciliation import (
    MAX_MISSING_LISTED,
    StoreDayReconciliation,
    as_dict,
    reconcile_store_day,
)
from tillflow.model import DayClose, Journal, TenderKind, Transaction, TransactionKind
from tillflow.ports import TrialBalanceLine
from tillflow.reports import CSV_HEADER, render_csv, render_html, render_table
from tillflow.sim.pos import CATALOG, PosTrafficGenerator, demo_stores

D = Decimal
ZERO = D(0)
DAY = date(2026, 11, 29)
STORE = "S001"
ACCOUNTS = PostingAccounts()
CARD, GIFT_CARD_AND_STORE_CREDIT, TAX = "1100", "2300", "2200"


# --- the three sources, built from the same transactions --------------------------------------------


def traffic(n: int = 120, *, seed: int = 7, day: date = DAY) -> list[Transaction]:
    """A day of one EUR store with two registers; seed 7 rings up two post-voids in 120."""
    return PosTrafficGenerator(demo_stores(1), business_day=day, seed=seed).transactions(n)


def z_report(txs: Sequence[Transaction]) -> DayClose:
    """The Z report the tills print: per register the count, last sequence and tender totals."""
    registers: dict[str, list[Transaction]] = defaultdict(list)
    for tx in txs:
        registers[tx.register_id].append(tx)
    closes = []
    for register_id, rung in sorted(registers.items()):
        totals: dict[TenderKind, Decimal] = defaultdict(Decimal)
        for tx in rung:
            for tender in tx.tenders:
                totals[tender.kind] += tender.amount - tender.change
        closes.append(
            {
                "register_id": register_id,
                "transaction_count": len(rung),
                "last_sequence": max(tx.sequence for tx in rung),
                "totals_by_tender": dict(totals),
            }
        )
    return DayClose.model_validate(
        {
            "store_id": STORE,
            "business_day": DAY,
            "currency": "EUR",
            "closed_at": datetime(2026, 11, 29, 23, 0, tzinfo=UTC),
            "registers": closes,
        }
    )


def journals(
    txs: Sequence[Transaction],
    originals: Mapping[str, Transaction] = {},
    costs: Mapping[str, Decimal] | None = None,
) -> list[Journal]:
    """The journals the posting flow posts for `txs` (a post-void's from its voided sale's)."""
    by_id = {**{tx.transaction_id: tx for tx in txs}, **originals}
    posted = []
    for tx in txs:
        if tx.voided is None:
            journal = journal_for(tx, ACCOUNTS, costs=costs)
        else:
            sale = journal_for(by_id[tx.voided.transaction_id], ACCOUNTS, costs=costs)
            assert sale is not None
            journal = void_journal(tx, sale, ACCOUNTS)
        if journal is not None:
            posted.append(journal)
    return posted


def trial_balance(posted: Sequence[Journal]) -> list[TrialBalanceLine]:
    """What the ERP's trial balance shows after posting `posted`: debits and credits per account."""
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for journal in posted:
        for line in journal.lines:
            sums[line.account, line.currency][0] += line.debit
            sums[line.account, line.currency][1] += line.credit
    return [TrialBalanceLine(a, c, debit, credit) for (a, c), (debit, credit) in sorted(sums.items())]


def reconcile(
    txs: Sequence[Transaction],
    *,
    day_close: DayClose | None = None,
    tb: Sequence[TrialBalanceLine] | None = None,
    originals: Mapping[str, Transaction] = {},
    store_id: str = STORE,
    **kw: Any,
) -> StoreDayReconciliation:
    """Reconcile `txs` against a Z report and trial balance made from them unless others are given."""
    return reconcile_store_day(
        store_id=store_id,
        business_day=DAY,
        day_close=day_close if day_close is not None else z_report(txs),
        transactions=txs,
        originals=originals,
        trial_balance=tb if tb is not None else trial_balance(journals(txs, originals)),
        accounts=ACCOUNTS,
        **kw,
    )


def plain_sale(txs: Sequence[Transaction], register: str = "R01") -> Transaction:
    """A sale of `register` that no later transaction voids or returns, paid by card only."""
    referred = {tx.voided.transaction_id for tx in txs if tx.voided is not None}
    referred |= {
        line.original.transaction.transaction_id
        for tx in txs
        for line in tx.lines
        if line.original is not None
    }
    return next(
        tx
        for tx in txs
        if tx.register_id == register
        and tx.kind is TransactionKind.SALE
        and tx.transaction_id not in referred
        and [t.kind for t in tx.tenders] == [TenderKind.CARD]
        and tx.sequence > 5
    )


def repaid(tx: Transaction, tenders: list[dict[str, Any]]) -> Transaction:
    return Transaction.model_validate({**tx.model_dump(), "tenders": tenders})


# --- the stories ---------------------------------------------------------------------------------------


class TestMatchedDay:
    def test_a_day_that_agrees_everywhere_is_matched(self) -> None:
        txs = traffic()

        rec = reconcile(txs)

        assert rec.status == "matched" and rec.matched
        assert rec.differences == ()
        assert rec.currency == "EUR" and rec.transaction_count == 120
        assert [(r.register_id, r.z_count, r.hub_count) for r in rec.registers] == [
            ("R01", 60, 60),
            ("R02", 60, 60),
        ]
        assert all(not r.missing and not r.unknown for r in rec.registers)
        assert {t.kind for t in rec.tenders} >= {"cash", "card", "gift_card"}
        assert all(t.difference == ZERO for t in rec.tenders)
        assert {t.code for t in rec.taxes} == {"V20", "V07"}
        assert {t.account for t in rec.taxes} == {TAX}
        assert rec.accounts and all(a.difference == ZERO for a in rec.accounts)
        # only gift cards were rung up today, yet the account says store credit posts there too
        assert "store_credit" not in {t.kind for t in rec.tenders}
        shared = next(a for a in rec.accounts if a.account == GIFT_CARD_AND_STORE_CREDIT)
        assert shared.label == "tender gift_card, tender store_credit"

    def test_the_tax_posted_per_code_is_the_transactions_tax(self) -> None:
        txs = traffic()

        rec = reconcile(txs)

        by_code: dict[str, Decimal] = defaultdict(Decimal)
        for tx in txs:
            for tax in tx.taxes:
                by_code[tax.code] += tax.amount
        assert {t.code: t.hub for t in rec.taxes} == by_code
        tax_account = next(a for a in rec.accounts if a.account == TAX)
        assert tax_account.hub == -sum(by_code.values(), ZERO)  # a credit: debits − credits is negative
        assert "tax V07" in tax_account.label and "tax V20" in tax_account.label

    def test_as_dict_is_json_with_amounts_as_strings(self) -> None:
        rec = reconcile(traffic())

        data = json.loads(json.dumps(as_dict(rec)))

        assert data["status"] == "matched" and data["business_day"] == "2026-11-29"
        card = next(t for t in data["tenders"] if t["kind"] == "card")
        assert isinstance(card["hub"], str) and card["difference"] == "0.00"
        assert all(isinstance(a["erp"], str) for a in data["accounts"])


class TestZReportAgainstTheHub:
    def test_a_tender_the_hub_lacks_is_a_difference_of_that_register_and_tender(self) -> None:
        txs = traffic()
        close = z_report(txs)
        r01 = close.registers[0]
        more_cash = {
            **r01.totals_by_tender,
            TenderKind.CASH: r01.totals_by_tender[TenderKind.CASH] + D("10.00"),
        }
        close = close.model_copy(
            update={"registers": (r01.model_copy(update={"totals_by_tender": more_cash}), close.registers[1])}
        )

        rec = reconcile(txs, day_close=close)

        assert rec.status == "mismatched"
        cash = next(t for t in rec.tenders if t.kind == "cash")
        assert cash.difference == D("-10.00") and cash.account == "1000"
        r01_cash = next(t for t in rec.registers[0].tenders if t.kind == "cash")
        assert r01_cash.z is not None and r01_cash.z - r01_cash.hub == D("10.00")
        assert rec.differences == (
            f"register R01 tender cash: Z {r01_cash.z}, hub {r01_cash.hub} (hub − Z -10.00)",
        )

    def test_a_sequence_gap_is_named_by_the_missing_transactions_identity(self) -> None:
        txs = traffic()
        lost = plain_sale(txs)
        arrived = [tx for tx in txs if tx is not lost]

        rec = reconcile(arrived, day_close=z_report(txs))

        r01 = rec.registers[0]
        assert r01.missing == (f"S001:R01:2026-11-29:{lost.sequence:08d}",) and r01.missing_count == 1
        assert (r01.z_count, r01.hub_count) == (60, 59)
        assert rec.status == "mismatched"
        assert any(lost.transaction_id in d and "missing" in d for d in rec.differences)

    def test_a_z_report_claiming_millions_of_transactions_is_counted_without_listing_them_all(self) -> None:
        txs = traffic()
        close = z_report(txs)
        r01 = close.registers[0].model_copy(
            update={"transaction_count": 5_000_000, "last_sequence": 5_000_000}
        )
        close = close.model_copy(update={"registers": (r01, close.registers[1])})

        rec = reconcile(txs, day_close=close)

        register = rec.registers[0]
        assert register.missing_count == 5_000_000 - 60
        assert len(register.missing) == MAX_MISSING_LISTED
        assert register.missing[0] == "S001:R01:2026-11-29:00000061"
        assert any(d.endswith(f"and {5_000_000 - 60 - 10} more") for d in rec.differences)

    def test_a_hub_transaction_beyond_the_z_reports_last_sequence_is_unknown_to_it(self) -> None:
        txs = traffic()
        late = txs[-1]

        rec = reconcile(txs, day_close=z_report(txs[:-1]))

        register = next(r for r in rec.registers if r.register_id == late.register_id)
        assert register.unknown == (late.transaction_id,) and register.missing == ()
        assert any(late.transaction_id in d and "does not know" in d for d in rec.differences)

    def test_a_register_not_on_the_z_report_is_named(self) -> None:
        txs = traffic()
        close = z_report([tx for tx in txs if tx.register_id == "R01"])

        rec = reconcile(txs, day_close=close)

        r02 = next(r for r in rec.registers if r.register_id == "R02")
        assert not r02.on_z_report and len(r02.unknown) == 60
        assert "register R02 is not on the Z report; the hub has 60 transactions of it" in rec.differences

    def test_without_a_z_report_the_day_is_mismatched_and_tenders_have_no_z(self) -> None:
        txs = traffic()

        rec = reconcile_store_day(
            store_id=STORE,
            business_day=DAY,
            day_close=None,
            transactions=txs,
            originals={},
            trial_balance=trial_balance(journals(txs)),
            accounts=ACCOUNTS,
        )

        assert rec.status == "mismatched" and not rec.z_report
        assert rec.differences == ("no Z report for the store-day: registers and tenders are not compared",)
        assert all(t.z is None and t.difference is None for t in rec.tenders)
        assert all(a.difference == ZERO for a in rec.accounts)


class TestHubAgainstTheErp:
    def test_a_journal_the_erp_lacks_shows_on_its_accounts(self) -> None:
        txs = traffic()
        unposted = plain_sale(txs)
        tb = trial_balance(journals([tx for tx in txs if tx is not unposted]))

        rec = reconcile(txs, tb=tb)

        assert rec.status == "mismatched"
        assert all(t.difference == ZERO for t in rec.tenders)  # the tills and the hub agree
        card = next(a for a in rec.accounts if a.account == CARD)
        assert card.difference == -unposted.totals.grand_total
        assert any(d.startswith(f"account {CARD} (tender card) EUR: hub expects") for d in rec.differences)
        assert all(d.startswith("account ") for d in rec.differences)

    def test_without_a_trial_balance_the_day_is_mismatched_and_says_so(self) -> None:
        txs = traffic()

        rec = reconcile_store_day(
            store_id=STORE,
            business_day=DAY,
            day_close=z_report(txs),
            transactions=txs,
            originals={},
            trial_balance=None,
            accounts=ACCOUNTS,
        )

        assert rec.status == "mismatched" and not rec.trial_balance
        assert rec.differences == ("the ERP's trial balance could not be read: accounts are not compared",)
        assert rec.accounts and all(a.erp is None and a.difference is None for a in rec.accounts)

    def test_gift_card_and_store_credit_are_compared_with_the_erp_on_their_shared_account(self) -> None:
        txs = traffic()
        sale = plain_sale(txs)
        half = (sale.totals.grand_total / 2).quantize(D("0.01"))
        split = repaid(
            sale,
            [
                {"kind": "gift_card", "amount": half, "reference": "GC-****0001"},
                {"kind": "store_credit", "amount": sale.totals.grand_total - half},
            ],
        )
        txs = [split if tx is sale else tx for tx in txs]
        right = trial_balance(journals(txs))
        short = [
            line
            if line.account != GIFT_CARD_AND_STORE_CREDIT
            else TrialBalanceLine(
                line.account, line.currency, line.debit - (sale.totals.grand_total - half), line.credit
            )
            for line in right
        ]

        matched, mismatched = reconcile(txs, tb=right), reconcile(txs, tb=short)

        assert matched.status == "matched"
        tenders = {t.kind: t for t in matched.tenders}
        assert tenders["gift_card"].account == tenders["store_credit"].account == GIFT_CARD_AND_STORE_CREDIT
        shared = [a for a in matched.accounts if a.account == GIFT_CARD_AND_STORE_CREDIT]
        assert len(shared) == 1
        assert "tender gift_card" in shared[0].label and "tender store_credit" in shared[0].label
        assert mismatched.status == "mismatched"
        assert all(t.difference == ZERO for t in mismatched.tenders)  # Z and hub agree per tender
        (difference,) = mismatched.differences
        assert difference.startswith(f"account {GIFT_CARD_AND_STORE_CREDIT} (")
        assert "gift_card" in difference and "store_credit" in difference
        assert difference.endswith(f"(ERP − hub -{sale.totals.grand_total - half})")

    def test_the_cost_of_goods_is_expected_when_costs_are_known(self) -> None:
        txs = traffic()
        costs = {product.sku: D("1.00") for product in CATALOG}
        with_cost, without_cost = trial_balance(journals(txs, costs=costs)), trial_balance(journals(txs))

        assert reconcile(txs, tb=with_cost, costs=costs).status == "matched"
        rec = reconcile(txs, tb=without_cost, costs=costs)

        assert rec.status == "mismatched"
        by_account = {a.account: a for a in rec.accounts}
        cogs, inventory = by_account[ACCOUNTS.cogs], by_account[ACCOUNTS.inventory]
        assert (cogs.label, inventory.label) == ("cost of goods sold", "inventory")
        assert cogs.hub > 0 and cogs.erp == ZERO and inventory.hub == -cogs.hub
        assert len(rec.differences) == 2

    def test_journals_posted_beside_the_transactions_are_expected_too(self) -> None:
        txs = traffic()
        points = points_journal(
            journal_id="pts.S001.2026-11-29",
            store_id=STORE,
            business_day=DAY,
            currency="EUR",
            issued=1000,
            expired=0,
            loyalty=LoyaltyAccounting(point_value=D("0.01"), breakage=D("0.2")),
            accounts=ACCOUNTS,
        )
        assert points is not None
        tb = trial_balance([*journals(txs), points])

        assert reconcile(txs, tb=tb, extra_journals=[points]).status == "matched"
        assert reconcile(txs, tb=tb).status == "mismatched"

    def test_posting_notes_are_listed_and_make_the_day_mismatched(self) -> None:
        txs = traffic()

        rec = reconcile(txs, posting_notes=("3 postings pending",))

        assert rec.status == "mismatched"
        assert rec.notes == ("3 postings pending",)
        assert rec.differences == ("posting: 3 postings pending",)


class TestPostVoids:
    def test_a_day_with_post_voids_matches_when_the_erp_posted_their_reversals(self) -> None:
        txs = traffic()
        voids = [tx for tx in txs if tx.voided is not None]
        assert len(voids) == 2

        rec = reconcile(txs)

        assert rec.status == "matched", rec.differences
        without_reversals = trial_balance(journals([tx for tx in txs if tx.voided is None]))
        assert reconcile(txs, tb=without_reversals).status == "mismatched"

    def test_a_post_void_of_an_earlier_days_sale_reverses_it_through_originals(self) -> None:
        yesterday = traffic(10, day=DAY - timedelta(days=1))
        sale = next(tx for tx in yesterday if tx.kind is TransactionKind.SALE and tx.register_id == "R01")
        txs = traffic(20)
        last = max(tx.sequence for tx in txs if tx.register_id == "R01")
        refund = [{"kind": "cash", "amount": -sale.totals.grand_total}]
        void = Transaction.model_validate(
            {
                **txs[0].model_dump(exclude={"lines", "customer"}),
                "sequence": last + 1,
                "kind": "void",
                "voided": sale.ref,
                "taxes": [
                    {**t.model_dump(), "taxable_amount": -t.taxable_amount, "amount": -t.amount}
                    for t in sale.taxes
                ],
                "tenders": refund,
                "totals": {k: -v for k, v in sale.totals.model_dump().items()},
            }
        )
        txs.append(void)
        originals = {sale.transaction_id: sale}
        tb = trial_balance(journals(txs, originals))

        found = reconcile(txs, tb=tb, originals=originals)
        lost = reconcile(txs, tb=tb)

        assert found.status == "matched", found.differences
        assert lost.status == "mismatched"
        assert any(
            d.startswith(
                f"post-void {void.transaction_id}: the voided transaction {sale.transaction_id} was not found"
            )
            for d in lost.differences
        )


class TestReports:
    @pytest.fixture
    def recs(self) -> list[StoreDayReconciliation]:
        """A matched day, and the same day with a sale lost on its way to the hub, another the
        ERP rejected, and a note saying so."""
        txs = traffic()
        lost = plain_sale(txs)
        rejected = plain_sale(txs, register="R02")
        arrived = [tx for tx in txs if tx is not lost]
        return [
            reconcile(txs),
            reconcile(
                arrived,
                day_close=z_report(txs),
                tb=trial_balance(journals([tx for tx in arrived if tx is not rejected])),
                posting_notes=(f"journal {rejected.transaction_id} rejected: period closed",),
            ),
        ]

    def test_the_csv_has_a_header_and_a_row_per_compared_figure(
        self, recs: list[StoreDayReconciliation]
    ) -> None:
        rows = list(csv.reader(io.StringIO(render_csv(recs))))

        assert tuple(rows[0]) == CSV_HEADER
        expected = 0
        for rec in recs:
            expected += 1 + len(rec.tenders) + len(rec.taxes) + len(rec.accounts) + len(rec.notes)
            expected += sum(2 + len(r.missing) + len(r.unknown) + len(r.tenders) for r in rec.registers)
        assert len(rows) - 1 == expected
        assert {r[9] for r in rows[1:]} <= {"matched", "mismatched", "info"}
        card_rows = [r for r in rows[1:] if r[2] == "account" and r[4] == CARD]
        assert [r[9] for r in card_rows] == ["matched", "mismatched"]
        (missing,) = [r for r in rows[1:] if r[2] == "missing"]
        assert missing[3] == recs[1].registers[0].missing[0]
        assert [r[3] for r in rows[1:] if r[2] == "note"] == list(recs[1].notes)

    def test_the_table_shows_each_store_day_its_status_and_differences(
        self, recs: list[StoreDayReconciliation]
    ) -> None:
        text = render_table(recs)

        assert "Reconciliation: 2 store-days, 1 matched, 1 mismatched" in text
        assert "S001  2026-11-29  EUR  MATCHED" in text and "S001  2026-11-29  EUR  MISMATCHED" in text
        assert all(f"  - {d}" in text for d in recs[1].differences)
        assert "The ERP is compared per account" in text

    def test_the_html_escapes_everything_and_refers_to_nothing_outside(self) -> None:
        hostile = '<script>alert("x")</script>'
        rec = reconcile_store_day(
            store_id=hostile,
            business_day=DAY,
            day_close=None,
            transactions=[],
            originals={},
            trial_balance=[TrialBalanceLine("<img src=x>", "EUR", D("1.00"), ZERO)],
            accounts=ACCOUNTS,
            posting_notes=("journal <b>X</b> rejected: & why",),
        )

        page = render_html([rec, reconcile(traffic())], title="Reconciliation <2026-11-29>")

        parser = _Tags()
        parser.feed(page)
        parser.close()
        assert "script" not in parser.tags and "img" not in parser.tags and "link" not in parser.tags
        assert all(value.startswith("#") for name, value in parser.attrs if name in ("href", "src"))
        assert "://" not in page
        assert hostile in parser.text and "journal <b>X</b> rejected: & why" in parser.text
        assert "Reconciliation <2026-11-29>" in parser.text
        assert parser.classes >= {"matched", "mismatched"}
        # the summary colours each store-day by its status
        assert '<td class="mismatched">mismatched</td>' in page and '<td class="matched">matched</td>' in page
        assert parser.open == [], "every element is closed"


class _Tags(HTMLParser):
    """The tags, attributes and text of a page, and whether its elements nest properly."""

    VOID = frozenset({"meta", "br", "hr", "img", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str]] = []
        self.classes: set[str] = set()
        self.text = ""
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [(name, value or "") for name, value in attrs]
        self.classes |= {value or "" for name, value in attrs if name == "class"}
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text += data
