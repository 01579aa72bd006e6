"""Reconciliation reports: a terminal table, a CSV of every compared figure, one HTML file.

Pure string functions over `StoreDayReconciliation`s (and the loyalty liability's
`LiabilityReconciliation`s, after the store-days). Differences read hub − Z for registers and
tenders, ERP − hub for accounts, platform − hub for loyalty points (in the CSV, a loyalty row's
`erp` column holds the loyalty platform's figure). The ERP is compared per account only: tender kinds and tax
codes that share an account (gift card and store credit, every tax code on the default account)
are compared there together.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from decimal import Decimal
from html import escape
from typing import NamedTuple

from tillflow.flows.liability import LiabilityReconciliation
from tillflow.flows.reconciliation import (
    RegisterComparison,
    StoreDayReconciliation,
    TenderComparison,
    format_amount,
)

CSV_HEADER = (
    "store_id",
    "business_day",
    "section",
    "key",
    "account",
    "z",
    "hub",
    "erp",
    "difference",
    "status",
)
ERP_NOTE = (
    "The ERP is compared per account: tender kinds and tax codes that share an account"
    " (see 'posts here') are compared there together, not one by one."
)
_Row = tuple[str, ...]


class _Section(NamedTuple):
    caption: str
    note: str
    header: _Row
    rows: list[_Row]


# columns of counts and amounts: right-aligned
_COUNTS = ("Z count", "hub count", "Z last seq", "hub last seq", "missing", "unknown")
_LOYALTY_NUMERIC = ("hub points", "platform points", "held", "liability", "platform")
_NUMERIC = frozenset((*_COUNTS, "Z", "hub", "ERP", "difference", "hub tax", *_LOYALTY_NUMERIC))


# --- plain text -----------------------------------------------------------------------------------


def render_table(
    recs: Sequence[StoreDayReconciliation], liabilities: Sequence[LiabilityReconciliation] = ()
) -> str:
    """An aligned plain-text report: one block per store-day, its sections and its differences;
    then the loyalty liability."""
    if not recs:
        return "No store-days to reconcile.\n" + _liability_text(liabilities)
    matched = sum(rec.matched for rec in recs)
    out = [f"Reconciliation: {len(recs)} store-days, {matched} matched, {len(recs) - matched} mismatched", ""]
    for rec in recs:
        out += [_title(rec), "=" * len(_title(rec)), ""]
        for section in _sections(rec):
            out += [section.caption, f"  {section.note}", *_aligned(section.header, section.rows), ""]
        if rec.differences:
            out += ["Differences", *(f"  - {d}" for d in rec.differences)]
        else:
            out.append("No differences.")
        out.append("")
    return "\n".join(out) + _liability_text(liabilities)


def _liability_text(recs: Sequence[LiabilityReconciliation]) -> str:
    out: list[str] = []
    for section in _liability_sections(recs):
        out += [section.caption, f"  {section.note}", *_aligned(section.header, section.rows), ""]
    for rec in recs:
        out += [f"  - {rec.program}: {line}" for line in (*rec.differences, *rec.conflicts, *rec.notes)]
    return "\n".join(out) + ("\n" if out else "")


LIABILITY_NOTE = (
    "Outstanding points: the hub's ledger (its own moves and the platform's bonuses and expiries)"
    " vs what the platform's members hold; carried at point value x (1 - breakage)."
)


def _liability_sections(recs: Sequence[LiabilityReconciliation]) -> Iterator[_Section]:
    if not recs:
        return
    as_of = next((r.as_of.isoformat(timespec="seconds") for r in recs if r.as_of is not None), "-")
    yield _Section(
        f"Loyalty liability (as of {as_of})",
        LIABILITY_NOTE,
        ("program", "hub points", "platform points", "difference", "held", "liability", "platform", "status"),
        [
            (
                r.program,
                str(r.hub_points),
                _opt(r.platform_points),
                "" if r.difference is None else f"{r.difference:+d}",
                _opt(r.held),
                _opt_amt(r.liability, r.currency),
                _opt_amt(r.platform_liability, r.currency),
                r.status,
            )
            for r in recs
        ],
    )
    yield _Section(
        "Loyalty moves and redemptions",
        "The hub's ledger by kind of move, and its redemption sagas by state.",
        ("program", "moves", "redemptions", "conflicts"),
        [
            (
                r.program,
                ", ".join(f"{kind} {points:+d}" for kind, points in r.moves if points),
                ", ".join(f"{state} {n}" for state, n in r.sagas if n) or "none",
                str(len(r.conflicts)),
            )
            for r in recs
        ],
    )


def _title(rec: StoreDayReconciliation) -> str:
    return (
        f"{rec.store_id}  {rec.business_day.isoformat()}  {rec.currency or '-'}  {rec.status.upper()}"
        f"  ({rec.transaction_count} transactions)"
    )


def _aligned(header: _Row, rows: Sequence[_Row]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    right = [h in _NUMERIC for h in header]

    def fmt(row: _Row) -> str:
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)]
        return ("  " + "  ".join(cells)).rstrip()

    return [fmt(header), "  " + "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def _sections(rec: StoreDayReconciliation) -> Iterator[_Section]:
    """The sections of a store-day; shared by the text and the HTML report."""
    cur = rec.currency
    yield _Section(
        "Registers (Z report vs hub)",
        "missing: sequences the Z report implies that the hub lacks; unknown: hub transactions"
        " outside them (named under Differences).",
        ("register", "Z count", "hub count", "Z last seq", "hub last seq", "missing", "unknown", "status"),
        [
            (
                r.register_id if r.on_z_report or not rec.z_report else f"{r.register_id} (not on Z)",
                _int(r.z_count),
                str(r.hub_count),
                _int(r.z_last_sequence),
                _int(r.hub_last_sequence),
                str(r.missing_count),
                str(len(r.unknown)),
                _register_status(r, rec.z_report),
            )
            for r in rec.registers
        ],
    )
    yield _Section(
        "Tenders (Z report vs hub)",
        "difference = hub − Z; totals over the registers (a register's own differences are listed"
        " under Differences); account: where the tender posts.",
        ("tender", "account", "Z", "hub", "difference", "status"),
        [
            (
                t.kind,
                t.account,
                _amt(t.z, cur),
                _amt(t.hub, cur),
                _amt(t.difference, cur),
                _status(t.difference),
            )
            for t in rec.tenders
        ],
    )
    yield _Section(
        "Tax codes (hub)",
        "tax of the hub's transactions, returns and post-voids negative; compared with the ERP under"
        " its account below.",
        ("tax code", "account", "hub tax"),
        [(t.code, t.account, _amt(t.hub, cur)) for t in rec.taxes],
    )
    yield _Section(
        "Accounts (hub vs ERP)",
        f"net = debits − credits; difference = ERP − hub. {ERP_NOTE}",
        ("account", "currency", "posts here", "hub", "ERP", "difference", "status"),
        [
            (
                a.account,
                a.currency,
                a.label,
                _amt(a.hub, a.currency),
                _amt(a.erp, a.currency),
                _amt(a.difference, a.currency),
                _status(a.difference),
            )
            for a in rec.accounts
        ],
    )


def _register_status(r: RegisterComparison, z_report: bool) -> str:
    if not z_report:
        return "no Z"
    same = (
        r.on_z_report
        and r.z_count == r.hub_count
        and r.z_last_sequence == r.hub_last_sequence
        and not r.missing_count
        and not r.unknown
        and not any(t.difference for t in r.tenders)
    )
    return "ok" if same else "DIFF"


def _status(difference: Decimal | None) -> str:
    if difference is None:
        return "n/a"
    return "DIFF" if difference else "ok"


def _amt(amount: Decimal | None, currency: str | None) -> str:
    return "-" if amount is None else format_amount(amount, currency)


def _int(value: int | None) -> str:
    return "-" if value is None else str(value)


# --- CSV ------------------------------------------------------------------------------------------


def render_csv(
    recs: Sequence[StoreDayReconciliation], liabilities: Sequence[LiabilityReconciliation] = ()
) -> str:
    """One row per compared figure (and per missing or unknown transaction, tax code, posting
    note), with a header; `status` is matched, mismatched or info (not compared). Loyalty rows
    have no store and the platform's clock's day."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for rec in recs:
        for row in _csv_rows(rec):
            writer.writerow((rec.store_id, rec.business_day.isoformat(), *row))
    for liability in liabilities:
        day = "" if liability.as_of is None else liability.as_of.date().isoformat()
        for row in _liability_rows(liability):
            writer.writerow(("", day, *row))
    return buffer.getvalue()


