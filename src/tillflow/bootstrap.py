"""The one place where adapters are chosen and wired. Tests call it with their own config."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from tillflow.bus.jetstream import JetStreamEventLog
from tillflow.bus.runner import ConsumerRunner, Handler, RetryPolicy
from tillflow.bus.sql import SQLEventLog
from tillflow.config import FlowName, TillflowConfig
from tillflow.connectors.resilience import Resilience
from tillflow.connectors.settings import HttpConnectorSettings
from tillflow.errors import DownstreamUnavailableError
from tillflow.flows import compliance, inventory, loyalty, posting
from tillflow.flows.goods_movements import GoodsMovementPoster
from tillflow.flows.liability import PointsJournalPoster
from tillflow.flows.store_day import StoreDayPoster
from tillflow.model import LoggedEvent
from tillflow.ports import ErpSystem, EventLog, LoyaltyPlatform, PostingLog
from tillflow.services import Services
from tillflow.storage.alerts import SQLAlertBook
from tillflow.storage.compliance import SQLComplianceLog
from tillflow.storage.db import create_state_engine
from tillflow.storage.goods_movements import SQLGoodsMovementLog
from tillflow.storage.health import SQLStoreHealthBook
from tillflow.storage.inventory import SQLInventoryLedger
from tillflow.storage.keys import SQLKeyStore
from tillflow.storage.loyalty import SQLLoyaltyBook
from tillflow.storage.masterdata import SQLMasterData
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.operations import SQLOperationsBook
from tillflow.storage.postings import SQLPostingLog
from tillflow.storage.process_metrics import SQLProcessMetrics
from tillflow.storage.products import SQLProductCatalog
from tillflow.storage.stats import SQLStatsReader
from tillflow.storage.store_days import SQLStoreDays
from tillflow.storage.transactions import SQLTransactionStore

if TYPE_CHECKING:
    from tillflow.connectors.http import HttpConnector

RELAY_GROUP = "relay.jetstream"
C = TypeVar("C", bound="HttpConnector")


def bootstrap(config: TillflowConfig, *, migrate: bool = True) -> Services:
    """Services on the embedded SQLite state (or PostgreSQL when `hub.state_url` says so)."""
    hub = config.hub
    url = hub.resolved_state_url()
    if url.startswith("sqlite"):
        hub.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_state_engine(url, sqlite_synchronous=hub.sqlite_synchronous)
    if migrate:
        upgrade_schema(engine)
    sql_log = SQLEventLog(engine)
    event_log: EventLog = sql_log
    relays: list[Callable[[], ConsumerRunner]] = []
    closers: list[Callable[[], None]] = [engine.dispose]
    if config.bus.kind == "jetstream":
        jetstream = JetStreamEventLog(
            config.bus.servers, engine, stream=config.bus.stream, replicas=config.bus.replicas
        )
        event_log = jetstream
        closers.insert(0, jetstream.close)

        def publish(batch: Sequence[LoggedEvent]) -> list[int]:
            return jetstream.publish_events([e.event for e in batch])

        # the outbox relay: what the gateway committed to the state store goes on to JetStream;
        # while the broker is away it waits (never dead-letters), and resumes where it stopped
        relays.append(
            lambda: ConsumerRunner(sql_log, RELAY_GROUP, publish, batch_size=1000, suspect_after=None)
        )
    ledger = SQLInventoryLedger(engine)
    transactions = SQLTransactionStore(engine)
    postings = SQLPostingLog(engine)
    store_days = SQLStoreDays(engine)
    loyalty_book = SQLLoyaltyBook(engine)
    masterdata = SQLMasterData(engine)
    deviations = SQLComplianceLog(engine)
    downstream = Downstream(config, postings)
    closers.insert(0, downstream.close)

    products = SQLProductCatalog(engine)
    goods_movements = SQLGoodsMovementLog(engine)

    def apply_inventory(batch: Sequence[LoggedEvent]) -> int:
        return inventory.apply_inventory(batch, ledger=ledger, catalog=products, stock=ledger)

    def post_goods_movements() -> int:  # the store-days whose day close is in and due
        assert downstream.erp is not None
        poster = GoodsMovementPoster(downstream.erp, goods_movements, max_lines=config.posting.max_lines)
        try:
            return poster.post_due()
        except DownstreamUnavailableError:  # a bulkhead: the ERP away never holds up stock
            return 0  # what was recorded is posted again on a later tick

    post_movements = downstream.erp_configured and config.inventory.post_movements

    @functools.cache
    def poster() -> StoreDayPoster:
        assert downstream.erp is not None
        settings = config.posting
        return StoreDayPoster(
            erp=downstream.erp,
            transactions=transactions,
            days=store_days,
            accounts=settings.accounts,
            policy_of=lambda store_id: settings.policy_for(store_id, downstream.regions.get(store_id)),
            max_lines=settings.max_lines,
            costs=settings.unit_costs,
        )

    def post_journals(batch: Sequence[LoggedEvent]) -> int:
        return poster().handle(batch)

    @functools.cache
    def points_poster() -> PointsJournalPoster | None:
        """The IFRS 15 journals of the points issued, with IFRS 15 settings and a loyalty platform."""
        accounting = config.posting.accounts.loyalty
        if accounting is None or not downstream.loyalty_configured:
            return None
        assert downstream.erp is not None
        currencies = {store.store_id: store.currency for store in config.stores}
        return PointsJournalPoster(
            book=loyalty_book,
            erp=downstream.erp,
            loyalty=accounting,
            accounts=config.posting.accounts,
            currency_of=lambda store_id: currencies.get(store_id, accounting.currency),
            clock=lambda: datetime.now(UTC),
            every=config.posting.points_journal_seconds,
        )

    def close_days() -> int:  # and journal the points issued
        points = points_poster()
        return poster().close_days() + (0 if points is None else points.post_due())

    @functools.cache
    def orchestrator() -> loyalty.LoyaltyOrchestrator:
        assert downstream.loyalty is not None
        return loyalty.LoyaltyOrchestrator(
            loyalty=downstream.loyalty,
            transactions=transactions,
            book=loyalty_book,
            programs=config.hub.loyalty_programs,
            clock=lambda: datetime.now(UTC),
            statement_every=config.hub.loyalty_statement_seconds,
        )

    def accrue_points(batch: Sequence[LoggedEvent]) -> int:
        return orchestrator().handle(batch)

    def sweep_holds() -> int:
        return orchestrator().sweep()

    stores = {store.store_id: store for store in config.stores}

    def check_promotions(batch: Sequence[LoggedEvent]) -> int:  # once a promotion calendar is loaded
        return compliance.check_transactions(
            batch,
            stores=stores,
            calendar=masterdata,
            catalog=products,
            log=deviations,
            clock=lambda: datetime.now(UTC),
        )

    flows: dict[FlowName, Handler] = {inventory.FLOW: apply_inventory}
    if config.hub.promotion_compliance:
        flows[compliance.FLOW] = check_promotions
    if downstream.erp_configured:
        flows[posting.FLOW] = post_journals
    if downstream.loyalty_configured:
        flows[loyalty.FLOW] = accrue_points

    def consumer(name: FlowName, handler: Handler) -> ConsumerRunner:
        flow = config.flow(name)
        policy = RetryPolicy(
            max_attempts=flow.max_attempts,
            base_delay=flow.base_delay,
            max_delay=flow.max_delay,
            ordered=flow.ordered,
            non_retryable=flow.non_retryable(),
            retryable=flow.retryable(),
        )
        # the day closes of aggregated stores; the holds past their TTL and the platform's own moves
        tick = {posting.FLOW: close_days, loyalty.FLOW: sweep_holds}.get(name)
        tick_every = 1.0
        if name == inventory.FLOW and post_movements:  # goods movements of closed store-days
            tick, tick_every = post_goods_movements, config.inventory.post_every
        return ConsumerRunner(
            event_log,
            name,
            handler,
            policy=policy,
            batch_size=flow.batch_size,
            tick=tick,
            tick_every=tick_every,
        )

    def consumers(only: Collection[str] | None = None) -> list[ConsumerRunner]:
        runners = [relay() for relay in relays] if only is None or "relay" in only else []
        return runners + [consumer(name, h) for name, h in flows.items() if only is None or name in only]

    def close() -> None:
        for closer in closers:
            closer()

    return Services(
        config=config,
        event_log=event_log,
        transactions=transactions,
        inventory=ledger,
        keys=SQLKeyStore(engine),
        stats=SQLStatsReader(engine),
        consumer_groups=tuple(flows),
        postings=postings,
        store_days=store_days,
        products=products,
        stock=ledger,
        goods_movements=goods_movements,
        loyalty_book=loyalty_book,
        masterdata=masterdata,
        deviations=deviations,
        store_health=SQLStoreHealthBook(engine),
        operations=SQLOperationsBook(engine),
        alerts=SQLAlertBook(engine),
        process_metrics=SQLProcessMetrics(engine),
        downstream_figures=downstream.figures,
        erp_targets=downstream.erp_targets,
        erp=lambda: downstream.erp,
        loyalty=lambda: downstream.loyalty,
        import_context=config.import_context(),
        make_consumers=consumers,
        close=close,
    )


class Downstream:
    """The loyalty platform and the ERP (routed over its targets), each behind its own
    resilience layer; the clients are made when a flow first needs them (the API process of
    an `all` hub never does), and shared by every flow of the process."""

    def __init__(self, config: TillflowConfig, postings: PostingLog) -> None:
        self.settings = config.connectors
        self.regions = {s.store_id: s.region for s in config.stores}
        self.postings = postings
        self.erp_configured = self.settings.erp_routing_or_default() is not None
        self.loyalty_configured = self.settings.loyalty is not None
        self.guards: dict[str, Resilience] = {}
        self.targets: dict[str, ErpSystem] = {}  # the ERP targets by name, once made
        self.closers: list[Callable[[], None]] = []

    @functools.cached_property
    def erp(self) -> ErpSystem | None:
        from tillflow.connectors.erp_file import FileErp
        from tillflow.connectors.erp_http import HttpErp
        from tillflow.connectors.routing import RoutedErp
        from tillflow.connectors.settings import ErpTarget

        routing = self.settings.erp_routing_or_default()
        if routing is None:
            return None
        targets: dict[ErpTarget, ErpSystem] = {}
        cloud, legacy = self.settings.erp, self.settings.erp_legacy
        if cloud is not None:
            targets["cloud"] = self._http(HttpErp, "erp", cloud)
        if legacy is not None:
            guard = self.guards["erp-legacy"] = Resilience("erp-legacy", legacy.resilience)
            targets["legacy"] = FileErp(legacy.directory, resilience=guard)
        self.targets = {str(name): target for name, target in targets.items()}
        return RoutedErp(targets, routing, regions=self.regions, postings=self.postings)

    def erp_targets(self) -> dict[str, ErpSystem]:
        """Each ERP target on its own ("cloud", "legacy"), to compare their books."""
        return dict(self.targets) if self.erp is not None else {}

    @functools.cached_property
    def loyalty(self) -> LoyaltyPlatform | None:
        from tillflow.connectors.loyalty_http import HttpLoyalty

        found = self.settings.loyalty
        if found is None:
            return None
        return self._http(HttpLoyalty, "loyalty", found)

    def _http(self, kind: type[C], system: str, settings: HttpConnectorSettings) -> C:
        """An HTTP connector of `kind` with its own resilience layer, closed with the rest."""
        guard = self.guards[system] = Resilience(system, settings.resilience)
        client = kind(
            settings.url,
            system=system,
            timeout=settings.timeout,
            connect_timeout=settings.connect_timeout,
            max_connections=settings.max_connections,
            max_batch=settings.max_batch,
            resilience=guard,
        )
        self.closers.append(client.close)
        return client

    def figures(self) -> dict[str, dict[str, Any]]:
        """Each connector's resilience figures in this process (throttle, breaker, pauses)."""
        return {system: guard.snapshot() for system, guard in self.guards.items()}

    def close(self) -> None:
        for closer in self.closers:
            closer()
