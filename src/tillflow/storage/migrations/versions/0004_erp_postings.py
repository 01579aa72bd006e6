"""What each ERP target answered for each posting: the posting state and the parallel run.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erp_postings",
        sa.Column("external_id", sa.String(200), primary_key=True),
        sa.Column("target", sa.String(16), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("business_day", sa.String(10), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("document_number", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("amounts", sa.Text, nullable=False),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_erp_postings_day_store", "erp_postings", ["business_day", "store_id"])


def downgrade() -> None:
    op.drop_index("ix_erp_postings_day_store", "erp_postings")
    op.drop_table("erp_postings")