def _liability_rows(rec: LiabilityReconciliation) -> Iterator[tuple[str, ...]]:
    diff = "" if rec.difference is None else str(rec.difference)
    yield (
        "loyalty",
        f"{rec.program} points",
        "",
        "",
        str(rec.hub_points),
        _opt(rec.platform_points),
        diff,
        rec.status,
    )
    cur = rec.currency
    value_diff = (
        None
        if rec.liability is None or rec.platform_liability is None
        else rec.platform_liability - rec.liability
    )
    if rec.liability is not None:
        yield (
            "loyalty",
            f"{rec.program} liability",
            "",
            "",
            format_amount(rec.liability, cur),
            _opt_amt(rec.platform_liability, cur),
            _opt_amt(value_diff, cur),
            rec.status,
        )
    for kind, points in rec.moves:
        yield "loyalty_move", f"{rec.program} {kind}", "", "", str(points), "", "", "info"
    for state, count in rec.sagas:
        yield "loyalty_redemptions", f"{rec.program} {state}", "", "", str(count), "", "", "info"
    for conflict in rec.conflicts:
        yield "loyalty_conflict", conflict, "", "", "", "", "", "mismatched"
    for note in rec.notes:
        yield "note", note, "", "", "", "", "", "mismatched"


def _csv_rows(rec: StoreDayReconciliation) -> Iterator[tuple[str, ...]]:
    """(section, key, account, z, hub, erp, difference, status) rows of one store-day."""
    cur = rec.currency
    yield "store_day", "status", "", "", "", "", "", rec.status
    for r in rec.registers:
        for figure, z, hub in (
            ("count", r.z_count, r.hub_count),
            ("last_sequence", r.z_last_sequence, r.hub_last_sequence),
        ):
            diff = "" if z is None or hub is None else str(hub - z)
            yield "register", f"{r.register_id} {figure}", "", _opt(z), _opt(hub), "", diff, _same(z, hub)
        for tx_id in r.missing:
            yield "missing", tx_id, "", "expected", "", "", "", "mismatched"
        if r.missing_count > len(r.missing):
            more = f"{r.register_id}: {r.missing_count - len(r.missing)} more not listed"
            yield "missing", more, "", "expected", "", "", "", "mismatched"
        for tx_id in r.unknown:
            yield "unknown", tx_id, "", "", "accepted", "", "", "mismatched"
        for t in r.tenders:
            yield "register_tender", f"{r.register_id} {t.kind}", *_tender_cells(t, cur)
    for t in rec.tenders:
        yield "tender", t.kind, *_tender_cells(t, cur)
    for tax in rec.taxes:
        yield "tax", tax.code, tax.account, "", format_amount(tax.hub, cur), "", "", "info"
    for a in rec.accounts:
        yield (
            "account",
            a.label if a.currency == cur else f"{a.label} [{a.currency}]",
            a.account,
            "",
            format_amount(a.hub, a.currency),
            _opt_amt(a.erp, a.currency),
            _opt_amt(a.difference, a.currency),
            "mismatched" if a.difference is None or a.difference else "matched",
        )
    for note in rec.notes:
        yield "note", note, "", "", "", "", "", "mismatched"


