"""Alert rules as configured (the `alerts:` section of the config). Pure pydantic.

Each rule has a unique `name`, a `kind` saying what it watches and the threshold of that kind.
The webhook's signing secret comes only from the environment (`TILLFLOW_ALERT_WEBHOOK_SECRET`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["warning", "critical"]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    severity: Severity = "warning"


class StoreOfflineRule(_Rule):
    """A store offline (silent for `hub.store_offline_seconds`) for `minutes` more; a store the
    hub has never heard from is not offline."""

    kind: Literal["store_offline"]
    minutes: float = Field(gt=0)


class DeadLettersRule(_Rule):
    """A consumer group (or any, when `group` is unset) with more than `above` dead letters, or
    one older than `older_than_minutes`."""

    kind: Literal["dead_letters"]
    group: str | None = None
    above: int | None = Field(default=None, ge=0)
    older_than_minutes: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _a_limit(self) -> DeadLettersRule:
        if self.above is None and self.older_than_minutes is None:
            raise ValueError("a dead_letters rule needs `above`, `older_than_minutes` or both")
        return self


class LagRule(_Rule):
    """A consumer group (or any) more than `above` events behind the head of the log."""

    kind: Literal["lag"]
    group: str | None = None
    above: int = Field(ge=0)


class LatencyRule(_Rule):
    """The p99 of till-to-`path` latency over the last `window_minutes` above `above_seconds`."""

    kind: Literal["latency_p99"]
    path: Literal["erp_posted", "loyalty_accrued", "inventory_applied"] = "erp_posted"
    above_seconds: float = Field(gt=0)
    window_minutes: float = Field(default=5.0, gt=0)


class ReconciliationRule(_Rule):
    """A closed store-day of the last `days` business days (today included) whose Z report,
    hub-accepted and ERP-posted figures disagree; compared every `every_minutes` (each
    comparison reads the ERP's trial balance of every closed store-day)."""

    kind: Literal["reconciliation_mismatch"]
    days: int = Field(default=2, ge=1, le=31)
    every_minutes: float = Field(default=1.0, gt=0)


AlertRule = Annotated[
    StoreOfflineRule | DeadLettersRule | LagRule | LatencyRule | ReconciliationRule,
    Field(discriminator="kind"),
]


def default_rules() -> list[AlertRule]:
    return [
        StoreOfflineRule(name="store-offline", kind="store_offline", minutes=5, severity="critical"),
        DeadLettersRule(name="dead-letters", kind="dead_letters", above=0, older_than_minutes=60),
        LagRule(name="flow-lag", kind="lag", above=10_000),
        LatencyRule(name="erp-latency", kind="latency_p99", path="erp_posted", above_seconds=300),
        ReconciliationRule(name="books-mismatch", kind="reconciliation_mismatch", severity="critical"),
    ]


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evaluate_seconds: float = Field(default=5.0, gt=0)  # how often the rules are evaluated
    webhook_url: str | None = None  # alerts that fire or clear are POSTed here, signed (HMAC-SHA256)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    rules: list[AlertRule] = Field(default_factory=default_rules)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[AlertRule]) -> list[AlertRule]:
        names = [r.name for r in rules]
        if len(names) != len(set(names)):
            raise ValueError("alert rule names must be unique")
        return rules
