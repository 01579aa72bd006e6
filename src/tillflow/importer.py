"""`tillflow import FILE...`: read POS files and platform exports, send them to the hub.

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
"""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from tillflow.errors import FormatError, ImportAbortedError
from tillflow.formats.detect import parse_input
from tillflow.formats.records import ImportContext, Imported, Quarantined, Recorded

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


class HubClient:
    """Sends batches to the hub; waits out 429/503 (Retry-After) and connection failures."""

    def __init__(self, url: str, api_key: str, *, attempts: int = 8, timeout: float = 60.0) -> None:
        self._client = httpx.Client(
            base_url=url.rstrip("/"), headers={"authorization": f"Bearer {api_key}"}, timeout=timeout
        )
        self._url = url
        self._attempts = attempts

    def send(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = orjson.dumps({"transactions": records})
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._client.post(
                    "/v1/transactions", content=body, headers={"content-type": "application/json"}
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
            results: list[dict[str, Any]] = response.json()["results"]
            return results
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
    hub: HubClient | None = None  # None: dry run
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
    summaries: list[FileSummary] = []
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        ) as progress:
            for path in paths:
                summaries.append(importer.import_file(path, progress))
                if summaries[-1].aborted:  # the hub is away or refuses: later files would fare alike
                    skipped = [str(p) for p in paths if p not in {s.path for s in summaries}]
                    if skipped:
                        console.print(f"[red]not imported: {', '.join(skipped)}[/red]")
                    break
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
