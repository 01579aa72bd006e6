"""The ERP over HTTP: `ErpSystem` against an ERP's REST API (the reference ERP's API shape).

One pooled `httpx.Client` carries every request. Answers are translated at this boundary:

- 2xx: the port's record; `repeated` when the ERP says `Idempotent-Replayed: true`.
- 400, 404, 409, 422 and other 4xx: `DownstreamRejectedError` with the problem's `detail` and
  the status (a lookup of something never posted is None instead, as the port says).
- 408, 429, 503: `DownstreamUnavailableError` with the `Retry-After` seconds when given;
  any other 5xx: `DownstreamUnavailableError`.
- No answer (connect refused, timeout, broken connection): `DownstreamUnavailableError` naming
  the URL, without `retry_after`.

Nothing is retried here: the resilience layer and the consumer runner decide that, and every
write carries the caller's idempotency key so a retry never posts twice. Money travels as JSON
strings, never floats; datetimes as ISO 8601 with their offset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.model import InventoryMovement, Journal, JournalLine
from tillflow.ports import PostingReceipt, TrialBalanceLine

__all__ = ["HttpErp"]

_REPLAYED = "idempotent-replayed"
_UNAVAILABLE_STATUSES = frozenset({408, 429, 503})
_MAX_TEXT = 500  # of a body that is not a problem document, quoted in a reason


class HttpErp:
    """`ErpSystem` over HTTP. Use as a context manager, or `close()` it when done."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        max_connections: int = 20,
        system: str = "erp",
    ) -> None:
        self.system = system
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"accept": "application/json", "user-agent": "tillflow-erp-http"},
        )

    # lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # the port -------------------------------------------------------------------------------

    def post_journal(self, journal: Journal, *, idempotency_key: str) -> PostingReceipt:
        body = {
            "external_id": journal.journal_id,
            "store_id": journal.store_id,
            "business_day": journal.business_day.isoformat(),
            "lines": [_journal_line(line) for line in journal.lines],
            "source_transactions": list(journal.source_transactions),
        }
        answer = self._write("/api/journals", body, idempotency_key)
        return self._receipt(answer, journal.journal_id, replayed=_replayed(answer))

    def posting_status(self, external_id: str) -> PostingReceipt | None:
        answer = self._send("GET", f"/api/journals/{quote(external_id, safe='')}")
        if answer.status_code == 404:
            return None
        self._check(answer)
        return self._receipt(answer, external_id, replayed=False)

    def post_movements(
        self,
        store_id: str,
        business_day: date,
        movements: Sequence[InventoryMovement],
        *,
        batch_id: str,
        idempotency_key: str,
    ) -> PostingReceipt:
        body = {
            "batch_id": batch_id,
            "store_id": store_id,
            "business_day": business_day.isoformat(),
            "movements": [_movement(m) for m in movements],
        }
        answer = self._write("/api/inventory-movements", body, idempotency_key)
        return self._receipt(answer, batch_id, replayed=_replayed(answer))

    def trial_balance(self, store_id: str, business_day: date) -> list[TrialBalanceLine]:
        params = {"store_id": store_id, "business_day": business_day.isoformat()}
        answer = self._send("GET", "/api/trial-balance", params=params)
        self._check(answer)
        data = self._json(answer)
        try:
            return [
                TrialBalanceLine(
                    account=str(line["account"]),
                    currency=str(line["currency"]),
                    debit=Decimal(str(line["debit"])),
                    credit=Decimal(str(line["credit"])),
                )
                for line in data["lines"]
            ]
        except (KeyError, TypeError, InvalidOperation) as exc:
            raise self._malformed(answer, exc) from exc

    # HTTP -----------------------------------------------------------------------------------

    def _write(self, path: str, body: dict[str, Any], idempotency_key: str) -> httpx.Response:
        answer = self._send("POST", path, json=body, headers={"idempotency-key": idempotency_key})
        self._check(answer)
        return answer

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            return self._client.request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            reason = f"{method} {url}: no answer in time ({type(exc).__name__})"
            raise DownstreamUnavailableError(self.system, reason) from exc
        except httpx.TransportError as exc:
            reason = f"{method} {url}: {type(exc).__name__}: {exc}"
            raise DownstreamUnavailableError(self.system, reason) from exc

    def _check(self, answer: httpx.Response) -> None:
        """Return on 2xx; raise the port's error for anything else."""
        status = answer.status_code
        if 200 <= status < 300:
            return
        where = f"{answer.request.method} {answer.request.url}"
        detail = _detail(answer)
        if status in _UNAVAILABLE_STATUSES or status >= 500:
            raise DownstreamUnavailableError(
                self.system,
                f"{where} answered {status}: {detail}",
                retry_after=_retry_after(answer.headers.get("retry-after")),
            )
        raise DownstreamRejectedError(self.system, detail, status=status)

    def _json(self, answer: httpx.Response) -> dict[str, Any]:
        try:
            data = answer.json()
        except ValueError as exc:
            raise self._malformed(answer, exc) from exc
        if not isinstance(data, dict):
            raise self._malformed(answer, TypeError("not a JSON object"))
        return data

    def _receipt(self, answer: httpx.Response, external_id: str, *, replayed: bool) -> PostingReceipt:
        data = self._json(answer)
        try:
            posted_at = datetime.fromisoformat(str(data["posted_at"]))
            document_number = str(data["document_number"])
        except (KeyError, ValueError) as exc:
            raise self._malformed(answer, exc) from exc
        if posted_at.tzinfo is None:
            posted_at = posted_at.replace(tzinfo=UTC)
        return PostingReceipt(
            external_id=str(data.get("external_id") or external_id),
            document_number=document_number,
            posted_at=posted_at,
            repeated=replayed,
        )

    def _malformed(self, answer: httpx.Response, exc: Exception) -> DownstreamUnavailableError:
        # A 2xx we cannot read: the effect may have happened, so the caller should retry with
        # the same idempotency key (which repeats the answer) rather than give up.
        where = f"{answer.request.method} {answer.request.url}"
        return DownstreamUnavailableError(
            self.system, f"{where} answered {answer.status_code} with an unreadable body: {exc}"
        )


# --- translation ----------------------------------------------------------------------------


def _amount(value: Decimal) -> str:
    """A Decimal as a plain JSON string (never an exponent, never a float)."""
    return format(value, "f")


def _journal_line(line: JournalLine) -> dict[str, Any]:
    out: dict[str, Any] = {"account": line.account, "currency": line.currency}
    if line.debit:
        out["debit"] = _amount(line.debit)
    if line.credit:
        out["credit"] = _amount(line.credit)
    out["description"] = line.description
    out["dimensions"] = dict(line.dimensions)
    return out


def _movement(move: InventoryMovement) -> dict[str, Any]:
    return {
        "store_id": move.store_id,
        "sku": move.sku,
        "quantity": _amount(move.quantity),
        "uom": move.uom.value,
        "reason": move.reason.value,
        "transaction_id": move.transaction_id,
        "line_no": move.line_no,
        "occurred_at": move.occurred_at.isoformat(),
    }


def _replayed(answer: httpx.Response) -> bool:
    value: str = answer.headers.get(_REPLAYED, "")
    return value.strip().lower() == "true"


def _detail(answer: httpx.Response) -> str:
    """The problem document's `detail` (or title), else the start of the body, else the phrase."""
    try:
        data = answer.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("detail", "title"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
    text = answer.text.strip()
    return text[:_MAX_TEXT] if text else (answer.reason_phrase or f"HTTP {answer.status_code}")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
