"""Configuration: one YAML file plus `TILLFLOW_*` environment overrides.

Environment variables win over the file; nested keys use a double underscore
(``TILLFLOW_HUB__PORT=9000``). Secrets come only from the environment. A bad value fails at
start with the path of the bad key.
"""

from __future__ import annotations

import builtins
import functools
import importlib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tillflow.connectors.settings import ConnectorSettings
from tillflow.errors import INFRASTRUCTURE, ConfigError
from tillflow.flows.posting import PostingAccounts
from tillflow.flows.store_day import StorePolicy
from tillflow.formats.csv_batch import CsvSettings
from tillflow.formats.policy import PolicyMaps
from tillflow.formats.records import ImportContext
from tillflow.formats.settings import PoslogSettings, ShopifySettings, SquareSettings
from tillflow.model import Store
from tillflow.model.base import CurrencyCode, Ident
from tillflow.model.money import Dec
from tillflow.observe.alert_rules import AlertSettings
from tillflow.observe.settings import ObserveSettings

# the flows this release runs (a typo fails at start), and what a worker process can run
FlowName = Literal["inventory", "posting", "loyalty", "compliance"]
WorkerFlow = Literal["relay", "inventory", "posting", "loyalty", "compliance"]


class HubSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    data_dir: Path = Path("data")
    # The state store (and embedded event log). Default: a SQLite file in data_dir.
    state_url: str | None = None
    # NORMAL: in WAL mode a commit survives a crash of the process, not a power cut; stores
    # keep what they sent until the hub acknowledges it. FULL: fsync every commit.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"
    max_batch_records: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    role: Literal["all", "api", "worker"] = "all"
    # role `all`: one worker process per group of flows, so a flow busy with a slow ERP never
    # slows another (a bulkhead); "relay" is the outbox relay to JetStream. Every flow is in one.
    worker_flows: list[list[WorkerFlow]] = [["relay", "inventory"], ["posting", "loyalty", "compliance"]]
    # a member's balance is answered from the hub's cache for this long; while the loyalty
    # platform is away, the last known balance is answered, marked stale
    member_cache_seconds: float = Field(default=30.0, gt=0)
    # points reserved at checkout are held this long unless the till asks otherwise (at most
    # `redemption_max_ttl_seconds`); a hold not committed by then is released
    redemption_ttl_seconds: int = Field(default=300, ge=1)
    redemption_max_ttl_seconds: int = Field(default=3600, ge=1)
    # judge every sale's discounts against the promotion calendar (the `compliance` flow)
    promotion_compliance: bool = False
    # a store-day with this many deviations from the calendar raises an alert
    compliance_alert_deviations: int = Field(default=5, ge=1)
    # the loyalty programs whose points the hub keeps a ledger of (and reconciles)
    loyalty_programs: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    # the loyalty tick reads the platform's statement (its bonuses and expiries) at most this often
    loyalty_statement_seconds: float = Field(default=30.0, ge=0)
    store_offline_seconds: float = Field(default=30.0, gt=0)  # a store silent this long is offline

    @field_validator("worker_flows")
    @classmethod
    def _every_flow_runs_once(cls, groups: list[list[str]]) -> list[list[str]]:
        named = [flow for group in groups for flow in group]
        missing = set(get_args(WorkerFlow)) - set(named)
        if missing or len(named) != len(set(named)):
            raise ValueError(f"every flow in exactly one worker group (missing: {sorted(missing) or 'none'})")
        return groups

    def resolved_state_url(self) -> str:
        return self.state_url or f"sqlite:///{(self.data_dir / 'tillflow.db').resolve()}"


@functools.cache
def exception_class(name: str) -> type[Exception]:
    """The exception class a dotted path names (``tillflow.errors.PoisonEventError``,
    ``json.JSONDecodeError``; a bare name is a builtin: ``ValueError``). Raises ValueError when
    nothing importable has that name, when it is no exception class, or when it is an
    infrastructure error (whose handling is fixed: the runner treats it as an outage)."""
    parts = name.split(".")
    found: object = None
    if len(parts) == 1:
        found = getattr(builtins, name, None)
        if found is None:
            raise ValueError(f"{name!r} is no builtin; name other classes by their dotted path")
    else:
        problem = ""
        for split in range(len(parts) - 1, 0, -1):  # the longest importable module, then attributes
            module = ".".join(parts[:split])
            try:
                found = importlib.import_module(module)
            except ImportError as exc:
                problem = f": {exc}"
                continue
            for part in parts[split:]:
                found = getattr(found, part, None)
            if found is None:
                raise ValueError(f"cannot import {name!r}: {module} has no {'.'.join(parts[split:])}")
            break
        else:
            raise ValueError(f"cannot import {name!r}{problem}")
    if not (isinstance(found, type) and issubclass(found, Exception)):
        raise ValueError(f"{name!r} is not an exception class (a subclass of Exception)")
    if issubclass(found, INFRASTRUCTURE):
        raise ValueError(f"{name!r} is an infrastructure error: the runner handles those as outages")
    return found


def _check_exception_name(name: str) -> str:
    exception_class(name)
    return name


ExceptionName = Annotated[str, AfterValidator(_check_exception_name)]


