"""Bearer keys to projects; the bootstrap admin key acts on the 'default' project."""

from __future__ import annotations

import hmac
import time

from fastapi import Request
from sqlalchemy.orm import Session

from services.api.errors import ApiError
from services.store.models import Project
from services.store.projects import DEFAULT_PROJECT, ensure_project, hash_key, project_for_key


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "Malformed Authorization header: expected 'Bearer <key>'", code="invalid_api_key")
    return key.strip()


# key hash -> (project, checked at): saves a query per request; a revoked key stops working within the TTL.
_KEY_CACHE: dict[str, tuple[Project, float]] = {}
KEY_CACHE_TTL_S = 30.0


def _cache_key(database: object, key: str) -> str:
    return f"{id(database)}:{hash_key(key)}"


def cached_caller(request: Request, database: object, admin_key: str | None) -> tuple[Project, bool] | None:
    """The caller from the key cache without touching the database (None on a miss); 401 for a missing key."""
    key = bearer_key(request)
    cached = _KEY_CACHE.get(_cache_key(database, key))
    if cached is None or time.monotonic() - cached[1] >= KEY_CACHE_TTL_S:
        return None
    return cached[0], bool(admin_key) and hmac.compare_digest(key.encode(), admin_key.encode())


def authenticate(request: Request, session: Session, admin_key: str | None,
                 database: object | None = None) -> tuple[Project, bool]:
    """The caller's project and whether the caller holds the admin key; 401 for a missing or bad key.

    `database` names the cache's scope (the engine); it defaults to the session's bind."""
    key = bearer_key(request)
    is_admin = bool(admin_key) and hmac.compare_digest(key.encode(), admin_key.encode())
    cache_key = _cache_key(database if database is not None else session.get_bind(), key)
    cached = _KEY_CACHE.get(cache_key)
    if cached is not None and time.monotonic() - cached[1] < KEY_CACHE_TTL_S:
        return cached[0], is_admin
    if is_admin:
        project = ensure_project(session, DEFAULT_PROJECT)
        session.commit()
        _KEY_CACHE[cache_key] = (project, time.monotonic())
        return project, True
    project = project_for_key(session, key)
    # End the read now: on SQLite every transaction holds the write lock, and a handler may open its own.
    session.commit()
    if project is None:
        raise ApiError(401, "Invalid API key", code="invalid_api_key")
    _KEY_CACHE[cache_key] = (project, time.monotonic())
    return project, False
