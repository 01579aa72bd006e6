"""How the hub is observed: logs, traces and metrics (the `observe:` section of the config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ObserveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_name: str = "tillflow"
    # OTLP/HTTP collector base URL (spans go to {otlp_endpoint}/v1/traces); no exporter when unset
    otlp_endpoint: str | None = None
    # finished spans wait at most this long (seconds) before they are sent, in batches
    otlp_export_seconds: float = Field(default=5.0, gt=0)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # worker processes publish their own counters (retries, throttle waits, breakers) this often
    metrics_publish_seconds: float = Field(default=5.0, gt=0)
    # `/metrics` asks for an admin key (a Prometheus `authorization` credential) unless "none"
    metrics_auth: Literal["admin", "none"] = "admin"
