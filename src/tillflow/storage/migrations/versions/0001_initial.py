"""Initial schema: keys, transactions, the event log, trace hops, inventory.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("store_id", sa.String(64), nullable=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "transactions",
        sa.Column("transaction_id", sa.String(200), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("register_id", sa.String(64), nullable=False),
        sa.Column("business_day", sa.String(10), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("grand_total", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("traceparent", sa.String(55), nullable=True),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("logged_us", sa.BigInteger, nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_transactions_store_day", "transactions", ["store_id", "business_day"])
    op.create_table(
        "transaction_conflicts",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(200), nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_transaction_conflicts_transaction_id", "transaction_conflicts", ["transaction_id"])
    op.create_table(
        "events",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("partitionkey", sa.String(64), nullable=True),
        sa.Column("sequence", sa.String(20), nullable=True),
        sa.Column("traceparent", sa.String(55), nullable=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("logged_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("source", "event_id", name="uq_events_source_id"),
        sqlite_autoincrement=True,  # never reuse a sequence, even after retention emptied the table
    )
    op.create_table(
        "consumer_groups",
        sa.Column("group_name", sa.String(100), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_error_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "trace_hops",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(200), nullable=False),
        sa.Column("hop", sa.String(64), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_trace_hops_transaction_id", "trace_hops", ["transaction_id"])
    op.create_table(
        "processed_events",
        sa.Column("flow", sa.String(64), primary_key=True),
        sa.Column("event_key", sa.String(400), primary_key=True),
        sa.Column("processed_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "inventory_positions",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("quantity_milli", sa.BigInteger, nullable=False),
        sa.Column("uom", sa.String(4), nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "inventory_movements",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity_milli", sa.BigInteger, nullable=False),
        sa.Column("uom", sa.String(4), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("transaction_id", sa.String(200), nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("occurred_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("transaction_id", "line_no", "reason", name="uq_movement_cause"),
    )
    op.create_index("ix_movements_store_sku", "inventory_movements", ["store_id", "sku"])
    op.create_table(
        "inventory_voids",
        sa.Column("transaction_id", sa.String(200), primary_key=True),
        sa.Column("void_transaction_id", sa.String(200), nullable=False),
        sa.Column("voided_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "inventory_voids",
        "inventory_movements",
        "inventory_positions",
        "processed_events",
        "trace_hops",
        "consumer_groups",
        "events",
        "transaction_conflicts",
        "transactions",
        "api_keys",
    ):
        op.drop_table(table)
