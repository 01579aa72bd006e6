"""Alerts raised by the configured rules, and what the webhook was told.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("fired_us", sa.BigInteger, nullable=False),
        sa.Column("resolved_us", sa.BigInteger, nullable=True),
        sa.Column("acknowledged_us", sa.BigInteger, nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.Column("notified", sa.String(16), nullable=True),
        sa.Column("notify_until_us", sa.BigInteger, nullable=True),
    )
    open_only = sa.text("resolved_us IS NULL")
    op.create_index(
        "ux_alerts_open",
        "alerts",
        ["rule", "subject"],
        unique=True,
        sqlite_where=open_only,
        postgresql_where=open_only,
    )


def downgrade() -> None:
    op.drop_index("ux_alerts_open", "alerts")
    op.drop_table("alerts")
