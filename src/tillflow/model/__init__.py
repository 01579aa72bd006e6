"""Canonical retail model v1: pure pydantic, imports nothing else of tillflow."""

from tillflow.model.catalog import Channel, Product, Register, Store
from tillflow.model.dayclose import DayClose, RegisterClose
from tillflow.model.events import CloudEvent, LoggedEvent
from tillflow.model.health import StoreHeartbeat, StoreStatus
from tillflow.model.inventory import CountLine, InventoryMovement, MovementReason, StockCount
from tillflow.model.ledger import Journal, JournalLine
from tillflow.model.loyalty import LoyaltyAccrual, LoyaltyRedemption
from tillflow.model.money import MINOR_UNITS, minor_unit, round_to_minor
from tillflow.model.transaction import (
    CardDetails,
    Customer,
    ItemType,
    LineAction,
    LineItem,
    LineRef,
    PriceModifier,
    TaxLine,
    Tender,
    TenderKind,
    Totals,
    Transaction,
    TransactionKind,
    TransactionRef,
    UnitOfMeasure,
    transaction_id,
)

__all__ = [
    "MINOR_UNITS",
    "CardDetails",
    "Channel",
    "CloudEvent",
    "CountLine",
    "Customer",
    "DayClose",
    "InventoryMovement",
    "ItemType",
    "Journal",
    "JournalLine",
    "LineAction",
    "LineItem",
    "LineRef",
    "LoggedEvent",
    "LoyaltyAccrual",
    "LoyaltyRedemption",
    "MovementReason",
    "PriceModifier",
    "Product",
    "Register",
    "RegisterClose",
    "StockCount",
    "Store",
    "StoreHeartbeat",
    "StoreStatus",
    "TaxLine",
    "Tender",
    "TenderKind",
    "Totals",
    "Transaction",
    "TransactionKind",
    "TransactionRef",
    "UnitOfMeasure",
    "minor_unit",
    "round_to_minor",
    "transaction_id",
]
