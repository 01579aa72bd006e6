"""What the eCommerce API parsers (Shopify, Square) share: reading JSON payloads, refusing card
numbers, exact money, and the identity of a transaction that no till numbered.

Input: one JSON document (an API response or webhook body) or NDJSON, one document a line (bulk
exports). A single document is read whole: API pages are small (Shopify pages hold at most 250
orders, Square's 1000) and JSON cannot be split without parsing it, so a document larger than
`MAX_DOCUMENT_BYTES` is refused — large exports come as NDJSON, which streams a line at a time
with flat memory. An NDJSON line that is not JSON is quarantined and the input carries on; a
first line that is not JSON makes the input a single document.

Card numbers: every value of a record is searched before anything else is read from it. Integer
ids the platform assigns (``id``, ``*_id``) and Shopify's ``gid://shopify/...`` ids are not
searched: a 13-digit Shopify id starting 56-69 passes the Luhn check one time in ten, and no
merchant or buyer can type into those fields.

Identity: a web order was never rung up on a till, so its `(store, register, day, sequence)` is
chosen here. The business day is the order's local date (in the store's time zone when the store
is configured, else in the offset the platform sent). Where the platform has no number that fits
a till sequence (at most 10 digits), `derived_sequence` builds one from the time of day and a
hash of the platform id; see there for the collision risk.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import BinaryIO, Final, TypeGuard, TypeVar

from pydantic import BaseModel, ValidationError

from tillflow.formats.records import (
    FormatError,
    ImportContext,
    Parsed,
    Quarantined,
    RecordError,
    SourceRef,
    field_path,
    quarantine,
)
from tillflow.formats.safety import CARD_NUMBER_REASON, first_card_number_field, looks_like_card_number
from tillflow.model import MINOR_UNITS, LineItem, PriceModifier, TaxLine, Totals, TransactionRef, minor_unit
from tillflow.model.money import is_in_minor_units

MAX_DOCUMENT_BYTES: Final = 32 * 1024 * 1024
ITEM_FIELDS: Final = frozenset({"sku", "barcode", "gtin", "upc", "ean"})
AMOUNT_LIMIT: Final = Decimal(10) ** 12  # no web order is a trillion; bigger is garbage, and unsafe to add
ZERO: Final = Decimal(0)

JsonObject = dict[str, object]
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class BadLine:
    """An NDJSON line that is not JSON: quarantined, the input goes on."""

    reason: str


# --------------------------------------------------------------------------- reading documents


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _loads(data: bytes) -> object:
    # Decimal for every fraction: a binary float must never carry a price or a rate
    return json.loads(data, parse_float=Decimal, parse_constant=_no_constants)


def _why(exc: Exception) -> str:
    """Why JSON did not parse, without echoing the input."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "not valid JSON"


def read_documents(stream: BinaryIO, *, name: str) -> Iterator[tuple[int, object]]:
    """The input's JSON documents as (line number, document); line 0 is a whole document.
    An NDJSON line that is not JSON comes as a `BadLine`."""
    line_no, first = 0, b""
    while not first.strip():
        first = stream.readline(MAX_DOCUMENT_BYTES + 1)
        line_no += 1
        if not first:
            raise FormatError(f"{name}: the input is empty")
    _check_size(first, name)
    try:
        document = _loads(first)
    except (ValueError, RecursionError):
        yield 0, _whole_document(first, stream, name)
        return
    yield line_no, document
    for raw in iter(lambda: stream.readline(MAX_DOCUMENT_BYTES + 1), b""):
        line_no += 1
        if len(raw) > MAX_DOCUMENT_BYTES:
            _skip_line(stream)
            yield line_no, BadLine(f"a line longer than {MAX_DOCUMENT_BYTES >> 20} MiB")
            continue
        if not raw.strip():
            continue
        try:
            yield line_no, _loads(raw)
        except (ValueError, RecursionError) as exc:
            yield line_no, BadLine(f"not valid JSON: {_why(exc)}")


def _skip_line(stream: BinaryIO) -> None:
    """Read past the rest of an over-long line, a bounded chunk at a time."""
    while True:
        chunk = stream.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def _check_size(raw: bytes, name: str) -> None:
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"{name}: a JSON document larger than {MAX_DOCUMENT_BYTES >> 20} MiB; send NDJSON")


