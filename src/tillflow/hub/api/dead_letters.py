"""`/v1/dead-letters` (admin): the events the flows set aside, and the operator's replay and purge.

    GET  /v1/dead-letters?group=&store_id=&limit=&offset=   newest first, with the total
    GET  /v1/dead-letters/{id}                               one, with its event's body
    POST /v1/dead-letters/replay   {"ids": [3, 4], "why": "period reopened"}  ->  {"replayed": 2}
    POST /v1/dead-letters/purge    {"group": "posting", "why": "test till"}    ->  {"purged": 5}

A replay or purge names the dead letters by id or by flow (`group`; both: those ids of that
flow) and says why; it is audited with the admin key as the actor, as `tillflow dlq` audits the
operator. Ids that name no dead letter (of that flow) are refused with 404 and nothing is done.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from tillflow.hub.api.transactions import read_body
from tillflow.hub.auth import require_admin
from tillflow.hub.ingest import errors_of
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.model.events import TRANSACTION_COMPLETED
from tillflow.ports import DeadLetter, DeadLetterSelection, EventLog, Principal
from tillflow.services import Services

router = APIRouter(tags=["operations"])
MAX_SCAN = 100_000  # dead letters read to filter, count and page
MAX_ACTION_BYTES = 256 * 1024


class DeadLetterAction(BaseModel):
    """Which dead letters to replay or purge, and why."""

    ids: list[int] = Field(default_factory=list, max_length=10_000)
    group: str | None = Field(default=None, min_length=1, max_length=100)
    why: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _something(self) -> DeadLetterAction:
        if not self.ids and self.group is None:
            raise ValueError("name the dead letters: ids, or a flow's group")
        return self


def dead_letter_row(d: DeadLetter, now: datetime) -> dict[str, Any]:
    """A dead letter as the console lists it: where it sat, what it carries and why it is here."""
    e = d.event.event
    return {
        "id": d.id,
        "group": d.group,
        "event_seq": d.event.seq,
        "event_id": e.id,
        "type": e.type,
        "subject": e.subject,
        "store_id": e.partitionkey,
        "transaction_id": e.subject if e.type == TRANSACTION_COMPLETED else None,
        "reason": d.reason,
        "attempts": d.attempts,
        "dead_lettered_at": d.dead_at.isoformat(),
        "age_seconds": max(0.0, (now - d.dead_at).total_seconds()),
    }


def list_store_dead_letters(
    log: EventLog, *, group: str | None = None, store_id: str | None = None
) -> list[DeadLetter]:
    """Dead letters (of a flow, of a store's events), newest first."""
    found = log.list_dead_letters(group=group, limit=MAX_SCAN)
    return [d for d in reversed(found) if store_id is None or d.event.event.partitionkey == store_id]


@router.get("/v1/dead-letters", summary="Dead letters, newest first: why each was set aside, and its age")
async def get_dead_letters(
    request: Request,
    group: str | None = Query(default=None, description="only this flow's consumer group"),
    store_id: str | None = Query(default=None, description="only this store's events"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
    principal: Principal = Depends(require_admin),
) -> Response:
    services: Services = request.app.state.services
    found = await run_in_threadpool(
        list_store_dead_letters, services.event_log, group=group, store_id=store_id
    )
    now = datetime.now(UTC)
    page = [dead_letter_row(d, now) for d in found[offset : offset + limit]]
    return json_response({"total": len(found), "dead_letters": page})


@router.get("/v1/dead-letters/{dead_letter_id}", summary="One dead letter with its event's body")
async def get_dead_letter(
    dead_letter_id: int, request: Request, principal: Principal = Depends(require_admin)
) -> Response:
    """The body is decoded JSON when it is JSON (`data_format` "json"), else text."""
    services: Services = request.app.state.services
    found = await run_in_threadpool(services.event_log.list_dead_letters, ids=(dead_letter_id,), limit=1)
    if not found:
        raise Problem(404, "Dead letter not found", f"no dead letter {dead_letter_id}", type_="not-found")
    d = found[0]
    e = d.event.event
    try:
        data, data_format = orjson.loads(e.data), "json"
    except orjson.JSONDecodeError:
        data, data_format = e.data.decode(errors="replace"), "text"
    return json_response(
        dead_letter_row(d, datetime.now(UTC))
        | {
            "source": e.source,
            "time": e.time.isoformat(),
            "partitionkey": e.partitionkey,
            "sequence": e.sequence,
            "traceparent": e.traceparent,
            "data_format": data_format,
            "data": data,
        }
    )


async def _action(request: Request) -> DeadLetterAction:
    body = await read_body(request, MAX_ACTION_BYTES)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed JSON", str(exc), type_="malformed-json") from exc
    try:
        return DeadLetterAction.model_validate(doc)
    except ValidationError as exc:
        errors = errors_of(exc)
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise Problem(422, "Invalid request", detail, type_="invalid-request", errors=errors) from exc


def _selection(log: EventLog, action: DeadLetterAction) -> DeadLetterSelection:
    """The action's selection; 404 naming the ids that are no dead letter (of its flow)."""
    if action.ids:
        ids = sorted(set(action.ids))
        known = {d.id for d in log.list_dead_letters(group=action.group, ids=ids, limit=len(ids))}
        unknown = [i for i in ids if i not in known]
        if unknown:
            of = f" of {action.group}" if action.group else ""
            raise Problem(
                404,
                "Dead letter not found",
                f"no dead letter{of} with id {', '.join(map(str, unknown))}",
                type_="not-found",
                unknown=unknown,
            )
    return DeadLetterSelection(group=action.group, ids=tuple(action.ids))


def _actor(principal: Principal) -> str:
    return f"admin key {principal.key_id}"


@router.post("/v1/dead-letters/replay", summary="Deliver dead letters to their flow again (audited)")
async def replay_dead_letters(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    services: Services = request.app.state.services
    action = await _action(request)

    def replay() -> int:
        selection = _selection(services.event_log, action)
        return services.event_log.replay_dead_letters(selection, actor=_actor(principal), why=action.why)

    count = await run_in_threadpool(replay)
    request.app.state.wake_consumers()
    return json_response({"replayed": count})


@router.post("/v1/dead-letters/purge", summary="Delete dead letters for good (audited)")
async def purge_dead_letters(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    services: Services = request.app.state.services
    action = await _action(request)

    def purge() -> int:
        selection = _selection(services.event_log, action)
        return services.event_log.purge_dead_letters(selection, actor=_actor(principal), why=action.why)

    return json_response({"purged": await run_in_threadpool(purge)})
