"""W3C trace context: parse an incoming `traceparent`, or start a new trace, and make a child."""

from __future__ import annotations

import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def child_traceparent(incoming: str | None) -> str:
    """A traceparent for our own span: same trace as `incoming` when valid, else a new trace."""
    match = _TRACEPARENT.match(incoming.strip().lower()) if incoming else None
    if match and match.group(1) != "0" * 32 and match.group(2) != "0" * 16:
        trace_id, flags = match.group(1), match.group(3)
    else:
        trace_id, flags = secrets.token_hex(16), "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def trace_id_of(traceparent: str | None) -> str | None:
    match = _TRACEPARENT.match(traceparent) if traceparent else None
    return match.group(1) if match else None
