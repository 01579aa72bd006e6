"""Reading POSLog field values: children by local name, numbers, money, identifiers, times.

Every reader raises `RecordError` naming the POSLog field, so one bad value quarantines its
transaction and nothing else. Values echoed in a reason are cut short; the card-number scan has
run over the whole transaction before any of them is read.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from lxml import etree

from tillflow.formats.records import RecordError
from tillflow.formats.xmlsafe import local_name
from tillflow.model import minor_unit

ARTS_NS = "http://www.nrf-arts.org/IXRetail/namespace/"
TF_NS = "urn:tillflow:poslog:1"  # tillflow's extension for what ARTS has no element for
_ARTS = "{" + ARTS_NS + "}"
_TF = "{" + TF_NS + "}"

ZERO = Decimal(0)
ONE = Decimal(1)
_QTY = Decimal("0.001")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_IDENT = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,20}")

Element = etree._Element


# full tag of each local name looked up (the same string object each time: its hash is kept)
_ARTS_TAGS: dict[str, str] = {}
_PLAIN_TAGS: dict[str, str] = {}


# the local name of each vendor tag seen ("" for an ARTS or unqualified one), kept for the next
# element; bounded, since an input may use any number of names
_VENDOR_LOCAL: dict[object, str] = {}
_VENDOR_LOCAL_MAX = 4096


def _vendor_local(tag: object) -> str:
    """The local name of a vendor tag, "" for any other; remembered in `_VENDOR_LOCAL`."""
    local = (
        tag[tag.find("}") + 1 :] if type(tag) is str and tag[0] == "{" and not tag.startswith(_ARTS) else ""
    )
    if len(_VENDOR_LOCAL) >= _VENDOR_LOCAL_MAX:
        _VENDOR_LOCAL.clear()
    _VENDOR_LOCAL[tag] = local
    return local


class Parts:
    """The children of an element, read in one pass, for lookups by local name: ARTS ones in
    `ns` (the ARTS namespace, or none for a POSLog without one), vendor ones in any other."""

    __slots__ = ("_by_tag", "_children", "_ns", "_tags", "_vendor", "element")

    def __init__(self, el: Element, ns: str) -> None:
        self.element = el
        # a slice: the quickest list of the children (kept, so `all` reads their cached tags);
        # the stubs know only integer indexes
        children: list[Element] = cast("Any", el)[:]
        self._children = children
        self._ns = ns
        self._tags = _ARTS_TAGS if ns else _PLAIN_TAGS
        self._by_tag: dict[object, Element] = {child.tag: child for child in children}
        self._vendor: dict[str, Element] | None = None

    def _tag(self, name: str) -> str:
        tag = self._tags.get(name)
        if tag is None:
            tag = self._tags[name] = self._ns + name
        return tag

    def get(self, name: str) -> Element | None:
        return self._by_tag.get(self._tags.get(name) or self._tag(name))

    def text(self, name: str) -> str:
        el = self._by_tag.get(self._tags.get(name) or self._tag(name))
        if el is None:
            return ""
        text = el.text
        return text.strip() if text else ""

    def all(self, name: str) -> list[Element]:
        """Every child of that name (for the repeating ones: LineItem, Total, Tax...)."""
        tag = self._tag(name)
        return [child for child in self._children if child.tag == tag] if tag in self._by_tag else []

    def names(self) -> list[str]:
        """The local names of the ARTS children, in document order."""
        ns, cut = self._ns, len(self._ns)
        return [
            tag[cut:] for tag in self._by_tag if type(tag) is str and tag.startswith(ns) and tag[cut] != "{"
        ]

    def of(self, el: Element) -> Parts:
        """The children of `el`, a child found here by its ARTS name (so in the same namespace)."""
        return Parts(el, self._ns)

    def vendor(self, name: str) -> Element | None:
        """A child of any namespace but ARTS, by local name (``acs:OperatorSequence``)."""
        found = self._vendor
        if found is None:
            found = self._vendor = {}
            for tag, child in self._by_tag.items():
                local = _VENDOR_LOCAL.get(tag)
                if local is None:
                    local = _vendor_local(tag)
                if local:
                    found[local] = child
        return found.get(name)

    def vendor_text(self, name: str) -> str:
        el = self.vendor(name)
        return text_of(el) if el is not None else ""

    def vendor_texts(self, names: tuple[str, ...]) -> list[str]:
        return [text for name in names if (el := self.vendor(name)) is not None and (text := text_of(el))]

    def tf_text(self, name: str) -> str:
        """A child of tillflow's own extension namespace (written by `export`)."""
        el = self._by_tag.get(_TF + name)
        return text_of(el) if el is not None else ""


def parts_of(el: Element) -> Parts:
    """The children of `el`; ARTS ones in its namespace (an ARTS element's children are ARTS)."""
    tag = el.tag
    return Parts(el, _ARTS if type(tag) is str and tag.startswith(_ARTS) else "")


def text_of(el: Element) -> str:
    text = el.text
    return text.strip() if text else ""


