"""The ERP by files: `ErpSystem` for an ERP that imports what it finds in a folder it polls.

Layout: a folder per store-day, ``root/<store>/<business day>/``, with a CSV and a JSON file per
document (``journal-<slug>-<hash>.csv``/``.json``, ``movements-<slug>-<hash>.csv``/``.json``: a
slug of the id and a short hash of it, so any id gives a safe, unique name) and ``manifest.json``,
which the ERP trusts: per document its external id, kind, document number
(``F-<store>-<yyyymmdd>-<n>``), files with sha256 and size, line count, totals per currency,
idempotency key and posting time. A file the manifest does not list is not complete.

Atomicity: each file goes to a hidden temp file beside it (flush, fsync), then ``os.replace``
and an fsync of the folder; data files first, the manifest last, so a crash leaves the old
manifest or the new one, never one naming a missing or partial file. Leftover temp files are
ignored, and removed when an adapter loads the root.

Idempotency: the same document (kind and external id) again with the same content returns the
first receipt (``repeated``) and writes nothing; with other content it is refused (a file cannot
be unposted), as is an idempotency key already used for another document. Posted documents are
read back from the manifests once, so this survives a restart. One process writes a root; a lock
serialises the posts of an adapter.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
import secrets
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from tillflow.connectors.resilience import Resilience
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.model import InventoryMovement, Journal, JournalLine, minor_unit
from tillflow.ports import PostingReceipt, TrialBalanceLine

__all__ = ["JOURNAL_COLUMNS", "MANIFEST", "MOVEMENT_COLUMNS", "FileErp"]

JOURNAL_COLUMNS = (
    "journal_id", "document_number", "store_id", "business_day", "line_no", "account", "debit", "credit",
    "currency", "description", "dimensions",
)  # fmt: skip
MOVEMENT_COLUMNS = (
    "batch_id", "document_number", "store_id", "business_day", "line_no", "sku", "quantity", "uom", "reason",
    "transaction_id", "transaction_line_no", "occurred_at",
)  # fmt: skip
_MOVEMENT_KEYS = ("sku", "quantity", "uom", "reason", "transaction_id", "line_no", "occurred_at")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "tillflow-erp-file/1"
_PLAIN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_Entry = dict[str, Any]  # one document of a manifest


@dataclass(frozen=True, slots=True)
class _Draft:
    """A document about to be posted: its content, without a document number."""

    kind: str  # "journal" | "movements"
    external_id: str
    store_id: str
    business_day: date
    body: dict[str, Any]
    idempotency_key: str

    @property
    def lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = self.body["lines" if self.kind == "journal" else "movements"]
        return lines

    @property
    def digest(self) -> str:
        return hashlib.sha256(orjson.dumps(self.body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class FileErp:
    """`ErpSystem` as files under `root` that a file-importing ERP picks up."""

    def __init__(self, root: Path, *, system: str = "erp-file", resilience: Resilience | None = None) -> None:
        self.root = Path(root)
        self.system = system
        self.resilience = resilience  # its maintenance windows: when the ERP imports, say
        self._lock = threading.Lock()
        self._posted: dict[tuple[str, str], _Entry] | None = None  # (kind, external id) -> entry
        self._keys: dict[str, tuple[str, str]] = {}  # idempotency key -> (kind, external id)

    def post_journal(self, journal: Journal, *, idempotency_key: str) -> PostingReceipt:
        body = {
            "external_id": journal.journal_id,
            "store_id": journal.store_id,
            "business_day": journal.business_day.isoformat(),
            "lines": [_journal_line(line) for line in journal.lines],
            "source_transactions": list(journal.source_transactions),
        }
        day = journal.business_day
        return self._post(_Draft("journal", journal.journal_id, journal.store_id, day, body, idempotency_key))

    def post_journals(
        self, journals: Sequence[Journal], *, idempotency_keys: Sequence[str]
    ) -> list[PostingReceipt | DownstreamRejectedError]:
        """Each journal as `post_journal` writes it; a rejection answers its journal only."""
        out: list[PostingReceipt | DownstreamRejectedError] = []
        for journal, key in zip(journals, idempotency_keys, strict=True):
            try:
                out.append(self.post_journal(journal, idempotency_key=key))
            except DownstreamRejectedError as exc:
                out.append(exc)
        return out

    def posting_status(self, external_id: str) -> PostingReceipt | None:
        with self._lock:
            posted = self._index()
            entry = posted.get(("journal", external_id)) or posted.get(("movements", external_id))
            return _receipt(entry) if entry else None

    def post_movements(
        self,
        store_id: str,
        business_day: date,
        movements: Sequence[InventoryMovement],
        *,
        batch_id: str,
        idempotency_key: str,
    ) -> PostingReceipt:
        for n, move in enumerate(movements, start=1):
            if move.store_id != store_id:
                reason = f"movement {n} of batch {batch_id} is for store {move.store_id}, not {store_id}"
                raise DownstreamRejectedError(self.system, reason)
        body = {
            "batch_id": batch_id,
            "store_id": store_id,
            "business_day": business_day.isoformat(),
            "movements": [_movement(m) for m in movements],
        }
        return self._post(_Draft("movements", batch_id, store_id, business_day, body, idempotency_key))

    def trial_balance(self, store_id: str, business_day: date) -> list[TrialBalanceLine]:
        lines: list[dict[str, Any]] = []
        with self._lock:
            folder = self._folder(store_id, business_day)
            for doc in self._read_manifest(folder)["documents"]:
                if doc["kind"] == "journal":
                    lines += self._read_json(folder / doc["files"]["json"]["name"])["lines"]
        sums = _sum_lines(lines, per_account=True)
        return [TrialBalanceLine(acc, cur, debit, credit) for (acc, cur), (debit, credit) in sums.items()]

    # --- posting ----------------------------------------------------------------------------

    def _post(self, draft: _Draft) -> PostingReceipt:
        if self.resilience is None:
            return self._write(draft)
        return self.resilience.call(lambda: self._write(draft))

    def _write(self, draft: _Draft) -> PostingReceipt:
        with self._lock:
            known = self._known(draft)
            if known is not None:
                return known
            folder = self._folder(draft.store_id, draft.business_day)
            manifest = self._read_manifest(folder)
            number = (
                f"F-{folder.parent.name}-{draft.business_day:%Y%m%d}-{len(manifest['documents']) + 1:04d}"
            )
            files = _render(draft, number)
            entry = _entry(draft, number, files)
            manifest["documents"].append(entry)
            try:
                for path in [p for p in (folder.parent, folder) if not p.is_dir()]:
                    path.mkdir(parents=True, exist_ok=True)
                    _fsync_dir(path.parent)  # the new folder's entry is durable
                for name, data in files.items():
                    _replace_file(folder / name, data)
                _fsync_dir(folder)  # the data files are durable before the manifest names them
                _replace_file(folder / MANIFEST, _dumps(manifest))
            except OSError as exc:
                _unlink_quietly(folder / name for name in files)
                raise self._unavailable(f"cannot write {draft.kind} {draft.external_id}", exc) from exc
            self._remember(entry)
            try:
                _fsync_dir(folder)
            except OSError as exc:  # listed already: a retry is answered as a repeat
                raise self._unavailable(f"cannot sync {folder.name}", exc) from exc
            return _receipt(entry)

    def _known(self, draft: _Draft) -> PostingReceipt | None:
        """The first receipt of a repeat, None for a new document; raises for a conflict."""
        posted = self._index()
        ident = (draft.kind, draft.external_id)
        used_for = self._keys.get(draft.idempotency_key)
        if used_for is not None and used_for != ident:
            reason = f"idempotency key {draft.idempotency_key} was used for {used_for[0]} {used_for[1]}"
            raise DownstreamRejectedError(self.system, reason)
        entry = posted.get(ident)
        if entry is None:
            return None
        if entry["content_sha256"] != draft.digest:
            reason = (
                f"{draft.kind} {draft.external_id} was posted as {entry['document_number']} "
                "with other content; a posted file cannot be unposted"
            )
            raise DownstreamRejectedError(self.system, reason)
        return _receipt(entry, repeated=True)

    def _remember(self, entry: _Entry) -> None:
        ident = (entry["kind"], entry["external_id"])
        self._index()[ident] = entry
        self._keys.setdefault(entry["idempotency_key"], ident)

    # --- reading back -----------------------------------------------------------------------

    def _index(self) -> dict[tuple[str, str], _Entry]:
        """Every posted document, loaded from the manifests on first use."""
        if self._posted is None:
            self._posted = {}
            try:
                manifests = sorted(self.root.glob(f"*/*/{MANIFEST}"))
            except OSError as exc:
                raise self._unavailable(f"cannot list {self.root.name}", exc) from exc
            for path in manifests:
                _unlink_quietly(path.parent.glob(".*.tmp"))
                for entry in self._read_manifest(path.parent)["documents"]:
                    self._remember(entry)
        return self._posted

    def _folder(self, store_id: str, business_day: date) -> Path:
        return self.root / _safe_name(store_id) / business_day.isoformat()

    def _read_manifest(self, folder: Path) -> dict[str, Any]:
        path = folder / MANIFEST
        if not path.exists():
            return {"format": MANIFEST_FORMAT, "business_day": folder.name, "documents": []}
        return self._read_json(path)

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = orjson.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise self._unavailable(f"cannot read {path.parent.name}/{path.name}", exc) from exc
        return data

    def _unavailable(self, what: str, exc: BaseException) -> DownstreamUnavailableError:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return DownstreamUnavailableError(self.system, f"{what}: {detail}")


# --- files ----------------------------------------------------------------------------------


def _replace_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: a temp file beside it, fsync, os.replace."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)  # POSIX: a folder's entries are made durable through it
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(paths: Iterable[Path]) -> None:
    """Best effort: unlisted files are never imported, and posting their document replaces them."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _safe_name(text: str, *, always_hash: bool = False) -> str:
    """`text` as a file name: itself when plain, else a slug and a short hash of `text`."""
    if not always_hash and _PLAIN.fullmatch(text):
        return text
    slug = _UNSAFE.sub("-", text).strip("-.")[:48] or "id"
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _render(draft: _Draft, number: str) -> dict[str, bytes]:
    """The document's CSV and JSON files, by name."""
    content = {**draft.body, "document_number": number}
    stem = f"{draft.kind}-{_safe_name(draft.external_id, always_hash=True)}"
    head = [draft.external_id, number, draft.store_id, draft.business_day.isoformat()]
    columns: Sequence[str]
    if draft.kind == "journal":
        columns, rows = JOURNAL_COLUMNS, [_journal_cells(line) for line in draft.lines]
    else:
        columns, rows = MOVEMENT_COLUMNS, [[move[key] for key in _MOVEMENT_KEYS] for move in draft.lines]
    table = [[*head, n, *row] for n, row in enumerate(rows, start=1)]
    return {f"{stem}.csv": _csv(columns, table), f"{stem}.json": _dumps(content)}


