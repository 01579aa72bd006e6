"""Loyalty at the store while the link to the hub may be down: members' balances kept on the
store's disk, and the offline redemption policy.

`MemberCache` asks the hub for a member's balance (`GET /v1/loyalty/members/{id}`) and keeps the
answer: for `ttl_seconds` it is answered again without asking; after that the hub is asked again,
and while the hub cannot be reached the last answer is given, marked stale, with its age. A
member never seen while the hub is away is None. (The hub's own answer is stale when the loyalty
platform behind it is away; it stays marked stale here.)

`OfflineRedemptions` decides a redemption hold request (`ReserveRedemption`) that cannot reach
the hub. Policy ``deny``: refused. Policy ``cap``: granted locally when the member's points
granted offline that day (the store's business day, in its time zone), this request included,
stay within `cap_points`; the grant is recorded under its own id (``OFF-...``), which the till
names as the hold in its loyalty tender. The till's Idempotency-Key is kept with the grant, so
the same request again gets the same grant.

`settle` sends each grant not settled yet to the hub (`POST /v1/loyalty/redemptions`, the
grant's id as the Idempotency-Key, so a retry never holds twice) once the link is back, and
records what the hub answered: its hold id (state ``settled``), or its refusal (state
``unsettled_refused`` with the reason: points were given that the platform refused, for the
reconciliation). A grant's transaction names the grant's id; the hold it must spend at the hub
is `OfflineGrant.hold_id` once settled.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
import orjson

from tillflow.edge.cache import hub_problem, request_hub
from tillflow.edge.sqlite import SQLiteFile
from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.model.loyalty import ReserveRedemption
from tillflow.storage.sql import from_us, to_us

__all__ = [
    "GRANT_PREFIX",
    "CachedMember",
    "GrantState",
    "MemberCache",
    "OfflineDecision",
    "OfflineGrant",
    "OfflineRedemptions",
    "Settlement",
]

GRANT_PREFIX = "OFF-"  # how the id of a grant made offline starts
Clock = Callable[[], datetime]
GrantState = Literal["pending", "settled", "unsettled_refused"]
Policy = Literal["deny", "cap"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- balances ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedMember:
    """A member's balance as the hub last gave it."""

    member_id: str
    program: str
    tier: str
    balance: int  # points available (holds subtracted)
    held: int  # points held by open redemptions
    as_of: str  # when the loyalty platform said so (ISO 8601, the hub's)
    fetched_at: datetime  # when the hub answered
    stale: bool  # the hub (or the platform behind it) is away: this is the last known answer
    age_seconds: float  # since the hub answered

    def body(self) -> dict[str, Any]:
        """As the hub answers it, with `age_seconds`."""
        return {
            "member_id": self.member_id,
            "program": self.program,
            "tier": self.tier,
            "balance": self.balance,
            "held": self.held,
            "as_of": self.as_of,
            "stale": self.stale,
            "age_seconds": round(self.age_seconds, 3),
        }


_MEMBERS = """
CREATE TABLE IF NOT EXISTS members (
    member_id TEXT NOT NULL,
    program TEXT NOT NULL,
    body TEXT NOT NULL,
    fetched_us INTEGER NOT NULL,
    PRIMARY KEY (member_id, program)
) WITHOUT ROWID;
"""


