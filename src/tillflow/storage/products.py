"""The product master in the state store (SQLite or PostgreSQL): one row per SKU."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, select

from tillflow.model import Product
from tillflow.ports import ProductChange
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import insert_for, insert_rows, to_us
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

    def record_products(self, items: Sequence[Product], *, at: datetime) -> list[ProductChange]:
        if not items:
            return []
        last = {p.sku: p for p in items}  # the last of a repeated SKU wins
        data = {sku: p.model_dump_json(exclude_defaults=True) for sku, p in last.items()}
        with write_tx(self.engine) as conn:
            known: dict[str, str] = {}
            skus = sorted(data)
            for start in range(0, len(skus), CHUNK):
                known.update(
                    (r.sku, r.product)
                    for r in conn.execute(
                        select(products.c.sku, products.c.product).where(
                            products.c.sku.in_(skus[start : start + CHUNK])
                        )
                    )
                )
            changed = [
                {"sku": sku, "product": text, "updated_us": to_us(at)}
                for sku, text in data.items()
                if known.get(sku) != text
            ]
            upsert = insert_for(conn, products)
            insert_rows(
                conn,
                upsert.on_conflict_do_update(
                    index_elements=[products.c.sku],
                    set_={"product": upsert.excluded.product, "updated_us": upsert.excluded.updated_us},
                ),
                changed,
            )
        seen: dict[str, ProductChange] = {}
        out: list[ProductChange] = []
        for p in items:
            if p.sku in seen:  # a repeat within the batch: the first answer already tells
                out.append(seen[p.sku])
                continue
            if p.sku not in known:
                change = ProductChange.CREATED
            elif known[p.sku] == data[p.sku]:
                change = ProductChange.UNCHANGED
            else:
                change = ProductChange.UPDATED
            seen[p.sku] = change
            out.append(change)
        return out
