"""The one place where adapters are chosen and wired. Tests call it with their own config."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from tillflow.bus.runner import ConsumerRunner
from tillflow.bus.sql import SQLEventLog
from tillflow.config import TillflowConfig
from tillflow.flows import inventory
from tillflow.ports import EventLog, InventoryLedger, KeyStore, TransactionStore
from tillflow.storage.db import create_state_engine
from tillflow.storage.inventory import SqlInventoryLedger
from tillflow.storage.keys import SqlKeyStore
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.transactions import SqlTransactionStore


@dataclass
class Services:
    config: TillflowConfig
    engine: Engine
    event_log: EventLog
    transactions: TransactionStore
    inventory: InventoryLedger
    keys: KeyStore

    def consumer_groups(self) -> list[str]:
        """The names of the flow consumer groups this deployment runs."""
        return [inventory.FLOW]

    def consumers(self) -> list[ConsumerRunner]:
        """The flow consumer groups this deployment runs."""
        ledger = self.inventory
        return [
            ConsumerRunner(
                self.event_log,
                inventory.FLOW,
                lambda batch: inventory.apply_inventory(batch, ledger=ledger),
            )
        ]

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(config: TillflowConfig, *, migrate: bool = True) -> Services:
    hub = config.hub
    url = hub.resolved_state_url()
    if url.startswith("sqlite"):
        hub.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_state_engine(url, sqlite_synchronous=hub.sqlite_synchronous)
    if migrate:
        upgrade_schema(engine)
    return Services(
        config=config,
        engine=engine,
        event_log=SQLEventLog(engine),
        transactions=SqlTransactionStore(engine),
        inventory=SqlInventoryLedger(engine),
        keys=SqlKeyStore(engine),
    )