def _whole_document(first: bytes, stream: BinaryIO, name: str) -> object:
    data = first + stream.read(MAX_DOCUMENT_BYTES + 1 - len(first))
    _check_size(data, name)
    try:
        return _loads(data)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{name}: not JSON or NDJSON ({_why(exc)})") from None


def sniff_json(head: bytes, markers: tuple[bytes, ...]) -> bool:
    """Whether `head` starts like JSON and names one of the `markers` (quoted keys)."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return text[:1] in (b"{", b"[") and any(marker in head for marker in markers)


def top_key(document: object) -> str:
    """The first key of a document, for an error message (only when it is a plain word)."""
    if isinstance(document, dict):
        for key in document:
            if re.fullmatch(r"[A-Za-z_]{1,40}", str(key)):
                return f" (its first key is {key!r})"
    return ""


# --------------------------------------------------------------------------- records


class Positions:
    """Numbers the records of one input, 1-based, in input order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def next(self, locator: str) -> SourceRef:
        self.count += 1
        return SourceRef(self.name, self.count, locator)


def guarded(source: SourceRef, build: Callable[[], Parsed]) -> Parsed:
    """One record's result: what `build` makes of it, or its quarantine. A payload shaped unlike
    anything the mapping expects is quarantined too, never raised: one odd record must not stop
    an input (the reason names the error's type, never its text, which could echo the input)."""
    try:
        return build()
    except (RecordError, ValidationError) as exc:
        return quarantine(source, exc)
    except Exception as exc:  # the mapping's safety net; the fuzz tests keep it unreached
        return Quarantined(source, "$", f"could not be mapped ({type(exc).__name__})")


def refuse_card_numbers(record: object, where: str) -> None:
    """Raise a RecordError naming the field when any value of `record` holds a card number."""
    found = first_card_number_field(_values(record, where), ITEM_FIELDS)
    if found is not None:
        raise RecordError(found, CARD_NUMBER_REASON)


_SEGMENT = re.compile(r"[A-Za-z0-9_]{1,64}")
_GID = re.compile(r"gid://shopify/[A-Za-z]+/[0-9]+")


def _platform_id(key: str, value: object) -> bool:
    if key != "id" and not key.endswith(("_id", "_ids")):
        return False
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and _GID.fullmatch(value) is not None
    )


def _values(record: object, root: str) -> Iterator[tuple[str, str]]:
    """Every scalar value of `record` as (path, text), depth first in document order; iterative,
    so that no nesting depth can exhaust the stack."""
    stack: list[tuple[str, object]] = [(root, record)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            for key, child in reversed(list(node.items())):
                if not _platform_id(key, child):
                    segment = key if _SEGMENT.fullmatch(key) else "?"
                    stack.append((f"{where}.{segment}" if where else segment, child))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", child) for i, child in reversed(list(enumerate(node))))
        elif isinstance(node, str):
            yield where, node
        elif isinstance(node, int) and not isinstance(node, bool):
            yield where, str(node)
        elif isinstance(node, Decimal) and node.is_finite() and -30 <= _exponent(node) <= 30:
            yield where, format(node, "f")


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def safe_id(value: object) -> str:
    """A platform id for a locator: short, plain, and never something that looks like a card."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else "?"
    if len(text) > 128 or not re.fullmatch(r"[A-Za-z0-9_.:/#-]+", text) or looks_like_card_number(text):
        return "?"
    return text


# --------------------------------------------------------------------------- typed access


def obj(parent: Mapping[str, object], key: str, where: str, *, required: bool = False) -> JsonObject:
    """A nested object (empty when absent and not required)."""
    value = parent.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise RecordError(f"{where}.{key}" if where else key, "missing" if value is None else "not an object")
    return value


def objects(parent: Mapping[str, object], key: str, where: str) -> list[tuple[str, JsonObject]]:
    """A list of objects as (path, object); absent or null is an empty list."""
    value = parent.get(key)
    path = f"{where}.{key}" if where else key
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(path, "not a list")
    found: list[tuple[str, JsonObject]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise RecordError(f"{path}[{i}]", "not an object")
        found.append((f"{path}[{i}]", item))
    return found


def text(parent: Mapping[str, object], key: str, where: str, *, required: bool = False) -> str | None:
    """A string field (numbers allowed: some ids come as either); None when absent."""
    value = parent.get(key)
    path = f"{where}.{key}" if where else key
    if value is None or value == "":
        if required:
            raise RecordError(path, "missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RecordError(path, "not a string")
    return str(value)


def whole(parent: Mapping[str, object], key: str, where: str, *, required: bool = True) -> int | None:
    """A whole-number field (an id, a count)."""
    value = parent.get(key)
    path = f"{where}.{key}" if where else key
    if value is None:
        if required:
            raise RecordError(path, "missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(path, "not a whole number")
    return value


def aware_time(
    parent: Mapping[str, object], key: str, where: str, context: ImportContext, store_id: str
) -> datetime:
    """An ISO 8601 time; one without an offset is the store's local time."""
    raw = text(parent, key, where, required=True)
    assert raw is not None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise RecordError(f"{where}.{key}" if where else key, "not an ISO 8601 time") from None
    return context.local_time(store_id, at)


def local_moment(context: ImportContext, store_id: str, at: datetime) -> datetime:
    """`at` on the store's clock when the store is configured, else on the clock it was sent in."""
    return at.astimezone(context.timezone(store_id)) if context.store(store_id) is not None else at


def currency_code(code: object, field_: str) -> str:
    if not isinstance(code, str) or code not in MINOR_UNITS:
        raise RecordError(field_, "missing" if code is None else "not a currency tillflow knows (ISO 4217)")
    return code


# --------------------------------------------------------------------------- money

_AMOUNT = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,12})?")


