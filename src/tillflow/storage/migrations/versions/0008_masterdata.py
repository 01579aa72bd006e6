"""Master data to the stores: the versioned change log with the targets of each change, the
current prices and promotions, and the version each store acknowledged.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "master_changes",
        sa.Column("version", Seq, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("record_key", sa.String(300), nullable=False),
        sa.Column("record", sa.Text, nullable=True),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
        sa.Column("previous", sa.BigInteger, nullable=True),
        sa.Column("superseded_by", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_master_changes_key", "master_changes", ["kind", "record_key"])
    op.create_table(
        "master_targets",
        sa.Column("target", sa.String(140), primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("sides", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "prices",
        sa.Column("price_key", sa.String(300), primary_key=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("store_id", sa.String(64), nullable=True),
        sa.Column("price", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_prices_sku", "prices", ["sku"])
    op.create_table(
        "promotions",
        sa.Column("promotion_id", sa.String(64), primary_key=True),
        sa.Column("promotion", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "master_acks",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("acked_us", sa.BigInteger, nullable=False),
    )
    # the products already in the master become the first versions: every store gets them
    bind = op.get_bind()
    known = bind.execute(sa.text("SELECT sku, product, updated_us FROM products ORDER BY sku")).fetchall()
    if known:
        changes = sa.table(
            "master_changes",
            *(sa.column(c) for c in ("version", "kind", "record_key", "record", "changed_us")),
        )
        targets = sa.table("master_targets", *(sa.column(c) for c in ("target", "version", "sides")))
        op.bulk_insert(
            changes,
            [
                {"version": i, "kind": "item", "record_key": sku, "record": product, "changed_us": at}
                for i, (sku, product, at) in enumerate(known, 1)
            ],
        )
        op.bulk_insert(targets, [{"target": "*", "version": i, "sides": 2} for i in range(1, len(known) + 1)])


def downgrade() -> None:
    op.drop_table("master_acks")
    op.drop_table("promotions")
    op.drop_index("ix_prices_sku", "prices")
    op.drop_table("prices")
    op.drop_table("master_targets")
    op.drop_index("ix_master_changes_key", "master_changes")
    op.drop_table("master_changes")
