"""The product master in the state store (SQLite or PostgreSQL): one row per SKU, written as the
master data's items (`SQLMasterData.record_items`: every change versioned)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from tillflow.model import Product
from tillflow.storage.db import read_tx
from tillflow.storage.tables import products

CHUNK = 5000  # SKUs per IN (...) list


class SQLProductCatalog:
    """The ProductCatalog port on a SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find_products(self, skus: Sequence[str]) -> dict[str, Product]:
        wanted = sorted(set(skus))
        found: dict[str, Product] = {}
        if not wanted:
            return found
        with read_tx(self.engine) as conn:
            for start in range(0, len(wanted), CHUNK):
                rows = conn.execute(
                    select(products.c.sku, products.c.product).where(
                        products.c.sku.in_(wanted[start : start + CHUNK])
                    )
                )
                for r in rows:
                    found[r.sku] = Product.model_validate_json(r.product)
        return found
