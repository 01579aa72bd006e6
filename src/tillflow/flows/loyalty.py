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


def accrue_points(
    events: Sequence[LoggedEvent], *, loyalty: LoyaltyPlatform, transactions: TransactionStore
) -> int:
    """Handler of the loyalty consumer group: the batch's accruals in one call, then the
    reversals of its post-voids. A refused accrual is raised after the others went through (the
    runner then settles the batch event by event). Returns how many ledger entries it asked for."""
    accruals: list[Accrual] = []
    voids: list[Transaction] = []
    for event in events:
        if event.event.type != TRANSACTION_COMPLETED:
            continue
        tx = Transaction.model_validate_json(event.event.data, context=TRUSTED_CONTEXT)
        if tx.voided is not None:
            voids.append(tx)
            continue
        if tx.customer is None or tx.kind not in EARNING_KINDS:
            continue
        lines = earning_lines(tx)
        if lines:
            accruals.append(
                Accrual(
                    member_id=tx.customer.member_id,
                    program=tx.customer.program,
                    transaction_id=tx.transaction_id,
                    currency=tx.currency,
                    lines=tuple(lines),
                    idempotency_key=f"accrue:{tx.transaction_id}",
                )
            )
    answers = loyalty.accrue_many(accruals) if accruals else []
    reversed_ = sum(_reverse_voided(tx, loyalty=loyalty, transactions=transactions) for tx in voids)
    for answer in answers:
        if isinstance(answer, DownstreamRejectedError):
            raise answer
    return len(accruals) + reversed_


def _reverse_voided(void: Transaction, *, loyalty: LoyaltyPlatform, transactions: TransactionStore) -> int:
    assert void.voided is not None
    target = void.voided.transaction_id
    stored = transactions.get_transaction(target)
    if stored is None:  # retried: the voided sale may still be on its way from the store
        raise FlowError(f"post-void {void.transaction_id}: the voided transaction {target} has not arrived")
    original = Transaction.model_validate_json(stored.data, context=TRUSTED_CONTEXT)
    if original.customer is None or original.kind not in EARNING_KINDS or not earning_lines(original):
        return 0
    loyalty.reverse(
        original.customer.member_id,
        program=original.customer.program,
        transaction_id=target,
        points=None,
        idempotency_key=f"void:{void.transaction_id}",
    )
    return 1
