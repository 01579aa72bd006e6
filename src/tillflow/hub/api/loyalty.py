"""`/v1/loyalty/members/{id}`: a member's balance through the loyalty connector, cached briefly;
while the platform is away, the last known balance, marked stale."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.errors import DownstreamUnavailableError
from tillflow.hub.auth import require_key
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.ports import LoyaltyPlatform, Member, Principal

router = APIRouter(prefix="/v1/loyalty", tags=["loyalty"])

MAX_ENTRIES = 100_000  # members remembered; the least recently asked is forgotten first


@dataclass(frozen=True)
class Balance:
    member: Member | None  # None: the platform does not know the member
    as_of: datetime  # when the platform said so
    stale: bool  # the platform is away: this is the last known answer


class MemberBalances:
    """Balance lookups through the loyalty connector: an answer younger than `ttl` seconds is
    given again without asking; an older one is asked again, and kept as the fallback while
    the platform is away (then marked stale). Thread-safe."""

    def __init__(
        self,
        platform: Callable[[], LoyaltyPlatform | None],
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.platform = platform
        self.ttl = ttl
        self.clock = clock
        self.max_entries = max_entries
        self._known: OrderedDict[tuple[str, str], tuple[float, Balance]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, member_id: str, program: str) -> Balance:
        """The member's balance; raises DownstreamUnavailableError when the platform is away
        and the member was never seen."""
        key = (member_id, program)
        with self._lock:
            known = self._known.get(key)
            if known is not None:
                self._known.move_to_end(key)
        now = self.clock()
        if known is not None and now - known[0] < self.ttl:
            return known[1]
        platform = self.platform()
        if platform is None:
            raise DownstreamUnavailableError("loyalty", "no loyalty platform is configured")
        try:
            member = platform.find_member(member_id, program=program)
        except DownstreamUnavailableError:
            if known is None:
                raise
            return Balance(known[1].member, known[1].as_of, stale=True)
        answer = Balance(member, datetime.now(UTC), stale=False)
        with self._lock:
            self._known[key] = (now, answer)
            self._known.move_to_end(key)
            while len(self._known) > self.max_entries:
                self._known.popitem(last=False)
        return answer


def balances_of(request: Request) -> MemberBalances:
    """The app's one cache, made on first use."""
    state = request.app.state
    if getattr(state, "member_balances", None) is None:
        services = state.services
        state.member_balances = MemberBalances(services.loyalty, services.config.hub.member_cache_seconds)
    balances: MemberBalances = state.member_balances
    return balances


@router.get(
    "/members/{member_id}", summary="A member's points balance (cached; stale while the platform is away)"
)
async def get_member(
    member_id: str,
    request: Request,
    program: str = Query(default="default", max_length=64),
    principal: Principal = Depends(require_key),
) -> Response:
    balances = balances_of(request)
    try:
        found = await run_in_threadpool(balances.lookup, member_id, program)
    except DownstreamUnavailableError as exc:
        problem = Problem(
            503, "Loyalty platform unavailable", f"{exc}; no earlier balance of {member_id} is known",
            type_="loyalty-unavailable",
        )  # fmt: skip
        problem.headers["Retry-After"] = str(int(exc.retry_after or 5))
        raise problem from exc
    if found.member is None:
        raise Problem(
            404, "Unknown member", f"{member_id} is not a member of {program}", type_="unknown-member"
        )
    member = found.member
    return json_response(
        {
            "member_id": member.member_id,
            "program": member.program,
            "tier": member.tier,
            "balance": member.balance,
            "held": member.held,
            "as_of": found.as_of.isoformat(),
            "stale": found.stale,
        },
        headers={"Cache-Control": "no-store"},
    )
