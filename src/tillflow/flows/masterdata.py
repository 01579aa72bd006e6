"""Which master data a store runs, and when: pure lookups over items, prices and promotions.

**Scope.** An item (`Product`) applies to every store. A price with neither `region` nor
`store_id` applies to every store, one with `region` to the stores of that region, one with
`store_id` to that store. A promotion without `stores`, `regions` and `brands` applies to every
store; otherwise to a store that is listed, or whose region or brand is listed (any one of them).

**Time.** Effective dates are naive wall-clock times in the store's time zone. An instant (an
aware datetime) is turned into the store's wall-clock time (`local_time`) and compared with them
as naive values: a record is effective when ``from <= local < to`` (`to` exclusive, None open).
This is what a till does with its own clock, so the hub judges a till by the till's rule. Across
daylight-saving changes it means (Europe/Paris shown; every zone alike):

- *Clocks go forward* (2026-03-29, 02:00 → 03:00): wall-clock times 02:00–02:59 never happen. A
  boundary inside the gap takes effect at the first instant after it, 03:00 local; a window that
  lies wholly inside the gap is never effective. A window 01:00–04:00 lasts two real hours.
- *Clocks go back* (2026-10-25, 03:00 → 02:00): wall-clock times 02:00–02:59 happen twice, and
  each instant is judged by its own wall-clock time. A boundary inside the repeated hour is crossed
  twice: a window ending at 02:30 is effective 02:00–02:30 on both passes, a window starting at
  02:30 is effective from the first 02:30, off again from the second 02:00 until the second 02:30.
  A window 01:00–04:00 lasts four real hours. Boundaries on whole days (00:00) are never affected.

**Winning price.** Among the effective prices of one SKU that apply to the store, the store's own
beats its region's, which beats the price for all stores; within a scope the latest
`effective_from` wins; equal on both, the one later in the sequence (a later version) wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from tillflow.model import Product, Store
from tillflow.model.masterdata import Price, Promotion

__all__ = ["active_promotions", "applies_to", "is_active", "is_effective", "local_time", "price_at"]


def applies_to(record: Product | Price | Promotion, store: Store) -> bool:
    """True when `record` is master data of `store` (see the module docstring for the scopes)."""
    if isinstance(record, Price):
        if record.store_id is not None:
            return record.store_id == store.store_id
        if record.region is not None:
            return record.region == store.region
        return True
    if isinstance(record, Promotion):
        if not (record.stores or record.regions or record.brands):
            return True
        return (
            store.store_id in record.stores or store.region in record.regions or store.brand in record.brands
        )
    return True  # an item is sold everywhere


def local_time(store: Store, at: datetime) -> datetime:
    """The naive wall-clock time in `store.timezone` at the aware instant `at`."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"an aware instant is needed, got the naive {at.isoformat()}")
    return at.astimezone(ZoneInfo(store.timezone)).replace(tzinfo=None)


def is_effective(price: Price, local: datetime) -> bool:
    """True when `price` is effective at the store wall-clock time `local`."""
    return price.effective_from <= local and (price.effective_to is None or local < price.effective_to)


def is_active(promotion: Promotion, local: datetime) -> bool:
    """True when the store wall-clock time `local` lies in ``[starts, ends)``."""
    return promotion.starts <= local < promotion.ends


def _scope_rank(price: Price) -> int:
    return 2 if price.store_id is not None else 1 if price.region is not None else 0


def price_at(prices: Sequence[Price], store: Store, at: datetime) -> Price | None:
    """The price `store` charges at instant `at` among `prices` of one SKU, or None."""
    if len({p.sku for p in prices}) > 1:
        raise ValueError("price_at takes the prices of one SKU")
    local = local_time(store, at)
    best: Price | None = None
    best_rank: tuple[int, datetime] | None = None
    for price in prices:
        if not (applies_to(price, store) and is_effective(price, local)):
            continue
        rank = (_scope_rank(price), price.effective_from)
        if best_rank is None or rank >= best_rank:  # >=: a later one in the sequence wins a tie
            best, best_rank = price, rank
    return best


def active_promotions(
    promotions: Sequence[Promotion],
    store: Store,
    at: datetime,
    *,
    sku: str | None = None,
    department: str | None = None,
    member: bool | None = None,
) -> list[Promotion]:
    """The promotions that apply to `store` and are running at instant `at`, in their order.

    With `sku` and/or `department`, only those naming that SKU or that department. With `member`
    False, member-only promotions are left out; with True or None (do not care) they stay.
    """
    local = local_time(store, at)
    targeted = sku is not None or department is not None
    found: list[Promotion] = []
    for promotion in promotions:
        if not (is_active(promotion, local) and applies_to(promotion, store)):
            continue
        if targeted and not (
            (sku is not None and sku in promotion.skus)
            or (department is not None and department in promotion.departments)
        ):
            continue
        if promotion.member_only and member is False:
            continue
        found.append(promotion)
    return found
