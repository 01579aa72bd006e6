"""API-key authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

from __future__ import annotations

from fastapi import Request

from tillflow.hub.problems import Problem
from tillflow.ports import KeyStore, Principal


def require_key(request: Request) -> Principal:
    """The principal of the request's key; 401 problem when missing or invalid."""
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    if not key:
        raise _unauthenticated("API key required", "send Authorization: Bearer <key>")
    keys: KeyStore = request.app.state.services.keys
    principal = keys.authenticate(key)
    if principal is None:
        raise _unauthenticated("Invalid API key", "the key is unknown or revoked")
    return principal


def _unauthenticated(title: str, detail: str) -> Problem:
    problem = Problem(401, title, detail, type_="unauthenticated")
    problem.headers = {"www-authenticate": 'Bearer realm="tillflow"'}
    return problem


def require_admin(request: Request) -> Principal:
    principal = require_key(request)
    if not principal.is_admin:
        raise Problem(403, "Admin key required", "this endpoint needs an admin key", type_="forbidden")
    return principal


def require_store(principal: Principal, store_id: str) -> None:
    """403 problem unless the key may act for `store_id` (its own store, or an admin key)."""
    if not principal.may_act_for(store_id):
        raise Problem(
            403, "Store not allowed", f"this key is for store {principal.store_id}", type_="forbidden-store"
        )
