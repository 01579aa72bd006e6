"""`tillflow import FILE...`: read POS files and platform exports, send them to the hub; with
`--kind items|prices|promotions`, master data from an ERP or PIM.

Each file's format is detected (or named), its records parsed as a stream, and the canonical
transactions sent to the hub's `POST /v1/transactions` in batches per store (a store's key
may only send its own store's records; an admin key sends any). Records refused — by the
parser (quarantined: which record, which field, why) or by the hub (invalid) — go to the
quarantine report, a CSV file; everything else goes through. `--dry-run` parses and reports
without sending; with `--json` each canonical transaction is printed as one JSON line.

Exit status: 0 when every record was imported (or, dry, would be), 3 when some were
quarantined or refused (invalid, or in conflict with what the hub holds under the same till
identity), 2 when a file could not be read at all or the hub could not be reached or refused
a batch (the import stops there).

Master data (CSV with a header, or JSON: a list or lines) is read with the one row reader of
`tillflow.formats.products` and sent, in batches of valid rows, to `PUT /v1/items`, `/v1/prices`
or `/v1/promotions` (an admin key); a JSON row ``{"withdraw": KEY}`` of prices or promotions is
sent as it is. Rows refused by the reader or by the hub go to the same quarantine report; the
summary counts what the hub created, updated, left unchanged and withdrew, and its version.
The exit status means the same.
"""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import httpx
import orjson
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TransferSpeedColumn
from rich.table import Table

from tillflow.errors import FormatError, ImportAbortedError
from tillflow.formats.detect import parse_input
from tillflow.formats.products import RecordFormat, Withdrawal, detect_format, parse_sourced
from tillflow.formats.records import ImportContext, Imported, Quarantined, Recorded, SourceRef
from tillflow.model import Product
from tillflow.model.masterdata import Price, Promotion

EXIT_OK, EXIT_USAGE, EXIT_PARTIAL = 0, 2, 3
REPORT_FIELDS = ("file", "record", "locator", "stage", "field", "reason", "numbers")


@dataclass
class FileSummary:
    path: Path
    fmt: str = "?"
    read: int = 0
    imported: int = 0
    quarantined: int = 0
    not_posted: int = 0
    hub: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    error: str | None = None
    aborted: bool = False  # the hub could not take a batch: what came before it was sent


class QuarantineReport:
    """The CSV of every record refused, written as they come (created on the first one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._file: IO[str] | None = None
        self._writer: Any = None

    def add(
        self,
        file: str,
        record: int,
        locator: str,
        stage: str,
        field_: str,
        reason: str,
        numbers: Mapping[str, str],
    ) -> None:
        if self._file is None:
            self._file = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            self._writer.writerow(REPORT_FIELDS)
        numbers_text = orjson.dumps(dict(numbers)).decode() if numbers else ""
        self._writer.writerow((file, record, locator, stage, field_, reason, numbers_text))
        self.rows += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class BatchSink(Protocol):
    """Where an import's batches of canonical records go: a hub, or a store agent's outboxes."""

    def send(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take the records; one answer per record, in order (the hub's batch answer)."""
        ...


