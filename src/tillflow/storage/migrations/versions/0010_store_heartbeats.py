"""Store health: the latest heartbeat of each store's edge agent.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_heartbeats",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("sent_us", sa.BigInteger, nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("buffer_depth", sa.BigInteger, nullable=False),
        sa.Column("oldest_unsent_age_seconds", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_total", sa.BigInteger, nullable=False),
        sa.Column("conflicts", sa.BigInteger, nullable=False),
        sa.Column("missing", sa.Text, nullable=True),  # JSON: ids asked for again it does not hold
    )


def downgrade() -> None:
    op.drop_table("store_heartbeats")
