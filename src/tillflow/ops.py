"""Operations from the command line: consumer lag, dead letters, replay.

`tillflow lag`, `tillflow dlq list|show|replay|purge`, `tillflow replay --flow F ...`,
`tillflow erp compare --day D`, `tillflow reconcile --day D`, `tillflow postings status|retry`.
Tables for people, `--json` for scripts. Every replay, purge and reset is audited with the
actor (`--actor`, default the OS user) and the reason (`--why`, required).
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tillflow.config import load_config
from tillflow.errors import ConfigError, TillflowError
from tillflow.ports import DeadLetter, DeadLetterSelection, EventLog, GroupState
from tillflow.services import Services

dlq_app = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)
erp_app = typer.Typer(help="The ERP targets: compare a parallel run.", no_args_is_help=True)
postings_app = typer.Typer(help="Posting state per store-day; retry refused journals.", no_args_is_help=True)
out = Console(width=None if sys.stdout.isatty() else 200)  # piped: don't squeeze the tables
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", envvar="TILLFLOW_CONFIG", help="YAML config file")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="where the embedded state lives")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
ActorOpt = Annotated[str, typer.Option("--actor", help="who does this (for the audit)")]
WhyOpt = Annotated[str, typer.Option("--why", help="why (for the audit)")]
GroupOpt = Annotated[str | None, typer.Option("--flow", help="only this flow's consumer group")]


@contextmanager
def opened(config: Path | None, data_dir: Path | None) -> Iterator[Services]:
    """The hub's existing state (never a new, empty one for a mistyped path)."""
    from tillflow.bootstrap import bootstrap

    try:
        cfg = load_config(config, **({"data_dir": data_dir} if data_dir else {}))
        url = cfg.hub.resolved_state_url()
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            raise ConfigError(
                f"no hub state at {url.removeprefix('sqlite:///')}: check --data-dir / --config"
            )
        services = bootstrap(cfg, migrate=False)
    except TillflowError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    try:
        yield services
    except TillflowError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        services.close()


