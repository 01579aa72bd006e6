"""The base of every canonical model: frozen, strict about unknown fields."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from tillflow.model.money import MINOR_UNITS


class Canonical(BaseModel):
    """A frozen canonical record; unknown fields are refused so nothing is silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


# Identifiers travel in URLs, event subjects and transaction ids: keep them plain.
Ident = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _known_currency(code: str) -> str:
    if code not in MINOR_UNITS:
        raise ValueError(f"currency {code} is not a known ISO 4217 code")
    return code


CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_known_currency)]

# A till's sequence number: zero-padded to 10 digits in event `sequence` extensions.
SequenceNo = Annotated[int, Field(ge=0, lt=10**10)]