def money(value: object, field_: str, currency: str) -> Decimal:
    """A decimal amount (``"12.30"``; a JSON number is read exactly) in the currency's minor units."""
    amount = _decimal(value)
    if amount is None:
        raise RecordError(field_, "missing" if value is None else "not a decimal amount")
    return _bounded(amount, field_, currency)


def minor_money(parent: Mapping[str, object], key: str, where: str, currency: str) -> Decimal | None:
    """A Money object ``{"amount": 1599, "currency": "USD"}`` (an integer count of the currency's
    minor units) as a decimal amount; None when absent. Its currency must be the record's."""
    path = f"{where}.{key}" if where else key
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(path, "not a Money object")
    amount, sent = value.get("amount"), value.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise RecordError(f"{path}.amount", "not a whole number of minor units")
    if sent != currency:
        raise RecordError(f"{path}.currency", f"differs from the record's currency {currency}")
    return _bounded(Decimal(amount).scaleb(-MINOR_UNITS[currency]), f"{path}.amount", currency)


def _decimal(value: object) -> Decimal | None:
    """A decimal string ("12.30", no exponent, no separators) or a JSON number, else None."""
    if isinstance(value, str):
        return Decimal(value) if _AMOUNT.fullmatch(value) else None
    return Decimal(value) if _number(value) else None


def _number(value: object) -> TypeGuard[int | Decimal]:
    """A JSON number: an int (not a bool) or a finite Decimal (fractions are parsed as Decimal)."""
    if isinstance(value, Decimal):
        return value.is_finite() and -30 <= _exponent(value) <= 30
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded(amount: Decimal, field_: str, currency: str) -> Decimal:
    if abs(amount) >= AMOUNT_LIMIT:
        raise RecordError(field_, "out of range")
    if not is_in_minor_units(amount, currency):
        raise RecordError(field_, f"{amount} has digits below the {currency} minor unit")
    return amount


def fraction(value: object, field_: str, *, percent: bool = False) -> Decimal:
    """A tax rate as a fraction (0.06); `percent` reads ``"9"`` as 0.09."""
    rate = _decimal(value)
    if rate is None:
        raise RecordError(field_, "missing" if value is None else "not a decimal rate")
    if percent:
        rate = rate.scaleb(-2)
    if not ZERO <= rate <= 1 or _exponent(rate) < -6:
        raise RecordError(field_, "not a tax rate between 0 and 100 % with at most 6 decimals")
    return rate


