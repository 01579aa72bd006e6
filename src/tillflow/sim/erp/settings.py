"""What a reference ERP is configured with: its chart, its periods, its limits and its windows.

The defaults describe a small retail general ledger. A test or a demo narrows them (a closed
month, a tight rate limit, a maintenance window around now) to provoke the refusals the hub
must cope with when it talks to a real ERP.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DEFAULT_ACCOUNTS", "PERIOD", "ErpSimSettings", "MaintenanceWindow", "RateLimit"]

# A retail chart: tills and tenders, stock, what is owed to customers and the tax office, sales
# by department (the departments of the POS traffic generator), cost of sales and rounding.
DEFAULT_ACCOUNTS: dict[str, str] = {
    "1000": "Cash in tills",
    "1100": "Card clearing",
    "1150": "Other tender clearing (vouchers, wallets)",
    "1400": "Inventory",
    "2200": "Tax payable",
    "2300": "Gift card liability",
    "2400": "Loyalty contract liability",
    "4000": "Sales - grocery",
    "4010": "Sales - produce",
    "4020": "Sales - bakery",
    "4030": "Sales - deli",
    "4040": "Sales - household",
    "4050": "Sales - apparel",
    "4060": "Sales - sundry",
    "4070": "Sales - services",
    "4090": "Sales - other",
    "4100": "Sales returns",
    "4200": "Discounts granted",
    "4300": "Revenue deferred to loyalty points (IFRS 15)",
    "4310": "Loyalty breakage revenue",
    "5000": "Cost of goods sold",
    "6900": "Rounding differences",
}

PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class RateLimit(BaseModel):
    """A token bucket: `per_second` tokens flow in, at most `burst` are saved up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class MaintenanceWindow(BaseModel):
    """A time span in which every business request is answered 503 until `end`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.end <= self.start:
            raise ValueError("a maintenance window ends after it starts")
        return self

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


class ErpSimSettings(BaseModel):
    """Every month is an open fiscal period unless listed in `closed_periods` ("YYYY-MM")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accounts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ACCOUNTS))
    closed_periods: list[str] = Field(default_factory=list)
    max_lines_per_journal: int = Field(default=500, ge=2)
    max_journals_per_batch: int = Field(default=200, ge=1)  # of one POST /api/journals/batch
    # Generous enough for a demo, low enough that a connector which ignores 429 is found out.
    rate_limit: RateLimit | None = RateLimit(per_second=50, burst=100)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    seed: int = 0  # of the fault injection's random draws

    @field_validator("closed_periods")
    @classmethod
    def _periods(cls, value: list[str]) -> list[str]:
        for period in value:
            if not PERIOD.match(period):
                raise ValueError(f"a fiscal period is written YYYY-MM, not {period!r}")
        return value

    @field_validator("accounts")
    @classmethod
    def _accounts(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("the chart of accounts needs at least one account")
        return value
