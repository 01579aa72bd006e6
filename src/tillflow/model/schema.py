"""JSON Schema of the canonical model, for integrators who validate before they send."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from tillflow.model.catalog import Product, Store
from tillflow.model.dayclose import DayClose
from tillflow.model.events import CloudEvent
from tillflow.model.inventory import InventoryMovement
from tillflow.model.ledger import Journal
from tillflow.model.loyalty import LoyaltyAccrual, LoyaltyRedemption
from tillflow.model.transaction import Transaction

SCHEMAS: dict[str, type[Any]] = {
    "transaction": Transaction,
    "day-close": DayClose,
    "store": Store,
    "product": Product,
    "inventory-movement": InventoryMovement,
    "journal": Journal,
    "loyalty-accrual": LoyaltyAccrual,
    "loyalty-redemption": LoyaltyRedemption,
    "cloud-event": CloudEvent,
}


def schema_documents() -> dict[str, str]:
    """File name -> JSON Schema text, one per canonical model."""
    return {
        f"{name}.v1.schema.json": json.dumps(
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"tillflow:{name}:v1"}
            | TypeAdapter(model).json_schema(),
            indent=2,
        )
        + "\n"
        for name, model in SCHEMAS.items()
    }
