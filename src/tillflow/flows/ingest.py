"""The gateway's judgement of a batch: which records are new, repeats, or conflicts.

A transaction's identity is fixed at the till. The same identity with the same content is a
duplicate (a retry: nothing changes); with different content it is a conflict: refused and
recorded, the original kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tillflow.ports import IncomingTransaction, Verdict


@dataclass(frozen=True, slots=True)
class Judgement:
    verdicts: list[Verdict]
    new: list[IncomingTransaction]
    conflicts: list[IncomingTransaction]


def judge_batch(batch: Sequence[IncomingTransaction], known: Mapping[str, str]) -> Judgement:
    """Judge each record against `known` (transaction id -> content digest) and the batch itself."""
    seen = dict(known)
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
        elif digest == record.digest:
            verdicts.append(Verdict.DUPLICATE)
        else:
            conflicts.append(record)
            verdicts.append(Verdict.CONFLICT)
    return Judgement(verdicts, new, conflicts)
