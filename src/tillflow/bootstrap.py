"""The one place where adapters are chosen and wired. Tests call it with their own config."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tillflow.bus.jetstream import JetStreamEventLog
from tillflow.bus.runner import ConsumerRunner, Handler, RetryPolicy
from tillflow.bus.sql import SQLEventLog
from tillflow.config import FlowName, TillflowConfig
from tillflow.flows import inventory
from tillflow.model import LoggedEvent
from tillflow.ports import EventLog
from tillflow.services import Services
from tillflow.storage.db import create_state_engine
from tillflow.storage.inventory import SQLInventoryLedger
from tillflow.storage.keys import SQLKeyStore
from tillflow.storage.migrate import upgrade_schema
from tillflow.storage.stats import SQLStatsReader
from tillflow.storage.transactions import SQLTransactionStore

RELAY_GROUP = "relay.jetstream"


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

    def apply_inventory(batch: Sequence[LoggedEvent]) -> int:
        return inventory.apply_inventory(batch, ledger=ledger)

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
        return ConsumerRunner(event_log, name, handler, policy=policy, batch_size=flow.batch_size)

    def consumers() -> list[ConsumerRunner]:
        return [*(relay() for relay in relays), consumer(inventory.FLOW, apply_inventory)]

    def close() -> None:
        for closer in closers:
            closer()

    return Services(
        config=config,
        event_log=event_log,
        transactions=SQLTransactionStore(engine),
        inventory=ledger,
        keys=SQLKeyStore(engine),
        stats=SQLStatsReader(engine),
        consumer_groups=(inventory.FLOW,),
        import_context=config.import_context(),
        make_consumers=consumers,
        close=close,
    )
