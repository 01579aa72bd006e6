"""Inventory: the product master, stock counts, stock alerts and the goods movements sent to
the ERP per store-day (which batch carries each movement).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("inventory_movements") as batch:
        batch.add_column(sa.Column("business_day", sa.String(10), nullable=True))
        batch.add_column(sa.Column("excluded", sa.Text, nullable=True))
        batch.add_column(sa.Column("batch_id", sa.String(200), nullable=True))
    op.create_index("ix_inventory_movements_batch_id", "inventory_movements", ["batch_id"])
    op.create_table(
        "stock_counts",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("count_id", sa.String(64), nullable=False),
        sa.Column("counted_us", sa.BigInteger, nullable=False),
        sa.Column("quantity_milli", sa.BigInteger, nullable=False),
        sa.Column("applied_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "inventory_alerts",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("alert_key", sa.String(64), nullable=False),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity_milli", sa.BigInteger, nullable=False),
        sa.Column("uom", sa.String(4), nullable=False),
        sa.Column("transaction_id", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("raised_us", sa.BigInteger, nullable=False),
        sa.Column("cleared_us", sa.BigInteger, nullable=True),
        sa.Column("cleared_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_inventory_alerts_store", "inventory_alerts", ["store_id", "sku", "cleared_us"])
    op.create_index("ix_inventory_alerts_open", "inventory_alerts", ["cleared_us"])
    op.create_table(
        "stock_days",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("business_day", sa.String(10), primary_key=True),
        sa.Column("unbatched", sa.Integer, nullable=False),
    )
    op.create_index("ix_stock_days_unbatched", "stock_days", ["unbatched"])
    op.create_table(
        "goods_batches",
        sa.Column("batch_id", sa.String(200), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("business_day", sa.String(10), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("movements", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("document_number", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
        sa.Column("settled_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_goods_batches_store_day", "goods_batches", ["store_id", "business_day"])
    op.create_index("ix_goods_batches_state", "goods_batches", ["state"])


def downgrade() -> None:
    op.drop_index("ix_goods_batches_state", "goods_batches")
    op.drop_index("ix_goods_batches_store_day", "goods_batches")
    op.drop_table("goods_batches")
    op.drop_index("ix_stock_days_unbatched", "stock_days")
    op.drop_table("stock_days")
    op.drop_index("ix_inventory_alerts_open", "inventory_alerts")
    op.drop_index("ix_inventory_alerts_store", "inventory_alerts")
    op.drop_table("inventory_alerts")
    op.drop_table("stock_counts")
    op.drop_index("ix_inventory_movements_batch_id", "inventory_movements")
    with op.batch_alter_table("inventory_movements") as batch:
        batch.drop_column("batch_id")
        batch.drop_column("excluded")
        batch.drop_column("business_day")
    op.drop_table("products")
