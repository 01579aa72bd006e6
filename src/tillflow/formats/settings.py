"""The settings of the POSLog, Shopify and Square readers, apart from the readers themselves:
the configuration loads them in every process, and most processes never parse a file (the
readers, lxml among their imports, load only where they are used)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tillflow.model.base import Ident


class PoslogSettings(BaseModel):
    """How POSLog inputs are read (the `formats.poslog` section of the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """An input larger than this is refused (checked while reading)."""
    weight_uom: Literal["KG", "LB", "G"] | None = None
    """The unit of NCR weighed lines (acs:weightItem), which state none: None means pounds for
    transactions in USD and kilograms otherwise."""
    inclusive_tax_types: frozenset[str] = frozenset({"VAT", "GST"})
    """TaxType values whose amounts are in the shelf price, when a tax does not say."""
    vendor_tender_fields: tuple[str, ...] = (
        "TenderDescription",
        "PaymentTypeExternalId",
        "PaymentTypeDescription",
    )
    """Vendor attributes or elements of a Tender (any namespace but ARTS) whose values are tried
    against the tender policy map after TenderID and before TenderType (NCR acs:TenderDescription
    "TenderType12"; ROQQIO fu:PaymentTypeExternalId "1", fu:PaymentTypeDescription "Bar")."""
    summary_tax_code: Ident = "TAX"
    """The tax code (before the policy's tax map) of a tax that names none, and of the tax line
    made from TransactionTaxAmount when a transaction has no tax line items (ROQQIO)."""
    item_fields: frozenset[str] = frozenset({"POSItemID", "ItemID", "GTIN", "UPC", "EAN"})
    """Elements holding article numbers: a valid GTIN there is not taken for a card number."""


class ShopifySettings(BaseModel):
    """How a Shopify shop maps onto canonical identities (the shop is configured as a store of
    the eCommerce channel)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store_id: Ident = "WEB"  # orders without a location_id: the online store
    register_id: Ident = "shopify"
    refund_register_id: Ident = "shopify-refunds"  # refund ids never meet order numbers
    customer_program: Ident = "shopify"
    custom_sku: Ident = "CUSTOM"  # a custom line item: no sku, variant or product
    shipping_sku: Ident = "SHIPPING"
    tip_sku: Ident = "TIP"
    adjustment_sku: Ident = "REFUND-ADJUSTMENT"
    taxes_included_default: bool = False  # a refund of an order not read with it: inclusive?


class SquareSettings(BaseModel):
    """How a Square seller maps onto canonical identities (each location an aliased store)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store_id: Ident = "SQUARE"  # a record without a location_id
    register_id: Ident = "square"
    customer_program: Ident = "square"
    custom_sku: Ident = "CUSTOM"  # a line without a catalog object (custom amount)
    service_charge_sku: Ident = "SERVICE-CHARGE"
    tip_sku: Ident = "TIP"
    refund_sku: Ident = "REFUND"  # the one line of a payment refund