def quantity_of(value: object, field_: str) -> Decimal:
    """A positive quantity with at most 3 decimals (``"2"``, ``"1.235"``, ``2``)."""
    if isinstance(value, str) and _AMOUNT.fullmatch(value.strip()):
        qty = Decimal(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        qty = Decimal(value)
    else:
        raise RecordError(field_, "missing" if value is None else "not a decimal quantity")
    if qty <= 0 or qty >= 10**9:
        raise RecordError(field_, "not a positive quantity")
    try:
        normal = qty.quantize(Decimal("0.001"))
    except InvalidOperation:
        raise RecordError(field_, "out of range") from None
    if normal != qty:
        raise RecordError(field_, "more than 3 decimals")
    return qty.normalize() if qty == qty.to_integral_value() else qty


def allocate(total: Decimal, weights: list[Decimal], quantum: Decimal) -> list[Decimal]:
    """Split `total` in proportion to `weights`, in whole quanta, the parts summing to `total`
    exactly (the largest remainders get the leftover quanta)."""
    weight = sum(weights, ZERO)
    if not weights:
        return []
    if weight == 0:
        return [total, *([ZERO] * (len(weights) - 1))]
    raw = [total * w / weight for w in weights]
    parts = [(r / quantum).to_integral_value(rounding=ROUND_FLOOR) * quantum for r in raw]
    leftover = int((total - sum(parts, ZERO)) / quantum)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in order[:leftover]:
        parts[i] += quantum
    return parts


def plain(amount: Decimal, currency: str) -> str:
    """An amount for a quarantine's numbers: in the currency's minor units ("0.00", not "0")."""
    return format(amount.quantize(minor_unit(currency)), "f")


# --------------------------------------------------------------------------- identity


def derived_sequence(local: datetime, platform_id: str) -> int:
    """A till sequence (< 10^10) for a platform id that is not a number: the seconds since local
    midnight (5 digits) then 5 digits of the id's SHA-256. Deterministic, so a re-sent order gets
    the same identity, and roughly in time order within a register.

    Collision risk: two orders of one store and register collide only when they start in the same
    second of the same day *and* their hashes agree in 5 digits: one chance in 100,000 per pair of
    orders started in the same second. A collision is never merged silently: the same identity
    with different content is refused as a conflict (DESIGN.md, §1)."""
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    digest = int.from_bytes(hashlib.sha256(platform_id.encode()).digest()[:8], "big") % 100_000
    return seconds * 100_000 + digest


def tax_code(context: ImportContext, store_id: str, name: str) -> str:
    """The canonical code of a tax named by the platform ("State Tax"): the policy's tax_codes
    map when it names it, else the name made an identifier ("State_Tax")."""
    mapped = context.resolved(store_id).tax_code(name.strip())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", mapped).strip("_")[:64]
    return slug or "TAX"


@dataclass(frozen=True, slots=True)
class KnownOrder:
    """What a later refund needs of an order read earlier in the same input."""

    ref: TransactionRef
    currency: str
    line_nos: Mapping[str, int]  # platform line id -> canonical line_no
    taxes_included: bool = False


class OrderMemory:
    """The identities of the last orders read, by platform order id, so that a refund read later
    in the same input links its lines to the sale. Bounded, so memory stays flat on a big export."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._orders: OrderedDict[str, KnownOrder] = OrderedDict()

    def remember(self, order_id: str, known: KnownOrder) -> None:
        self._orders[order_id] = known
        self._orders.move_to_end(order_id)
        while len(self._orders) > self._size:
            self._orders.popitem(last=False)

    def get(self, order_id: str | None) -> KnownOrder | None:
        return None if order_id is None else self._orders.get(order_id)


# --------------------------------------------------------------------------- canonical parts


def validated(model: type[Model], where: str, fields: Mapping[str, object]) -> Model:
    """A canonical part built from one input object; its first error names the input's field."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        inner = field_path(first["loc"])
        raise RecordError(
            f"{where}.{inner}" if where and inner != "$" else where or inner,
            str(first["msg"]).removeprefix("Value error, "),
        ) from None


def canonical_totals(
    lines: list[LineItem], basket: list[PriceModifier], taxes: list[TaxLine], *, sign: int
) -> Totals:
    """The totals the canonical model will require of these parts (`sign` -1 for a return)."""
    subtotal = sum((line.net_amount for line in lines), ZERO) - sign * sum((m.amount for m in basket), ZERO)
    tax = sum((t.amount for t in taxes), ZERO)
    exclusive = sum((t.amount for t in taxes if not t.inclusive), ZERO)
    return Totals(subtotal=subtotal, tax=tax, grand_total=subtotal + exclusive)


def ident_or_none(value: str | None) -> str | None:
    return value if value is not None and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", value) else None
