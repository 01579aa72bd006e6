"""The gateway's judgement of a batch: which records are new, repeats, or conflicts.

A transaction's identity is fixed at the till. The same identity with the same content is a
duplicate (a retry: nothing changes); with different content it is a conflict: refused and
recorded, the original kept. "Same content" is decided on the byte digest first; when the
digests differ the two transactions are compared as values, so "12.3" and "12.30", or "Z"
and "+00:00", are the same content spelled differently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tillflow.model import Transaction
from tillflow.ports import IncomingTransaction, Verdict


@dataclass(frozen=True, slots=True)
class Judgement:
    verdicts: list[Verdict]
    new: list[IncomingTransaction]
    conflicts: list[IncomingTransaction]


def to_compare(batch: Sequence[IncomingTransaction], known: Mapping[str, str]) -> set[str]:
    """Ids of known transactions whose stored digest differs from a record's: compare as values."""
    return {
        r.transaction.transaction_id
        for r in batch
        if known.get(r.transaction.transaction_id, r.digest) != r.digest
    }


def judge_batch(
    batch: Sequence[IncomingTransaction],
    known: Mapping[str, str],
    originals: Mapping[str, Transaction] | None = None,
) -> Judgement:
    """Judge each record against `known` (transaction id -> content digest), the stored
    `originals` of those `to_compare` named, and the batch itself."""
    seen = dict(known)
    originals = originals or {}
    verdicts: list[Verdict] = []
    new: list[IncomingTransaction] = []
    conflicts: list[IncomingTransaction] = []
    for record in batch:
        tx_id = record.transaction.transaction_id
        digest = seen.get(tx_id)
        if digest is None:
            seen[tx_id] = record.digest
            new.append(record)
            verdicts.append(Verdict.ACCEPTED)
        elif digest == record.digest or originals.get(tx_id) == record.transaction:
            verdicts.append(Verdict.DUPLICATE)
        else:
            conflicts.append(record)
            verdicts.append(Verdict.CONFLICT)
    return Judgement(verdicts, new, conflicts)
