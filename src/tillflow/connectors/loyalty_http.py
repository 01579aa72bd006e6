"""`HttpLoyalty`: the loyalty platform port over HTTP, against the reference loyalty service's
API (`/api/members`, `/api/accruals`, `/api/reversals`, `/api/holds` with their commit, release
and refund, and a program's `/api/programs/{program}/outstanding` and `/entries`).

One pooled `httpx.Client` per adapter. Every write sends its `Idempotency-Key`; an answer
marked `Idempotent-Replayed: true` comes back with `repeated=True`. Answers are translated:

    2xx                         the port's record
    404 unknown member (a read) None
    400 / 404 / 409 / 422 ...   DownstreamRejectedError(reason = the problem's title: detail, status)
    408 / 429 / 503             DownstreamUnavailableError(retry_after = Retry-After seconds)
    other 5xx                   DownstreamUnavailableError
    timeout, connection error   DownstreamUnavailableError (the reason names the URL)

No retries here: the resilience layer and the runner decide when to try again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from tillflow.connectors.http import HttpConnector, aware, problem, replayed, segment
from tillflow.errors import DownstreamRejectedError
from tillflow.ports import (
    Accrual,
    EarningLine,
    HoldState,
    LedgerEntry,
    Member,
    PointsHold,
    PointsMove,
    ProgramPoints,
)

__all__ = ["HttpLoyalty"]

_UNKNOWN_MEMBER = "unknown-member"


class HttpLoyalty(HttpConnector):
    """The loyalty platform reached over HTTP (implements `tillflow.ports.LoyaltyPlatform`)."""

    SYSTEM = "loyalty"
    TIMEOUT = 5.0
    CONNECT_TIMEOUT = 2.0

    def find_member(self, member_id: str, *, program: str = "default") -> Member | None:
        """The member's tier, available balance and held points, or None when unknown."""
        answer = self.send("GET", f"/api/members/{segment(member_id)}", params={"program": program})
        if answer.status_code == 404 and str(problem(answer).get("type", "")).endswith(_UNKNOWN_MEMBER):
            return None
        return self.read(
            answer,
            lambda body: Member(
                member_id=str(body["member_id"]),
                program=str(body["program"]),
                tier=str(body["tier"]),
                balance=int(body["balance"]),
                held=int(body.get("held", 0)),
            ),
        )

    def accrue(
        self,
        member_id: str,
        *,
        program: str,
        transaction_id: str,
        currency: str,
        lines: Sequence[EarningLine],
        idempotency_key: str,
    ) -> PointsMove:
        """Earn points for a completed transaction; the platform's rules decide how many."""
        payload = _accrual(member_id, program, transaction_id, currency, lines)
        return self._move(self.send("POST", "/api/accruals", json=payload, idempotency_key=idempotency_key))

    def accrue_many(self, accruals: Sequence[Accrual]) -> list[PointsMove | DownstreamRejectedError]:
        """`POST /api/accruals/batch`, `max_batch` accruals a request."""
        out: list[PointsMove | DownstreamRejectedError] = []
        for start in range(0, len(accruals), self.max_batch):
            chunk = accruals[start : start + self.max_batch]
            items = [
                {
                    "idempotency_key": a.idempotency_key,
                    "accrual": _accrual(a.member_id, a.program, a.transaction_id, a.currency, a.lines),
                }
                for a in chunk
            ]
            answer = self.send("POST", "/api/accruals/batch", json={"accruals": items})
            names = [f"accrual for {a.transaction_id}" for a in chunk]
            out += self.batch_results(answer, names, _move)
        return out

    def reverse(
        self, member_id: str, *, program: str, transaction_id: str, points: int | None, idempotency_key: str
    ) -> PointsMove:
        """Take back points a transaction earned (`points`, or all of them when None)."""
        payload = {
            "member_id": member_id,
            "program": program,
            "transaction_id": transaction_id,
            "points": points,
        }
        return self._move(self.send("POST", "/api/reversals", json=payload, idempotency_key=idempotency_key))

    def reserve(
        self, member_id: str, *, program: str, points: int, ttl: timedelta, idempotency_key: str
    ) -> PointsHold:
        """Hold points during checkout; they cannot be held or spent twice while held."""
        payload = {
            "member_id": member_id,
            "program": program,
            "points": points,
            "ttl_seconds": math.ceil(ttl.total_seconds()),  # whole seconds, never shorter than asked
        }
        return self._hold(self.send("POST", "/api/holds", json=payload, idempotency_key=idempotency_key))

    def commit(self, hold_id: str, *, transaction_id: str, idempotency_key: str) -> PointsHold:
        """Spend a held reservation for a completed transaction."""
        payload = {"transaction_id": transaction_id}
        path = f"/api/holds/{segment(hold_id)}/commit"
        return self._hold(self.send("POST", path, json=payload, idempotency_key=idempotency_key))

    def release(self, hold_id: str, *, idempotency_key: str) -> PointsHold:
        """Give held points back (a void, an abandoned checkout)."""
        path = f"/api/holds/{segment(hold_id)}/release"
        return self._hold(self.send("POST", path, json={}, idempotency_key=idempotency_key))

    def refund(self, hold_id: str, *, transaction_id: str, idempotency_key: str) -> PointsMove:
        """Give back the points a committed hold spent (`transaction_id`: the post-void's)."""
        payload = {"transaction_id": transaction_id}
        path = f"/api/holds/{segment(hold_id)}/refund"
        return self._move(self.send("POST", path, json=payload, idempotency_key=idempotency_key))

    def outstanding(self, program: str) -> ProgramPoints:
        """The points the program's members hold now, expired points and holds settled."""
        answer = self.send("GET", f"/api/programs/{segment(program)}/outstanding")
        return self.read(
            answer,
            lambda body: ProgramPoints(
                program=str(body["program"]),
                outstanding=int(body["outstanding"]),
                held=int(body["held"]),
                members=int(body["members"]),
                as_of=aware(str(body["as_of"])),
            ),
        )

    def statement(
        self, program: str, *, after: int = 0, limit: int = 1000, kinds: Sequence[str] = ()
    ) -> list[LedgerEntry]:
        """The program's ledger entries past seq `after`, in order: `limit` at most, `kinds` only."""
        query = urlencode([("after", after), ("limit", limit), *(("kind", kind) for kind in kinds)])
        answer = self.send("GET", f"/api/programs/{segment(program)}/entries?{query}")
        return self.read(answer, lambda body: [_entry(entry) for entry in body["entries"]])

    def _move(self, answer: httpx.Response) -> PointsMove:
        return self.read(answer, lambda body: _move(body, replayed(answer)))

    def _hold(self, answer: httpx.Response) -> PointsHold:
        return self.read(
            answer,
            lambda body: PointsHold(
                hold_id=str(body["hold_id"]),
                member_id=str(body["member_id"]),
                points=int(body["points"]),
                state=HoldState(body["state"]),
                expires_at=aware(str(body["expires_at"])),
                transaction_id=None if body.get("transaction_id") is None else str(body["transaction_id"]),
                repeated=replayed(answer),
            ),
        )


def _accrual(
    member_id: str, program: str, transaction_id: str, currency: str, lines: Sequence[EarningLine]
) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "program": program,
        "transaction_id": transaction_id,
        "currency": currency,
        "lines": [{"amount": format(line.amount, "f"), "category": line.category} for line in lines],
    }


def _entry(body: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        seq=int(body["seq"]),
        entry_id=str(body["entry_id"]),
        member_id=str(body["member_id"]),
        kind=str(body["kind"]),
        points=int(body["points"]),
        transaction_id=None if body.get("transaction_id") is None else str(body["transaction_id"]),
        hold_id=None if body.get("hold_id") is None else str(body["hold_id"]),
        at=aware(str(body["at"])),
    )


def _move(body: dict[str, Any], repeated: bool) -> PointsMove:
    return PointsMove(
        entry_id=str(body["entry_id"]),
        member_id=str(body["member_id"]),
        points=int(body["points"]),
        balance=int(body["balance"]),
        repeated=repeated,
    )
