"""A store's back office following the hub's master data, as the demo's stores run it.

`StoreMasterCopy` is a store's copy of its items, prices and promotions: the edge agent's cache
(`tillflow.edge.cache`), kept from the hub's deltas (`GET /v1/stores/{id}/masterdata?since=V`).
Its tills ring up with what it knows (`tillflow.sim.pos.TillMaster`). `MasterFollower` asks for
the delta since the version the copy has, pages through it and acknowledges the version applied.

`demo_calendar` is the promotion calendar of the demo retailer's business day; `flash_sale` the
promotion it publishes in the middle of the day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tillflow.edge.cache import MasterCache, MasterSync
from tillflow.model import Store
from tillflow.model.masterdata import Promotion, PromotionKind

__all__ = ["MasterFollower", "StoreMasterCopy", "demo_calendar", "flash_sale"]


class StoreMasterCopy:
    """What one store knows of its master data: the edge agent's cache (in memory unless a
    path is given), as its tills ask it."""

    def __init__(self, store: Store, path: str | Path = ":memory:") -> None:
        self.store = store
        self.cache = MasterCache(path, store)

    @property
    def version(self) -> int:
        return self.cache.version

    @property
    def records(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.cache.records()

    def apply(self, delta: Mapping[str, Any]) -> int:
        """Apply one delta answer of the hub; returns how many changes it held."""
        return self.cache.apply(delta)

    def price(self, sku: str, at: datetime) -> Decimal | None:
        found = self.cache.price(sku, at)
        return None if found is None or found.currency != self.store.currency else found.price

    def promotions(self, at: datetime) -> Sequence[Promotion]:
        return self.cache.promotions(at)


class MasterFollower:
    """Keeps a store's copy current over the hub's API, with the store's own key."""

    def __init__(self, client: httpx.Client, store: Store, key: str, *, page: int = 500) -> None:
        self.copy = StoreMasterCopy(store)
        self.sync_ = MasterSync(self.copy.cache, client, store.store_id, key, page=page)

    def sync(self) -> int:
        """Apply everything that changed since the copy's version, then acknowledge the version
        reached; returns how many changes were applied."""
        return self.sync_.sync().applied


def _whole(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time())
    return start, start + timedelta(days=1)


def demo_calendar(day: date) -> list[Promotion]:
    """The promotions running all of `day` (in every store's wall-clock time): by department,
    by SKU, for members only, and an amount off in one region's currency."""
    starts, ends = _whole(day)
    window = {"starts": starts, "ends": ends}
    return [
        Promotion(
            promotion_id="BAKERY-10",
            kind=PromotionKind.PERCENT_OFF,
            description="10% off the bakery",
            departments=("BAKERY",),
            percent=Decimal(10),
            **window,
        ),
        Promotion(
            promotion_id="MEMBERS-HOUSEHOLD-15",
            kind=PromotionKind.PERCENT_OFF,
            description="members: 15% off household",
            departments=("HOUSEHOLD",),
            percent=Decimal(15),
            member_only=True,
            **window,
        ),
        Promotion(
            promotion_id="PASTA-3-FOR-2",
            kind=PromotionKind.MULTI_BUY,
            description="pasta: 3 for 2",
            skus=("GRO-0001",),
            buy=3,
            pay=2,
            **window,
        ),
        Promotion(
            promotion_id="TOMATOES-2-FOR-1",
            kind=PromotionKind.MULTI_BUY,
            description="chopped tomatoes: 2 for 1",
            skus=("GRO-0004",),
            buy=2,
            pay=1,
            **window,
        ),
        Promotion(
            promotion_id="EU-SOCKS-050",
            kind=PromotionKind.AMOUNT_OFF,
            description="EUR 0.50 off socks, euro area",
            skus=("APP-0002",),
            amount=Decimal("0.50"),
            currency="EUR",
            regions=("eu",),
            **window,
        ),
    ]


def flash_sale(starts: datetime, brand: str, hours: int = 3) -> Promotion:
    """30% off apparel at every store of `brand` for `hours` from the wall-clock time `starts`."""
    return Promotion(
        promotion_id="FLASH-APPAREL-30",
        kind=PromotionKind.PERCENT_OFF,
        description=f"flash sale: 30% off apparel for {hours} hours",
        departments=("APPAREL",),
        percent=Decimal(30),
        brands=(brand,),
        starts=starts,
        ends=starts + timedelta(hours=hours),
    )
