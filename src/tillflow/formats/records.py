"""What a format parser yields, and what it needs to know: shared by every format.

A parser reads one input (a file, a request body, a webhook payload) and yields, record by
record and in input order, one of:

- `Imported`: a canonical transaction, already validated by the model;
- `Quarantined`: a record refused, with where it is, which field, why, and (for money that
  does not add up) the numbers — the rest of the input carries on;
- `Recorded`: a record read and reported but never posted (sign-on/off, no-sale, training).

Parsers are pure: they get bytes or text streams and an `ImportContext`, never a path or a
socket. The context resolves store ids (aliases), time zones and the policy maps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from tillflow.errors import FormatError
from tillflow.formats.policy import PolicyMaps, ResolvedPolicy
from tillflow.model import Store, TenderKind, Transaction


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a record sits in its input: the input's name, the record's 1-based position
    among the input's records, and a locator a person can find it by."""

    name: str
    index: int
    locator: str

    def __str__(self) -> str:
        return f"{self.name} #{self.index} ({self.locator})"


@dataclass(frozen=True, slots=True)
class Imported:
    source: SourceRef
    transaction: Transaction


@dataclass(frozen=True, slots=True)
class Quarantined:
    source: SourceRef
    field: str  # the input's field (element path, column, JSON key) or the canonical one
    reason: str
    numbers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the amounts that do not add up


@dataclass(frozen=True, slots=True)
class Recorded:
    source: SourceRef
    kind: str  # sign-on, sign-off, no-sale, training, ...
    detail: str = ""


Parsed = Imported | Quarantined | Recorded

__all__ = [
    "FormatError",
    "ImportContext",
    "Imported",
    "Parsed",
    "Quarantined",
    "RecordError",
    "Recorded",
    "SourceRef",
    "field_path",
    "quarantine",
]


class RecordError(ValueError):
    """Raised inside a parser for one record: becomes a `Quarantined` with the field and reason."""

    def __init__(self, field_: str, reason: str, numbers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{field_}: {reason}")
        self.field = field_
        self.reason = reason
        self.numbers = dict(numbers or {})


def field_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a readable path: ``lines[0].quantity`` (``$``: the record)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def quarantine(source: SourceRef, exc: RecordError | ValidationError) -> Quarantined:
    """The quarantine entry of a record refused by its parser or by the canonical model
    (its first error; the model's messages never echo the input)."""
    if isinstance(exc, RecordError):
        return Quarantined(source, exc.field, exc.reason, exc.numbers)
    first = exc.errors(include_url=False, include_input=False)[0]
    return Quarantined(source, field_path(first["loc"]), str(first["msg"]).removeprefix("Value error, "))


@dataclass(frozen=True)
class ImportContext:
    """What parsers need to know about the retailer: configured stores (by canonical id), the
    policy maps, and defaults for inputs that do not say."""

    stores: Mapping[str, Store] = dataclasses.field(default_factory=dict)
    policy: PolicyMaps = dataclasses.field(default_factory=PolicyMaps)
    default_timezone: str = "UTC"
    default_currency: str = "EUR"
    _resolved: dict[str, ResolvedPolicy] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def store_id(self, raw: str) -> str:
        """The canonical store id of a vendor's store number (the alias map, else as sent)."""
        return self.policy.store_aliases.get(raw.strip(), raw.strip())

    def store(self, store_id: str) -> Store | None:
        return self.stores.get(store_id)

    def resolved(self, store_id: str) -> ResolvedPolicy:
        """The policy maps that apply to a store (its brand's, region's and own overrides)."""
        found = self._resolved.get(store_id)
        if found is None:
            found = self._resolved[store_id] = self.policy.resolve(self.store(store_id), store_id)
        return found

    def timezone(self, store_id: str) -> tzinfo:
        store = self.store(store_id)
        name = store.timezone if store is not None else self.default_timezone
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise RecordError("store.timezone", f"unknown time zone {name!r}") from exc

    def local_time(self, store_id: str, at: datetime) -> datetime:
        """A till time without an offset is the store's local time; one with an offset stays."""
        return at if at.tzinfo is not None else at.replace(tzinfo=self.timezone(store_id))

    def currency(self, store_id: str, sent: str | None = None) -> str:
        if sent:
            return sent
        store = self.store(store_id)
        return store.currency if store is not None else self.default_currency

    def tender_kind(self, store_id: str, codes: Sequence[str | None], field_: str) -> TenderKind:
        """The canonical tender kind of a vendor's tender: the first of `codes` (most specific
        first) the store's policy maps; refused with the codes when none is mapped."""
        policy = self.resolved(store_id)
        for code in codes:
            kind = policy.tender(code) if code else None
            if kind is not None:
                return kind
        tried = ", ".join(repr(c) for c in codes if c)
        raise RecordError(field_, f"tender {tried} has no mapping in policy.tenders")
