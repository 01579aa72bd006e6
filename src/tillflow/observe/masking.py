"""Masking what a log record must not show: customer identifiers and card data.

- A customer or member identifier (a key such as `member_id`, `customer_id`, `loyalty_id`,
  `email`, `phone`) keeps only a short hash of its value (`h:` and 8 hex digits of its
  SHA-256), so lines about one member still match each other without naming them.
- A card secret (a key such as `card_number`, `pan`, `cvv`, `track2`) is masked whole.
- A card number anywhere in a string (13 to 19 digits, spaces or dashes allowed between them,
  passing the Luhn check) keeps its first six and last four digits when it has 16 or more
  digits (`411111…1111`), else only its last four (`****1111`).

Pure functions of plain values: they never raise on what they are given.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

IDENTIFIER_KEYS = frozenset(
    {
        "member_id",
        "member_ids",
        "customer_id",
        "customer_ids",
        "loyalty_id",
        "loyalty_ids",
        "email",
        "email_address",
        "phone",
        "phone_number",
        "mobile",
    }
)
CARD_KEYS = frozenset(
    {
        "card_number",
        "cardnumber",
        "card_no",
        "pan",
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "track1",
        "track2",
        "track_data",
        "pin",
        "pin_block",
    }
)
FULLY_MASKED = "[masked]"
MAX_DEPTH = 8  # nested containers looked into; deeper values are masked whole

# a run of 13-19 digits, single spaces or dashes allowed between them, not inside a longer number
_PAN_LIKE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (the card number checksum)."""
    if not digits or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_pan(digits: str) -> str:
    """A card number as it may be shown: first six and last four of 16 or more digits, else the
    last four only."""
    if len(digits) >= 16:
        return f"{digits[:6]}…{digits[-4:]}"
    return f"****{digits[-4:]}"


def _pan_replacement(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = found.replace(" ", "").replace("-", "")
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return mask_pan(digits)
    return found


def mask_text(text: str) -> str:
    """`text` with every card number in it masked; anything else left as it is."""
    if len(text) < 13:
        return text
    return _PAN_LIKE.sub(_pan_replacement, text)


def mask_identifier(value: Any) -> str:
    """A customer identifier as a short hash: the same value always gives the same hash."""
    digest = hashlib.sha256(str(value).encode("utf-8", "replace")).hexdigest()
    return f"h:{digest[:8]}"


def _kind(key: str) -> str | None:
    name = key.strip().lower().replace("-", "_")
    if name in CARD_KEYS:
        return "card"
    if name in IDENTIFIER_KEYS:
        return "identifier"
    return None


def mask_value(value: Any, *, depth: int = 0) -> Any:
    """A value with the card numbers in its strings masked, looking into dicts, lists and
    tuples (whose keys are judged as `mask_mapping` does)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        text = str(value)
        masked = mask_text(text)
        return value if masked == text else masked
    if depth >= MAX_DEPTH:
        return FULLY_MASKED
    if isinstance(value, Mapping):
        return mask_mapping(value, depth=depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(v, depth=depth + 1) for v in value]
    return mask_text(str(value)) if _has_digits(value) else value


def _has_digits(value: Any) -> bool:
    try:
        return any(ch.isdigit() for ch in str(value))
    except Exception:  # a value whose str() fails is left to the renderer
        return False


def _masked_identifier(value: Any, depth: int) -> Any:
    if value is None:
        return None
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked_identifier(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return mask_mapping(value, depth=depth + 1)
    return mask_identifier(value)


def mask_mapping(record: Mapping[str, Any], *, depth: int = 0) -> dict[str, Any]:
    """A copy of `record` with identifiers hashed, card secrets masked whole and card numbers
    masked wherever they appear in the values."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        kind = _kind(key) if isinstance(key, str) else None
        if kind == "card":
            out[key] = None if value is None else FULLY_MASKED
        elif kind == "identifier":
            out[key] = _masked_identifier(value, depth)
        else:
            out[key] = mask_value(value, depth=depth)
    return out
