"""`/v1/loyalty`: a member's balance through the loyalty connector, cached briefly (while the
platform is away, the last known balance, marked stale); and the redemption sagas: points held
during checkout (`POST /v1/loyalty/redemptions`), read, and released when the checkout is
cancelled."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.errors import DownstreamRejectedError, DownstreamUnavailableError
from tillflow.flows.loyalty import Reservation, release_points, reserve_points
from tillflow.hub.auth import require_admin, require_key, require_store
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model.loyalty import ReserveRedemption
from tillflow.ports import LoyaltyPlatform, Member, Principal, Redemption, RedemptionState

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
        raise _unavailable(exc, f"no earlier balance of {member_id} is known") from exc
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


def _unavailable(exc: DownstreamUnavailableError, consequence: str) -> Problem:
    problem = Problem(
        503, "Loyalty platform unavailable", f"{exc}; {consequence}", type_="loyalty-unavailable"
    )
    problem.headers["Retry-After"] = str(int(exc.retry_after or 5))
    return problem


def _platform(request: Request) -> LoyaltyPlatform:
    platform: LoyaltyPlatform | None = request.app.state.services.loyalty()
    if platform is None:
        raise Problem(404, "No loyalty platform", "this hub has no loyalty connector", type_="not-configured")
    return platform


def _saga_body(saga: Redemption, point_value: Decimal | None) -> dict[str, Any]:
    return {
        "hold_id": saga.hold_id,
        "store_id": saga.store_id,
        "member_id": saga.member_id,
        "program": saga.program,
        "points": saga.points,
        "value": None if point_value is None else format(saga.points * point_value, "f"),
        "state": saga.state.value,
        "created_at": saga.created_at.isoformat(),
        "expires_at": saga.expires_at.isoformat(),
        "updated_at": saga.updated_at.isoformat(),
        "transaction_id": saga.transaction_id,
        "void_id": saga.void_id,
        "reason": saga.reason,
        "conflicts": [] if saga.conflict is None else saga.conflict.split("\n"),
    }


def _point_value(request: Request) -> Decimal | None:
    accounting = request.app.state.services.config.posting.accounts.loyalty
    return None if accounting is None else accounting.point_value


def _own_saga(request: Request, principal: Principal, hold_id: str) -> Redemption:
    saga: Redemption | None = request.app.state.services.loyalty_book.find_redemption(hold_id)
    if saga is None or not principal.may_act_for(saga.store_id):  # another store's hold is not shown
        raise Problem(404, "Unknown redemption", f"no redemption {hold_id}", type_="unknown-redemption")
    return saga


@router.post("/redemptions", summary="Hold a member's points during checkout (a redemption saga)")
async def post_redemption(
    ask: ReserveRedemption, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    """201 with the hold when new, 200 with the same hold when the `Idempotency-Key` was used
    for this request before. The transaction that completes the checkout names `hold_id` in
    its `loyalty_points` tender (which commits it); `.../release` gives the points back."""
    require_store(principal, ask.store_id)
    key = request.headers.get("idempotency-key", "").strip()
    if not key or len(key) > 200:
        raise Problem(
            400,
            "Idempotency-Key required",
            "Idempotency-Key: a reservation needs a key of 1 to 200 characters, the same on a retry",
            type_="idempotency-key-missing",
        )
    services = request.app.state.services
    hub = services.config.hub
    ttl = ask.ttl_seconds or hub.redemption_ttl_seconds
    if ttl > hub.redemption_max_ttl_seconds:
        raise Problem(
            400,
            "Invalid request",
            f"ttl_seconds: {ttl} is longer than the {hub.redemption_max_ttl_seconds} seconds allowed",
            type_="validation",
        )
    reservation = Reservation(
        store_id=ask.store_id,
        member_id=ask.member_id,
        program=ask.program,
        points=ask.points,
        ttl=timedelta(seconds=ttl),
    )
    try:
        saga, new = await run_in_threadpool(
            lambda: reserve_points(
                reservation,
                request_key=f"{ask.store_id}:{key}",
                loyalty=_platform(request),
                book=services.loyalty_book,
                now=datetime.now(UTC),
            )
        )
    except DownstreamUnavailableError as exc:
        raise _unavailable(exc, "no points were held; retry with the same Idempotency-Key") from exc
    except DownstreamRejectedError as exc:
        raise Problem(422, "Redemption refused", exc.reason, type_="redemption-refused") from exc
    except ValueError as exc:
        raise Problem(422, "Idempotency-Key reused", str(exc), type_="idempotency-key-reused") from exc
    return json_response(_saga_body(saga, _point_value(request)), status=201 if new else 200)


@router.get("/redemptions/{hold_id}", summary="A redemption saga: its hold and what became of it")
async def get_redemption(
    hold_id: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    saga = await run_in_threadpool(_own_saga, request, principal, hold_id)
    return json_response(_saga_body(saga, _point_value(request)))


@router.post("/redemptions/{hold_id}/release", summary="Give held points back (the checkout was cancelled)")
async def release_redemption(
    hold_id: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    """200 with the saga released (or as it already was, when released or expired before);
    409 when a transaction already spent the points (a post-void gives them back)."""
    saga = await run_in_threadpool(_own_saga, request, principal, hold_id)
    if saga.state is RedemptionState.HELD:
        try:
            saga = await run_in_threadpool(
                lambda: release_points(
                    hold_id,
                    reason="checkout cancelled at the till",
                    loyalty=_platform(request),
                    book=request.app.state.services.loyalty_book,
                    now=datetime.now(UTC),
                )
            )
        except DownstreamUnavailableError as exc:
            raise _unavailable(exc, "the points are still held; retry") from exc
        except DownstreamRejectedError as exc:
            raise Problem(409, "Redemption not released", exc.reason, type_="redemption-spent") from exc
    elif saga.state in (RedemptionState.COMMITTED, RedemptionState.REFUNDED):
        raise Problem(
            409,
            "Redemption spent",
            f"hold {hold_id} was spent by {saga.transaction_id}: a post-void of it gives the points back",
            type_="redemption-spent",
        )
    return json_response(_saga_body(saga, _point_value(request)))


@router.get("/redemptions", summary="Redemption sagas by state (admin)")
async def list_redemptions(
    request: Request,
    state: list[RedemptionState] = Query(default=[]),
    limit: int = Query(default=1000, ge=1, le=10_000),
    _: Principal = Depends(require_admin),
) -> Response:
    book = request.app.state.services.loyalty_book
    sagas = await run_in_threadpool(lambda: book.list_redemptions(states=state, limit=limit))
    value = _point_value(request)
    return json_response({"redemptions": [_saga_body(s, value) for s in sagas]})


@router.get("/liability", summary="Each program's points liability: the hub's ledger vs the platform (admin)")
async def get_liability(request: Request, _: Principal = Depends(require_admin)) -> Response:
    from tillflow.flows.liability import liability_dict
    from tillflow.reconciling import reconcile_loyalty

    recs = await run_in_threadpool(reconcile_loyalty, request.app.state.services)
    return json_response(
        {"matched": all(r.status == "matched" for r in recs), "programs": [liability_dict(r) for r in recs]}
    )


@router.get("/journals", summary="The IFRS 15 journals of the points issued, per store-day (admin)")
async def get_points_journals(request: Request, _: Principal = Depends(require_admin)) -> Response:
    """Each journal with its state, and how many ledger moves wait for the next journal."""
    from tillflow.flows.liability import ISSUING_KINDS

    book = request.app.state.services.loyalty_book
    journals = await run_in_threadpool(book.find_points_journals)
    waiting = await run_in_threadpool(book.unjournaled_entries, ISSUING_KINDS)
    return json_response(
        {
            "journals": [
                {
                    "journal_id": j.journal_id,
                    "store_id": j.store_id,
                    "business_day": j.business_day.isoformat(),
                    "currency": j.currency,
                    "points": j.points,
                    "state": j.state.value,
                    "document_number": j.document_number,
                    "reason": j.reason,
                }
                for j in journals
            ],
            "unjournaled": len(waiting),
        }
    )
