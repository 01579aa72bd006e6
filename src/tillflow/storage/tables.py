"""The state store's tables (SQLAlchemy Core). Times are UTC epoch microseconds.

Quantities are integers in thousandths (milli-units) so that positions add up exactly on
SQLite and PostgreSQL alike; money stays a decimal string.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
Seq = BigInteger().with_variant(Integer(), "sqlite")

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("key_hash", String(64), nullable=False),
    Column("store_id", String(64), nullable=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_us", BigInteger, nullable=False),
    Column("revoked_us", BigInteger, nullable=True),
)

# The idempotency record of each accepted transaction; its content lives once, in its event.
transactions = Table(
    "transactions",
    metadata,
    Column("transaction_id", String(200), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("register_id", String(64), nullable=False),
    Column("business_day", String(10), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("grand_total", String(32), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("traceparent", String(55), nullable=True),
    Column("received_us", BigInteger, nullable=False),
    Column("logged_us", BigInteger, nullable=False),
    Column("event_seq", BigInteger, nullable=True),
)
Index("ix_transactions_store_day", transactions.c.store_id, transactions.c.business_day)

conflicts = Table(
    "transaction_conflicts",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("transaction_id", String(200), nullable=False, index=True),
    Column("received_us", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
)


def event_columns() -> list[Column[Any]]:
    """The columns of a CloudEvent (fresh objects: a column belongs to one table)."""
    return [
        Column("source", String(200), nullable=False),
        Column("event_id", String(200), nullable=False),
        Column("type", String(100), nullable=False),
        Column("time", String(40), nullable=False),
        Column("subject", String(200), nullable=True),
        Column("partitionkey", String(64), nullable=True),
        Column("sequence", String(20), nullable=True),
        Column("traceparent", String(55), nullable=True),
        Column("data", LargeBinary, nullable=False),
    ]


events = Table(
    "events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    *event_columns(),
    Column("logged_us", BigInteger, nullable=False),
    UniqueConstraint("source", "event_id", name="uq_events_source_id"),
    sqlite_autoincrement=True,  # never reuse a sequence, even after retention emptied the table
)

consumer_groups = Table(
    "consumer_groups",
    metadata,
    Column("group_name", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    # the batch past `position` that keeps failing, so a stuck flow is visible, not silent
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("last_error_us", BigInteger, nullable=True),
)

trace_hops = Table(
    "trace_hops",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("transaction_id", String(200), nullable=False, index=True),
    Column("hop", String(64), nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("detail", Text, nullable=True),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("flow", String(64), primary_key=True),
    Column("event_key", String(400), primary_key=True),
    Column("processed_us", BigInteger, nullable=False),
)

inventory_positions = Table(
    "inventory_positions",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity_milli", BigInteger, nullable=False),
    Column("uom", String(4), nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

inventory_movements = Table(
    "inventory_movements",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("store_id", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity_milli", BigInteger, nullable=False),
    Column("uom", String(4), nullable=False),
    Column("reason", String(16), nullable=False),
    Column("transaction_id", String(200), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("occurred_us", BigInteger, nullable=False),
    # the store's business day it is booked on (movements recorded before 0007 have none)
    Column("business_day", String(10), nullable=True),
    # why it leaves the position as it is (a count already reflects it, no unit conversion)
    Column("excluded", Text, nullable=True),
    Column("batch_id", String(200), nullable=True, index=True),  # the ERP batch that carries it
    UniqueConstraint("transaction_id", "line_no", "reason", name="uq_movement_cause"),
)
Index("ix_movements_store_sku", inventory_movements.c.store_id, inventory_movements.c.sku)

inventory_voids = Table(
    "inventory_voids",
    metadata,
    Column("transaction_id", String(200), primary_key=True),
    Column("void_transaction_id", String(200), nullable=False),
    Column("voided_us", BigInteger, nullable=False),
)

# Messages a JetStream consumer group nak'ed (the broker keeps the redelivery; this keeps what
# retention needs to turn a retry it would drop into a dead letter).
stream_retries = Table(
    "stream_retries",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("group_name", String(100), primary_key=True),
    Column("stream_seq", BigInteger, primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
)

# Events a consumer group nak'ed: delivered again once due (attempts so far, last error).
deliveries = Table(
    "deliveries",
    metadata,
    Column("group_name", String(100), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("due_us", BigInteger, nullable=False),
    Column("last_error", Text, nullable=True),
    # a replayed dead letter is delivered from its copy (the log may have dropped the event)
    Column("dead_letter_id", BigInteger, nullable=True),
)
Index("ix_deliveries_due", deliveries.c.group_name, deliveries.c.due_us)

# Events a consumer group set aside: a full copy, so retention cannot take them away.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("group_name", String(100), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    *event_columns(),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("dead_us", BigInteger, nullable=False),
    Column("replayed_us", BigInteger, nullable=True),  # being delivered again; gone once settled
    sqlite_autoincrement=True,
)

# Who replayed, purged or reset what, when and why.
event_log_audit = Table(
    "event_log_audit",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("action", String(40), nullable=False),
    Column("group_name", String(100), nullable=True),
    Column("affected", Integer, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("why", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("at_us", BigInteger, nullable=False),
)
Index("ix_events_logged", events.c.logged_us)

# What each ERP target answered for each posting (a journal or a movements batch): the posting
# state, and under a parallel run the two sides to compare. Amounts: JSON {currency: "debits"}.
erp_postings = Table(
    "erp_postings",
    metadata,
    Column("external_id", String(200), primary_key=True),
    Column("target", String(16), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("business_day", String(10), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("accepted", Boolean, nullable=False),
    Column("document_number", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("lines", Integer, nullable=False),
    Column("amounts", Text, nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
)
Index("ix_erp_postings_day_store", erp_postings.c.business_day, erp_postings.c.store_id)

# The `aggregated` posting policy. A store's day close (its Z report) waits here until every
# transaction it counts is in, or until its grace has passed; then the day is posted.
# State: waiting | posted | failed. Gap: JSON list of the missing transaction ids.
day_closes = Table(
    "day_closes",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("business_day", String(10), primary_key=True),
    Column("report", Text, nullable=False),  # the DayClose, canonical JSON
    Column("received_us", BigInteger, nullable=False),
    Column("deadline_us", BigInteger, nullable=False),  # posted with what is there after this
    Column("state", String(16), nullable=False),
    Column("gap", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("posted_us", BigInteger, nullable=True),
)
Index("ix_day_closes_state", day_closes.c.state)

# Each merged journal of a store-day (its day journal parts and later adjustments), recorded
# before it is posted, and the transactions it carries: a transaction is in one journal at
# most, and a journal once recorded is posted as recorded (never reopened).
# State: pending | posted | failed.
day_journals = Table(
    "day_journals",
    metadata,
    Column("journal_id", String(200), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("business_day", String(10), nullable=False),
    Column("register_id", String(64), nullable=True),  # posted per register
    Column("adjustment", Integer, nullable=False),  # 0: the day journal; N: the Nth adjustment
    Column("state", String(16), nullable=False),
    Column("document_number", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("transactions", Integer, nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
)
Index("ix_day_journals_store_day", day_journals.c.store_id, day_journals.c.business_day)

journal_members = Table(
    "journal_members",
    metadata,
    Column("transaction_id", String(200), primary_key=True),
    Column("journal_id", String(200), nullable=False, index=True),
)

# Redemption sagas: points held on the loyalty platform during a checkout (`hold_id` is the
# platform's), committed by the transaction that tendered them, released by a void, an
# abandoned checkout or the TTL, refunded when the sale that spent them is post-voided.
# `request_key` (the store and the till's Idempotency-Key) makes the reservation idempotent.
# A step that came too late (a commit after a release) is kept in `conflict`, never dropped.
# State: held | committed | released | expired | refunded.
redemptions = Table(
    "redemptions",
    metadata,
    Column("hold_id", String(64), primary_key=True),
    Column("request_key", String(320), nullable=False, unique=True),
    Column("program", String(64), nullable=False),
    Column("member_id", String(64), nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("points", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("transaction_id", String(200), nullable=True),  # the sale that committed it
    Column("void_id", String(200), nullable=True),  # the void that released or refunded it
    Column("reason", Text, nullable=True),  # why it was released
    Column("conflict", Text, nullable=True),
)
Index("ix_redemptions_state", redemptions.c.state, redemptions.c.expires_us)

# The hub's points ledger: every move of a member's points, keyed by the idempotency key of
# the step that caused it (so a move is recorded once), with the points the platform
# answered. Moves the hub did not cause (welcome bonus, expiry) come from the platform's
# statement, read from the cursor kept in `loyalty_statements`. Outstanding points per
# program = the sum; the liability is valued from it.
points_ledger = Table(
    "points_ledger",
    metadata,
    Column("entry_key", String(320), primary_key=True),
    Column("program", String(64), nullable=False),
    Column("member_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # accrual | reversal | redemption | refund | bonus | expiry
    Column("points", Integer, nullable=False),  # signed
    Column("transaction_id", String(200), nullable=True),
    Column("hold_id", String(64), nullable=True),
    Column("store_id", String(64), nullable=True),
    Column("business_day", String(10), nullable=True),
    Column("recorded_us", BigInteger, nullable=False),
    Column("journal_id", String(200), nullable=True),  # the points journal it went into
)
Index("ix_points_ledger_program", points_ledger.c.program, points_ledger.c.kind)
Index("ix_points_ledger_transaction", points_ledger.c.transaction_id)
Index("ix_points_ledger_journal", points_ledger.c.journal_id)

# The IFRS 15 journals of the points a store-day's transactions issued (net of those taken
# back): recorded with their ledger entries before they are posted, then settled like the
# day journals. State: pending | posted | failed.
points_journals = Table(
    "points_journals",
    metadata,
    Column("journal_id", String(200), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("business_day", String(10), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("document_number", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("recorded_us", BigInteger, nullable=False),
)
Index("ix_points_journals_store_day", points_journals.c.store_id, points_journals.c.business_day)

loyalty_statements = Table(
    "loyalty_statements",
    metadata,
    Column("program", String(64), primary_key=True),
    Column("after_seq", BigInteger, nullable=False),
)

# The product master: the validated Product as JSON, keyed by SKU.
products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("product", Text, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

# The latest stock count applied per store and SKU: a movement that occurred before it is
# recorded but moves the position no more (the count already reflects it).
stock_counts = Table(
    "stock_counts",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("count_id", String(64), nullable=False),
    Column("counted_us", BigInteger, nullable=False),
    Column("quantity_milli", BigInteger, nullable=False),
    Column("applied_us", BigInteger, nullable=False),
)

# Stock alerts: negative stock (cleared when the position is back at zero or above) and units
# with no conversion to the stock unit. `alert_key` is one open alert per store, SKU and key.
inventory_alerts = Table(
    "inventory_alerts",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("alert_key", String(64), nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity_milli", BigInteger, nullable=False),
    Column("uom", String(4), nullable=False),
    Column("transaction_id", String(200), nullable=False),
    Column("detail", Text, nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("raised_us", BigInteger, nullable=False),
    Column("cleared_us", BigInteger, nullable=True),
    Column("cleared_by", String(200), nullable=True),
)
Index(
    "ix_inventory_alerts_store",
    inventory_alerts.c.store_id,
    inventory_alerts.c.sku,
    inventory_alerts.c.cleared_us,
)
Index("ix_inventory_alerts_open", inventory_alerts.c.cleared_us)

# Per store-day, how many of its movements that moved stock are in no ERP batch yet.
stock_days = Table(
    "stock_days",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("business_day", String(10), primary_key=True),
    Column("unbatched", Integer, nullable=False),
)
Index("ix_stock_days_unbatched", stock_days.c.unbatched)

# The goods-movement batches sent to the ERP per store-day (`gm.<store>.<day>.<n>`), recorded
# with their movements before they are posted. State: pending | posted | failed | empty.
goods_batches = Table(
    "goods_batches",
    metadata,
    Column("batch_id", String(200), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("business_day", String(10), nullable=False),
    Column("number", Integer, nullable=False),
    Column("lines", Integer, nullable=False),
    Column("movements", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("document_number", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("recorded_us", BigInteger, nullable=False),
    Column("settled_us", BigInteger, nullable=True),
)
Index("ix_goods_batches_store_day", goods_batches.c.store_id, goods_batches.c.business_day)
Index("ix_goods_batches_state", goods_batches.c.state)

# Master data to the stores. Every accepted change of an item, price or promotion is one row of
# `master_changes` under a global, increasing version (the record as canonical JSON, NULL for a
# withdrawal); `master_targets` says which stores each change concerns, by target ("*", "store:ID",
# "region:ID", "brand:ID") and side (1: the record before it applied there, 2: the record after
# it applies there), so a store's delta is an index range per target. Current state: items in
# `products`, prices and promotions below (`version`: their latest change).
master_changes = Table(
    "master_changes",
    metadata,
    Column("version", Seq, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("record_key", String(300), nullable=False),
    Column("record", Text, nullable=True),
    Column("changed_us", BigInteger, nullable=False),
    Column("previous", BigInteger, nullable=True),  # the version of the key's change before
    Column("superseded_by", BigInteger, nullable=True),  # ... and after (NULL: the current one)
)
Index("ix_master_changes_key", master_changes.c.kind, master_changes.c.record_key)

master_targets = Table(
    "master_targets",
    metadata,
    Column("target", String(140), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("sides", Integer, nullable=False),
    sqlite_with_rowid=False,  # the (target, version) ranges are the table itself
)

prices = Table(
    "prices",
    metadata,
    Column("price_key", String(300), primary_key=True),
    Column("sku", String(64), nullable=False, index=True),
    Column("region", String(64), nullable=True),
    Column("store_id", String(64), nullable=True),
    Column("price", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

promotions = Table(
    "promotions",
    metadata,
    Column("promotion_id", String(64), primary_key=True),
    Column("promotion", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

# The version each store acknowledged it applied (it only moves forward), and when.
master_acks = Table(
    "master_acks",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("acked_us", BigInteger, nullable=False),
)

# What departs from the promotion calendar, per transaction (judged again on redelivery: the
# new findings replace the old), by store-day for the report.
compliance_deviations = Table(
    "compliance_deviations",
    metadata,
    Column("transaction_id", String(200), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("business_day", String(10), nullable=False),
    Column("line_no", Integer, nullable=True),
    Column("kind", String(32), nullable=False),
    Column("promotion_id", String(64), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("expected", Text, nullable=False),
    Column("actual", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
)
Index("ix_compliance_deviations_day", compliance_deviations.c.business_day, compliance_deviations.c.store_id)

# The latest heartbeat of each store's edge agent (a new one replaces it), with the hub's receive
# time; `sent_us` is the agent's clock, so the two give the skew between the clocks.
store_heartbeats = Table(
    "store_heartbeats",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("agent_version", String(64), nullable=False),
    Column("sent_us", BigInteger, nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Column("buffer_depth", BigInteger, nullable=False),
    Column("oldest_unsent_age_seconds", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_total", BigInteger, nullable=False),
    Column("conflicts", BigInteger, nullable=False),
    Column("missing", Text, nullable=True),  # a JSON list: what the agent was asked for and lacks
)

# each hub process's own counters (retries, throttle waits, breaker states, handled events),
# published every few seconds, so `/metrics` in any API process sees every worker's figures
process_metrics = Table(
    "process_metrics",
    metadata,
    Column("process_id", String(100), primary_key=True),  # host:pid:start
    Column("role", String(64), nullable=False),
    Column("started_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),  # JSON: the process's metric families
)

# alerts the rules raised: one row per firing, resolved when its condition cleared
alerts = Table(
    "alerts",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("rule", String(100), nullable=False),
    Column("subject", String(200), nullable=False),  # what it is about: a store, a group, a store-day
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("summary", Text, nullable=False),
    Column("value", Float, nullable=True),
    Column("threshold", Float, nullable=True),
    Column("fired_us", BigInteger, nullable=False),
    Column("resolved_us", BigInteger, nullable=True),
    Column("acknowledged_us", BigInteger, nullable=True),
    Column("acknowledged_by", String(200), nullable=True),
    Column("notified", String(16), nullable=True),  # the last state sent to the webhook
    Column("notify_until_us", BigInteger, nullable=True),  # until when a process may send it
)
# at most one open alert per (rule, subject): evaluating processes race to open it, one wins
Index(
    "ux_alerts_open",
    alerts.c.rule,
    alerts.c.subject,
    unique=True,
    sqlite_where=alerts.c.resolved_us.is_(None),
    postgresql_where=alerts.c.resolved_us.is_(None),
)