class FlowSettings(BaseModel):
    """How one flow's consumer group runs: batch size and retry policy."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=500, ge=1, le=10_000)
    # 10 attempts, 2 s doubling to at most 10 min: a failing event keeps trying for about
    # half an hour (full jitter) before it goes to dead letters, past a typical ERP restart
    max_attempts: int = Field(default=10, ge=1)
    base_delay: float = Field(default=2.0, ge=0)  # seconds before the first retry (at most)
    max_delay: float = Field(default=600.0, ge=0)
    ordered: bool = True  # keep a store's events in till order when one fails
    # errors that send an event to dead letters at once (no retry will fix it), by dotted path
    # or builtin name; an error that is also of a `retryable_errors` class is retried (it wins)
    non_retryable_errors: list[ExceptionName] = [
        "tillflow.errors.PoisonEventError",
        "ValueError",
        "tillflow.errors.DownstreamRejectedError",
    ]
    retryable_errors: list[ExceptionName] = []

    def non_retryable(self) -> tuple[type[Exception], ...]:
        return tuple(exception_class(name) for name in self.non_retryable_errors)

    def retryable(self) -> tuple[type[Exception], ...]:
        return tuple(exception_class(name) for name in self.retryable_errors)


class BusSettings(BaseModel):
    """Where events flow: the embedded SQL log, or NATS JetStream (fed from the state store's
    outbox by a relay, so an accepted transaction is never missing from the log)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sqlite", "jetstream"] = "sqlite"
    servers: list[str] = ["nats://127.0.0.1:4222"]
    stream: str = Field(default="TILLFLOW", pattern=r"^[A-Za-z0-9_-]+$")
    replicas: int = Field(default=1, ge=1, le=5)


class ImportSettings(BaseModel):
    """How inputs in the POS and platform formats are read (`tillflow import`, the gateway's
    POSLog endpoint, the edge agent's drop folder)."""

    model_config = ConfigDict(extra="forbid")

    default_timezone: str = "UTC"  # for till times without an offset, of stores not configured
    default_currency: CurrencyCode = "EUR"
    poslog: PoslogSettings = PoslogSettings()
    csv: CsvSettings = CsvSettings()
    shopify: ShopifySettings = ShopifySettings()
    square: SquareSettings = SquareSettings()

    def by_format(self) -> dict[str, BaseModel]:
        return {"poslog": self.poslog, "csv": self.csv, "shopify": self.shopify, "square": self.square}


class PostingSettings(BaseModel):
    """How sales become ERP journals: the chart-of-accounts map, the cost of goods and the
    posting policy of each store (the narrowest scope wins: store, then region, then default)."""

    model_config = ConfigDict(extra="forbid")

    accounts: PostingAccounts = PostingAccounts()
    unit_costs: dict[Ident, Annotated[Dec, Field(ge=0)]] = {}  # sku -> cost, for cost of goods sold
    default: StorePolicy = StorePolicy()
    regions: dict[Ident, StorePolicy] = {}
    stores: dict[Ident, StorePolicy] = {}
    day_close_grace: float = Field(default=900.0, gt=0)  # seconds a day close waits for its gap
    max_lines: int = Field(default=500, ge=2)  # the ERP's lines per journal
    # with `accounts.loyalty` and a loyalty platform: the points issued are journaled (IFRS 15)
    # per store-day at most this often, from the hub's points ledger
    points_journal_seconds: float = Field(default=60.0, gt=0)

    def policy_for(self, store_id: str, region: str | None = None) -> StorePolicy:
        found = self.stores.get(store_id)
        if found is None and region is not None:
            found = self.regions.get(region)
        return found or self.default


class InventorySettings(BaseModel):
    """Stock: the goods movements of each store-day sent to the ERP once its day is closed."""

    model_config = ConfigDict(extra="forbid")

    post_movements: bool = True  # when an ERP is configured
    post_every: float = Field(default=1.0, gt=0)  # seconds between looks for store-days due


class TillflowConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TILLFLOW_", env_nested_delimiter="__", extra="forbid")

    hub: HubSettings = HubSettings()
    bus: BusSettings = BusSettings()
    stores: list[Store] = []
    flows: dict[FlowName, FlowSettings] = {}
    policy: PolicyMaps = PolicyMaps()
    imports: ImportSettings = ImportSettings()
    connectors: ConnectorSettings = ConnectorSettings()
    posting: PostingSettings = PostingSettings()
    inventory: InventorySettings = InventorySettings()
    observe: ObserveSettings = ObserveSettings()
    alerts: AlertSettings = AlertSettings()

    def import_context(self) -> ImportContext:
        """What the format parsers need: the stores, the policy maps, the defaults."""
        return ImportContext(
            stores={s.store_id: s for s in self.stores},
            policy=self.policy,
            default_timezone=self.imports.default_timezone,
            default_currency=self.imports.default_currency,
        )

    def flow(self, name: FlowName) -> FlowSettings:
        """The settings of one flow (defaults unless configured)."""
        return self.flows.get(name, FlowSettings())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings  # the environment overrides the YAML file

    def store_ids(self) -> frozenset[str]:
        return frozenset(s.store_id for s in self.stores)


def load_config(path: Path | None = None, **overrides: Any) -> TillflowConfig:
    """Read the YAML file (if any), apply the environment, then `overrides` (hub settings from
    the command line); validate. ConfigError names the bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded
    try:
        config = TillflowConfig(**data)
        if overrides:  # command-line flags win over the environment and the file
            hub = HubSettings.model_validate(config.hub.model_dump() | overrides)
            config = config.model_copy(update={"hub": hub})
        return config
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid configuration{f' in {path}' if path else ''}: {problems}") from exc


def dump_config(config: TillflowConfig) -> str:
    """The configuration as YAML (for `tillflow demo` to write the config it runs with)."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
