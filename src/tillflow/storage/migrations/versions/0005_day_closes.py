"""The aggregated posting policy: day closes, the merged journals of each store-day and the
transactions each carries.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "day_closes",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("business_day", sa.String(10), primary_key=True),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("deadline_us", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("gap", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("posted_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_day_closes_state", "day_closes", ["state"])
    op.create_table(
        "day_journals",
        sa.Column("journal_id", sa.String(200), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("business_day", sa.String(10), nullable=False),
        sa.Column("register_id", sa.String(64), nullable=True),
        sa.Column("adjustment", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("document_number", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("transactions", sa.Integer, nullable=False),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_day_journals_store_day", "day_journals", ["store_id", "business_day"])
    op.create_table(
        "journal_members",
        sa.Column("transaction_id", sa.String(200), primary_key=True),
        sa.Column("journal_id", sa.String(200), nullable=False),
    )
    op.create_index("ix_journal_members_journal_id", "journal_members", ["journal_id"])


def downgrade() -> None:
    op.drop_index("ix_journal_members_journal_id", "journal_members")
    op.drop_table("journal_members")
    op.drop_index("ix_day_journals_store_day", "day_journals")
    op.drop_table("day_journals")
    op.drop_index("ix_day_closes_state", "day_closes")
    op.drop_table("day_closes")
