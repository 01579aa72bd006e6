"""`/v1/alerts`: what the configured alert rules raised, and their acknowledgement (admin).

`GET /v1/alerts?state=firing|resolved|all` (default firing) answers the alerts, firing first,
then newest first, with the configured rules:

    {"alerts": [{"id": 7, "rule": "store-offline", "kind": "store_offline", "subject": "S001",
                 "severity": "critical", "state": "firing", "summary": "store S001 offline ...",
                 "value": 6.2, "threshold": 5.0, "fired_at": "...", "resolved_at": null,
                 "acknowledged_at": null, "acknowledged_by": null}],
     "rules": [{"name": "store-offline", "kind": "store_offline", "minutes": 5.0, ...}]}

`POST /v1/alerts/{id}/acknowledge` records who acknowledged the alert and when: the admin key's
id, after the name the optional body gives (``{"by": "ana"}`` -> ``ana (key 3f2a...)``). An
acknowledged alert stays listed, marked. Acknowledging again keeps the first record.
The promotion compliance alerts of `GET /v1/compliance` are another matter and stay there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tillflow.hub.auth import require_admin
from tillflow.hub.problems import Problem
from tillflow.hub.responses import json_response
from tillflow.observe.webhook import alert_json
from tillflow.ports import AlertState, Principal
from tillflow.services import Services

router = APIRouter(tags=["alerts"])
MAX_ALERTS = 500
MAX_NAME = 100  # of the one acknowledging


@router.get("/v1/alerts", summary="Alerts the rules raised (firing first, newest first), and the rules")
async def list_alerts(
    request: Request,
    state: Literal["firing", "resolved", "all"] = Query(default="firing"),
    limit: int = Query(default=MAX_ALERTS, ge=1, le=MAX_ALERTS),
    principal: Principal = Depends(require_admin),
) -> Response:
    services: Services = request.app.state.services
    wanted = None if state == "all" else AlertState(state)
    found = await run_in_threadpool(services.alerts.list_alerts, state=wanted, limit=limit)
    rules = [rule.model_dump(mode="json") for rule in services.config.alerts.rules]
    return json_response({"alerts": [alert_json(alert) for alert in found], "rules": rules})


@router.post("/v1/alerts/{alert_id}/acknowledge", summary="Acknowledge an alert (who and when)")
async def acknowledge_alert(
    alert_id: int, request: Request, principal: Principal = Depends(require_admin)
) -> Response:
    """200 with the alert, acknowledged; 404 for an unknown alert, 422 for a bad body."""
    services: Services = request.app.state.services
    by = f"key {principal.key_id}"
    body = await request.body()
    if body.strip():
        try:
            name = orjson.loads(body).get("by")
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise Problem(422, "Invalid body", 'expected {"by": "<name>"}', type_="invalid-request") from exc
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise Problem(
                422,
                "Invalid body",
                f"`by` must be a name of 1 to {MAX_NAME} characters",
                type_="invalid-request",
            )
        by = f"{name} ({by})"
    found = await run_in_threadpool(services.alerts.acknowledge_alert, alert_id, by=by, at=datetime.now(UTC))
    if found is None:
        raise Problem(404, "Unknown alert", f"there is no alert {alert_id}", type_="not-found")
    return json_response(alert_json(found))
