"""What the entry points (hub, worker, demo, CLI) work with: the configuration and the ports.

`bootstrap()` builds it; nothing here knows which adapters sit behind the ports.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from tillflow.bus.runner import ConsumerRunner
from tillflow.config import TillflowConfig
from tillflow.formats.records import ImportContext
from tillflow.ports import (
    AlertBook,
    ComplianceLog,
    ErpSystem,
    EventLog,
    GoodsMovementLog,
    InventoryLedger,
    KeyStore,
    LoyaltyBook,
    LoyaltyPlatform,
    MasterData,
    OperationsBook,
    PostingLog,
    ProcessMetrics,
    ProductCatalog,
    StatsReader,
    StockBook,
    StoreDays,
    StoreHealthBook,
    TransactionStore,
)


@dataclass
class Services:
    config: TillflowConfig
    event_log: EventLog
    transactions: TransactionStore
    inventory: InventoryLedger
    keys: KeyStore
    stats: StatsReader
    consumer_groups: tuple[str, ...]
    import_context: ImportContext  # stores and policy maps, for the formats the gateway reads
    make_consumers: Callable[[Collection[str] | None], list[ConsumerRunner]]
    postings: PostingLog  # what the ERP targets answered for each posting
    store_days: StoreDays  # day closes and the merged journals of aggregated stores
    products: ProductCatalog  # the product master
    stock: StockBook  # positions, counts and stock alerts
    goods_movements: GoodsMovementLog  # the store-days' goods movements sent to the ERP
    loyalty_book: LoyaltyBook  # redemption sagas and the points ledger
    masterdata: MasterData  # items, prices and promotions, versioned, and the stores' acks
    deviations: ComplianceLog  # what departs from the promotion calendar
    store_health: StoreHealthBook  # the latest heartbeat of each store's edge agent
    operations: OperationsBook  # the operations console's look-ups and re-send requests
    alerts: AlertBook  # the alerts the configured rules raised
    process_metrics: ProcessMetrics  # each process's published counters, and effect hops
    close: Callable[[], None]
    # each downstream connector's resilience figures in this process
    downstream_figures: Callable[[], dict[str, dict[str, Any]]] = field(default=dict)
    erp_targets: Callable[[], dict[str, ErpSystem]] = field(default=dict)  # by name: cloud, legacy
    erp: Callable[[], ErpSystem | None] = field(default=lambda: None)  # routed over the targets
    loyalty: Callable[[], LoyaltyPlatform | None] = field(default=lambda: None)

    def consumers(self, flows: Collection[str] | None = None) -> list[ConsumerRunner]:
        """Fresh runners for every flow consumer group of this deployment (of `flows` only,
        when given; "relay" names the outbox relay to JetStream)."""
        return self.make_consumers(flows)
