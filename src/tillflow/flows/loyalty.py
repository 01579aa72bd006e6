"""Loyalty flow: a completed sale with a member earns points in the loyalty platform, once.

The platform owns the rules (points per currency unit, category and tier multipliers); the hub
sends what earns (each sold line's net amount and department) under the transaction id, which
is also the idempotency key, so a redelivered event never earns twice. A post-void takes back
everything the voided sale earned. Transactions captured offline earn when they arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tillflow.errors import DownstreamRejectedError, FlowError
from tillflow.model import LineAction, LoggedEvent, Transaction, TransactionKind
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.model.transaction import TRUSTED_CONTEXT
from tillflow.ports import Accrual, EarningLine, LoyaltyPlatform, TransactionStore

FLOW: Final = "loyalty"
EARNING_KINDS = frozenset({TransactionKind.SALE, TransactionKind.EXCHANGE})


def earning_lines(tx: Transaction) -> list[EarningLine]:
    """What earns: each sold line's amount net of its own price modifiers, by department."""
    return [
        EarningLine(amount=line.net_amount, category=line.department)
        for line in tx.lines
        if line.action is LineAction.SALE and line.net_amount > 0
    ]


def accrual_of(tx: Transaction) -> Accrual | None:
    """What a completed transaction earns, if anything: a member's sale or exchange with lines
    that earn. The transaction id makes the idempotency key."""
    if tx.customer is None or tx.kind not in EARNING_KINDS:
        return None
    lines = earning_lines(tx)
    if not lines:
        return None
    return Accrual(
        member_id=tx.customer.member_id,
        program=tx.customer.program,
        transaction_id=tx.transaction_id,
        currency=tx.currency,
        lines=tuple(lines),
        idempotency_key=f"accrue:{tx.transaction_id}",
    )


def accrue_points(
    events: Sequence[LoggedEvent], *, loyalty: LoyaltyPlatform, transactions: TransactionStore
) -> int:
    """Handler of the loyalty consumer group: the batch's accruals in one call, then the
    reversals of its post-voids. A post-void can reach the hub before the sale it cancels: its
    sale's accrual goes first in the same call (a repeat when the sale already earned, and the
    sale's own event later repeats it), so the reversal always finds what to take back. A
    refused accrual is raised after the others went through (the runner then settles the batch
    event by event). Returns how many ledger entries it asked for."""
    accruals: dict[str, Accrual] = {}
    reversals: list[tuple[Transaction, Accrual]] = []
    for event in events:
        if event.event.type != TRANSACTION_COMPLETED:
            continue
        tx = Transaction.model_validate_json(event.event.data, context=TRUSTED_CONTEXT)
        earned = accrual_of(tx if tx.voided is None else _voided(tx, transactions))
        if earned is None:
            continue
        accruals[earned.idempotency_key] = earned
        if tx.voided is not None:
            reversals.append((tx, earned))
    answers = loyalty.accrue_many(list(accruals.values())) if accruals else []
    for answer in answers:
        if isinstance(answer, DownstreamRejectedError):
            raise answer
    for void, earned in reversals:
        loyalty.reverse(
            earned.member_id,
            program=earned.program,
            transaction_id=earned.transaction_id,
            points=None,
            idempotency_key=f"void:{void.transaction_id}",
        )
    return len(accruals) + len(reversals)


def _voided(void: Transaction, transactions: TransactionStore) -> Transaction:
    """The transaction a post-void cancels, as the hub accepted it."""
    assert void.voided is not None
    target = void.voided.transaction_id
    stored = transactions.get_transaction(target)
    if stored is None:  # retried: the voided sale may still be on its way from the store
        raise FlowError(f"post-void {void.transaction_id}: the voided transaction {target} has not arrived")
    return Transaction.model_validate_json(stored.data, context=TRUSTED_CONTEXT)
