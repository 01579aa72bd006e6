"""Policy maps: how vendor codes become canonical ones, configured rather than coded.

The `policy:` section of the config YAML::

    policy:
      tenders: {"12": card, "Check": voucher}     # vendor tender code -> canonical kind
      tax_codes: {"1": VAT19}                      # vendor tax code -> canonical tax code
      store_aliases: {"9": S009}                   # vendor store number -> store id
      departments: {"6": produce}                  # vendor department hint -> department
      overrides:                                   # narrower maps win: brand < region < store
        - brand: discount
          tenders: {"TenderType12": gift_card}
        - store: S009
          departments: {"6": fresh}

Tender codes match without regard to case. The built-in tender map covers the ARTS POSLog
tender types and the Shopify and Square payment sources; a retailer's map extends it and may
override any entry. Store aliases are global (a store number must resolve before the store's
own overrides can apply).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from tillflow.model import Store, TenderKind
from tillflow.model.base import Ident

BUILT_IN_TENDERS: Mapping[str, TenderKind] = {
    # ARTS POSLog TenderType values
    "cash": TenderKind.CASH,
    "creditdebit": TenderKind.CARD,
    "credit": TenderKind.CARD,
    "debit": TenderKind.CARD,
    "giftcard": TenderKind.GIFT_CARD,
    "giftcertificate": TenderKind.VOUCHER,
    "voucher": TenderKind.VOUCHER,
    "coupon": TenderKind.VOUCHER,
    "storecredit": TenderKind.STORE_CREDIT,
    "storedvalue": TenderKind.GIFT_CARD,
    "loyalty": TenderKind.LOYALTY_POINTS,
    "loyaltyredemption": TenderKind.LOYALTY_POINTS,
    "points": TenderKind.LOYALTY_POINTS,
    "rounding": TenderKind.ROUNDING,
    # Shopify gateways and Square payment sources
    "shopify_payments": TenderKind.CARD,
    "stripe": TenderKind.CARD,
    "paypal": TenderKind.CARD,
    "card": TenderKind.CARD,
    "wallet": TenderKind.CARD,
    "gift_card": TenderKind.GIFT_CARD,
    "square_gift_card": TenderKind.GIFT_CARD,
}


def _folded(value: object) -> object:
    return {str(k).casefold(): v for k, v in value.items()} if isinstance(value, Mapping) else value


TenderMap = Annotated[dict[str, TenderKind], BeforeValidator(_folded)]


class PolicyLayer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenders: TenderMap = {}
    tax_codes: dict[str, Ident] = {}
    departments: dict[str, Ident] = {}


class PolicyOverride(PolicyLayer):
    """Maps for one brand, region or store (exactly one of the three)."""

    brand: Ident | None = None
    region: Ident | None = None
    store: Ident | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        scopes = [s for s in (self.brand, self.region, self.store) if s is not None]
        if len(scopes) != 1:
            raise ValueError("an override names exactly one of brand, region or store")
        return self

    @property
    def rank(self) -> int:
        return 0 if self.brand is not None else 1 if self.region is not None else 2

    def applies_to(self, store: Store | None, store_id: str) -> bool:
        if self.store is not None:
            return self.store == store_id
        if store is None:
            return False
        return self.brand == store.brand if self.brand is not None else self.region == store.region


class ResolvedPolicy(BaseModel):
    """The maps in force for one store."""

    model_config = ConfigDict(frozen=True)

    tenders: dict[str, TenderKind]
    tax_codes: dict[str, str]
    departments: dict[str, str]

    def tender(self, code: str) -> TenderKind | None:
        return self.tenders.get(code.casefold())

    def tax_code(self, code: str) -> str:
        return self.tax_codes.get(code, code)

    def department(self, hint: str | None) -> str | None:
        return None if hint is None else self.departments.get(hint, hint)


class PolicyMaps(PolicyLayer):
    store_aliases: dict[str, Ident] = {}
    overrides: tuple[PolicyOverride, ...] = ()

    def resolve(self, store: Store | None, store_id: str) -> ResolvedPolicy:
        applying = [o for o in self.overrides if o.applies_to(store, store_id)]
        layers: list[PolicyLayer] = [self, *sorted(applying, key=lambda o: o.rank)]
        tenders = dict(BUILT_IN_TENDERS)
        tax_codes: dict[str, str] = {}
        departments: dict[str, str] = {}
        for layer in layers:
            tenders.update(layer.tenders)
            tax_codes.update(layer.tax_codes)
            departments.update(layer.departments)
        return ResolvedPolicy(tenders=tenders, tax_codes=tax_codes, departments=departments)
