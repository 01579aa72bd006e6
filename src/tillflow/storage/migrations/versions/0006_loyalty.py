"""Loyalty orchestration: the redemption sagas (points held at checkout), the hub's points
ledger, from which the liability is valued, and the IFRS 15 journals of the points issued.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "redemptions",
        sa.Column("hold_id", sa.String(64), primary_key=True),
        sa.Column("request_key", sa.String(320), nullable=False, unique=True),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("transaction_id", sa.String(200), nullable=True),
        sa.Column("void_id", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("conflict", sa.Text, nullable=True),
    )
    op.create_index("ix_redemptions_state", "redemptions", ["state", "expires_us"])
    op.create_table(
        "points_ledger",
        sa.Column("entry_key", sa.String(320), primary_key=True),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("transaction_id", sa.String(200), nullable=True),
        sa.Column("hold_id", sa.String(64), nullable=True),
        sa.Column("store_id", sa.String(64), nullable=True),
        sa.Column("business_day", sa.String(10), nullable=True),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
        sa.Column("journal_id", sa.String(200), nullable=True),
    )
    op.create_index("ix_points_ledger_program", "points_ledger", ["program", "kind"])
    op.create_index("ix_points_ledger_transaction", "points_ledger", ["transaction_id"])
    op.create_index("ix_points_ledger_journal", "points_ledger", ["journal_id"])
    op.create_table(
        "points_journals",
        sa.Column("journal_id", sa.String(200), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("business_day", sa.String(10), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("document_number", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_points_journals_store_day", "points_journals", ["store_id", "business_day"])
    op.create_table(
        "loyalty_statements",
        sa.Column("program", sa.String(64), primary_key=True),
        sa.Column("after_seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("loyalty_statements")
    op.drop_index("ix_points_journals_store_day", "points_journals")
    op.drop_table("points_journals")
    op.drop_index("ix_points_ledger_journal", "points_ledger")
    op.drop_index("ix_points_ledger_transaction", "points_ledger")
    op.drop_index("ix_points_ledger_program", "points_ledger")
    op.drop_table("points_ledger")
    op.drop_index("ix_redemptions_state", "redemptions")
    op.drop_table("redemptions")