def emit(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if not rows:
        out.print(f"{title}: none")
        return
    table = Table(title=title)
    for i, column in enumerate(rows[0]):
        table.add_column(column, no_wrap=i == 0)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(table)


@contextmanager
def event_log(config: Path | None, data_dir: Path | None) -> Iterator[EventLog]:
    with opened(config, data_dir) as services:
        yield services.event_log


def lag(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Each consumer group: position, lag, pending retries, dead letters, failure streak."""
    with opened(config, data_dir) as services:
        log = services.event_log
        head = log.read_head()
        groups = log.read_groups()
        for flow in services.consumer_groups:  # a flow that has not settled anything yet
            groups.setdefault(flow, GroupState(position=0, lag=head))
    rows = [
        {
            "flow": name,
            "position": s.position,
            "head": head,
            "lag": s.lag,
            "pending": s.pending,
            "dead_letters": s.dead_letters,
            "oldest_dead_letter": s.oldest_dead_letter_at.isoformat() if s.oldest_dead_letter_at else None,
            "failures": s.failures,
            "last_error": s.last_error,
        }
        for name, s in sorted(groups.items())
    ]
    emit(rows, as_json, "consumer groups")


def _dead_letter_row(d: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": d.id,
        "flow": d.group,
        "seq": d.event.seq,
        "event": d.event.event.id,
        "type": d.event.event.type,
        "attempts": d.attempts,
        "dead_at": d.dead_at.isoformat(timespec="seconds"),
        "reason": d.reason if full else d.reason[:80],
    }
    if full:
        e = d.event.event
        row |= {
            "source": e.source,
            "time": e.time.isoformat(),
            "traceparent": e.traceparent,
            "data": e.data.decode(errors="replace"),
        }
    return row


@dlq_app.command("list")
def dlq_list(
    flow: GroupOpt = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dead letters, oldest first."""
    with event_log(config, data_dir) as log:
        rows = [_dead_letter_row(d) for d in log.list_dead_letters(group=flow, limit=limit)]
    emit(rows, as_json, "dead letters")


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: Annotated[int, typer.Argument(help="the dead letter's id")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One dead letter in full: reason, attempts, trace id, the original payload."""
    with event_log(config, data_dir) as log:
        found = log.list_dead_letters(ids=(dead_letter_id,))
    if not found:
        err.print(f"[red]no dead letter {dead_letter_id}[/red]")
        raise typer.Exit(1)
    row = _dead_letter_row(found[0], full=True)
    if as_json:
        sys.stdout.write(orjson.dumps(row, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for key, value in row.items():
            out.print(f"[bold]{key}[/bold]: {value}")


def _selection(
    flow: str | None, ids: list[int] | None, reason: str | None, everything: bool
) -> DeadLetterSelection:
    if not (ids or reason or everything):
        err.print("[red]choose what: --id N (repeatable), --reason TEXT, or --all[/red]")
        raise typer.Exit(2)
    return DeadLetterSelection(group=flow, ids=tuple(ids or ()), reason_contains=reason)


IdsOpt = Annotated[list[int] | None, typer.Option("--id", help="a dead letter id (repeatable)")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="those whose reason contains this text")]
AllOpt = Annotated[bool, typer.Option("--all", help="every dead letter (of --flow, if given)")]


@dlq_app.command("replay")
def dlq_replay(
    why: WhyOpt,
    flow: GroupOpt = None,
    ids: IdsOpt = None,
    reason: ReasonOpt = None,
    everything: AllOpt = False,
    actor: ActorOpt = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliver dead letters to their flow again (audited)."""
    selection = _selection(flow, ids, reason, everything)
    with event_log(config, data_dir) as log:
        count = log.replay_dead_letters(selection, actor=actor or getpass.getuser(), why=why)
    emit([{"replayed": count}], as_json, "dead-letter replay")


@dlq_app.command("purge")
def dlq_purge(
    why: WhyOpt,
    flow: GroupOpt = None,
    ids: IdsOpt = None,
    reason: ReasonOpt = None,
    everything: AllOpt = False,
    actor: ActorOpt = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete dead letters for good (audited)."""
    if everything and not flow and not ids and not reason:
        err.print("[red]purging every dead letter of every flow needs --flow (one flow at a time)[/red]")
        raise typer.Exit(2)
    selection = _selection(flow, ids, reason, everything)
    with event_log(config, data_dir) as log:
        count = log.purge_dead_letters(selection, actor=actor or getpass.getuser(), why=why)
    emit([{"purged": count}], as_json, "dead-letter purge")


def replay(
    flow: Annotated[
        str, typer.Option("--flow", help="the flow (consumer group) to replay; a new name starts one")
    ],
    why: WhyOpt,
    from_seq: Annotated[int | None, typer.Option("--from-seq", help="replay from this sequence")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="replay events logged since (ISO 8601 with offset)")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="start a consumer group that does not run here")] = False,
    actor: ActorOpt = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a flow's consumer group back (or start a new one) at a sequence or a time (audited).
    Effects stay exactly once: a flow skips what it already applied."""
    if (from_seq is None) == (since is None):
        err.print("[red]give --from-seq N or --since TIME[/red]")
        raise typer.Exit(2)
    start: datetime | None = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            start = None
        if start is None or start.tzinfo is None:
            err.print("[red]--since is an ISO 8601 time with an offset, e.g. 2026-11-29T08:00:00+00:00[/red]")
            raise typer.Exit(2)
    with opened(config, data_dir) as services:
        log = services.event_log
        head = log.read_head()
        if flow not in services.consumer_groups and not new:
            runs = ", ".join(services.consumer_groups)
            err.print(f"[red]no flow {flow!r} runs here ({runs}); --new starts a new consumer group[/red]")
            raise typer.Exit(2)
        if from_seq is not None and not 1 <= from_seq <= head + 1:
            err.print(f"[red]--from-seq must be between 1 and {head + 1} (the log's head is {head})[/red]")
            raise typer.Exit(2)
        position = log.reset_group(
            flow, from_seq=from_seq, since=start, actor=actor or getpass.getuser(), why=why
        )
    emit([{"flow": flow, "position": position, "to_replay": max(0, head - position)}], as_json, "replay")


@erp_app.command("compare")
def erp_compare(
    day: Annotated[str, typer.Option("--day", help="business day, YYYY-MM-DD")],
    store: Annotated[str | None, typer.Option("--store", help="only this store")] = None,
    balances: Annotated[
        bool, typer.Option("--balances", help="also compare the two ERPs' trial balances")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per store-day: what each ERP target accepted and rejected, and where they disagree.
    Exits 1 when a parallel-run store-day does not match."""
    from tillflow.flows.migration import compare_balances, compare_targets

    try:
        business_day = date.fromisoformat(day)
    except ValueError as exc:
        err.print(f"[red]--day {day!r} is not a date (YYYY-MM-DD)[/red]")
        raise typer.Exit(2) from exc
    with opened(config, data_dir) as services:
        report = compare_targets(services.postings.find_outcomes(business_day, store))
        targets = services.erp_targets() if balances else {}
        rows: list[dict[str, Any]] = []
        differences: list[dict[str, Any]] = []
        for r in report:
            balance_gaps = []
            if r.parallel and {"cloud", "legacy"} <= set(targets):
                cloud = targets["cloud"].trial_balance(r.store_id, business_day)
                legacy = targets["legacy"].trial_balance(r.store_id, business_day)
                balance_gaps = compare_balances(cloud, legacy)
            matched = r.matched and not balance_gaps
            rows.append(
                {
                    "store": r.store_id,
                    "day": r.business_day.isoformat(),
                    "targets": "+".join(r.targets),
                    "accepted": " ".join(f"{t}={n}" for t, n in sorted(r.accepted.items())),
                    "rejected": " ".join(f"{t}={n}" for t, n in sorted(r.rejected.items())) or "-",
                    "result": ("matched" if matched else "MISMATCHED") if r.parallel else "single target",
                }
            )
            differences += [
                {"store": r.store_id, "posting": d.external_id, **d.answers} for d in r.differences
            ]
            differences += [
                {
                    "store": r.store_id,
                    "posting": f"account {g.account} {g.currency}",
                    "cloud": format(g.first, "f"),
                    "legacy": format(g.second, "f"),
                }
                for g in balance_gaps
            ]
    if as_json:
        emit(
            [{**row, "differences": [d for d in differences if d["store"] == row["store"]]} for row in rows],
            True,
            "",
        )
    else:
        emit(rows, False, f"ERP targets compared for {business_day}")
        if differences:
            emit(differences, False, "Differences")
    if any(row["result"] == "MISMATCHED" for row in rows):
        raise typer.Exit(1)


def reconcile(
    day: Annotated[str, typer.Option("--day", help="business day, YYYY-MM-DD")],
    store: Annotated[str | None, typer.Option("--store", help="only this store")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table, csv, html or json", case_sensitive=False)
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the report to this file")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Per store-day: the Z report vs what the hub accepted vs what the ERP posted (its trial
    balance), tender by tender and tax code by tax code, with sequence gaps and the posting
    state; then each loyalty program's liability: the hub's points ledger vs the loyalty
    platform's outstanding points. Exits 1 when anything does not match."""
    from dataclasses import asdict

    from tillflow.flows.liability import liability_dict
    from tillflow.flows.reconciliation import as_dict
    from tillflow.reconciling import reconcile as reconcile_day
    from tillflow.reconciling import reconcile_loyalty
    from tillflow.reports import render_csv, render_html, render_table

    fmt = fmt.lower()
    if fmt not in ("table", "csv", "html", "json"):
        err.print(f"[red]--format {fmt!r}: choose table, csv, html or json[/red]")
        raise typer.Exit(2)
    business_day = _day(day)
    with opened(config, data_dir) as services:
        results = reconcile_day(services, business_day, store)
        liabilities = reconcile_loyalty(services) if store is None else []
    recs = [rec for rec, _ in results]
    if fmt == "csv":
        text = render_csv(recs, liabilities)
    elif fmt == "html":
        text = render_html(recs, title=f"Reconciliation {business_day}", liabilities=liabilities)
    elif fmt == "json":
        body = {
            "business_day": business_day.isoformat(),
            "store_days": [{**as_dict(rec), "posting": asdict(state)} for rec, state in results],
            "loyalty": [liability_dict(rec) for rec in liabilities],
        }
        text = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"
    elif recs or liabilities:
        text = render_table(recs, liabilities)
    else:
        text = f"nothing to reconcile on {business_day}\n"
    mismatched = sum(1 for rec in recs if rec.status != "matched")
    programs = sum(1 for rec in liabilities if rec.status != "matched")
    if output is not None:
        output.write_text(text, encoding="utf-8")
        err.print(
            f"{len(recs)} store-day(s), {mismatched} mismatched; {len(liabilities)} loyalty program(s),"
            f" {programs} mismatched: report written to {output}"
        )
    else:
        sys.stdout.write(text)
    if mismatched or programs:
        raise typer.Exit(1)


def _day(day: str) -> date:
    try:
        return date.fromisoformat(day)
    except ValueError as exc:
        err.print(f"[red]--day {day!r} is not a date (YYYY-MM-DD)[/red]")
        raise typer.Exit(2) from exc


@postings_app.command("status")
def postings_status(
    day: Annotated[str, typer.Option("--day", help="business day, YYYY-MM-DD")],
    store: Annotated[str | None, typer.Option("--store", help="only this store")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per store-day: its posting policy, day close, and how many transactions are posted,
    pending, in refused postings or dead-lettered."""
    from dataclasses import asdict

    from tillflow.flows.store_day import originals_of
    from tillflow.reconciling import dead_lettered, posting_state, read_day

    business_day = _day(day)
    rows = []
    with opened(config, data_dir) as services:
        stores = [store] if store else services.transactions.list_store_days(business_day)
        dead = dead_lettered(services)
        for store_id in stores:
            txs = read_day(services, store_id, business_day)
            originals = originals_of(services.transactions, txs)
            state = posting_state(
                services, store_id, business_day, txs, originals=originals, dead_letters=dead
            )
            row = {"store": store_id, **asdict(state)}
            if not as_json:
                row["journals"] = len(state.journals)
            rows.append(row)
    emit(rows, as_json, f"posting state of {business_day}")


@postings_app.command("retry")
def postings_retry(
    day: Annotated[str, typer.Option("--day", help="business day, YYYY-MM-DD")],
    store: Annotated[str, typer.Option("--store", help="the store")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Post a store-day's refused journals again (the posting flow does it on its next turn),
    once the cause is fixed in the ERP (a period reopened, an account created)."""
    business_day = _day(day)
    with opened(config, data_dir) as services:
        count = services.store_days.retry_failed(store, business_day)
    out.print(f"{count} refused journal(s) of {store} {business_day} will be posted again")
