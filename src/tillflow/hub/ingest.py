"""Taking a batch of canonical transactions: validate once, authorise, judge, store and log.

Each record gets its own answer (accepted / duplicate / conflict / invalid with the field
path and reason); one bad record never stops the rest. Accepted records and their events
are written in one commit.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from tillflow.formats.records import ImportContext, Imported, Quarantined, field_path
from tillflow.model import Transaction, TransactionRef
from tillflow.ports import IncomingTransaction, Principal, TransactionStore, Verdict

log = logging.getLogger(__name__)


def errors_of(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": field_path(e["loc"]), "reason": e["msg"].removeprefix("Value error, ")}
        for e in exc.errors(include_url=False, include_input=False)
    ]


@dataclass
class RecordResult:
    index: int
    status: Verdict
    transaction_id: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status.value}
        if self.transaction_id:
            out["transaction_id"] = self.transaction_id
        if self.errors:
            out["errors"] = self.errors
        return out


def forbidden_records(
    records: Sequence[Any], principal: Principal, known_stores: frozenset[str]
) -> list[str]:
    """Why records may not be taken with this key (unknown store, or another store's key)."""
    reasons = []
    for i, record in enumerate(records):
        store = record.get("store_id") if isinstance(record, dict) else None
        if not isinstance(store, str):
            continue  # judged as invalid below
        if store not in known_stores:
            reasons.append(f"record {i}: store {store!r} is not configured")
        elif not principal.may_act_for(store):
            reasons.append(f"record {i}: this key is for store {principal.store_id}, not {store}")
    return reasons


def validate_records(
    records: Sequence[Any],
    traceparent: str | None,
    edge_accepted: Sequence[datetime | None] | None = None,
) -> tuple[list[RecordResult], list[IncomingTransaction], list[int]]:
    """Validate each record; returns all results (valid ones pending), the valid ones and their
    indexes. `edge_accepted`: per record, when a store agent acknowledged it, if it says."""
    results: list[RecordResult] = []
    valid: list[IncomingTransaction] = []
    positions: list[int] = []
    for i, record in enumerate(records):
        try:
            tx = Transaction.model_validate(record)
        except ValidationError as exc:
            tx_id = _id_hint(record)
            results.append(RecordResult(i, Verdict.INVALID, tx_id, errors_of(exc)))
            continue
        # the record as sent, keys sorted: its digest tells a retry (same bytes) from a conflict
        data = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        at = edge_accepted[i] if edge_accepted is not None else None
        valid.append(IncomingTransaction(tx, data, hashlib.sha256(data).hexdigest(), traceparent, at))
        positions.append(len(results))
        results.append(RecordResult(i, Verdict.ACCEPTED, tx.transaction_id))
    return results, valid, positions


def ingest_records(
    records: Sequence[Any],
    store: TransactionStore,
    *,
    traceparent: str | None,
    received_at: datetime | None = None,
    edge_accepted: Sequence[datetime | None] | None = None,
) -> list[RecordResult]:
    """Validate, then record the valid ones in one commit; one result per record, in order.
    `edge_accepted`: per record, when a store agent acknowledged it (None: not forwarded)."""
    received_at = received_at or datetime.now(UTC)
    results, valid, positions = validate_records(records, traceparent, edge_accepted)
    verdicts = store.record_batch(valid, received_at=received_at) if valid else []
    for pos, verdict in zip(positions, verdicts, strict=True):
        results[pos].status = verdict
    if Verdict.CONFLICT in verdicts or log.isEnabledFor(logging.DEBUG):
        _log_verdicts(valid, verdicts)
    return results


def _log_verdicts(valid: Sequence[IncomingTransaction], verdicts: Sequence[Verdict]) -> None:
    """A warning per conflict; at DEBUG, a line per record taken (its customer and tenders are
    masked on the way out)."""
    for incoming, verdict in zip(valid, verdicts, strict=True):
        tx = incoming.transaction
        if verdict is Verdict.CONFLICT:
            log.warning(
                "transaction %s refused: the hub holds other content for its identity",
                tx.transaction_id,
                extra={"transaction_id": tx.transaction_id, "verdict": verdict.value},
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "transaction %s %s",
                tx.transaction_id,
                verdict.value,
                extra={
                    "transaction_id": tx.transaction_id,
                    "verdict": verdict.value,
                    "grand_total": str(tx.totals.grand_total),
                    "currency": tx.currency,
                    "member_id": tx.customer.member_id if tx.customer else None,
                    "tenders": [
                        {"kind": t.kind.value, "amount": str(t.amount), "reference": t.reference}
                        for t in tx.tenders
                    ],
                },
            )


def _id_hint(record: Any) -> str | None:
    """The transaction id of an invalid record, when its identity fields are readable."""
    if not isinstance(record, dict):
        return None
    try:
        ref = TransactionRef.model_validate(
            {k: record.get(k) for k in ("store_id", "register_id", "business_day", "sequence")}
        )
    except ValidationError:
        return None
    return ref.transaction_id


def poslog_records(
    body: bytes, context: ImportContext, settings: Any
) -> tuple[list[tuple[int, dict[str, Any]]], list[RecordResult]]:
    """A POSLog document's transactions as canonical records (with their position in the
    document), and the answers already known: quarantined ones are invalid with the field and
    reason, control transactions are not posted. Raises FormatError for an unreadable document."""
    from tillflow.formats import poslog  # lxml and the reader load only where POSLog arrives

    records: list[tuple[int, dict[str, Any]]] = []
    known: list[RecordResult] = []
    for parsed in poslog.parse(io.BytesIO(body), context, name="request", settings=settings):
        index = parsed.source.index - 1
        if isinstance(parsed, Imported):
            records.append((index, orjson.loads(parsed.transaction.model_dump_json())))
        elif isinstance(parsed, Quarantined):
            reason = parsed.reason + (f" ({_numbers(parsed.numbers)})" if parsed.numbers else "")
            known.append(
                RecordResult(index, Verdict.INVALID, None, [{"field": parsed.field, "reason": reason}])
            )
        else:
            known.append(
                RecordResult(index, Verdict.NOT_POSTED, None, [{"field": "$", "reason": parsed.kind}])
            )
    return records, known


def _numbers(numbers: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in numbers.items())