class HubClient:
    """Sends batches to the hub; waits out 429/503 (Retry-After) and connection failures."""

    def __init__(self, url: str, api_key: str, *, attempts: int = 8, timeout: float = 60.0) -> None:
        self._client = httpx.Client(
            base_url=url.rstrip("/"), headers={"authorization": f"Bearer {api_key}"}, timeout=timeout
        )
        self._url = url
        self._attempts = attempts

    def send(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`POST /v1/transactions`: the hub's result for each record, in order."""
        response = self._request("POST", "/v1/transactions", orjson.dumps({"transactions": records}))
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    def load(self, kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """`PUT /v1/{kind}` (items, prices or promotions): the hub's answer (`results`, one per
        row in order, `summary` and `version`)."""
        answer: dict[str, Any] = self._request("PUT", f"/v1/{kind}", orjson.dumps(rows)).json()
        return answer

    def _request(self, method: str, path: str, body: bytes) -> httpx.Response:
        """The hub's 200 answer; raises ImportAbortedError when it cannot be had."""
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._client.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as exc:
                if attempt == self._attempts:
                    raise ImportAbortedError(f"the hub at {self._url} cannot be reached: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            if response.status_code in (429, 503) and attempt < self._attempts:
                retry_after = response.headers.get("retry-after", "")
                time.sleep(float(retry_after) if retry_after.isdigit() else delay)
                delay = min(delay * 2, 10)
                continue
            if response.status_code != 200:
                raise ImportAbortedError(f"the hub answered {response.status_code}: {_problem(response)}")
            return response
        raise ImportAbortedError(f"the hub at {self._url} kept answering busy")  # pragma: no cover

    def close(self) -> None:
        self._client.close()


def _problem(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    return str(doc.get("detail") or doc.get("title") or doc)[:300]


@dataclass
class Importer:
    context: ImportContext
    settings: Mapping[str, Any]
    report: QuarantineReport
    hub: BatchSink | None = None  # None: dry run
    batch: int = 500
    fmt: str | None = None
    emit: Callable[[bytes], None] | None = None  # --json: each canonical transaction
    _pending: dict[str, list[tuple[Imported, dict[str, Any]]]] = field(default_factory=dict)

    def import_file(self, path: Path, progress: Progress | None = None) -> FileSummary:
        summary = FileSummary(path)
        started = time.perf_counter()
        size = path.stat().st_size
        task = progress.add_task(path.name, total=size) if progress else None
        try:
            with path.open("rb") as stream:
                summary.fmt, records = parse_input(
                    stream, self.context, name=path.name, fmt=self.fmt, settings=self.settings
                )
                for n, parsed in enumerate(records, 1):
                    self._take(parsed, summary)
                    if progress is not None and task is not None and n % 200 == 0:
                        progress.update(task, completed=stream.tell())
                self._flush(summary, everything=True)
        except FormatError as exc:
            summary.error = str(exc)
        except ImportAbortedError as exc:
            summary.error = (
                f"import stopped: {exc} (batches sent before stay sent; running the import again is"
                " safe: what the hub took comes back as duplicates)"
            )
            summary.aborted = True
        if progress is not None and task is not None:
            progress.update(task, completed=size)
        summary.seconds = time.perf_counter() - started
        return summary

    def _take(self, parsed: Imported | Quarantined | Recorded, summary: FileSummary) -> None:
        summary.read += 1
        if isinstance(parsed, Quarantined):
            summary.quarantined += 1
            src = parsed.source
            self.report.add(
                src.name, src.index, src.locator, "parse", parsed.field, parsed.reason, parsed.numbers
            )
        elif isinstance(parsed, Recorded):
            summary.not_posted += 1
        else:
            summary.imported += 1
            if self.emit is not None:
                self.emit(parsed.transaction.model_dump_json().encode())
            if self.hub is not None:
                record = orjson.loads(parsed.transaction.model_dump_json())
                pending = self._pending.setdefault(parsed.transaction.store_id, [])
                pending.append((parsed, record))
                if len(pending) >= self.batch:
                    self._send(pending, summary)
                    pending.clear()

    def _flush(self, summary: FileSummary, *, everything: bool) -> None:
        for pending in self._pending.values():
            if pending and everything:
                self._send(pending, summary)
                pending.clear()

    def _send(self, pending: list[tuple[Imported, dict[str, Any]]], summary: FileSummary) -> None:
        assert self.hub is not None
        results = self.hub.send([record for _, record in pending])
        for (parsed, _), result in zip(pending, results, strict=True):
            status = result["status"]
            summary.hub[status] += 1
            src = parsed.source
            if status == "invalid":
                for error in result.get("errors", []):
                    self.report.add(
                        src.name, src.index, src.locator, "hub", error["field"], error["reason"], {}
                    )
            elif status == "conflict":
                reason = (
                    f"the hub already holds {result.get('transaction_id')} with other content:"
                    " refused and recorded as a conflict, the original kept"
                )
                self.report.add(src.name, src.index, src.locator, "hub", "$", reason, {})


def run_import(
    paths: Sequence[Path],
    context: ImportContext,
    settings: Mapping[str, Any],
    *,
    report_path: Path,
    hub_url: str | None,
    api_key: str | None,
    fmt: str | None = None,
    batch: int = 500,
    json_out: bool = False,
    console: Console,
) -> int:
    """Import every file; print a summary to `console`; returns the exit status."""
    report = QuarantineReport(report_path)
    hub = HubClient(hub_url, api_key) if hub_url is not None and api_key is not None else None
    stdout = sys.stdout.buffer
    importer = Importer(
        context,
        settings,
        report,
        hub=hub,
        batch=batch,
        fmt=fmt,
        emit=_json_lines(stdout) if json_out else None,
    )
    try:
        summaries = _import_files(importer.import_file, paths, TransferSpeedColumn(), console)
    finally:
        report.close()
        if hub is not None:
            hub.close()
        stdout.flush()
    _print_summary(summaries, report, dry=hub is None, console=console)
    if any(s.error for s in summaries):
        return EXIT_USAGE
    refused = sum(s.quarantined + s.hub["invalid"] + s.hub["conflict"] for s in summaries)
    return EXIT_PARTIAL if refused else EXIT_OK


class _Summary(Protocol):
    aborted: bool  # the hub could not take a batch


Summary = TypeVar("Summary", bound=_Summary)


def _import_files(
    import_file: Callable[[Path, Progress], Summary],
    paths: Sequence[Path],
    column: ProgressColumn,
    console: Console,
) -> list[Summary]:
    """Each file in turn with a progress bar, until the hub is away or refuses a batch: later
    files would fare alike, and are named as not imported."""
    summaries: list[Summary] = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), column, console=console, transient=True
    ) as bar:
        for path in paths:
            summaries.append(import_file(path, bar))
            if summaries[-1].aborted:
                skipped = [str(p) for p in paths[len(summaries) :]]
                if skipped:
                    console.print(f"[red]not imported: {', '.join(skipped)}[/red]")
                break
    return summaries


def _json_lines(out: IO[bytes]) -> Callable[[bytes], None]:
    def emit(line: bytes) -> None:
        out.write(line + b"\n")

    return emit


def _print_summary(
    summaries: list[FileSummary], report: QuarantineReport, *, dry: bool, console: Console
) -> None:
    table = Table(title="tillflow import" + (" (dry run: nothing sent)" if dry else ""))
    columns = ["file", "format", "records", "imported", "quarantined", "not posted"]
    if not dry:
        columns += ["accepted", "duplicate", "conflict", "invalid"]
    columns += ["records/s"]
    for c in columns:
        table.add_column(c, justify="left" if c in ("file", "format") else "right")
    for s in summaries:
        row = [s.path.name, s.fmt, str(s.read), str(s.imported), str(s.quarantined), str(s.not_posted)]
        if not dry:
            row += [str(s.hub[k]) for k in ("accepted", "duplicate", "conflict", "invalid")]
        row.append(f"{s.read / s.seconds:,.0f}" if s.seconds > 0 else "-")
        table.add_row(*row)
    console.print(table)
    for s in summaries:
        if s.error:
            console.print(f"[red]{s.path}: {s.error}[/red]")
    if report.rows:
        console.print(f"{report.rows} refused records: see the quarantine report {report.path}")


# --- master data: `tillflow import FILE... --kind items|prices|promotions` ----------------------

MASTER_MODELS: dict[str, type[BaseModel]] = {"items": Product, "prices": Price, "promotions": Promotion}


@dataclass(frozen=True, slots=True)
class MasterRow:
    """A row to send to the hub: where it sits in its file and its JSON (a validated record,
    or a withdrawal of a price or a promotion)."""

    source: SourceRef
    body: dict[str, Any]


def read_master_rows(
    data: bytes, *, name: str, kind: str, fmt: RecordFormat | None = None
) -> Iterator[MasterRow | Quarantined]:
    """Each row of a master data file of `kind`, in order: to send (a validated record, or in
    prices and promotions a withdrawal), or quarantined by the model.
    Raises FormatError, before yielding anything, when the input as a whole cannot be read."""
    model = MASTER_MODELS[kind]
    for source, row in parse_sourced(data, name=name, model=model, fmt=fmt, withdrawals=kind != "items"):
        if isinstance(row, Quarantined):
            yield row
        elif isinstance(row, Withdrawal):
            yield MasterRow(source, row.record)
        else:
            yield MasterRow(source, row.model_dump(mode="json", exclude_defaults=True))


@dataclass
class MasterSummary:
    path: Path
    kind: str
    fmt: str = "?"
    read: int = 0
    valid: int = 0  # rows sent (dry: that would be)
    quarantined: int = 0  # rows refused, by the reader or by the hub
    hub: Counter[str] = field(default_factory=Counter)  # created, updated, unchanged, withdrawn, absent
    version: int | None = None  # the hub's master data version after the file's last batch
    seconds: float = 0.0
    error: str | None = None
    aborted: bool = False


@dataclass
class MasterImporter:
    kind: str
    report: QuarantineReport
    hub: HubClient | None = None  # None: dry run
    batch: int = 500
    fmt: RecordFormat | None = None
    emit: Callable[[bytes], None] | None = None  # --json: each row as sent

    def import_file(self, path: Path, progress: Progress | None = None) -> MasterSummary:
        summary = MasterSummary(path, self.kind)
        started = time.perf_counter()
        task = progress.add_task(path.name, total=None) if progress else None
        pending: list[MasterRow] = []
        try:
            data = path.read_bytes()
            summary.fmt = self.fmt or detect_format(path.name, data[:64])
            for row in read_master_rows(data, name=path.name, kind=self.kind, fmt=self.fmt):
                summary.read += 1
                if isinstance(row, Quarantined):
                    summary.quarantined += 1
                    src = row.source
                    self.report.add(src.name, src.index, src.locator, "parse", row.field, row.reason, {})
                else:
                    summary.valid += 1
                    if self.emit is not None:
                        self.emit(orjson.dumps(row.body))
                    if self.hub is not None:
                        pending.append(row)
                        if len(pending) >= self.batch:
                            self._send(pending, summary)
                            pending.clear()
                if progress is not None and task is not None and summary.read % 200 == 0:
                    progress.update(task, completed=summary.read)
            if pending:
                self._send(pending, summary)
        except OSError as exc:
            summary.error = f"cannot be read: {exc.strerror or exc}"
        except FormatError as exc:
            summary.error = str(exc)
        except ImportAbortedError as exc:
            summary.error = (
                f"import stopped: {exc} (batches sent before stay sent; running the import again is"
                " safe: what the hub took comes back unchanged)"
            )
            summary.aborted = True
        summary.seconds = time.perf_counter() - started
        return summary

    def _send(self, pending: list[MasterRow], summary: MasterSummary) -> None:
        assert self.hub is not None
        answer = self.hub.load(self.kind, [row.body for row in pending])
        for row, result in zip(pending, answer["results"], strict=True):
            status = result["status"]
            if status != "invalid":
                summary.hub[status] += 1
                continue
            summary.quarantined += 1
            src = row.source
            for error in result.get("errors", []):
                self.report.add(src.name, src.index, src.locator, "hub", error["field"], error["reason"], {})
        summary.version = answer["version"]


def run_master_import(
    paths: Sequence[Path],
    kind: str,
    *,
    report_path: Path,
    hub_url: str | None,
    api_key: str | None,
    fmt: RecordFormat | None = None,
    batch: int = 500,
    json_out: bool = False,
    console: Console,
) -> int:
    """Load every file's items, prices or promotions (`kind`) into the hub through its batch API;
    print a summary to `console`; returns the exit status (0: all loaded, 3: some refused, 2: a
    file unreadable, or the hub unreachable or refusing a batch)."""
    report = QuarantineReport(report_path)
    hub = HubClient(hub_url, api_key) if hub_url is not None and api_key is not None else None
    stdout = sys.stdout.buffer
    importer = MasterImporter(
        kind, report, hub=hub, batch=batch, fmt=fmt, emit=_json_lines(stdout) if json_out else None
    )
    try:
        summaries = _import_files(importer.import_file, paths, TextColumn("{task.completed} rows"), console)
    finally:
        report.close()
        if hub is not None:
            hub.close()
        stdout.flush()
    _print_master_summary(summaries, report, dry=hub is None, console=console)
    if any(s.error for s in summaries):
        return EXIT_USAGE
    return EXIT_PARTIAL if any(s.quarantined for s in summaries) else EXIT_OK


def _print_master_summary(
    summaries: list[MasterSummary], report: QuarantineReport, *, dry: bool, console: Console
) -> None:
    table = Table(title="tillflow import --kind" + (" (dry run: nothing sent)" if dry else ""))
    outcomes = ("created", "updated", "unchanged", "withdrawn")
    columns = ["file", "kind", "format", "read"]
    columns += ["valid"] if dry else list(outcomes)
    columns += ["quarantined"] + ([] if dry else ["version"])
    for c in columns:
        table.add_column(c, justify="left" if c in ("file", "kind", "format") else "right")
    for s in summaries:
        row = [s.path.name, s.kind, s.fmt, str(s.read)]
        row += [str(s.valid)] if dry else [str(s.hub[k]) for k in outcomes]
        row += [str(s.quarantined)] + ([] if dry else ["-" if s.version is None else str(s.version)])
        table.add_row(*row)
    console.print(table)
    for s in summaries:
        if s.hub["absent"]:
            console.print(f"{s.path}: {s.hub['absent']} withdrawal(s) named nothing the hub holds (absent)")
        if s.error:
            console.print(f"[red]{s.path}: {s.error}[/red]")
    refused = sum(s.quarantined for s in summaries)
    if refused:
        console.print(f"{refused} refused rows: see the quarantine report {report.path}")
