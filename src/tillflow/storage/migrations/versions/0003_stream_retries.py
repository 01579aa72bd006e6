"""Retries pending on a JetStream consumer group, so retention cannot drop them unseen.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_retries",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("group_name", sa.String(100), primary_key=True),
        sa.Column("stream_seq", sa.BigInteger, primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("stream_retries")
