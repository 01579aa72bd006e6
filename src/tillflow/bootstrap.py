"""The one place where adapters are chosen and wired. Tests call it with their own config."""

from __future__ import annotations

from tillflow.bus.runner import ConsumerRunner
from tillflow.bus.sql import SQLEventLog
from tillflow.config import TillflowConfig
from tillflow.flows import inventory
from tillflow.services import Services
from tillflow.storage.db import create_state_engine
from tillflow.storage.inventory import SQLInventoryLedger
from tillflow.storage.keys import SQLKeyStore
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.stats import SQLStatsReader
from tillflow.storage.transactions import SQLTransactionStore


def bootstrap(config: TillflowConfig, *, migrate: bool = True) -> Services:
    """Services on the embedded SQLite state (or PostgreSQL when `hub.state_url` says so)."""
    hub = config.hub
    url = hub.resolved_state_url()
    if url.startswith("sqlite"):
        hub.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_state_engine(url, sqlite_synchronous=hub.sqlite_synchronous)
    if migrate:
        upgrade_schema(engine)
    event_log = SQLEventLog(engine)
    ledger = SQLInventoryLedger(engine)

    def consumers() -> list[ConsumerRunner]:
        return [
            ConsumerRunner(
                event_log, inventory.FLOW, lambda batch: inventory.apply_inventory(batch, ledger=ledger)
            ),
        ]

    return Services(
        config=config,
        event_log=event_log,
        transactions=SQLTransactionStore(engine),
        inventory=ledger,
        keys=SQLKeyStore(engine),
        stats=SQLStatsReader(engine),
        consumer_groups=(inventory.FLOW,),
        make_consumers=consumers,
        close=engine.dispose,
    )