def _tender_cells(t: TenderComparison, currency: str | None) -> tuple[str, ...]:
    return (
        t.account,
        _opt_amt(t.z, currency),
        format_amount(t.hub, currency),
        "",
        _opt_amt(t.difference, currency),
        "mismatched" if t.difference is None or t.difference else "matched",
    )


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _opt_amt(amount: Decimal | None, currency: str | None) -> str:
    return "" if amount is None else format_amount(amount, currency)


def _same(z: int | None, hub: int | None) -> str:
    return "matched" if z is not None and z == hub else "mismatched"


# --- HTML -----------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
.matched, .ok { background: #d8f0dc; }
.mismatched, .DIFF { background: #f8d4d4; }
.caption { font-weight: 600; margin-top: 1em; }
.note { color: #555; font-size: 0.9em; margin: 0.2em 0; }
"""


def render_html(
    recs: Sequence[StoreDayReconciliation],
    *,
    title: str,
    liabilities: Sequence[LiabilityReconciliation] = (),
) -> str:
    """One self-contained HTML page (inline CSS, no scripts, nothing external): a summary of the
    store-days, status coloured, then each store-day's sections and differences."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        "<table>",
        "<thead><tr><th>store</th><th>business day</th><th>currency</th><th>status</th>"
        "<th>transactions</th><th>differences</th></tr></thead>",
        "<tbody>",
    ]
    for i, rec in enumerate(recs):
        out.append(
            f'<tr><td><a href="#sd-{i}">{escape(rec.store_id)}</a></td>'
            f"<td>{escape(rec.business_day.isoformat())}</td><td>{escape(rec.currency or '-')}</td>"
            f'<td class="{rec.status}">{escape(rec.status)}</td>'
            f'<td class="num">{rec.transaction_count}</td><td class="num">{len(rec.differences)}</td></tr>'
        )
    out += ["</tbody>", "</table>", f"<p>{escape(ERP_NOTE)}</p>"]
    for i, rec in enumerate(recs):
        out.append(
            f'<h2 id="sd-{i}">{escape(rec.store_id)} {escape(rec.business_day.isoformat())}'
            f' <span class="{rec.status}">{escape(rec.status)}</span></h2>'
        )
        for section in _sections(rec):
            out.append(f'<div class="caption">{escape(section.caption)}</div>')
            out.append(f'<p class="note">{escape(section.note)}</p>')
            out.append(_html_table(section.header, section.rows))
        missing = [tx for r in rec.registers for tx in r.missing]
        if missing:
            out += ['<div class="caption">Missing at the hub</div>', _html_list(missing)]
        out.append('<div class="caption">Differences</div>')
        out.append(_html_list(rec.differences) if rec.differences else "<p>No differences.</p>")
    if liabilities:
        out.append('<h2 id="loyalty">Loyalty liability</h2>')
        for section in _liability_sections(liabilities):
            out.append(f'<div class="caption">{escape(section.caption)}</div>')
            out.append(f'<p class="note">{escape(section.note)}</p>')
            out.append(_html_table(section.header, section.rows))
        findings = [
            f"{r.program}: {x}" for r in liabilities for x in (*r.differences, *r.conflicts, *r.notes)
        ]
        out.append(_html_list(findings) if findings else "<p>No differences.</p>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _html_table(header: _Row, rows: Sequence[_Row]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = cell if header[i] == "status" and cell in ("ok", "DIFF", "matched", "mismatched") else ""
            cls = "num" if header[i] in _NUMERIC else cls
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{escape(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_list(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"
