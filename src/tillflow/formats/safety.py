"""Payment card numbers must never enter tillflow: find them in any input value.

A card number (PAN) is 13 to 19 digits, possibly grouped by spaces or dashes, that passes the
Luhn check and starts like a card of a payment network (IIN: Visa 4, Mastercard 51-55 and
2221-2720, American Express 34/37, Discover 6011/644-649/65, JCB 3528-3589, Diners 36/38/
300-305, UnionPay 62, Maestro 50/56-69). The network prefix keeps article numbers out: a GTIN
starts with a GS1 country prefix and is checked by GS1's own weights, so a value that passes
the GS1 check digit in an item-identifier field is an article number, not a card.

The finder says *where* (the field) and never returns or logs the number itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CANDIDATE = re.compile(r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def gs1_ok(digits: str) -> bool:
    """The GS1 (GTIN/EAN/UPC) check digit: weights 3,1,3,... from the right, before the check."""
    if len(digits) not in (8, 12, 13, 14):
        return False
    body, check = digits[:-1], ord(digits[-1]) - 48
    total = sum((ord(c) - 48) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def _network_prefix(digits: str) -> bool:
    n = len(digits)
    two, three, four, six = int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= two <= 55 or 222100 <= six <= 272099:
        return n == 16
    if two in (34, 37):
        return n == 15
    if four == 6011 or 644 <= three <= 649 or two == 65:
        return 16 <= n <= 19
    if 3528 <= four <= 3589:
        return 16 <= n <= 19
    if two in (36, 38) or 300 <= three <= 305:
        return 14 <= n <= 19
    if two == 62:
        return 16 <= n <= 19
    if two == 50 or 56 <= two <= 69:
        return 12 <= n <= 19
    return False


def looks_like_card_number(text: str, *, item_identifier: bool = False) -> bool:
    """Whether `text` holds a payment card number anywhere in it."""
    if len(text) < 13:
        return False
    for match in _CANDIDATE.finditer(text):
        digits = match.group().replace(" ", "").replace("-", "")
        if not 13 <= len(digits) <= 19 or not _network_prefix(digits) or not luhn_ok(digits):
            continue
        if item_identifier and gs1_ok(digits):
            continue
        return True
    return False


def first_card_number_field(
    values: Iterable[tuple[str, str]], item_fields: frozenset[str] = frozenset()
) -> str | None:
    """The first field (of (field, value) pairs) whose value holds a card number, else None.
    Fields named in `item_fields` hold article numbers: a valid GTIN there is not a card."""
    for field_, value in values:
        if value and looks_like_card_number(value, item_identifier=field_.rpartition(".")[2] in item_fields):
            return field_
    return None


CARD_NUMBER_REASON = (
    "holds what looks like a payment card number (13-19 digits passing the Luhn check);"
    " the record is refused and the number is neither logged nor stored"
)
