"""Redeliveries, dead letters, the operators' audit trail, and a time index for replay.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("group_name", sa.String(100), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("due_us", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("dead_letter_id", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["group_name", "due_us"])
    op.create_table(
        "dead_letters",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("group_name", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("partitionkey", sa.String(64), nullable=True),
        sa.Column("sequence", sa.String(20), nullable=True),
        sa.Column("traceparent", sa.String(55), nullable=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("dead_us", sa.BigInteger, nullable=False),
        sa.Column("replayed_us", sa.BigInteger, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_dead_letters_group_name", "dead_letters", ["group_name"])
    op.create_table(
        "event_log_audit",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("group_name", sa.String(100), nullable=True),
        sa.Column("affected", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("why", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_events_logged", "events", ["logged_us"])


def downgrade() -> None:
    op.drop_index("ix_events_logged", "events")
    for table in ("event_log_audit", "dead_letters", "deliveries"):
        op.drop_table(table)
