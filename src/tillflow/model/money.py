"""Exact money: ISO 4217 currencies, their minor units, and the decimal types of the model.

Amounts are `Decimal` end to end. JSON carries them as strings (``"12.30"``); a binary float
is refused on input so that no rounding error can enter the money path.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

# ISO 4217 minor units of the currencies a retailer is likely to meet. A currency not listed
# here is refused: guessing its minor unit would make every later check meaningless.
MINOR_UNITS: dict[str, int] = {
    "AED": 2,
    "AUD": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CLP": 0,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "MYR": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PHP": 2,
    "PLN": 2,
    "RON": 2,
    "SAR": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TND": 3,
    "TRY": 2,
    "TWD": 2,
    "UAH": 2,
    "USD": 2,
    "VND": 0,
    "ZAR": 2,
}

_QUANTUM = {code: Decimal(1).scaleb(-units) for code, units in MINOR_UNITS.items()}


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of `currency` (0.01 for EUR, 1 for JPY, 0.001 for KWD)."""
    return _QUANTUM[currency]


def is_in_minor_units(amount: Decimal, currency: str) -> bool:
    """True when `amount` has no digits below the currency's minor unit."""
    return amount.is_finite() and amount == amount.quantize(_QUANTUM[currency])


def round_to_minor(amount: Decimal, currency: str) -> Decimal:
    """Round half up to the currency's minor unit (the usual retail rule)."""
    return amount.quantize(_QUANTUM[currency], rounding=ROUND_HALF_UP)


_PLACES = Decimal("1e-6")


def _bounded(value: Decimal) -> Decimal:
    """At most 12 digits before the point and 6 after it (trailing zeros aside): two C-level
    operations, where pydantic's own digit constraints build a tuple per amount in Python."""
    if value and value.adjusted() >= 12:
        raise ValueError("Decimal input should have no more than 18 digits in total (12 before the point)")
    if value != value.quantize(_PLACES):
        raise ValueError("Decimal input should have no more than 6 decimal places")
    return value


def _exact_decimal(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError('binary floats are not exact: send amounts as decimal strings, e.g. "12.30"')
    return value


def check_minor_units(currency: str, **amounts: Decimal | None) -> None:
    """Raise ValueError naming the first amount with digits below the currency's minor unit."""
    for name, amount in amounts.items():
        if amount is not None and not is_in_minor_units(amount, currency):
            raise ValueError(f"{name} {amount} has digits below the {currency} minor unit")


# A decimal that refuses floats on input (pydantic writes decimals as JSON strings). At most
# 18 digits, 6 after the point: every amount fits a NUMERIC(18, 6) and sums stay exact within
# Decimal's default 28-digit precision.
Dec = Annotated[Decimal, AfterValidator(_bounded), BeforeValidator(_exact_decimal)]
