"""Accepted transactions in the state store, logged in the same commit (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import Connection, Engine, func, select

from tillflow.flows.ingest import judge_batch, to_compare
from tillflow.model import Transaction
from tillflow.model.events import transaction_completed
from tillflow.model.transaction import TRUSTED_CONTEXT
from tillflow.ports import IncomingTransaction, StoredTransaction, TraceHop, Verdict
from tillflow.storage.db import lock_for_append, read_tx, write_tx
from tillflow.storage.outbox import APPEND_LOCK, append_in
from tillflow.storage.sql import from_us, insert_rows, to_us
from tillflow.storage.tables import conflicts, events, trace_hops, transactions

EDGE_ACCEPTED = "edge.accepted"  # the hop of a record a store agent forwarded


class SQLTransactionStore:
    """The TransactionStore port: transactions, conflicts and their events in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_batch(self, batch: Sequence[IncomingTransaction], *, received_at: datetime) -> list[Verdict]:
        if not batch:
            return []
        received_us = to_us(received_at)
        ids = {r.transaction.transaction_id for r in batch}
        with write_tx(self.engine) as conn:
            # judge and write under the append lock: two requests carrying the same
            # identity must not both see it as new (PostgreSQL has no single writer)
            lock_for_append(conn, APPEND_LOCK)
            known = {
                row.transaction_id: row.digest
                for row in conn.execute(
                    select(transactions.c.transaction_id, transactions.c.digest).where(
                        transactions.c.transaction_id.in_(ids)
                    )
                )
            }
            originals = self._originals(conn, to_compare(batch, known))
            judgement = judge_batch(batch, known, originals)
            if judgement.new:
                logged_us = max(received_us, to_us(datetime.now(received_at.tzinfo)))
                new_events = [
                    transaction_completed(r.transaction, r.data, traceparent=r.traceparent)
                    for r in judgement.new
                ]
                seqs = append_in(conn, new_events, logged_us=logged_us)
                insert_rows(
                    conn,
                    transactions.insert(),
                    [
                        {
                            "transaction_id": r.transaction.transaction_id,
                            "store_id": r.transaction.store_id,
                            "register_id": r.transaction.register_id,
                            "business_day": r.transaction.business_day.isoformat(),
                            "sequence": r.transaction.sequence,
                            "kind": r.transaction.kind.value,
                            "currency": r.transaction.currency,
                            "grand_total": str(r.transaction.totals.grand_total),
                            "digest": r.digest,
                            "traceparent": r.traceparent,
                            "received_us": received_us,
                            "logged_us": logged_us,
                            "event_seq": seq,
                        }
                        for r, seq in zip(judgement.new, seqs, strict=True)
                    ],
                )
                edge_hops = [
                    {
                        "transaction_id": r.transaction.transaction_id,
                        "hop": EDGE_ACCEPTED,
                        "at_us": to_us(r.edge_accepted_at),
                        "detail": "the store agent acknowledged it on the store's disk",
                    }
                    for r in judgement.new
                    if r.edge_accepted_at is not None
                ]
                if edge_hops:
                    insert_rows(conn, trace_hops.insert(), edge_hops)
            if judgement.conflicts:
                insert_rows(
                    conn,
                    conflicts.insert(),
                    [
                        {
                            "transaction_id": r.transaction.transaction_id,
                            "received_us": received_us,
                            "digest": r.digest,
                            "data": r.data,
                        }
                        for r in judgement.conflicts
                    ],
                )
        return judgement.verdicts

    @staticmethod
    def _originals(conn: Connection, ids: set[str]) -> dict[str, Transaction]:
        if not ids:
            return {}
        rows = conn.execute(
            select(transactions.c.transaction_id, events.c.data)
            .join(events, events.c.seq == transactions.c.event_seq)
            .where(transactions.c.transaction_id.in_(ids))
        )
        return {
            r.transaction_id: Transaction.model_validate_json(r.data, context=TRUSTED_CONTEXT) for r in rows
        }

    def get_transaction(self, transaction_id: str) -> StoredTransaction | None:
        with read_tx(self.engine) as conn:
            row = conn.execute(
                select(transactions, events.c.data)
                .join(events, events.c.seq == transactions.c.event_seq)
                .where(transactions.c.transaction_id == transaction_id)
            ).one_or_none()
            if row is None:
                return None
            hops = conn.execute(
                select(trace_hops.c.hop, trace_hops.c.at_us, trace_hops.c.detail)
                .where(trace_hops.c.transaction_id == transaction_id)
                .order_by(trace_hops.c.at_us, trace_hops.c.id)
            ).all()
            n_conflicts = conn.execute(
                select(func.count())
                .select_from(conflicts)
                .where(conflicts.c.transaction_id == transaction_id)
            ).scalar_one()
        timeline = (  # the store agent's hop came before the gateway's, whatever the clocks say
            *(TraceHop(h.hop, from_us(h.at_us), h.detail) for h in hops if h.hop == EDGE_ACCEPTED),
            TraceHop("received", from_us(row.received_us), "gateway accepted the record"),
            TraceHop("logged", from_us(row.logged_us), f"event log seq {row.event_seq}"),
            *(TraceHop(h.hop, from_us(h.at_us), h.detail) for h in hops if h.hop != EDGE_ACCEPTED),
        )
        return StoredTransaction(
            transaction_id=row.transaction_id,
            store_id=row.store_id,
            data=row.data,
            received_at=from_us(row.received_us),
            logged_at=from_us(row.logged_us),
            event_seq=row.event_seq,
            traceparent=row.traceparent,
            conflicts=int(n_conflicts),
            hops=timeline,
        )

    def read_store_day(self, store_id: str, business_day: date) -> list[StoredTransaction]:
        query = (
            select(transactions, events.c.data)
            .join(events, events.c.seq == transactions.c.event_seq)
            .where(
                (transactions.c.store_id == store_id)
                & (transactions.c.business_day == business_day.isoformat())
            )
            .order_by(transactions.c.register_id, transactions.c.sequence)
        )
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
        return [
            StoredTransaction(
                transaction_id=row.transaction_id,
                store_id=row.store_id,
                data=row.data,
                received_at=from_us(row.received_us),
                logged_at=from_us(row.logged_us),
                event_seq=row.event_seq,
                traceparent=row.traceparent,
            )
            for row in rows
        ]

    def list_sequences(self, store_id: str, business_day: date) -> dict[str, set[int]]:
        query = select(transactions.c.register_id, transactions.c.sequence).where(
            (transactions.c.store_id == store_id) & (transactions.c.business_day == business_day.isoformat())
        )
        found: dict[str, set[int]] = {}
        with read_tx(self.engine) as conn:
            for register_id, sequence in conn.execute(query):
                found.setdefault(register_id, set()).add(sequence)
        return found

    def list_store_days(self, business_day: date) -> list[str]:
        query = (
            select(transactions.c.store_id)
            .where(transactions.c.business_day == business_day.isoformat())
            .distinct()
            .order_by(transactions.c.store_id)
        )
        with read_tx(self.engine) as conn:
            return list(conn.execute(query).scalars())