def flag(value: str | None) -> bool:
    """An xs:boolean attribute or element value."""
    return value is not None and value.strip().casefold() in ("true", "1")


def attributes(el: Element) -> list[tuple[str, str]]:
    """The attributes of `el` as (name, value) pairs (lxml gives str in both)."""
    return cast("list[tuple[str, str]]", el.items())


def vendor_attr(el: Element, name: str) -> str | None:
    """An attribute of a vendor namespace by local name (``acs:weightItem``)."""
    for key, value in attributes(el):
        if key[0] == "{" and not key.startswith(_ARTS) and local_name(key) == name:
            return value
    return None


def vendor_attrs(el: Element, names: frozenset[str]) -> list[str]:
    return [
        value.strip()
        for key, value in attributes(el)
        if key[0] == "{" and not key.startswith(_ARTS) and local_name(key) in names and value.strip()
    ]


# the values of the number texts read so far (prices, quantities and amounts repeat), bounded
_DECIMALS: dict[str, Decimal] = {}
_DECIMALS_MAX = 4096


def decimal_of(text: str, where: str) -> Decimal:
    """A plain decimal ("12.30", "-1.0000"): no exponent, no separators, at most 24 characters and
    below 10**12, so that no sum or quotient of a transaction outgrows Decimal's precision."""
    value = _DECIMALS.get(text)
    if value is not None:
        return value
    if len(text) > 24 or not _NUMBER.fullmatch(text):
        raise RecordError(where, f"{text[:24]!r} is not a decimal number")
    value = Decimal(text)
    if value and value.adjusted() >= 12:
        raise RecordError(where, f"{text} is out of range")
    if len(_DECIMALS) >= _DECIMALS_MAX:
        _DECIMALS.clear()
    _DECIMALS[text] = value
    return value


def ident(value: str, where: str, what: str) -> str:
    if not _IDENT.fullmatch(value):
        raise RecordError(where, f"{what} {value[:64]!r} is not an identifier ([A-Za-z0-9_.-], 1-64)")
    return value


def sequence_of(text: str, where: str) -> int:
    if not _DIGITS.fullmatch(text) or int(text) >= 10**10:
        raise RecordError(where, f"{text[:24]!r} is not a sequence number (at most 10 digits)")
    return int(text)


def line_no_of(text: str, where: str) -> int:
    number = sequence_of(text, where)
    if number < 1:
        raise RecordError(where, "line numbers start at 1")
    return number


def date_of(el: Element | None, where: str) -> date | None:
    """A date element's value: its text (2.x) or its Date child (6.0); None when empty."""
    if el is None:
        return None
    text = text_of(el) or parts_of(el).text("Date")
    if not text:
        return None
    try:
        if len(text) > 40:
            raise ValueError(text)
        return date.fromisoformat(text[:10])
    except ValueError:
        raise RecordError(where, f"{text[:40]!r} is not a date") from None


def datetime_of(text: str, where: str) -> datetime:
    """An ISO 8601 date and time, with or without an offset, in the years 1000 to 8999 (so that
    moving it to another time zone cannot overflow)."""
    try:
        if len(text) > 40:
            raise ValueError(text)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(where, f"{text[:40]!r} is not an ISO 8601 date and time") from None
    if not 1000 <= value.year <= 8999:
        raise RecordError(where, f"{text[:40]!r} is out of range")
    return value


def quantity_of(el: Element, where: str) -> Decimal:
    """A quantity to the gram or millilitre: more than 3 decimals is refused, not rounded."""
    value = decimal_of(text_of(el), where)
    exact = value.quantize(_QTY)
    if exact != value:
        raise RecordError(where, f"quantity {value} has more than 3 decimals")
    return exact.quantize(ONE) if exact == exact.to_integral_value() else exact.normalize()


class Money:
    """The amounts of one transaction: in its currency and exact in the currency's minor unit.

    A vendor's extra zeros are fine (ROQQIO's 26.990 is EUR 26.99); a digit below the minor
    unit is not. A zero amount may carry the "no currency" code XXX (ROQQIO's empty discounts).
    """

    __slots__ = ("currency", "quantum")

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.quantum = minor_unit(currency)

    def __call__(self, el: Element, where: str) -> Decimal:
        value = decimal_of(text_of(el), where)
        sent = el.get("Currency") or el.get("CurrencyCode")
        if sent and sent != self.currency and not (sent == "XXX" and value == 0):
            raise RecordError(where, f"an amount in {sent[:8]!r} in a {self.currency} transaction")
        exact = value.quantize(self.quantum)
        if exact != value:
            raise RecordError(
                where, f"{value} has digits below the {self.currency} minor unit", {"amount": str(value)}
            )
        return exact + ZERO  # never -0.00

    def child(self, parts: Parts, name: str, where: str) -> Decimal | None:
        el = parts.get(name)
        return None if el is None else self(el, f"{where}.{name}")

    def price(self, el: Element, where: str) -> Decimal:
        """A unit price: may go below the minor unit (a price per gram), never negative."""
        value = abs(decimal_of(text_of(el), where))
        exact = value.quantize(self.quantum)
        return exact if exact == value else value
