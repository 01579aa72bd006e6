"""Liveness, readiness and the operational figures the demo and operators read."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.errors import TillflowError
from tillflow.hub.auth import require_admin
from tillflow.hub.responses import json_response
from tillflow.ports import GroupState, Principal

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return json_response({"status": "ok"})


def _check_ready(request: Request) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        request.app.state.services.stats.ping_store()
        checks["state_store"] = "ok"
    except TillflowError as exc:
        checks["state_store"] = f"failed: {exc}"
    for thread in request.app.state.consumer_threads:
        checks[thread.name] = "ok" if thread.is_alive() else "stopped"
    worker = request.app.state.worker
    if worker is not None:
        checks["worker_process"] = "ok" if worker.alive() else "stopped"
    return checks


@router.get("/readyz", summary="The state store answers and the consumers run")
async def readyz(request: Request) -> Response:
    checks = await run_in_threadpool(_check_ready, request)
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
    )


def _flows(request: Request) -> dict[str, object]:
    services = request.app.state.services
    head = services.event_log.read_head()
    states = services.event_log.read_groups()
    groups: dict[str, object] = {}
    for group in services.consumer_groups:
        state = states.get(group, GroupState(position=0, lag=head))
        groups[group] = {
            "position": state.position,
            "lag": state.lag,
            "pending": state.pending,
            "dead_letters": state.dead_letters,
            "oldest_dead_letter_at": state.oldest_dead_letter_at.isoformat()
            if state.oldest_dead_letter_at
            else None,
            "failures": state.failures,
            "last_error": state.last_error,
            "last_error_at": state.last_error_at.isoformat() if state.last_error_at else None,
        }
    return {"head": head, "consumer_groups": groups}


@router.get("/v1/flows", summary="The event log head and each consumer group's position and lag")
async def flows(request: Request, _: Principal = Depends(require_admin)) -> Response:
    return json_response(await run_in_threadpool(_flows, request))


@router.get("/v1/stats", summary="Counts, consumer lag and end-to-end latency")
async def stats(request: Request, _: Principal = Depends(require_admin)) -> Response:
    figures = await run_in_threadpool(request.app.state.services.stats.read_stats)
    figures["consumer_groups"] = (await run_in_threadpool(_flows, request))["consumer_groups"]  # from the bus
    return json_response(figures)
