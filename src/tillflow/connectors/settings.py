"""How the hub reaches its downstream systems: the `connectors` section of the config file.

```yaml
connectors:
  loyalty: {url: "https://loyalty.example.com", resilience: {rate: 100, burst: 20}}
  erp:                                   # the cloud ERP's REST API
    url: "https://erp.example.com"
    resilience:
      rate: 50                           # the ERP's contracted request rate
      maintenance: [{days: [sun], from_time: "02:00", to_time: "04:00", timezone: Europe/Berlin}]
  erp_legacy: {directory: /srv/erp-import}  # a legacy ERP that imports files
  erp_routing:                           # the migration from legacy to cloud, store by store
    default: legacy
    regions: {north: both}               # parallel run: both get every posting
    stores: {S001: cloud}
    primary: legacy                      # under `both`, whose answer the flow acts on
```

Kept apart from the adapters so that reading the config never loads an HTTP client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tillflow.connectors.resilience import ResilienceSettings

ErpTarget = Literal["cloud", "legacy"]
ErpRoute = Literal["cloud", "legacy", "both"]


class HttpConnectorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(pattern=r"^https?://")
    timeout: float = Field(default=10.0, gt=0)  # seconds for an answer
    connect_timeout: float = Field(default=3.0, gt=0)
    max_connections: int = Field(default=20, ge=1)
    max_batch: int = Field(default=100, ge=1)  # documents in one batch request
    resilience: ResilienceSettings = ResilienceSettings()


class FileErpSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: Path
    resilience: ResilienceSettings = ResilienceSettings()


class ErpRouting(BaseModel):
    """Which ERP gets a store's postings: by store, else by region, else `default`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: ErpRoute = "cloud"
    regions: dict[str, ErpRoute] = {}
    stores: dict[str, ErpRoute] = {}
    primary: ErpTarget = "cloud"

    def route(self, store_id: str, region: str | None) -> ErpRoute:
        if store_id in self.stores:
            return self.stores[store_id]
        if region is not None and region in self.regions:
            return self.regions[region]
        return self.default

    def targets(self) -> set[ErpTarget]:
        """Every target some store is routed to."""
        routes = {self.default, *self.regions.values(), *self.stores.values()}
        found: set[ErpTarget] = set()
        for route in routes:
            found.update(("cloud", "legacy") if route == "both" else (route,))
        return found


class ConnectorSettings(BaseModel):
    """No `erp` nor `erp_legacy`: no ERP posting; no `loyalty`: no loyalty accrual."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    loyalty: HttpConnectorSettings | None = None
    erp: HttpConnectorSettings | None = None
    erp_legacy: FileErpSettings | None = None
    erp_routing: ErpRouting | None = None

    @model_validator(mode="after")
    def _routes_reach_configured_targets(self) -> Self:
        configured = {"cloud"} if self.erp is not None else set()
        if self.erp_legacy is not None:
            configured.add("legacy")
        routing = self.erp_routing
        if routing is None:
            if len(configured) > 1:
                raise ValueError("with both erp and erp_legacy configured, erp_routing says which gets what")
            return self
        missing = routing.targets() - configured
        if missing:
            raise ValueError(f"erp_routing sends postings to {sorted(missing)}, which is not configured")
        if routing.primary not in configured:
            raise ValueError(f"erp_routing.primary {routing.primary!r} is not configured")
        return self

    def erp_routing_or_default(self) -> ErpRouting | None:
        """The routing in force: as configured, or everything to the one ERP there is."""
        if self.erp_routing is not None:
            return self.erp_routing
        if self.erp is not None:
            return ErpRouting(default="cloud", primary="cloud")
        if self.erp_legacy is not None:
            return ErpRouting(default="legacy", primary="legacy")
        return None
