"""Bearer keys to projects; the bootstrap admin key acts on the 'default' project."""

from __future__ import annotations

import hmac

from fastapi import Request
from sqlalchemy.orm import Session

from services.api.errors import ApiError
from services.store.models import Project
from services.store.projects import DEFAULT_PROJECT, ensure_project, project_for_key


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "Malformed Authorization header: expected 'Bearer <key>'", code="invalid_api_key")
    return key.strip()


def authenticate(request: Request, session: Session, admin_key: str | None) -> tuple[Project, bool]:
    """The caller's project and whether the caller holds the admin key; 401 for a missing or bad key."""
    key = bearer_key(request)
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        project = ensure_project(session, DEFAULT_PROJECT)
        session.commit()
        return project, True
    project = project_for_key(session, key)
    # End the read now: on SQLite every transaction holds the write lock, and a handler may open its own.
    session.commit()
    if project is None:
        raise ApiError(401, "Invalid API key", code="invalid_api_key")
    return project, False