def _entry(draft: _Draft, number: str, files: dict[str, bytes]) -> _Entry:
    totals = _sum_lines(draft.lines, per_account=False) if draft.kind == "journal" else {}
    return {
        "external_id": draft.external_id,
        "kind": draft.kind,
        "document_number": number,
        "store_id": draft.store_id,
        "business_day": draft.business_day.isoformat(),
        "files": {name.rsplit(".", 1)[1]: _file_entry(name, data) for name, data in files.items()},
        "line_count": len(draft.lines),
        "totals": {cur: {"debit": f"{d:f}", "credit": f"{c:f}"} for (_, cur), (d, c) in totals.items()},
        "content_sha256": draft.digest,
        "idempotency_key": draft.idempotency_key,
        "posted_at": datetime.now(UTC).isoformat(),
    }


def _file_entry(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _receipt(entry: _Entry, *, repeated: bool = False) -> PostingReceipt:
    posted_at = datetime.fromisoformat(entry["posted_at"])
    return PostingReceipt(entry["external_id"], entry["document_number"], posted_at, repeated)


def _dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def _csv(columns: Sequence[str], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


# --- translation (the HTTP adapter's JSON field names) ---------------------------------------


def _minor(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(minor_unit(currency))


def _journal_line(line: JournalLine) -> dict[str, Any]:
    out: dict[str, Any] = {"account": line.account, "currency": line.currency}
    if line.debit:
        out["debit"] = f"{_minor(line.debit, line.currency):f}"
    if line.credit:
        out["credit"] = f"{_minor(line.credit, line.currency):f}"
    out["description"] = line.description
    out["dimensions"] = dict(line.dimensions)
    return out


def _journal_cells(line: dict[str, Any]) -> list[str]:
    """account, debit, credit, currency, description, dimensions (compact JSON, or empty)."""
    zero = f"{_minor(Decimal(0), line['currency']):f}"
    dimensions = orjson.dumps(line["dimensions"], option=orjson.OPT_SORT_KEYS).decode()
    debit, credit = line.get("debit", zero), line.get("credit", zero)
    extra = dimensions if line["dimensions"] else ""
    return [line["account"], debit, credit, line["currency"], line["description"], extra]


def _sum_lines(
    lines: list[dict[str, Any]], *, per_account: bool
) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """Debits and credits of journal lines per (account or "", currency), sorted, in minor units."""
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for line in lines:
        side = sums[(line["account"] if per_account else "", line["currency"])]
        side[0] += Decimal(line.get("debit", "0"))
        side[1] += Decimal(line.get("credit", "0"))
    return {key: (_minor(d, key[1]), _minor(c, key[1])) for key, (d, c) in sorted(sums.items())}


def _movement(move: InventoryMovement) -> dict[str, Any]:
    return {
        "store_id": move.store_id,
        "sku": move.sku,
        "quantity": f"{move.quantity.normalize():f}",  # one spelling per value: "1.0" is "1"
        "uom": move.uom.value,
        "reason": move.reason.value,
        "transaction_id": move.transaction_id,
        "line_no": move.line_no,
        "occurred_at": move.occurred_at.isoformat(),
    }