class MemberCache:
    """Members' balances from the hub, kept in a SQLite file. Thread-safe."""

    def __init__(self, path: str | Path, *, ttl_seconds: float = 30.0, clock: Clock = _utc_now) -> None:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds: 0 or more")
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._db = SQLiteFile(path, _MEMBERS)

    def close(self) -> None:
        self._db.close()

    def lookup(self, client: httpx.Client, member_id: str, program: str = "default") -> CachedMember | None:
        """The member's balance: the kept one while younger than the TTL, else the hub's (through
        `client`); while the hub cannot be reached, the kept one marked stale, or None when there
        is none. Raises DownstreamRejectedError when the hub refuses (404: not a member)."""
        known = self._find(member_id, program)
        now = self.clock()
        if known is not None and (now - known.fetched_at).total_seconds() < self.ttl_seconds:
            return known
        try:
            answer = request_hub(
                client, "GET", f"/v1/loyalty/members/{member_id}", params={"program": program}
            )
        except DownstreamUnavailableError:
            if known is None:
                return None
            age = (now - known.fetched_at).total_seconds()
            return replace(known, stale=True, age_seconds=age)
        if answer.status_code != 200:
            if answer.status_code == 404:
                self._forget(member_id, program)
            raise DownstreamRejectedError("hub", hub_problem(answer), status=answer.status_code)
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?)",
                (member_id, program, answer.text, to_us(now)),
            )
        return _member(answer.json(), now, now)

    def _find(self, member_id: str, program: str) -> CachedMember | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT body, fetched_us FROM members WHERE member_id = ? AND program = ?",
                (member_id, program),
            ).fetchone()
        return None if row is None else _member(orjson.loads(row[0]), from_us(row[1]), self.clock())

    def _forget(self, member_id: str, program: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM members WHERE member_id = ? AND program = ?", (member_id, program))


def _member(body: dict[str, Any], fetched_at: datetime, now: datetime) -> CachedMember:
    return CachedMember(
        member_id=str(body["member_id"]),
        program=str(body["program"]),
        tier=str(body.get("tier", "")),
        balance=int(body["balance"]),
        held=int(body.get("held", 0)),
        as_of=str(body.get("as_of", fetched_at.isoformat())),
        fetched_at=fetched_at,
        stale=bool(body.get("stale", False)),
        age_seconds=max((now - fetched_at).total_seconds(), 0.0),
    )


# --- offline redemptions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfflineGrant:
    """Points granted at the store while the hub could not be reached, and their settlement."""

    grant_id: str  # the hold id the till names in its loyalty tender
    store_id: str
    request_key: str  # the till's Idempotency-Key
    member_id: str
    program: str
    points: int
    business_day: date  # the store's day whose cap it counts against
    granted_at: datetime
    state: GrantState
    hold_id: str | None = None  # the hub's hold, once settled
    reason: str | None = None  # the hub's refusal (state unsettled_refused)
    settled_at: datetime | None = None

    def body(self) -> dict[str, Any]:
        """The grant as the edge answers a redemption request with it."""
        return {
            "hold_id": self.grant_id,
            "store_id": self.store_id,
            "member_id": self.member_id,
            "program": self.program,
            "points": self.points,
            "state": "granted_offline",
            "offline": True,
            "business_day": self.business_day.isoformat(),
            "created_at": self.granted_at.isoformat(),
            "settlement": self.state,
            "hub_hold_id": self.hold_id,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class OfflineDecision:
    """What the policy decided for one request: a grant (new, or the one the same request got
    before) or a refusal, and how many points the member may still be granted that day."""

    grant: OfflineGrant | None
    new: bool
    refusal: str | None
    remaining: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """What one `OfflineRedemptions.settle` did."""

    settled: list[OfflineGrant] = field(default_factory=list)
    refused: list[OfflineGrant] = field(default_factory=list)
    pending: int = 0  # grants still to settle (the hub went away again)
    error: str | None = None  # why settling stopped early


_GRANTS = """
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    member_id TEXT NOT NULL,
    program TEXT NOT NULL,
    points INTEGER NOT NULL,
    business_day TEXT NOT NULL,
    granted_us INTEGER NOT NULL,
    state TEXT NOT NULL,
    hold_id TEXT,
    reason TEXT,
    settled_us INTEGER,
    UNIQUE (store_id, request_key)
);
CREATE INDEX IF NOT EXISTS grants_by_member_day ON grants (member_id, program, business_day);
CREATE INDEX IF NOT EXISTS grants_by_state ON grants (state, granted_us);
"""


class OfflineRedemptions:
    """The offline redemption policy and its grants, in a SQLite file. Thread-safe."""

    def __init__(
        self, path: str | Path, policy: Policy, cap_points: int = 0, *, clock: Clock = _utc_now
    ) -> None:
        if policy not in ("deny", "cap"):
            raise ValueError(f"policy: deny or cap, not {policy!r}")
        if cap_points < 0:
            raise ValueError("cap_points: 0 or more")
        self.policy = policy
        self.cap_points = cap_points
        self.clock = clock
        self._db = SQLiteFile(path, _GRANTS, synchronous="FULL")  # a grant is on disk before it is answered
        self._settling = threading.Lock()  # one settlement at a time: a grant is sent by one

    def close(self) -> None:
        self._db.close()

    def grant(self, ask: ReserveRedemption, request_key: str, *, timezone: str = "UTC") -> OfflineDecision:
        """Decide `ask`, sent with the till's Idempotency-Key `request_key`, while the hub cannot
        be reached; the day is the store's (`timezone`). Raises ValueError when the key was used
        for another request."""
        now = self.clock()
        day = now.astimezone(ZoneInfo(timezone)).date()
        with self._db.write() as conn:
            earlier = _one(conn, "store_id = ? AND request_key = ?", (ask.store_id, request_key))
            if earlier is not None:
                if (earlier.member_id, earlier.program, earlier.points) != (
                    ask.member_id,
                    ask.program,
                    ask.points,
                ):
                    raise ValueError(
                        f"Idempotency-Key: {request_key} already granted {earlier.points} points of"
                        f" {earlier.member_id} offline ({earlier.grant_id}); a different request needs"
                        " a new key"
                    )
                return OfflineDecision(earlier, False, None, self._left(conn, ask, earlier.business_day))
            if self.policy == "deny":
                refusal = "redemptions are refused while the hub cannot be reached"
                return OfflineDecision(None, False, refusal, 0)
            left = self._left(conn, ask, day)
            if ask.points > left:
                refusal = (
                    f"{ask.points} points asked; {ask.member_id} may be granted {left} more points offline"
                    f" on {day.isoformat()} (at most {self.cap_points} a day while the hub cannot be"
                    " reached)"
                )
                return OfflineDecision(None, False, refusal, left)
            grant = OfflineGrant(
                grant_id=f"{GRANT_PREFIX}{uuid.uuid4().hex}",
                store_id=ask.store_id,
                request_key=request_key,
                member_id=ask.member_id,
                program=ask.program,
                points=ask.points,
                business_day=day,
                granted_at=now,
                state="pending",
            )
            conn.execute(
                "INSERT INTO grants (grant_id, store_id, request_key, member_id, program, points,"
                " business_day, granted_us, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    grant.grant_id,
                    grant.store_id,
                    request_key,
                    grant.member_id,
                    grant.program,
                    grant.points,
                    day.isoformat(),
                    to_us(now),
                    grant.state,
                ),
            )
            return OfflineDecision(grant, True, None, left - ask.points)

    def _left(self, conn: sqlite3.Connection, ask: ReserveRedemption, day: date) -> int:
        if self.policy == "deny":
            return 0
        used = conn.execute(
            "SELECT COALESCE(SUM(points), 0) FROM grants"
            " WHERE member_id = ? AND program = ? AND business_day = ?",
            (ask.member_id, ask.program, day.isoformat()),
        ).fetchone()[0]
        return max(self.cap_points - int(used), 0)

    def find_request(self, store_id: str, request_key: str) -> OfflineGrant | None:
        """The grant made for the till's Idempotency-Key `request_key`, if any."""
        with self._db.read() as conn:
            return _one(conn, "store_id = ? AND request_key = ?", (store_id, request_key))

    def find_grant(self, grant_id: str) -> OfflineGrant | None:
        """The grant `grant_id` (what the till named as its hold), with its settlement."""
        with self._db.read() as conn:
            return _one(conn, "grant_id = ?", (grant_id,))

    def list_grants(
        self, states: Sequence[GrantState] = (), *, store_id: str | None = None
    ) -> list[OfflineGrant]:
        """The grants (in those states; of that store), oldest first."""
        where = f"state IN ({', '.join('?' * len(states))})" if states else "1 = 1"
        args: tuple[str, ...] = tuple(states)
        if store_id is not None:
            where, args = f"{where} AND store_id = ?", (*args, store_id)
        with self._db.read() as conn:
            rows = conn.execute(f"SELECT * FROM grants WHERE {where} ORDER BY granted_us", args)
            return [_grant(row) for row in rows.fetchall()]

    def count_grants(self, store_id: str) -> dict[str, int]:
        """How many grants of the store are in each state (`GrantState`)."""
        counts: dict[str, int] = {"pending": 0, "settled": 0, "unsettled_refused": 0}
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT state, count(*) FROM grants WHERE store_id = ? GROUP BY state", (store_id,)
            ).fetchall()
        for state, n in rows:
            counts[state] = int(n)
        return counts

    def settle(
        self, client: httpx.Client, *, ttl_seconds: int | None = None, store_id: str | None = None
    ) -> Settlement:
        """Send each pending grant (of that store: `client` carries its key) to the hub through
        `client`, oldest first, and record its hold or its refusal. Stops at the first grant the
        hub cannot be reached for (the rest stay pending); raises DownstreamRejectedError when
        the hub refuses the store's key."""
        with self._settling:
            return self._settle(client, ttl_seconds, store_id)

    def _settle(self, client: httpx.Client, ttl_seconds: int | None, store_id: str | None) -> Settlement:
        settled: list[OfflineGrant] = []
        refused: list[OfflineGrant] = []
        pending = self.list_grants(["pending"], store_id=store_id)
        for n, grant in enumerate(pending):
            body: dict[str, Any] = {
                "store_id": grant.store_id,
                "member_id": grant.member_id,
                "program": grant.program,
                "points": grant.points,
            }
            if ttl_seconds is not None:
                body["ttl_seconds"] = ttl_seconds
            try:
                answer = request_hub(
                    client,
                    "POST",
                    "/v1/loyalty/redemptions",
                    json=body,
                    headers={"idempotency-key": grant.grant_id},
                )
            except DownstreamUnavailableError as exc:
                return Settlement(settled, refused, len(pending) - n, str(exc))
            if answer.status_code in (401, 403):
                raise DownstreamRejectedError("hub", hub_problem(answer), status=answer.status_code)
            if answer.status_code in (200, 201):
                settled.append(self._record(grant, "settled", hold_id=str(answer.json()["hold_id"])))
            else:
                refused.append(self._record(grant, "unsettled_refused", reason=hub_problem(answer)))
        return Settlement(settled, refused)

    def _record(
        self, grant: OfflineGrant, state: GrantState, *, hold_id: str | None = None, reason: str | None = None
    ) -> OfflineGrant:
        now = self.clock()
        with self._db.write() as conn:
            conn.execute(
                "UPDATE grants SET state = ?, hold_id = ?, reason = ?, settled_us = ? WHERE grant_id = ?",
                (state, hold_id, reason, to_us(now), grant.grant_id),
            )
            found = _one(conn, "grant_id = ?", (grant.grant_id,))
        assert found is not None
        return found


def _one(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> OfflineGrant | None:
    row = conn.execute(f"SELECT * FROM grants WHERE {where}", args).fetchone()
    return None if row is None else _grant(row)


def _grant(row: tuple[Any, ...]) -> OfflineGrant:
    (grant_id, store_id, key, member_id, program, points, day, granted, state, hold, reason, settled) = row
    return OfflineGrant(
        grant_id=grant_id,
        store_id=store_id,
        request_key=key,
        member_id=member_id,
        program=program,
        points=int(points),
        business_day=date.fromisoformat(day),
        granted_at=from_us(granted),
        state=state,
        hold_id=hold,
        reason=reason,
        settled_at=None if settled is None else from_us(settled),
    )
