"""What the reference loyalty platform is configured with: programs, tiers, earning rules,
redemption value, expiry, seeded members and the fault RNG seed.

The defaults suit the demo stores (EUR, GBP, USD, JPY and SEK): a point per whole unit of
money (per 10 SEK, per 100 JPY), double points on produce, none on carrier bags, silver and
gold tiers that multiply what a member earns, points that expire a year after they are earned.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tillflow.model.money import MINOR_UNITS


class TierRule(BaseModel):
    """A tier: its earning multiplier and the lifetime points that reach it (never a downgrade)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=32)
    multiplier: Decimal = Field(default=Decimal(1), ge=0)
    threshold: int | None = Field(default=None, ge=0)  # None: only by enrolment


class EarnRate(BaseModel):
    """`points` earned per `per` of the currency, before multipliers; the total rounds down."""

    model_config = ConfigDict(frozen=True)

    points: Decimal = Field(default=Decimal(1), ge=0)
    per: Decimal = Field(default=Decimal(1), gt=0)


def _default_earn() -> dict[str, EarnRate]:
    rates = {code: EarnRate() for code in ("EUR", "GBP", "USD", "CHF", "CAD", "AUD")}
    rates |= {code: EarnRate(per=Decimal(10)) for code in ("SEK", "NOK", "DKK")}
    rates["JPY"] = EarnRate(per=Decimal(100))
    return rates


def _default_value() -> dict[str, Decimal]:
    values = {code: Decimal("0.01") for code in ("EUR", "GBP", "USD", "CHF", "CAD", "AUD")}
    values |= {code: Decimal("0.10") for code in ("SEK", "NOK", "DKK")}
    values["JPY"] = Decimal(1)
    return values


class LoyaltySimSettings(BaseModel):
    """The rules of the reference loyalty platform (see the module docstring for the defaults)."""

    model_config = ConfigDict(frozen=True)

    programs: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    tiers: list[TierRule] = Field(
        default_factory=lambda: [
            TierRule(name="basic", multiplier=Decimal(1), threshold=0),
            TierRule(name="silver", multiplier=Decimal("1.25"), threshold=2_000),
            TierRule(name="gold", multiplier=Decimal("1.5"), threshold=10_000),
        ],
        min_length=1,
    )
    earn: dict[str, EarnRate] = Field(default_factory=_default_earn)
    # matched case-insensitively against a line's category; a category not listed earns x1
    category_multipliers: dict[str, Decimal] = Field(
        default_factory=lambda: {"produce": Decimal(2), "sundry": Decimal(0)}
    )
    point_value: dict[str, Decimal] = Field(default_factory=_default_value)  # money per point redeemed
    expiry_days: int | None = Field(default=365, ge=1)  # None: points never expire
    hold_ttl_seconds: int = Field(default=900, ge=1)  # when a hold request names none
    max_hold_ttl_seconds: int = Field(default=86_400, ge=1)
    # Seeded members M0001..M{n:04}: every 10th in the last tier, every 4th in the second, the
    # rest in the first; each starts with `seed_points` (a welcome bonus, expiring like any lot).
    seed_members: int = Field(default=100, ge=0, le=9999)
    seed_points: int = Field(default=1_000, ge=0)
    # An accrual for an unknown member enrols it in the first tier; reads and holds never do.
    auto_enrol: bool = True
    fault_seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tiers: duplicate tier names in {names}")
        for code in [*self.earn, *self.point_value]:
            if code not in MINOR_UNITS:
                raise ValueError(f"earn/point_value: unknown currency {code!r}")
        if self.hold_ttl_seconds > self.max_hold_ttl_seconds:
            raise ValueError("hold_ttl_seconds: longer than max_hold_ttl_seconds")
        return self

    def tier(self, name: str) -> TierRule:
        return next(t for t in self.tiers if t.name == name)

    def seeded_tier(self, index: int) -> str:
        """The tier of seeded member number `index` (1-based)."""
        if index % 10 == 0:
            return self.tiers[-1].name
        if index % 4 == 0 and len(self.tiers) > 1:
            return self.tiers[1].name
        return self.tiers[0].name

    def category_multiplier(self, category: str | None) -> Decimal:
        if category is None:
            return Decimal(1)
        folded = {k.casefold(): v for k, v in self.category_multipliers.items()}
        return folded.get(category.casefold(), Decimal(1))
