"""The Z report a till prints at the end of a business day, worked out from its transactions.

Per store-day and register: how many transactions it recorded, its last sequence and its tender
totals (net of change; a refund counts against its tender). The demo's tills print it, and the
store agent sends it for the transactions in its outbox (`tillflow edge close-day`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

from tillflow.model import DayClose, RegisterClose, TenderKind, Transaction


def z_reports(transactions: Iterable[Transaction], *, closed_at: datetime) -> list[DayClose]:
    """The Z report each register would print at the end of each store-day `transactions`
    cover: how many transactions it recorded, its last sequence and its tender totals (net of
    change; a refund counts against its tender)."""
    days: dict[tuple[str, date], dict[str, list[Transaction]]] = {}
    for tx in transactions:
        days.setdefault((tx.store_id, tx.business_day), {}).setdefault(tx.register_id, []).append(tx)
    reports = []
    for (store_id, business_day), registers in sorted(days.items()):
        closes = []
        currency = next(iter(registers.values()))[0].currency
        for register_id, txs in sorted(registers.items()):
            totals: dict[TenderKind, Decimal] = {}
            for tx in txs:
                for tender in tx.tenders:
                    totals[tender.kind] = totals.get(tender.kind, Decimal(0)) + tender.amount - tender.change
            closes.append(
                RegisterClose(
                    register_id=register_id,
                    transaction_count=len(txs),
                    last_sequence=max(tx.sequence for tx in txs),
                    totals_by_tender=totals,
                )
            )
        reports.append(
            DayClose(
                store_id=store_id,
                business_day=business_day,
                currency=currency,
                closed_at=closed_at,
                registers=tuple(closes),
            )
        )
    return reports
