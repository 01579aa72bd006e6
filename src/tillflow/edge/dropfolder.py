"""The agent's drop folder: files a back office or a till drops there (POSLog XML, end-of-day CSV,
Shopify or Square JSON) are read with the import code (`tillflow.importer`) into the stores'
outboxes, and forwarded like the sales of the local API.

A file is taken once its size and modification time have not changed for `settle` seconds (a copy
still being written is left alone). Once read, it moves to `done/` when every record was taken
(accepted, or a duplicate of one already taken) and to `failed/` otherwise (the file could not be
read, or some record was refused), with its report beside it: `<file>.report.csv`, one line per
refused record with its place, field and reason. The records taken from a failed file stay
taken: dropping the corrected file again answers them as duplicates. A file of the same name
already in `done/` or `failed/` is kept, and the new one gets a numbered name.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tillflow.errors import TillflowError
from tillflow.formats.records import ImportContext
from tillflow.hub.ingest import ingest_records
from tillflow.importer import FileSummary, Importer, QuarantineReport
from tillflow.ports import TransactionStore

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".xml", ".csv", ".json", ".jsonl", ".ndjson"})


class OutboxSink:
    """Where the importer sends its batches in an agent: the outboxes of the stores it serves,
    answered per record as the hub answers (a record of another store is invalid)."""

    def __init__(self, outboxes: TransactionStore, store_ids: frozenset[str]) -> None:
        self.outboxes = outboxes
        self.store_ids = store_ids

    def send(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        served = [i for i, r in enumerate(records) if r.get("store_id") in self.store_ids]
        results: list[dict[str, Any]] = [
            {
                "index": i,
                "status": "invalid",
                "errors": [
                    {"field": "store_id", "reason": f"store {r.get('store_id')!r} is not served here"}
                ],
            }
            for i, r in enumerate(records)
        ]
        taken = ingest_records([records[i] for i in served], self.outboxes, traceparent=None)
        for i, result in zip(served, taken, strict=True):
            result.index = i
            results[i] = result.as_json()
        return results


@dataclass
class DropFolder:
    """Watches `root` for files and imports each once it has settled."""

    root: Path
    sink: OutboxSink
    context: ImportContext
    settings: Mapping[str, Any]
    interval: float = 1.0  # seconds between looks
    settle: float = 1.0  # seconds a file must stay unchanged

    def __post_init__(self) -> None:
        for folder in (self.root, self.root / "done", self.root / "failed"):
            folder.mkdir(parents=True, exist_ok=True)
        self._seen: dict[Path, tuple[int, int]] = {}  # size and mtime when first seen unchanged

    def scan(self) -> list[FileSummary]:
        """Import the files that have settled since the last look; their summaries."""
        done = []
        for path in sorted(p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES):
            stat = path.stat()
            state = (stat.st_size, stat.st_mtime_ns)
            if self._seen.get(path) != state:
                self._seen[path] = state  # new or still changing: look again later
                continue
            del self._seen[path]
            done.append(self.take(path))
        return done

    def take(self, path: Path) -> FileSummary:
        """Import one file, then move it (and its report) to done/ or failed/."""
        report_path = path.with_name(path.name + ".report.csv")
        report = QuarantineReport(report_path)
        try:
            summary = Importer(self.context, self.settings, report, hub=self.sink).import_file(path)
            if summary.error is not None:  # the file as a whole
                report.add(path.name, 0, "-", "read", "$", summary.error, {})
        finally:
            report.close()
        refused = summary.quarantined + summary.hub.get("invalid", 0) + summary.hub.get("conflict", 0)
        failed = summary.error is not None or refused > 0
        target = _free_name(self.root / ("failed" if failed else "done") / path.name)
        path.rename(target)
        if report_path.exists():
            report_path.rename(target.with_name(target.name + ".report.csv"))
        log.info(
            "%s: %d read, %d taken, %d refused -> %s",
            path.name,
            summary.read,
            summary.imported,
            refused,
            target,
        )
        return summary

    def run(self, stop: threading.Event) -> None:
        """Look every `interval` until `stop` is set. A failure (a full outbox, a file that cannot
        be moved) is logged and the watch goes on: the file is taken again later."""
        while not stop.is_set():
            try:
                self.scan()
            except (OSError, TillflowError):
                log.exception("drop folder %s", self.root)
            stop.wait(self.interval)


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    for n in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(path)
